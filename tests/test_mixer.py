"""TransformMix: the contract of mix(), the method's invariants, dtypes, modes and errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyClassifier, blob_batch

from tmix_aug import MixResult, TransformMix
from tmix_aug.checks import all_finite
from tmix_aug.functional import warp
from tmix_aug.mixer import MODES


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def searched_like(mixer: TransformMix, seed: int = 0) -> TransformMix:
    """Give a mixer random (non-identity) last layers, as a search would."""
    torch.manual_seed(seed)
    for net in (mixer.stn, mixer.mpn):
        if net is not None:
            torch.nn.init.normal_(net.head.weight, std=0.3)
            torch.nn.init.normal_(net.head.bias, std=0.3)
    return mixer


@pytest.mark.parametrize("k", [2, 3])
def test_result_contract(k):
    x, y = blob_batch(n=7, num_classes=5)
    mixer = searched_like(TransformMix(5, k=k, size=16))
    out = mixer.mix(x, y, generator=gen())
    assert isinstance(out, MixResult)
    n, c, h, w = x.shape
    assert out.images.shape == (n, c, h, w) and out.images.dtype == x.dtype
    assert out.targets.shape == (n, 5) and out.masks.shape == (n, k, h, w)
    assert out.thetas.shape == (n, k, 2, 3) and out.lam.shape == (n, k)
    assert out.index.shape == (n, k) and out.index.dtype == torch.int64
    assert out.saliency.shape == (n, k, 16, 16)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(n, h, w))
    torch.testing.assert_close(out.targets.sum(1), torch.ones(n))
    torch.testing.assert_close(out.lam.sum(1), torch.ones(n))
    assert torch.equal(out.index[:, 0], torch.arange(n))
    assert all(len(set(row.tolist())) == k for row in out.index)
    expected = sum(out.lam[:, j, None] * F.one_hot(y[out.index[:, j]], 5).float() for j in range(k))
    torch.testing.assert_close(out.targets, expected)
    assert out.saliency.min() >= 0 and out.saliency.max() <= 1


def test_forward_returns_images_and_targets_like_timm_mixup(batch):
    x, y = batch
    mixer = TransformMix(5)
    torch.manual_seed(3)
    images, targets = mixer(x, y)
    torch.manual_seed(3)
    out = mixer.mix(x, y)
    assert torch.equal(images, out.images) and torch.equal(targets, out.targets)


def test_flat_saliency_and_identity_transforms_give_a_hand_computed_blend(batch):
    """Constant masks equal to lambda everywhere: the mix is sum_k lam_k x_k (Mixup)."""
    x, y = batch
    flat = lambda images, targets: torch.zeros(images.shape[0], 3, 3)  # noqa: E731
    out = TransformMix(5, k=3, saliency=flat).mix(x, y, generator=gen(1))
    identity = torch.eye(2, 3).expand_as(out.thetas)
    assert torch.equal(out.thetas, identity)
    torch.testing.assert_close(out.masks, out.lam[:, :, None, None].expand_as(out.masks))
    by_hand = sum(out.lam[:, j, None, None, None] * x[out.index[:, j]] for j in range(3))
    torch.testing.assert_close(out.images, by_hand)


def test_unsearched_masks_are_a_softmax_over_saliency_and_log_lambda():
    """Zero-initialised last layers, unbalanced: masks = softmax(saliency / tau + log lambda) (ours)."""
    x = torch.rand(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    brightness = lambda images, targets: images.mean(1)  # noqa: E731
    mixer = TransformMix(4, saliency=brightness, size=16, init_temperature=0.5, balance=False)
    out = mixer.mix(x, y, generator=gen(2))
    s = x.mean(1)
    s = (s - s.amin((1, 2), keepdim=True)) / (s.amax((1, 2), keepdim=True) - s.amin((1, 2), keepdim=True))
    logits = s[out.index] / 0.5 + out.lam.log()[:, :, None, None]
    torch.testing.assert_close(out.masks, logits.softmax(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.saliency, s[out.index], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_balanced_masks_show_each_input_on_its_lambda_share_of_the_image(k):
    """Balanced (the default): the same logits shifted by one offset per sample and input,
    so that each input covers exactly lambda_k of the image."""
    x = torch.rand(6, 3, 16, 16)
    y = torch.arange(6) % 4
    brightness = lambda images, targets: images.mean(1)  # noqa: E731
    mixer = searched_like(TransformMix(4, k=k, saliency=brightness, size=16, init_temperature=0.5))
    out = mixer.mix(x, y, generator=gen(3))
    torch.testing.assert_close(out.masks.mean((-2, -1)), out.lam, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(6, 16, 16))
    # Reference: the unbalanced mixer's masks, re-weighted per input, are the balanced masks.
    plain = TransformMix(4, k=k, saliency=brightness, size=16, init_temperature=0.5, balance=False)
    plain.load_state_dict(mixer.state_dict())
    unbalanced = plain.mix(x, y, generator=gen(3)).masks
    offsets = (out.masks.log() - unbalanced.log())  # constant over pixels, up to the common log-normaliser
    offsets = offsets - offsets[:, :1]
    torch.testing.assert_close(offsets, offsets[..., :1, :1].expand_as(offsets), atol=1e-4, rtol=0)


def test_balanced_softmax_reaches_lambda_and_passes_gradients():
    from tmix_aug.functional import balanced_softmax

    torch.manual_seed(0)
    logits = (torch.randn(5, 3, 8, 8) * 2).requires_grad_()
    lam = torch.distributions.Dirichlet(torch.ones(3)).sample((5,))
    masks = balanced_softmax(logits, lam)
    torch.testing.assert_close(masks.mean((-2, -1)), lam, atol=1e-5, rtol=0)
    (masks[:, 0] * torch.randn(5, 8, 8)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # A constant added to one input's logits is absorbed by its offset: same masks.
    shifted = logits.detach().clone()
    shifted[:, 1] += 2.0
    torch.testing.assert_close(balanced_softmax(shifted, lam), masks.detach(), atol=1e-5, rtol=0)


def test_warp_moves_a_blob_where_theta_says():
    x = torch.zeros(1, 1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # centred square
    shift = 0.5  # affine_grid maps output to input: output(p) = input(p + t)
    theta = torch.tensor([[[[1.0, 0.0, shift], [0.0, 1.0, 0.0]]]])
    moved = warp(x, theta)[0, 0, 0]
    assert moved.shape == (32, 32)
    cols = moved.sum(0)
    centre = (cols * torch.arange(32)).sum() / cols.sum()
    # x_in = x_out + 0.5 in [-1, 1] units = 8 pixels: the square moves 8 pixels left.
    assert abs(centre.item() - (15.5 - 8)) < 0.1
    assert torch.allclose(moved.sum(), torch.tensor(64.0), atol=1e-4)
    zoom = torch.tensor([[[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]]])  # samples a 2x wider field: halves the square
    assert abs(warp(x, zoom).sum().item() - 16.0) < 0.5


def test_gradients_reach_both_networks_through_a_frozen_teacher(batch):
    x, y = batch
    teacher = TinyClassifier().eval().requires_grad_(False)
    mixer = searched_like(TransformMix(5, saliency=teacher)).train()
    out = mixer.mix(x, y, generator=gen())
    loss = torch.sum(-out.targets * teacher(out.images).log_softmax(-1), -1).mean()
    loss.backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())


def test_eval_mode_builds_no_graph_and_moves_nothing_into_the_mixer(batch):
    x, y = batch
    mixer = searched_like(TransformMix(5))
    assert not mixer.training
    out = mixer.mix(x, y)
    assert out.images.grad_fn is None and out.masks.grad_fn is None
    with torch.no_grad():
        assert mixer.train().mix(x, y).images.grad_fn is None


def test_generator_reproduces_a_mix(batch):
    x, y = batch
    mixer = searched_like(TransformMix(5))
    a, b, c = (mixer.mix(x, y, generator=gen(s)) for s in (4, 4, 5))
    assert torch.equal(a.images, b.images) and torch.equal(a.index, b.index) and torch.equal(a.thetas, b.thetas)
    assert not torch.equal(a.lam, c.lam)


def test_noise_makes_transforms_differ_between_draws(batch):
    x, y = batch
    mixer = searched_like(TransformMix(5))
    torch.nn.init.normal_(mixer.stn.features[0].weight, std=1.0)
    a = mixer.mix(x, y, generator=gen(0))
    b = mixer.mix(x, y, generator=gen(1))
    assert not torch.allclose(a.thetas, b.thetas)


def test_prob_leaves_the_other_samples_unmixed():
    x, y = blob_batch(n=32)
    out = searched_like(TransformMix(5, prob=0.5)).mix(x, y, generator=gen(2))
    unmixed = out.lam[:, 0] == 1.0
    assert 4 < int(unmixed.sum()) < 28
    assert torch.equal(out.images[unmixed], x[unmixed])
    assert torch.equal(out.targets[unmixed], F.one_hot(y[unmixed], 5).float())
    assert torch.equal(out.thetas[unmixed], torch.eye(2, 3).expand(int(unmixed.sum()), 2, 2, 3))
    none = TransformMix(5, prob=0.0).mix(x, y)
    assert torch.equal(none.images, x)


def test_batch_of_one_passes_through_unmixed():
    x, y = blob_batch(n=1)
    out = searched_like(TransformMix(5)).mix(x, y)
    assert torch.equal(out.images, x)
    assert torch.equal(out.targets, F.one_hot(y, 5).float())


def test_soft_targets_and_label_smoothing(batch):
    x, y = batch
    soft = torch.softmax(torch.randn(len(y), 5), dim=1)
    out = TransformMix(5, label_smoothing=0.1).mix(x, soft, generator=gen())
    smoothed = soft * 0.9 + 0.1 / 5
    expected = sum(out.lam[:, j, None] * smoothed[out.index[:, j]] for j in range(2))
    torch.testing.assert_close(out.targets, expected)
    torch.testing.assert_close(out.labels, smoothed)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_images_keep_their_dtype_with_float32_networks(batch, dtype):
    x, y = batch
    mixer = searched_like(TransformMix(5))
    out = mixer.mix(x.to(dtype), y, generator=gen())
    assert out.images.dtype == dtype and out.targets.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in mixer.parameters())
    reference = mixer.mix(x.to(dtype).float(), y, generator=gen())
    torch.testing.assert_close(out.images.float(), reference.images, atol=0.05, rtol=0.05)


def test_channels_last_and_autocast(batch):
    x, y = batch
    mixer = searched_like(TransformMix(5))
    cl = x.contiguous(memory_format=torch.channels_last)
    out = mixer.mix(cl, y, generator=gen())
    assert out.images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.images, mixer.mix(x, y, generator=gen()).images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mixer.mix(x, y, generator=gen())
    assert auto.images.dtype == torch.float32
    torch.testing.assert_close(auto.images, mixer.mix(x, y, generator=gen()).images)


def test_any_channels_and_non_square_images():
    x = torch.rand(4, 1, 20, 36)
    y = torch.tensor([0, 1, 2, 3])
    out = searched_like(TransformMix(4, k=2)).mix(x, y)
    assert out.images.shape == (4, 1, 20, 36) and out.masks.shape == (4, 2, 20, 36)


@pytest.mark.parametrize("mode", MODES)
def test_ablation_modes(mode, batch):
    x, y = batch
    mixer = TransformMix(5, mode=mode)
    assert (mixer.stn is not None) == (mode in ("transformmix", "stn-only"))
    assert (mixer.mpn is not None) == (mode in ("transformmix", "mpn-only"))
    out = mixer.mix(x, y, generator=gen())
    torch.testing.assert_close(out.masks.sum(1), torch.ones(len(x), *x.shape[-2:]))


def test_saliency_softmax_masks_show_the_salient_part():
    """With equal lambdas, each input's mask is larger where its own saliency is higher."""
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 2:12, 2:12] = 1.0
    x[1, :, 20:30, 20:30] = 1.0
    y = torch.tensor([0, 1])
    brightness = lambda images, targets: images.mean(1)  # noqa: E731 (a saliency callable)
    mixer = TransformMix(2, mode="saliency-softmax", alpha=1000.0, saliency=brightness)  # lambda ~ 0.5
    out = mixer.mix(x, y, generator=gen())
    assert out.masks[0, 0, 5:9, 5:9].min() > 0.9  # sample 0's own object
    assert out.masks[0, 1, 23:27, 23:27].min() > 0.9  # its partner's object


