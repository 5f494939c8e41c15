"""TransformMix pays only for what it mixes: subset computation, precomputed saliency, no host syncs."""
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyClassifier, blob_batch
from test_mixer import gen, searched_like

from tmix_aug import TransformMix
from tmix_aug.baselines import Mixup, SaliencyMix
from tmix_aug.functional import affine_grid, balanced_softmax, blend, blend_from_batch, warp



def test_affine_grid_matches_torch():
    thetas = torch.randn(5, 2, 3)
    for height, width in ((7, 7), (6, 11)):
        expected = F.affine_grid(thetas, [5, 1, height, width], align_corners=False)
        torch.testing.assert_close(affine_grid(thetas, height, width), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("warped", [True, False])
def test_blend_from_batch_matches_blend_of_gathered_inputs(k, warped):
    x, _ = blob_batch(n=6, size=20)
    index = torch.stack([torch.randperm(6, generator=gen(j)) for j in range(k)], dim=1)[:4]
    thetas = torch.eye(2, 3) + 0.3 * torch.randn(4, k, 2, 3, generator=gen(9))
    masks = torch.rand(4, k, 20, 20, generator=gen(3)).softmax(dim=1)
    if warped:
        expected, got = blend(warp(x[index], thetas), masks), blend_from_batch(x, index, masks, thetas)
    else:
        expected, got = blend(x[index], masks), blend_from_batch(x, index, masks)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("warped", [True, False])
def test_blend_from_batch_own_slot_reads_the_batch(warped):
    """``first_is_own`` skips slot 0's gather and gives what the gather would."""
    x, _ = blob_batch(n=6, size=20)
    index = torch.stack([torch.arange(6), torch.randperm(6, generator=gen(1))], dim=1)
    thetas = torch.eye(2, 3) + 0.3 * torch.randn(6, 2, 2, 3, generator=gen(9)) if warped else None
    masks = torch.rand(6, 2, 20, 20, generator=gen(3)).softmax(dim=1)
    torch.testing.assert_close(
        blend_from_batch(x, index, masks, thetas, first_is_own=True), blend_from_batch(x, index, masks, thetas)
    )


class CountingSaliency:
    """A CAM that records how many images each call saw."""

    def __init__(self, cam):
        self.cam, self.sizes = cam, []

    def __call__(self, images, targets):
        self.sizes.append(images.shape[0])
        return self.cam(images, targets)


@pytest.mark.parametrize("k", [2, 3])
def test_prob_below_one_mixes_exactly_as_when_every_sample_is_mixed(k):
    """Same generator: the draws of prob=0.5 are those of prob=1 on the mixed samples, and so is every output.

    Saliency, transforms, weights and targets are bit-identical. Masks and images agree to float32
    rounding (1e-6): the CPU convolution of the mask net rounds differently for a batch of
    another size (measured: up to 7e-8 on its logits).
    """
    x, y = blob_batch(n=16, num_classes=5, seed=1)
    teacher = TinyClassifier().eval()
    full = searched_like(TransformMix(5, k=k, saliency=teacher, size=16, prob=1.0))
    source = CountingSaliency(full.saliency.fn)
    half = TransformMix(5, k=k, saliency=source, size=16, prob=0.5)
    half.load_state_dict(full.state_dict())
    nets_saw = []
    half.stn.register_forward_hook(lambda module, args, out: nets_saw.append(args[0].shape[0]))
    half.mpn.register_forward_hook(lambda module, args, out: nets_saw.append(args[0].shape[0]))
    a = full.mix(x, y, generator=gen(5))
    b = half.mix(x, y, generator=gen(5))
    mixed = b.lam[:, 0] < 1
    rows = mixed.nonzero().squeeze(1)
    assert 2 < len(rows) < 14
    for name in ("thetas", "saliency", "targets", "lam"):
        assert torch.equal(getattr(a, name)[rows], getattr(b, name)[rows]), name
    for name in ("images", "masks"):
        torch.testing.assert_close(getattr(a, name)[rows], getattr(b, name)[rows], rtol=0, atol=1e-6)
    assert torch.equal(a.index, b.index)
    # only the images the mixed samples read went through the saliency source, only mixed samples through the nets
    assert source.sizes == [len(torch.unique(b.index[rows]))]
    assert nets_saw == [len(rows), len(rows)]
    # the others: their own image, one-hot mask, identity transform, no saliency
    assert torch.equal(b.images[~mixed], x[~mixed])
    assert torch.equal(b.masks[~mixed][:, 0], torch.ones(int((~mixed).sum()), 24, 24))
    assert torch.equal(b.thetas[~mixed], torch.eye(2, 3).expand(int((~mixed).sum()), k, 2, 3))
    assert not b.saliency[~mixed].any()


def test_nothing_mixed_runs_nothing():
    x, y = blob_batch(n=8)
    source = CountingSaliency(lambda images, targets: images.mean(1))
    out = TransformMix(5, saliency=source, prob=0.0).mix(x, y)
    assert torch.equal(out.images, x) and source.sizes == []


@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_precomputed_saliency_replaces_the_source(prob):
    x, y = blob_batch(n=10, num_classes=5)
    teacher = TinyClassifier().eval()
    maps = torch.rand(10, 6, 6, generator=gen(2))

    def lookup(images, targets):  # the maps of exactly the images asked for
        rows = [int((x - image).abs().flatten(1).sum(1).argmin()) for image in images]
        return maps[rows]

    from_source = searched_like(TransformMix(5, saliency=lookup, prob=prob))
    given = TransformMix(5, saliency=teacher, prob=prob)
    given.load_state_dict(from_source.state_dict())
    a = from_source.mix(x, y, generator=gen(1))
    b = given.mix(x, y, generator=gen(1), saliency=maps)
    assert torch.equal(a.images, b.images) and torch.equal(a.saliency, b.saliency)
    images, targets = given(x, y, saliency=maps)
    assert images.shape == x.shape and targets.shape == (10, 5)


def test_precomputed_saliency_in_saliencymix_and_errors():
    x, y = blob_batch(n=6, num_classes=5)
    maps = torch.zeros(6, 8, 8)
    maps[:, 1, 2] = 1.0
    out = SaliencyMix(5, size=8).mix(x, y, generator=gen(), saliency=maps)
    assert torch.equal(out.saliency[:, 1].flatten(1).argmax(1), torch.full((6,), 1 * 8 + 2))
    mixer = TransformMix(5)
    with pytest.raises(ValueError, match="saliency: expected real float maps of shape \\(6, h, w\\)"):
        mixer.mix(x, y, saliency=torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="saliency: expected real float maps"):
        mixer.mix(x, y, saliency=torch.rand(6, 8))
    with pytest.raises(TypeError, match="saliency: expected a torch.Tensor"):
        mixer.mix(x, y, saliency=[[0.0]])
    with pytest.raises(ValueError, match="saliency: Mixup reads no saliency maps"):
        Mixup(5).mix(x, y, saliency=maps)


SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "nonzero")


