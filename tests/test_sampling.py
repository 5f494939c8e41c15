"""Random draws of a mix: distinct partners, balanced slots, Dirichlet weights, reproducibility."""
import numpy as np
import pytest
import torch

from tmix_aug.sampling import draw_mix


@pytest.mark.parametrize("n, k", [(7, 2), (8, 3), (3, 3)])
def test_partners_are_distinct_and_every_element_fills_every_slot_once(n, k):
    draw = draw_mix(n, k, 1.0, 1.0, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(draw.index[:, 0], torch.arange(n))
    assert all(len(set(row.tolist())) == k for row in draw.index)
    for slot in range(k):
        assert sorted(draw.index[:, slot].tolist()) == list(range(n))


def test_lambdas_follow_the_dirichlet():
    draw = draw_mix(4000, 3, 2.0, 1.0, "cpu", torch.Generator().manual_seed(0))
    torch.testing.assert_close(draw.lam.sum(1), torch.ones(4000))
    assert np.allclose(draw.lam.mean(0).numpy(), 1 / 3, atol=0.02)
    # Dirichlet(2,2,2) marginal Beta(2, 4): variance 2*4 / (36 * 7)
    assert abs(draw.lam[:, 0].var().item() - 8 / 252) < 0.005


def test_prob_and_reproducibility():
    a = draw_mix(1000, 2, 1.0, 0.3, "cpu", torch.Generator().manual_seed(1))
    b = draw_mix(1000, 2, 1.0, 0.3, "cpu", torch.Generator().manual_seed(1))
    assert torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index) and a.seed == b.seed
    assert 0.25 < a.mixed.float().mean().item() < 0.35
    assert torch.equal(a.lam[~a.mixed], torch.tensor([[1.0, 0.0]]).expand(int((~a.mixed).sum()), 2))


def test_a_batch_of_one_is_not_mixed():
    draw = draw_mix(1, 2, 1.0, 1.0, "cpu")
    assert not draw.mixed.any() and draw.lam.tolist() == [[1.0, 0.0]]


def test_stream_seed_is_one_helper_for_every_stream():
    from tmix_aug import stream_seed

    assert stream_seed(0, 1, 2) == stream_seed(0, 1, 2)
    seeds = {stream_seed(0, rank, epoch) for rank in range(3) for epoch in range(3)}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert all(0 <= stream_seed(5, e, bits=32) < 2**32 for e in range(5))
    # 32 bits are the top bits of the 63-bit seed: one derivation, two sizes.
    assert stream_seed(5, 1, bits=32) == stream_seed(5, 1) >> 31
    with pytest.raises(ValueError, match="keys: expected one or more non-negative ints"):
        stream_seed(-1)
    with pytest.raises(ValueError, match="bits: expected an int from 1 to 64"):
        stream_seed(1, bits=65)