def test_temperature_is_learned_and_positive():
    mixer = TransformMix(5, init_temperature=0.3)
    assert math.isclose(mixer.temperature.item(), 0.3, rel_tol=1e-6)
    assert "log_temperature" in dict(mixer.named_parameters())


def test_saliency_model_is_used_not_owned(teacher):
    mixer = TransformMix(5, saliency=teacher)
    assert all(not name.startswith("features") for name, _ in mixer.named_parameters())
    assert not any(key.startswith("_saliency") for key in mixer.state_dict())


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda x, y: (x[0], y), ValueError, "x: expected images of shape (N, C, H, W)"),
        (lambda x, y: (x, y[:-1]), ValueError, "y: expected 6 labels"),
        (lambda x, y: (x, y + 10), ValueError, "y: class indices must lie in [0, 5)"),
        (lambda x, y: (x, y.float()), TypeError, "y: 1-D labels must be int64"),
        (lambda x, y: (x, torch.rand(6, 3)), ValueError, "num_classes=5 columns"),
        (lambda x, y: (x.masked_fill(x > 1.5, float("nan")), y), ValueError, "x: images contain NaN"),
        (lambda x, y: (x.masked_fill(x > 1.5, float("inf")), y), ValueError, "x: images contain NaN or infinite"),
        (lambda x, y: ((x * 255).byte(), y), TypeError, "x: expected a floating-point tensor"),
        (lambda x, y: (x[:2], y[:2]), ValueError, "k: 3 inputs per mixed image need a batch of at least 3"),
    ],
)
def test_bad_input_is_named(make, error, words, batch):
    x, y = make(*batch)
    with pytest.raises(error) as info:
        TransformMix(5, k=3).mix(x, y)
    assert words in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_agrees_with_the_elementwise_check(dtype):
    """The one-sum shortcut decides as ``torch.isfinite(x).all()`` does, also when the sum overflows."""
    big = torch.finfo(dtype).max
    cases = {
        "ordinary": torch.randn(4, 3, 5, 5),
        "nan in one pixel": torch.randn(300).index_fill(0, torch.tensor([137]), float("nan")).view(4, 3, 5, 5),
        "inf and -inf": torch.tensor([float("inf"), float("-inf"), 1.0]),
        "-inf alone": torch.tensor([0.0, float("-inf")]),
        "finite values whose sum overflows": torch.full((8,), big, dtype=torch.float64),
    }
    for name, values in cases.items():
        x = values.to(dtype)
        assert all_finite(x) == bool(torch.isfinite(x).all()), name
    assert not all_finite(torch.tensor([float("nan")]).to(dtype))
    assert all_finite(torch.full((8,), big, dtype=dtype))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"k": 1}, "k: expected an int >= 2"),
        ({"alpha": 0}, "alpha: expected a finite number > 0"),
        ({"prob": 1.5}, "prob: expected a finite number in [0, 1]"),
        ({"label_smoothing": 1.0}, "label_smoothing: expected a finite number in [0, 1)"),
        ({"mode": "puzzle"}, "mode: expected one of"),
        ({"size": 4}, "size: expected an int >= 8"),
        ({"balance": "yes"}, "balance: expected True or False"),
        ({"saliency": 3}, "saliency"),
    ],
)
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as info:
        TransformMix(5, **kwargs)
    assert words in str(info.value)