def test_mix_makes_no_host_device_sync(monkeypatch):
    """Every read of a tensor's value by the host is counted; only the CPU generator's seed may be read.

    On CUDA each of these calls would make the host wait for the device. The one exception is
    ``sampling.draw_seed``: it reads a number from the user's CPU generator, a host tensor by
    construction.
    """
    x, y = blob_batch(n=12, num_classes=5)
    maps = torch.rand(12, 4, 4)
    teacher_cam = TransformMix(5, saliency=TinyClassifier().eval()).saliency.fn
    teacher_cam(x)  # the one-time check of the model's head reads a value, on the first call only
    mixers = [searched_like(TransformMix(5, saliency=teacher_cam, prob=p, check_inputs=False)) for p in (1.0, 0.5)]
    calls = []
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1)
            if not (caller.f_code.co_name == "draw_seed" and caller.f_code.co_filename.endswith("sampling.py")):
                calls.append((_name, caller.f_code.co_filename, caller.f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for fn in ("nonzero", "unique", "masked_select"):
        monkeypatch.setattr(torch, fn, lambda *args, _fn=fn, **kwargs: calls.append((_fn,)))
    for mixer in mixers:
        mixer.mix(x, y, generator=gen())
        mixer.mix(x, y, generator=gen(), saliency=maps)
        mixer(x, y)
    monkeypatch.undo()
    assert calls == []


def test_balanced_masks_for_two_inputs_follow_the_general_iterations():
    """K = 2 takes a sigmoid shortcut; it must give the masks of the softmax iterations."""


    logits = 3 * torch.randn(6, 2, 10, 10, generator=gen(4))
    lam = torch.distributions.Dirichlet(torch.ones(2)).sample((6,))
    log_lam = lam.log()[:, :, None, None]
    offsets = torch.zeros_like(log_lam)
    for _ in range(30):  # the general scaling iterations, written out
        shares = (logits + offsets).softmax(dim=1).mean(dim=(-2, -1), keepdim=True)
        offsets = offsets + log_lam - shares.log()
    expected = (logits + offsets).softmax(dim=1)
    masks = balanced_softmax(logits, lam)
    torch.testing.assert_close(masks, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(masks.mean((-2, -1)), lam, rtol=0, atol=1e-4)


def test_draw_says_on_the_host_which_samples_and_inputs_are_needed():
    from tmix_aug.sampling import draw_mix

    draw = draw_mix(20, 3, 1.0, 0.4, "cpu", gen(3))
    rows = draw.mixed.nonzero().squeeze(1)
    assert torch.equal(draw.rows, rows)
    assert torch.equal(draw.inputs, torch.unique(draw.index[rows]))
    assert torch.equal(draw.inputs[draw.slots], draw.index[rows])
    everyone = draw_mix(20, 3, 1.0, 1.0, "cpu", gen(3))
    assert everyone.rows is None and everyone.inputs is None and everyone.slots is None


def test_torch_compile_gives_the_eager_mix():
    """``torch.compile(mixer)`` runs (the host-side draws stay outside the graph) and mixes as eager does.

    ``aot_eager`` traces and partitions the graph as inductor would, without generating code,
    so the check stays cheap on a CPU; the rounding of the traced ops may differ slightly.
    """
    x, y = blob_batch(n=6, num_classes=5, size=16)
    maps = torch.rand(6, 4, 4, generator=gen(5))
    mixer = searched_like(TransformMix(5, size=8, saliency=lambda images, targets: maps, check_inputs=False))
    compiled = torch.compile(mixer, backend="aot_eager")
    torch.manual_seed(3)
    images, targets = compiled(x, y)
    torch.manual_seed(3)
    expected_images, expected_targets = mixer(x, y)
    torch.testing.assert_close(images, expected_images, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(targets, expected_targets, rtol=0, atol=0)
    assert not torch.equal(images, x)  # it mixed
