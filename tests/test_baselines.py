"""Baseline mixers: the MixResult contract, each method's geometry, odd batches, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tmix_aug import create_mixer, list_mixers
from tmix_aug.baselines import (
    CutMix,
    Mixup,
    MixupCutMix,
    NoMix,
    ResizeMix,
    SaliencyMix,
)
from tmix_aug.sampling import draw_mix

NUM_CLASSES = 5
H, W = 16, 20  # not square, so rows and columns cannot be confused


def peak_saliency(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A saliency source whose (N, H, W) map is the first channel: its peak is known."""
    return images[:, 0]


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, H, W, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def make(name: str, **kwargs):
    factories = {
        "none": lambda: NoMix(NUM_CLASSES, **kwargs),
        "mixup": lambda: Mixup(NUM_CLASSES, **kwargs),
        "mixup-k3": lambda: Mixup(NUM_CLASSES, k=3, **kwargs),
        "cutmix": lambda: CutMix(NUM_CLASSES, **kwargs),
        "mixup-cutmix": lambda: MixupCutMix(NUM_CLASSES, mode="elem", **kwargs),
        "mixup-cutmix-batch": lambda: MixupCutMix(NUM_CLASSES, **kwargs),
        "resizemix": lambda: ResizeMix(NUM_CLASSES, **kwargs),
        "resizemix-lam": lambda: ResizeMix(NUM_CLASSES, scale=None, **kwargs),
        "saliencymix": lambda: SaliencyMix(NUM_CLASSES, saliency=peak_saliency, size=8, **kwargs),
        "saliencymix-spectral": lambda: SaliencyMix(NUM_CLASSES, **kwargs),
    }
    return factories[name]()


ALL = [
    "none",
    "mixup",
    "mixup-k3",
    "cutmix",
    "mixup-cutmix",
    "mixup-cutmix-batch",
    "resizemix",
    "resizemix-lam",
    "saliencymix",
    "saliencymix-spectral",
]
BOXES = ["cutmix", "resizemix", "resizemix-lam", "saliencymix"]


def rebuild(x: torch.Tensor, result) -> torch.Tensor:
    """The mix the result describes: warp each input with its theta, weight by its mask, sum."""
    n, k = result.index.shape
    inputs = x[result.index].reshape(n * k, *x.shape[1:])
    grid = F.affine_grid(
        result.thetas.reshape(n * k, 2, 3), list(inputs.shape), align_corners=False
    )
    warped = F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped.view(n, k, *x.shape[1:]) * result.masks[:, :, None]).sum(1)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_result_contract(name, n):
    if name == "mixup-k3" and n == 2:
        n = 5  # 3 distinct inputs need 3 images; a batch of 2 is an error (test_bad_arguments)
    x, y = batch(n)
    mixer = make(name, label_smoothing=0.1)
    result = mixer.mix(x, y, generator=torch.Generator().manual_seed(n))
    k = result.k
    assert result.images.shape == x.shape and result.images.dtype == x.dtype
    assert result.masks.shape == (n, k, H, W)
    assert result.thetas.shape == (n, k, 2, 3)
    assert result.lam.shape == (n, k) and result.index.shape == (n, k)
    torch.testing.assert_close(result.masks.sum(1), torch.ones(n, H, W))
    torch.testing.assert_close(result.lam.sum(1), torch.ones(n))
    torch.testing.assert_close(result.targets.sum(1), torch.ones(n))
    expected = torch.einsum("nk,nkc->nc", result.lam, result.labels[result.index])
    torch.testing.assert_close(result.targets, expected)
    torch.testing.assert_close(result.index[:, 0], torch.arange(n))
    torch.testing.assert_close(result.images, rebuild(x, result), atol=1e-5, rtol=1e-5)
    if name == "saliencymix":
        assert result.saliency.shape == (n, k, 8, 8)
    elif name == "saliencymix-spectral":
        assert result.saliency.shape == (n, k, 32, 32)
    else:
        assert result.saliency.shape == (n, k, 0, 0)
    if n == 1:
        torch.testing.assert_close(result.images, x)
        torch.testing.assert_close(result.lam, torch.tensor([[1.0] + [0.0] * (k - 1)]))