def test_generator_must_be_on_the_cpu(batch):
    with pytest.raises(TypeError, match="generator: expected a torch.Generator"):
        TransformMix(5).mix(*batch, generator=123)


# Pins: each test below fails if the step it names is skipped or broken in the mixer.


def rebuild(x, out):
    """The mix a result describes: warp each input with its theta, weight by its mask, sum over K."""
    moved = warp(x[out.index], out.thetas)
    return (moved * out.masks[:, :, None]).sum(1)


def test_images_rebuild_from_index_thetas_and_masks_with_moved_inputs():
    x, y = blob_batch(n=6, size=24)
    mixer = searched_like(TransformMix(5, size=16))
    out = mixer.mix(x, y, generator=gen(7))
    mixed = out.lam[:, 0] < 1
    identity = torch.eye(2, 3).expand_as(out.thetas)
    assert (out.thetas[mixed] - identity[mixed]).abs().amax() > 0.05  # the inputs really move
    torch.testing.assert_close(out.images, rebuild(x, out), atol=1e-5, rtol=1e-5)


def shifting_mixer(shift: float, **kwargs) -> TransformMix:
    """A stn-only mixer whose transformer moves input 1 by ``shift`` (normalised x units), input 0 not."""
    mixer = TransformMix(2, mode="stn-only", alpha=1000.0, max_translation=1.0, **kwargs)
    head = mixer.stn.head
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[6 + 4] = math.atanh(shift / mixer.stn.max_translation)  # input 1's x translation
    return mixer


