"""compare_mixers: every mixer is scored on the same held-out mixes."""
import pytest
import torch
from torch import nn

from tmix_aug import TransformMix
from tmix_aug.baselines import CutMix, Mixup
from tmix_aug.search import compare_mixers, paired_gap
from tmix_aug.sampling import draw_mix
from tmix_aug.search.evaluate import area_gap


class FixedLogits(nn.Module):
    """A 'classifier' that always ranks class 0 first and class 1 second."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("logits", torch.linspace(3.0, 0.0, num_classes))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def batches(classes=(0, 1), n=4, count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(n, 3, 8, 8, generator=generator)
        y = torch.tensor(classes).repeat(n // len(classes))
        yield x, y


def test_top2_and_top1_are_counted_against_the_mixed_classes():
    results = compare_mixers(FixedLogits(), {"mixup": Mixup(4)}, batches())
    mixup = results["mixup"]
    assert mixup["images"] == 12
    assert mixup["top2_both"] == 1.0  # every pair of different classes is {0, 1}: the fixed top-2
    # Reference: replay the shared draws; top-1 (class 0) is "in" when class 0 is one of the pair.
    generator, holds_zero = torch.Generator().manual_seed(0), 0
    for _, y in batches():
        draw = draw_mix(len(y), 2, 1.0, 1.0, y.device, generator)
        holds_zero += int((y[draw.index] == 0).any(-1).sum())
    assert mixup["top1_in"] == holds_zero / 12
    wrong = compare_mixers(FixedLogits(), {"mixup": Mixup(4)}, batches(classes=(2, 3)))["mixup"]
    assert wrong["top2_both"] == 0.0 and wrong["top1_in"] == 0.0


def test_same_draws_for_every_mixer_and_calibration_never_hurts():
    mixers = {"a": Mixup(4), "b": Mixup(4), "cutmix": CutMix(4), "tmix": TransformMix(4, saliency="spectral", size=8)}
    results = compare_mixers(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), mixers, batches(classes=(0, 1, 2, 3)))
    assert results["a"] == results["b"]
    for name, scores in results.items():
        assert scores["calibrated_cross_entropy"] <= scores["cross_entropy"] + 1e-5, name
        assert 0.0 <= scores["top2_both"] <= 1.0 and 0.0 <= scores["top1_in"] <= 1.0
    assert results["a"]["area_gap"] == pytest.approx(0.0, abs=1e-10)
    assert results["cutmix"]["area_gap"] == pytest.approx(0.0, abs=1e-10)  # its lambda is the box's area


def test_area_gap_reference():
    masks = torch.zeros(2, 2, 4, 4)
    masks[:, 0, :, :2] = 1.0  # input 0 shows on half of the image
    masks[:, 1] = 1.0 - masks[:, 0]
    lam = torch.tensor([[0.5, 0.5], [0.7, 0.3]])
    assert area_gap(masks, lam).item() == pytest.approx((0.0 + 2 * 0.2**2) / 2)


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="batches: expected at least one batch"):
        compare_mixers(FixedLogits(), {"mixup": Mixup(4)}, [])


def test_per_image_scores_add_up_to_the_means_in_the_same_order_for_every_mixer():
    mixers = {"mixup": Mixup(4), "cutmix": CutMix(4), "same": Mixup(4)}
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    results = compare_mixers(classifier, mixers, batches(classes=(0, 1, 2, 3)), per_image=True)
    plain = compare_mixers(classifier, mixers, batches(classes=(0, 1, 2, 3)))
    for name, scores in results.items():
        losses, both = scores["cross_entropy_per_image"], scores["top2_both_per_pair"]
        assert losses.shape == (12,) and both.dtype == torch.bool
        assert losses.mean().item() == pytest.approx(scores["cross_entropy"], rel=1e-6)
        assert both.float().mean().item() == pytest.approx(scores["top2_both"])
        assert {k: v for k, v in scores.items() if not isinstance(v, torch.Tensor)} == plain[name]
    assert torch.equal(results["mixup"]["cross_entropy_per_image"], results["same"]["cross_entropy_per_image"])
    assert len(results["mixup"]["top2_both_per_pair"]) == len(results["cutmix"]["top2_both_per_pair"])


def test_paired_gap_is_the_mean_difference_and_its_standard_error():
    reference = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, error = paired_gap(reference + torch.tensor([0.1, 0.3, 0.1, 0.3]), reference)
    assert mean == pytest.approx(0.2)
    assert error == pytest.approx(torch.tensor([0.1, 0.3, 0.1, 0.3]).std().item() / 2)
    assert paired_gap(torch.tensor([True, False, True]), torch.tensor([False, False, True]))[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="scores, reference: expected two"):
        paired_gap(torch.zeros(3), torch.zeros(4))