@pytest.mark.parametrize("name", BOXES)
def test_box_label_weights_equal_pasted_area(name):
    x, y = batch(64)
    result = make(name).mix(x, y, generator=torch.Generator().manual_seed(1))
    box = result.masks[:, 1]
    assert set(box.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(result.lam[:, 1], box.mean(dim=(1, 2)))
    # Each box is one rectangle: the rows and columns it touches are completely filled.
    rows, cols = box.amax(2), box.amax(1)
    torch.testing.assert_close(box, rows[:, :, None] * cols[:, None, :])
    assert (result.lam[:, 1] > 0).sum() > 32  # most boxes are non-empty


def test_mixup_is_the_per_sample_hand_blend():
    x, y = batch(6)
    result = Mixup(NUM_CLASSES, k=3).mix(x, y, generator=torch.Generator().manual_seed(3))
    lam, index = result.lam, result.index
    expected = torch.stack([sum(lam[i, k] * x[index[i, k]] for k in range(3)) for i in range(6)])
    torch.testing.assert_close(result.images, expected)
    assert len(set(lam[:, 0].tolist())) == 6  # one lambda per sample
    torch.testing.assert_close(result.thetas, torch.eye(2, 3).expand(6, 3, 2, 3))


def test_cutmix_box_sides_follow_the_drawn_lambda():
    n = 200
    x, y = batch(n)
    result = CutMix(NUM_CLASSES).mix(x, y, generator=torch.Generator().manual_seed(5))
    drawn = draw_mix(n, 2, 1.0, 1.0, "cpu", torch.Generator().manual_seed(5)).lam[:, 1]
    box = result.masks[:, 1]
    heights, widths = box.amax(2).sum(1), box.amax(1).sum(1)
    full_h = (H * drawn.sqrt()).floor()
    full_w = (W * drawn.sqrt()).floor()
    assert bool((heights <= full_h).all()) and bool((widths <= full_w).all())
    rows, cols = box.amax(2), box.amax(1)
    inside = (
        (rows[:, 0] == 0)
        & (rows[:, -1] == 0)
        & (cols[:, 0] == 0)
        & (cols[:, -1] == 0)
        & (full_h > 0)
    )
    assert inside.sum() > 20
    torch.testing.assert_close(heights[inside], full_h[inside])
    torch.testing.assert_close(widths[inside], full_w[inside])
    # Inside the box the partner shows, elsewhere the sample.
    partner = x[result.index[:, 1]]
    torch.testing.assert_close(result.images, torch.where(box[:, None] > 0, partner, x))


def test_prob_leaves_unmixed_samples_alone():
    x, y = batch(40)
    for name in ["mixup", "cutmix", "mixup-cutmix", "resizemix", "saliencymix"]:
        result = make(name, prob=0.5).mix(x, y, generator=torch.Generator().manual_seed(2))
        unmixed = result.lam[:, 0] == 1
        assert 5 < int(unmixed.sum()) < 35, name
        torch.testing.assert_close(result.images[unmixed], x[unmixed])
        torch.testing.assert_close(
            result.targets[unmixed], F.one_hot(y[unmixed], NUM_CLASSES).float()
        )
        assert bool((result.masks[unmixed, 0] == 1).all()), name
        torch.testing.assert_close(
            result.thetas[unmixed], torch.eye(2, 3).expand(int(unmixed.sum()), 2, 2, 3)
        )


def test_resizemix_pastes_the_resized_partner():
    x, y = batch(12)
    result = ResizeMix(NUM_CLASSES, scale=(0.3, 0.7)).mix(
        x, y, generator=torch.Generator().manual_seed(4)
    )
    for i in range(12):
        box = result.masks[i, 1]
        rows = box.amax(1).nonzero().flatten()
        cols = box.amax(0).nonzero().flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        h, w = bottom - top, right - left
        assert 0.3 - 1 / H <= h / H <= 0.7 and 0.3 - 1 / W <= w / W <= 0.7
        assert result.lam[i, 1].item() == pytest.approx(h * w / (H * W))
        small = F.interpolate(
            x[result.index[i, 1]][None], size=(h, w), mode="bilinear", align_corners=False
        )[0]
        torch.testing.assert_close(
            result.images[i, :, top:bottom, left:right], small, atol=1e-5, rtol=1e-5
        )
        outside = box == 0
        torch.testing.assert_close(result.images[i][:, outside], x[i][:, outside])


def test_resizemix_box_sides_share_one_scale():
    x, y = batch(30)
    result = ResizeMix(NUM_CLASSES).mix(x, y, generator=torch.Generator().manual_seed(6))
    box = result.masks[:, 1]
    heights, widths = box.amax(2).sum(1), box.amax(1).sum(1)
    # One side share per sample: both sides are floor(side * H) and floor(side * W).
    assert bool(((heights / H - widths / W).abs() < 1.0 / min(H, W) + 1e-6).all())
    assert bool((heights >= 1).all()) and bool((heights <= 0.8 * H).all())


def test_saliencymix_centres_the_box_on_the_partner_peak():
    n, s = 10, 4
    cell_h, cell_w = H // s, W // s
    x, y = batch(n)
    x[:, 0] = 0.0
    peaks = torch.randint(0, s, (n, 2), generator=torch.Generator().manual_seed(7))
    for i, (py, px) in enumerate(peaks.tolist()):
        x[i, 0, py * cell_h : (py + 1) * cell_h, px * cell_w : (px + 1) * cell_w] = (
            1.0  # one bright cell
        )
    result = SaliencyMix(NUM_CLASSES, saliency=peak_saliency, size=s).mix(
        x, y, generator=torch.Generator().manual_seed(8)
    )
    assert result.saliency.shape == (n, 2, s, s)
    assert float(result.saliency.min()) >= 0.0 and float(result.saliency.max()) <= 1.0
    partner_peak = result.saliency[:, 1].flatten(1).argmax(1)
    partner = result.index[:, 1]
    torch.testing.assert_close(partner_peak, peaks[partner, 0] * s + peaks[partner, 1])
    torch.testing.assert_close(
        result.saliency[:, 0].flatten(1).argmax(1), peaks[:, 0] * s + peaks[:, 1]
    )
    for i in range(n):
        box = result.masks[i, 1]
        if box.sum() == 0:
            continue
        py, px = peaks[partner[i]].tolist()
        centre = (int((py + 0.5) * cell_h), int((px + 0.5) * cell_w))
        assert box[centre] == 1, i
    torch.testing.assert_close(result.images, torch.where(result.masks[:, 1:2] > 0, x[partner], x))


def test_mixup_cutmix_switch():
    x, y = batch(40)
    always_cut = MixupCutMix(NUM_CLASSES, switch_prob=1.0).mix(
        x, y, generator=torch.Generator().manual_seed(0)
    )
    assert set(always_cut.masks.unique().tolist()) <= {0.0, 1.0}
    never_cut = MixupCutMix(NUM_CLASSES, switch_prob=0.0).mix(
        x, y, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(never_cut.masks, never_cut.lam[:, :, None, None].expand(40, 2, H, W))
    per_sample = MixupCutMix(NUM_CLASSES, mode="elem").mix(
        x, y, generator=torch.Generator().manual_seed(0)
    )
    binary = ((per_sample.masks == 0) | (per_sample.masks == 1)).flatten(1).all(1)
    assert 5 < int(binary.sum()) < 35
    for seed in range(6):
        whole = MixupCutMix(NUM_CLASSES, mode="batch").mix(
            x, y, generator=torch.Generator().manual_seed(seed)
        )
        binary = ((whole.masks == 0) | (whole.masks == 1)).flatten(1).all(1)
        assert bool(binary.all()) or not bool(binary.any())


def test_generator_reproduces_the_mix():
    x, y = batch(9)
    for name in ALL:
        a = make(name).mix(x, y, generator=torch.Generator().manual_seed(11))
        b = make(name).mix(x, y, generator=torch.Generator().manual_seed(11))
        torch.testing.assert_close(a.images, b.images)
        torch.testing.assert_close(a.lam, b.lam)


@pytest.mark.parametrize("name", ["mixup", "cutmix", "resizemix", "saliencymix"])
def test_half_precision_images_keep_their_dtype(name):
    x, y = batch(5)
    images, targets = make(name)(x.bfloat16(), y)
    assert images.dtype == torch.bfloat16 and targets.dtype == torch.float32


def test_soft_targets_are_mixed():
    x, _ = batch(6)
    soft = torch.softmax(torch.randn(6, NUM_CLASSES), dim=1)
    result = CutMix(NUM_CLASSES).mix(x, soft, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        result.targets, torch.einsum("nk,nkc->nc", result.lam, soft[result.index])
    )


@pytest.mark.parametrize("cls", [CutMix, MixupCutMix, ResizeMix, SaliencyMix])
def test_two_input_methods_reject_other_k(cls):
    with pytest.raises(ValueError, match="k: .* exactly 2"):
        cls(NUM_CLASSES, k=3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        ResizeMix(NUM_CLASSES, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="scale"):
        ResizeMix(NUM_CLASSES, scale=0.5)
    with pytest.raises(ValueError, match="switch_prob"):
        MixupCutMix(NUM_CLASSES, switch_prob=1.5)
    with pytest.raises(ValueError, match="mode"):
        MixupCutMix(NUM_CLASSES, mode="pair")
    with pytest.raises(ValueError, match="size"):
        SaliencyMix(NUM_CLASSES, size=0)
    with pytest.raises(ValueError, match="k: 3 inputs"):
        Mixup(NUM_CLASSES, k=3).mix(*batch(2))
    with pytest.raises(ValueError, match="saliency: expected maps of shape"):
        SaliencyMix(NUM_CLASSES, saliency=lambda images, targets: images).mix(*batch(3))
    with pytest.raises(ValueError, match=r"y: class indices must lie in \[0, 5\)"):
        CutMix(NUM_CLASSES).mix(batch(3)[0], torch.tensor([0, 1, 5]))


def test_create_mixer():
    expected = {
        "none": NoMix,
        "mixup": Mixup,
        "cutmix": CutMix,
        "mixup-cutmix": MixupCutMix,
        "resizemix": ResizeMix,
        "saliencymix": SaliencyMix,
    }
    for name, cls in expected.items():
        mixer = create_mixer(name, NUM_CLASSES, label_smoothing=0.1)
        assert (
            type(mixer) is cls and mixer.num_classes == NUM_CLASSES and mixer.label_smoothing == 0.1
        )
    from tmix_aug.mixer import TransformMix

    mixer = create_mixer(
        "transformmix", NUM_CLASSES, mode="saliency-softmax", saliency=peak_saliency
    )
    assert isinstance(mixer, TransformMix) and mixer.mode == "saliency-softmax"
    assert set(list_mixers()) == set(expected) | {"transformmix"}
    assert create_mixer("mixup", NUM_CLASSES, k=3, alpha=0.4).k == 3
    with pytest.raises(
        ValueError, match="name: unknown mixer 'puzzlemix'; expected one of cutmix, mixup"
    ):
        create_mixer("puzzlemix", NUM_CLASSES)
    with pytest.raises(ValueError, match="path: only the 'transformmix' mixer"):
        create_mixer("cutmix", NUM_CLASSES, path="some/dir")


def test_create_mixer_loads_transformmix_weights(tmp_path):
    from tmix_aug.mixer import TransformMix

    saved = TransformMix(NUM_CLASSES, saliency=peak_saliency, size=8)
    saved.save_pretrained(tmp_path / "mixer")
    loaded = create_mixer(
        "transformmix", NUM_CLASSES, path=str(tmp_path / "mixer"), saliency=peak_saliency
    )
    assert isinstance(loaded, TransformMix) and loaded.size == 8
    x, y = batch(4)
    torch.testing.assert_close(
        loaded.mix(x, y, generator=torch.Generator().manual_seed(0)).images,
        saved.mix(x, y, generator=torch.Generator().manual_seed(0)).images,
    )


def test_saliencymix_takes_cams_from_a_classifier_it_does_not_own():
    import timm

    import tmix_aug.models  # noqa: F401  registers cifar_resnet20

    model = timm.create_model("cifar_resnet20", num_classes=NUM_CLASSES)
    mixer = SaliencyMix(NUM_CLASSES, saliency=model, size=4)
    assert list(mixer.children()) == [] and mixer.state_dict() == {}
    x, y = batch(6)
    result = mixer.mix(x, y, generator=torch.Generator().manual_seed(0))
    assert result.saliency.shape == (6, 2, 4, 4)
    torch.testing.assert_close(result.lam[:, 1], result.masks[:, 1].mean(dim=(1, 2)))