def test_a_known_shift_moves_the_mask_peak_with_the_object():
    """Masks come from the moved saliency: input 1's mask follows its object to where it was moved."""
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 4:10, 4:10] = 1.0  # sample 0's object, top left
    x[1, :, 20:26, 4:10] = 1.0  # sample 1's object, bottom left
    y = torch.tensor([0, 1])
    brightness = lambda images, targets: images.mean(1)  # noqa: E731
    # affine_grid maps output to input: output(p) = input(p - 0.5) moves content 0.5 * 16 = 8 px right.
    out = shifting_mixer(-0.5, saliency=brightness, size=32).mix(x, y, generator=gen(0))
    partner = out.index[0, 1]
    assert partner == 1
    torch.testing.assert_close(out.thetas[0, 1, 0, 2], torch.tensor(-0.5))
    columns = out.masks[0, 1].sum(0)  # (W,) input 1's mask in sample 0, summed over rows
    rows = out.masks[0, 1].sum(1)
    centre_x = float((columns * torch.arange(32)).sum() / columns.sum())
    centre_y = float((rows * torch.arange(32)).sum() / rows.sum())
    assert abs(centre_x - (6.5 + 8)) < 2.0, centre_x  # unmoved saliency would leave it at 6.5
    assert centre_y > 16  # still in the bottom half, where sample 1's object is
    moved = warp(x[out.index], out.thetas)[0, 1, 0]
    assert moved[20:26, 12:18].min() > 0.99 and out.masks[0, 1, 20:26, 12:18].min() > 0.5


