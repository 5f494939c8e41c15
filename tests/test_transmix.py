"""TransMixLabels: captured attention, attention-weighted lambdas, no effect on the model, errors."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import Tensor, nn

from tmix_aug.functional import mix_labels, smooth_labels
from tmix_aug.result import MixResult
from tmix_aug.transmix import TransMixLabels

NUM_CLASSES = 10
# Fused (scaled_dot_product_attention) against timm's own materialised float32 weights:
# the observed difference is about 1e-8.
ATOL = 1e-6


def tiny_vit(**kwargs) -> nn.Module:
    """vit_tiny at 32x32 with 8x8 patches (4x4 grid) and two blocks."""
    options = dict(img_size=32, patch_size=8, depth=2, num_classes=NUM_CLASSES)
    options.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **options)


MODELS = {
    "vit": lambda: tiny_vit(),
    "vit-qk-norm": lambda: tiny_vit(qk_norm=True),
    "vit-reg4": lambda: tiny_vit(reg_tokens=4),
    "deit-distilled": lambda: timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
        num_classes=NUM_CLASSES,
    ),
    "dinov2-reg4": lambda: timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, depth=2, embed_dim=64, num_heads=2,
        num_classes=NUM_CLASSES,
    ),
    "deit3": lambda: timm.create_model(
        "deit3_small_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=64,
        num_heads=2, num_classes=NUM_CLASSES,
    ),
}


def images_for(model: nn.Module, n: int = 3, seed: int = 0) -> Tensor:
    size = model.patch_embed.img_size
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def unfused_reference(model: nn.Module, run) -> Tensor:
    """Class-token attention over the patches, read from timm's own unfused attention.

    With ``fused_attn = False`` timm computes ``softmax(q k^T * scale)`` itself and passes it
    through ``attn_drop``; we read it there, average the heads, drop the prefix tokens and
    renormalise. Returns (N, num_patches).
    """
    attn = model.blocks[-1].attn
    seen = {}
    handle = attn.attn_drop.register_forward_pre_hook(lambda module, args: seen.update(weights=args[0]))
    attn.fused_attn = False
    try:
        with torch.no_grad():
            run()
    finally:
        attn.fused_attn = True
        handle.remove()
    cls_row = seen["weights"][:, :, 0, model.num_prefix_tokens :].mean(dim=1)
    return cls_row / cls_row.sum(dim=-1, keepdim=True)


def make_result(masks: Tensor, labels: Tensor, index: Tensor, lam: Tensor | None = None) -> MixResult:
    """A MixResult built by hand around the given masks (N, K, H, W)."""
    n, k, h, w = masks.shape
    if lam is None:
        lam = masks.mean(dim=(2, 3))
    return MixResult(
        images=torch.zeros(n, 3, h, w),
        targets=mix_labels(labels, lam, index),
        masks=masks,
        thetas=torch.eye(2, 3).expand(n, k, 2, 3).clone(),
        lam=lam,
        index=index,
        saliency=torch.zeros(n, k, 0, 0),
        labels=labels,
    )


def shifted_index(n: int, k: int) -> Tensor:
    """(N, K) slot k filled by sample (i + k) mod N."""
    return (torch.arange(n)[:, None] + torch.arange(k)[None, :]) % n


def soft_masks(n: int, k: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    logits = torch.randn(n, k, *size, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(dim=1)


def patch_masks(cells: Tensor, patch: int) -> Tensor:
    """(N, gh, gw) {0, 1} patch selection -> (N, 2, H, W) masks: slot 0 on the selected patches."""
    inside = cells.float().repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
    return torch.stack([inside, 1.0 - inside], dim=1)


def hook_count(model: nn.Module) -> int:
    """How many hooks are attached to the modules TransMixLabels hooks."""
    attn = model.blocks[-1].attn
    return len(model.patch_embed._forward_pre_hooks) + len(attn._forward_pre_hooks) + len(attn.qkv._forward_hooks)


@pytest.mark.parametrize("name", list(MODELS))
def test_captured_attention_matches_unfused_reference(name):
    model = MODELS[name]().eval()
    attn = model.blocks[-1].attn
    assert attn.fused_attn, "the capture must be tested on the fused path"
    x = images_for(model)
    labels = TransMixLabels(model)
    with torch.no_grad():
        model(x)
    captured = labels.attention
    gh, gw = model.patch_embed.grid_size
    assert captured.shape == (3, gh, gw)
    assert captured.dtype == torch.float32
    torch.testing.assert_close(captured.sum(dim=(1, 2)), torch.ones(3), atol=ATOL, rtol=0)
    reference = unfused_reference(model, lambda: model(x))
    torch.testing.assert_close(captured.flatten(1), reference, atol=ATOL, rtol=0)


def test_captured_attention_honours_attention_mask():
    model = tiny_vit().eval()
    x = images_for(model)
    tokens = 1 + 16
    allowed = torch.rand(3, 1, tokens, tokens, generator=torch.Generator().manual_seed(1)) > 0.5
    allowed[..., 0] = True  # every query sees the class token, so no row is empty
    labels = TransMixLabels(model)
    with torch.no_grad():
        model.forward_features(x, attn_mask=allowed)
    reference = unfused_reference(model, lambda: model.forward_features(x, attn_mask=allowed))
    torch.testing.assert_close(labels.attention.flatten(1), reference, atol=ATOL, rtol=0)
    blocked = ~allowed[:, 0, 0, 1:].reshape(3, 4, 4)
    assert bool((labels.attention[blocked] == 0).all())


def test_dynamic_img_size_uses_grid_of_actual_input():
    model = tiny_vit(dynamic_img_size=True).eval()
    x = torch.randn(2, 3, 32, 48)
    labels = TransMixLabels(model)
    with torch.no_grad():
        model(x)
    assert labels.attention.shape == (2, 4, 6)
    reference = unfused_reference(model, lambda: model(x))
    torch.testing.assert_close(labels.attention.flatten(1), reference, atol=ATOL, rtol=0)
    masks = soft_masks(2, 2, (32, 48))
    y = smooth_labels(torch.tensor([1, 2]), NUM_CLASSES)
    lam = labels.lambdas(make_result(masks, y, shifted_index(2, 2)))
    torch.testing.assert_close(lam.sum(dim=1), torch.ones(2), atol=ATOL, rtol=0)


@pytest.mark.parametrize("k", [2, 3])
def test_lambdas_and_targets_sum_to_one_for_soft_masks(k):
    model = tiny_vit().eval()
    n = 4
    labels = TransMixLabels(model)
    y = smooth_labels(torch.tensor([0, 3, 5, 9]), NUM_CLASSES, 0.1)
    result = make_result(soft_masks(n, k, (32, 32)), y, shifted_index(n, k))
    with torch.no_grad():
        model(images_for(model, n))
    attention = labels.attention.flatten(1)
    # Soft masks sampled at each 8x8 patch's centre pixel (4, 4).
    cells = result.masks[:, :, 4::8, 4::8].flatten(2)
    expected = torch.einsum("nkp,np->nk", cells, attention)
    lam = labels.lambdas(result)
    assert lam.shape == (n, k)
    torch.testing.assert_close(lam.sum(dim=1), torch.ones(n), atol=ATOL, rtol=0)
    torch.testing.assert_close(lam, expected / expected.sum(dim=1, keepdim=True), atol=ATOL, rtol=0)
    with torch.no_grad():
        model(images_for(model, n))
    targets = labels.relabel(result)
    assert targets.shape == (n, NUM_CLASSES)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(n), atol=ATOL, rtol=0)


def test_box_mask_gets_the_attention_inside_the_box():
    model = tiny_vit().eval()
    n = 3
    labels = TransMixLabels(model)
    with torch.no_grad():
        model(images_for(model, n))
    attention = labels.attention.clone()
    box = torch.zeros(n, 4, 4, dtype=torch.bool)
    box[:, 1:3, 0:3] = True  # a CutMix box on patches rows 1-2, columns 0-2
    y = smooth_labels(torch.tensor([1, 4, 7]), NUM_CLASSES)
    index = shifted_index(n, 2)
    result = make_result(patch_masks(box, 8), y, index)
    lam = labels.lambdas(result)
    inside = (attention * box).sum(dim=(1, 2))
    torch.testing.assert_close(lam[:, 0], inside, atol=ATOL, rtol=0)
    torch.testing.assert_close(lam[:, 1], 1.0 - inside, atol=ATOL, rtol=0)


def test_mask_covering_exactly_the_attended_patches_gets_all_label_mass():
    model = tiny_vit().eval()
    n, tokens = 3, 1 + 16
    attended = torch.zeros(n, 4, 4, dtype=torch.bool)
    attended[0, 0, :2] = True
    attended[1, 2:, 3] = True
    attended[2, 1, 1] = True
    allowed = torch.ones(n, 1, tokens, tokens, dtype=torch.bool)
    allowed[:, 0, 0, 1:] = attended.flatten(1)  # the class token sees only these patches
    labels = TransMixLabels(model)
    y = smooth_labels(torch.tensor([2, 5, 8]), NUM_CLASSES, 0.1)
    index = shifted_index(n, 2)
    result = make_result(patch_masks(attended, 8), y, index)
    with torch.no_grad():
        model.forward_features(images_for(model, n), attn_mask=allowed)
    assert bool((labels.attention[~attended] == 0).all())
    targets = labels.relabel(result)
    torch.testing.assert_close(targets, y[index[:, 0]], atol=ATOL, rtol=0)
    assert bool((targets > 0).all()), "label smoothing must be kept"


def test_area_weight_averages_with_the_area_lambda():
    model = tiny_vit().eval()
    n, k = 4, 3
    attention_only = TransMixLabels(model)
    averaged = TransMixLabels(model, area_weight=0.5)
    y = smooth_labels(torch.arange(n), NUM_CLASSES)
    result = make_result(soft_masks(n, k, (32, 32), seed=3), y, shifted_index(n, k))
    with torch.no_grad():
        model(images_for(model, n))
    lam_attention = attention_only.lambdas(result)
    lam = averaged.lambdas(result)
    torch.testing.assert_close(lam, 0.5 * lam_attention + 0.5 * result.lam, atol=ATOL, rtol=0)
    torch.testing.assert_close(lam.sum(dim=1), torch.ones(n), atol=ATOL, rtol=0)
    assert not torch.allclose(lam_attention, result.lam, atol=1e-3), "the test needs lambdas that differ"


@pytest.mark.parametrize("name", ["vit", "deit-distilled", "vit-reg4"])
def test_logits_and_gradients_unchanged_by_the_hooks(name):
    model = MODELS[name]().train()
    x = images_for(model, 4)
    y = torch.tensor([0, 1, 2, 3])

    def step(m):
        m.zero_grad(set_to_none=True)
        logits = m(x)
        nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}

    plain = copy.deepcopy(model)
    logits_plain, grads_plain = step(plain)
    labels = TransMixLabels(model)
    logits_hooked, grads_hooked = step(model)
    assert labels.attention is not None
    assert torch.equal(logits_plain, logits_hooked)
    assert grads_plain.keys() == grads_hooked.keys()
    for key in grads_plain:
        assert torch.equal(grads_plain[key], grads_hooked[key]), key


def test_relabel_in_a_training_step_gives_finite_loss_and_gradients():
    model = tiny_vit().train()
    n = 4
    labels = TransMixLabels(model, area_weight=0.5)
    y = smooth_labels(torch.tensor([0, 1, 2, 3]), NUM_CLASSES, 0.1)
    result = make_result(soft_masks(n, 2, (32, 32)), y, shifted_index(n, 2))
    result.images = images_for(model, n)
    logits = model(result.images)
    targets = labels.relabel(result)
    assert not targets.requires_grad
    loss = torch.sum(-targets * logits.log_softmax(dim=-1), dim=-1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_without_class_token_is_rejected():
    model = tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        TransMixLabels(model)


def test_model_that_is_not_a_vit_is_rejected():
    with pytest.raises(TypeError, match="VisionTransformer-like"):
        TransMixLabels(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="model: expected a timm vision transformer"):
        TransMixLabels("vit_tiny_patch16_224")


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5", True])
def test_bad_area_weight(value):
    with pytest.raises(ValueError, match="area_weight"):
        TransMixLabels(tiny_vit(), area_weight=value)


def test_relabel_needs_a_fresh_forward():
    model = tiny_vit().eval()
    labels = TransMixLabels(model)
    y = smooth_labels(torch.arange(2), NUM_CLASSES)
    result = make_result(soft_masks(2, 2, (32, 32)), y, shifted_index(2, 2))
    with pytest.raises(RuntimeError, match="no forward"):
        labels.relabel(result)
    with torch.no_grad():
        model(images_for(model, 2))
    labels.relabel(result)
    assert labels.attention is None
    with pytest.raises(RuntimeError, match="no forward"):
        labels.relabel(result)


def test_relabel_rejects_a_batch_of_another_size():
    model = tiny_vit().eval()
    labels = TransMixLabels(model)
    with torch.no_grad():
        model(images_for(model, 3))
    y = smooth_labels(torch.arange(2), NUM_CLASSES)
    with pytest.raises(ValueError, match="batch of 3 images but the mix has 2"):
        labels.relabel(make_result(soft_masks(2, 2, (32, 32)), y, shifted_index(2, 2)))


def test_relabel_rejects_other_types():
    model = tiny_vit().eval()
    labels = TransMixLabels(model)
    with pytest.raises(TypeError, match="result: expected a MixResult"):
        labels.relabel(torch.zeros(2, 2, 32, 32))


def test_token_dropping_is_reported():
    model = tiny_vit(patch_drop_rate=0.5).train()
    labels = TransMixLabels(model)
    model(images_for(model, 2))
    with pytest.raises(ValueError, match="patch_drop_rate"):
        labels.attention
    y = smooth_labels(torch.arange(2), NUM_CLASSES)
    with pytest.raises(ValueError, match="patch_drop_rate"):
        labels.relabel(make_result(soft_masks(2, 2, (32, 32)), y, shifted_index(2, 2)))


def test_distributed_data_parallel_model_is_unwrapped(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = tiny_vit().eval()
        wrapped = nn.parallel.DistributedDataParallel(model)
        labels = TransMixLabels(wrapped)
        assert hook_count(model) == 3
        x = images_for(model, 2)
        with torch.no_grad():
            wrapped(x)
        reference = unfused_reference(model, lambda: model(x))
        torch.testing.assert_close(labels.attention.flatten(1), reference, atol=ATOL, rtol=0)
    finally:
        dist.destroy_process_group()


def test_remove_detaches_the_hooks():
    model = tiny_vit().eval()
    x = images_for(model, 2)
    labels = TransMixLabels(model)
    assert hook_count(model) == 3 and labels.attached
    with torch.no_grad():
        model(x)
    labels.remove()
    assert hook_count(model) == 0 and not labels.attached
    assert labels.attention is None
    with torch.no_grad():
        model(x)
    assert labels.attention is None
    y = smooth_labels(torch.arange(2), NUM_CLASSES)
    with pytest.raises(RuntimeError, match="removed"):
        labels.relabel(make_result(soft_masks(2, 2, (32, 32)), y, shifted_index(2, 2)))
    labels.remove()


def test_context_manager_detaches_on_exit():
    model = tiny_vit().eval()
    with TransMixLabels(model) as labels:
        assert hook_count(model) == 3
        with torch.no_grad():
            model(images_for(model, 2))
        assert labels.attention.shape == (2, 4, 4)
    assert hook_count(model) == 0


def test_attention_is_float32_under_autocast():
    model = tiny_vit().eval()
    x = images_for(model, 2)
    labels = TransMixLabels(model)
    with torch.no_grad():
        model(x)
    full = labels.attention
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    assert labels.attention.dtype == torch.float32
    # q and k come from bfloat16 projections: agreement to bfloat16 precision.
    torch.testing.assert_close(labels.attention, full, atol=2e-3, rtol=0)


def test_with_constant_masks_gives_the_area_lambdas():
    from tmix_aug.mixer import TransformMix

    model = tiny_vit().train()
    labels = TransMixLabels(model)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    flat = lambda images, targets: torch.zeros(images.shape[0], 4, 4)  # noqa: E731 (no saliency anywhere)
    result = TransformMix(NUM_CLASSES, saliency=flat).mix(x, y, generator=torch.Generator().manual_seed(0))
    model(result.images)
    # Flat saliency and the zero-initialised last layers make every mask constant
    # (= lambda), so the attention (summing to 1) puts exactly lambda_k on input k.
    lam = labels.lambdas(result)
    torch.testing.assert_close(lam, result.lam, atol=ATOL, rtol=0)


def test_with_transformmix_saliency_masks():
    from tmix_aug.mixer import TransformMix

    model = tiny_vit().train()
    labels = TransMixLabels(model, area_weight=0.25)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    mixer = TransformMix(NUM_CLASSES, saliency="spectral", mode="saliency-softmax", label_smoothing=0.1)
    result = mixer.mix(x, y, generator=torch.Generator().manual_seed(0))
    model(result.images)
    attention = labels.attention.flatten(1)
    targets = labels.relabel(result)
    cells = result.masks[:, :, 4::8, 4::8].flatten(2)
    lam = torch.einsum("nkp,np->nk", cells, attention)
    lam = 0.75 * lam / lam.sum(dim=1, keepdim=True) + 0.25 * result.lam
    torch.testing.assert_close(targets, mix_labels(result.labels, lam, result.index), atol=ATOL, rtol=0)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6), atol=ATOL, rtol=0)
    assert not torch.allclose(targets, result.targets, atol=1e-3), "the masks must move some label mass"