def test_transform_bounds_hold_under_a_huge_head(batch):
    x, y = batch
    mixer = TransformMix(5, max_translation=0.3, max_linear=0.2)
    torch.manual_seed(0)
    torch.nn.init.normal_(mixer.stn.head.weight, std=1e4)
    torch.nn.init.normal_(mixer.stn.head.bias, std=1e4)
    out = mixer.mix(x, y, generator=gen(0))
    linear, shift = out.thetas[..., :2], out.thetas[..., 2]
    eye = torch.eye(2)
    assert (linear - eye).abs().amax() <= 0.2 + 1e-6 and shift.abs().amax() <= 0.3 + 1e-6
    assert (linear - eye).abs().amax() > 0.19 and shift.abs().amax() > 0.29  # saturated, not zero
    assert torch.isfinite(out.images).all()


def test_the_noise_alone_changes_the_transforms(batch):
    """Same partners and lambdas, another noise seed: other transforms; the same seed: the same."""
    from dataclasses import replace

    from tmix_aug.sampling import draw_mix

    x, y = batch
    mixer = searched_like(TransformMix(5))
    labels = F.one_hot(y, 5).float()
    draw = draw_mix(len(x), 2, 1.0, 1.0, x.device, gen(0))
    a = mixer.mix_images(x, labels, draw)
    b = mixer.mix_images(x, labels, replace(draw, seed=draw.seed + 1))
    again = mixer.mix_images(x, labels, draw)
    assert torch.equal(a.thetas, again.thetas)
    assert (a.thetas - b.thetas).abs().amax() > 1e-4


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8, torch.int64])
def test_labels_of_any_integer_dtype(batch, dtype):
    x, y = batch
    mixer = TransformMix(5)
    out = mixer.mix(x, y.to(dtype), generator=gen(0))
    reference = mixer.mix(x, y, generator=gen(0))
    assert torch.equal(out.targets, reference.targets) and torch.equal(out.images, reference.images)


def test_mixup_enabled_false_turns_mixing_off_like_timm(batch):
    x, y = batch
    mixer = searched_like(TransformMix(5, label_smoothing=0.1))
    mixer.mixup_enabled = False
    images, targets = mixer(x, y)
    assert torch.equal(images, x)
    torch.testing.assert_close(targets, F.one_hot(y, 5).float() * 0.9 + 0.02)
    mixer.mixup_enabled = True
    assert not torch.equal(mixer(x, y)[0], x)


@pytest.mark.parametrize("name", ["alpha", "init_temperature", "max_translation", "max_linear", "prob", "label_smoothing"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_arguments_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name}: expected a finite number"):
        TransformMix(5, **{name: value})


def test_soft_targets_must_sum_to_one(batch):
    x, _ = batch
    soft = torch.softmax(torch.randn(len(x), 5), dim=1)
    TransformMix(5).mix(x, soft)  # sums to 1 up to rounding: accepted
    TransformMix(5).mix(x, soft.half().float())
    bad = soft.clone()
    bad[2] *= 15
    with pytest.raises(ValueError, match="y: soft target rows must sum to 1.*row 2 sums to 15"):
        TransformMix(5).mix(x, bad)
