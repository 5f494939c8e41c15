"""Tests of tmix_aug.saliency: CAM identities, model state, spectral residual, dispatch."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tmix_aug.saliency import (
    ClassActivationMap,
    SpectralResidual,
    create_saliency,
    resize_and_normalize,
)

NUM_CLASSES = 5


def _perturb_head(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give linear and LayerNorm layers non-trivial weights and biases (init: 1 / 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                for param in (module.weight, module.bias):
                    if param is not None:
                        param.add_(0.5 * torch.randn(param.shape, generator=gen))
    return model


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return _perturb_head(timm.create_model(name, num_classes=NUM_CLASSES, **kwargs))


def _torchvision_resnet() -> nn.Module:
    torch.manual_seed(0)
    return _perturb_head(torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES))


MODELS = {
    "timm_resnet18": lambda: _timm("resnet18"),
    "efficientnet_b0": lambda: _timm("efficientnet_b0"),
    "convnext_atto": lambda: _timm("convnext_atto"),
    "regnetx_002": lambda: _timm("regnetx_002"),
    "torchvision_resnet18": _torchvision_resnet,
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: make() for name, make in MODELS.items()}


def _images(n: int = 3, size: int = 64, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _one_hot(labels: list[int], num_classes: int = NUM_CLASSES) -> torch.Tensor:
    return torch.eye(num_classes)[labels]


def _small_cam(model: nn.Module, **kwargs) -> ClassActivationMap:
    """CAM on the tests' small images: the identities under test hold at any map size, so the
    minimum map size (tested on its own) is lowered to 1."""
    return ClassActivationMap(model, min_map_size=1, **kwargs)


def _cam(model: nn.Module, **kwargs) -> ClassActivationMap:
    return _small_cam(model, input_size=None, **kwargs)


def test_cam_equals_hand_computed_reference_for_a_label(models):
    model = models["timm_resnet18"].eval()
    x, labels = _images(), [0, 3, 4]
    cam = _cam(model, class_source="label")(x, _one_hot(labels))
    with torch.no_grad():
        feats = model.forward_features(x)
    reference = torch.einsum("nc,nchw->nhw", model.fc.weight[labels], feats).relu()
    assert cam.shape == (3, 2, 2) and cam.dtype == torch.float32
    torch.testing.assert_close(cam, reference, rtol=1e-5, atol=1e-5)
    assert (cam >= 0).all() and (cam > 0).any()


@pytest.mark.parametrize("name", list(MODELS))
def test_mean_of_map_plus_bias_is_the_logit(models, name):
    model = models[name].eval()
    x, labels = _images(), [1, 4, 2]
    with torch.no_grad():
        logits = model(x)
    assert logits.std() > 0.1, "the test needs non-trivial logits"
    cam = _cam(model, class_source="label")
    maps, offsets = cam.scores(x, _one_hot(labels))
    assert maps.shape == (3, 2, 2)
    torch.testing.assert_close(maps.mean((1, 2)) + offsets, logits[range(3), labels],
                               rtol=1e-4, atol=1e-4)
    soft = torch.softmax(torch.randn(3, NUM_CLASSES, generator=torch.Generator().manual_seed(2)), 1)
    maps, offsets = cam.scores(x, soft)
    torch.testing.assert_close(maps.mean((1, 2)) + offsets, (soft * logits).sum(1),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cam(x, soft), maps.clamp_min(0))


def test_auto_uses_label_when_class_counts_match_else_prediction(models):
    model = models["convnext_atto"].eval()
    x = _images()
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    labels = [(c + 1) % NUM_CLASSES for c in top1]  # differs from the prediction everywhere
    by_label = _cam(model, class_source="label")(x, _one_hot(labels))
    by_prediction = _cam(model, class_source="prediction")(x, _one_hot(labels))
    as_top1 = _cam(model, class_source="label")(x, _one_hot(top1))
    torch.testing.assert_close(by_prediction, as_top1)
    assert not torch.allclose(by_label, by_prediction)
    auto = _cam(model)
    torch.testing.assert_close(auto(x, _one_hot(labels)), by_label)
    other_task = _one_hot([0, 1, 2], num_classes=NUM_CLASSES + 2)
    torch.testing.assert_close(auto(x, other_task), by_prediction)
    torch.testing.assert_close(auto(x, None), by_prediction)


def test_targets_are_checked(models):
    cam = _small_cam(models["timm_resnet18"], class_source="label")
    x = _images()
    with pytest.raises(ValueError, match="targets: class_source='label' needs targets over the "
                                         "model's 5 classes, got 7"):
        cam(x, _one_hot([0, 1, 2], num_classes=7))
    with pytest.raises(ValueError, match="targets: class_source='label' needs the targets"):
        cam(x, None)
    with pytest.raises(ValueError, match="targets: expected 3 rows"):
        cam(x, _one_hot([0, 1]))
    with pytest.raises(ValueError, match=r"targets: expected \(N, num_classes\) float"):
        cam(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("name", ["timm_resnet18", "torchvision_resnet18"])
def test_model_state_is_untouched_by_a_call_in_train_mode(name):
    model = MODELS[name]().train()
    model.layer1[0].eval()  # mixed flags must come back exactly
    model.conv1.weight.requires_grad_(False)
    flags = {n: m.training for n, m in model.named_modules()}
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cam = _small_cam(model)
    x = _images(size=48)
    maps = cam(x, _one_hot([0, 1, 2]))
    maps_again = cam(x, _one_hot([0, 1, 2]))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == requires_grad
    after = model.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in after)
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    for module in model.modules():
        assert not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
    torch.testing.assert_close(maps, maps_again)
    with torch.no_grad():  # the maps used the running statistics, not the batch's
        model.eval()
        if hasattr(model, "forward_features"):
            feats = model.forward_features(x)
        else:
            feats = model.layer4(model.layer3(model.layer2(model.layer1(
                model.maxpool(model.relu(model.bn1(model.conv1(x))))))))
    reference = torch.einsum("nc,nchw->nhw", model.fc.weight[:3], feats).relu()
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-5)


def test_output_has_no_autograd_graph(models):
    model = models["timm_resnet18"]
    assert all(p.requires_grad for p in model.parameters())
    x = _images().requires_grad_(True)
    maps = _small_cam(model)(x, _one_hot([0, 1, 2]))
    assert not maps.requires_grad and maps.grad_fn is None
    spectral = SpectralResidual()(x, None)
    assert not spectral.requires_grad and spectral.grad_fn is None


def test_unsupported_models_raise_a_helpful_value_error():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no forward_features.*supported: timm CNN"):
        _small_cam(plain)
    with pytest.raises(ValueError, match="MobileNetV3's conv_head.*supported"):
        _small_cam(timm.create_model("mobilenetv3_small_050", num_classes=NUM_CLASSES))
    with pytest.raises(ValueError, match="classifier is Identity, expected nn.Linear"):
        _small_cam(timm.create_model("resnet18", num_classes=0))
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="expected an NCHW map with 192 channels.*transformers"):
        _small_cam(vit)(_images(size=32), _one_hot([0, 1, 2]))
    max_pool = timm.create_model("resnet18", num_classes=NUM_CLASSES, global_pool="max")
    with pytest.raises(ValueError, match=r"not global average pooling \+ linear"):
        # 64 px gives 2 x 2 features, where max and mean pooling differ
        _small_cam(max_pool)(_images(size=64), _one_hot([0, 1, 2]))
    with pytest.raises(TypeError, match="model: expected a classifier nn.Module"):
        _small_cam("resnet18")


def test_constructor_and_call_argument_errors(models):
    model = models["timm_resnet18"]
    with pytest.raises(ValueError, match="class_source: expected one of"):
        _small_cam(model, class_source="labels")
    with pytest.raises(ValueError, match="input_size: expected an int >= 1"):
        _small_cam(model, input_size=0)
    with pytest.raises(ValueError, match="std: expected positive"):
        _small_cam(model, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mean, std: expected the same length"):
        _small_cam(model, mean=(0.5, 0.5, 0.5), std=(0.2,))
    with pytest.raises(ValueError, match="mean: has 3 values for 1-channel images"):
        _small_cam(model, mean=(0.5, 0.5, 0.5))(_images(channels=1), None)
    with pytest.raises(TypeError, match="images: expected a floating-point tensor"):
        _small_cam(model)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), None)


def test_input_size_downsizes_the_pass(models):
    model = models["timm_resnet18"]
    x = _images(n=2, size=128)
    assert _small_cam(model, input_size=None)(x, None).shape == (2, 4, 4)
    assert _small_cam(model, input_size=64)(x, None).shape == (2, 2, 2)
    assert _small_cam(model, input_size=256)(x, None).shape == (2, 4, 4)
    wide = torch.randn(2, 3, 64, 128)
    assert _small_cam(model, input_size=64)(wide, None).shape == (2, 1, 2)


def test_mean_std_normalise_before_the_model(models):
    model = models["efficientnet_b0"]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    normalised = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    targets = _one_hot([1, 2])
    expected = _cam(model)(normalised, targets)
    torch.testing.assert_close(_cam(model, mean=mean, std=std)(raw, targets), expected,
                               rtol=1e-4, atol=1e-5)


def test_low_precision_autocast_and_channels_last(models):
    model = models["timm_resnet18"]
    x, targets = _images(n=2), _one_hot([0, 1])
    reference = _cam(model)(x, targets)
    low_input = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _cam(model)(low_input, targets)
    assert low.dtype == torch.float32 and low.shape == reference.shape
    assert (low - reference).abs().max() <= 0.1 * reference.abs().max()


def _square_images(channels: int, size: int = 96) -> torch.Tensor:
    """Two images, flat 0.2 with a bright square: rows 20:36, cols 50:66 and rows 60:80, 10:30."""
    x = torch.full((2, channels, size, size), 0.2)
    x[0, :, 20:36, 50:66] = 1.0
    x[1, :, 60:80, 10:30] = 1.0
    return x


@pytest.mark.parametrize("channels", [1, 3])
def test_spectral_residual_finds_a_bright_square(channels):
    maps = SpectralResidual(size=48)(_square_images(channels), None)
    assert maps.shape == (2, 48, 48) and maps.dtype == torch.float32
    assert (maps >= 0).all()
    for i, (top, left, side) in enumerate([(10, 25, 8), (30, 5, 10)]):  # squares at 48 px
        row, col = divmod(int(maps[i].argmax()), 48)
        assert top <= row < top + side and left <= col < left + side


def test_spectral_residual_accepts_low_precision_and_any_size():
    x = _square_images(3, size=40).to(torch.bfloat16)
    maps = SpectralResidual()(x, None)
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32 and (maps >= 0).all()
    assert torch.isfinite(SpectralResidual()(torch.zeros(1, 3, 16, 16))).all()
    with pytest.raises(ValueError, match="size: expected an int >= 2"):
        SpectralResidual(size=1)
    with pytest.raises(ValueError, match="blur_sigma: expected a finite number >= 0"):
        SpectralResidual(blur_sigma=-1.0)


def test_resize_and_normalize_gives_unit_range_and_zeros_for_constant_maps():
    maps = torch.randn(4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    maps[2] = 7.0
    maps[3] = 0.0
    out = resize_and_normalize(maps, 16)
    assert out.shape == (4, 16, 16) and out.dtype == torch.float32
    assert (out >= 0).all() and (out <= 1).all()
    torch.testing.assert_close(out[:2].amin((1, 2)), torch.zeros(2))
    torch.testing.assert_close(out[:2].amax((1, 2)), torch.ones(2))
    assert torch.equal(out[2:], torch.zeros(2, 16, 16))
    same_size = torch.tensor([[[0.0, 2.0], [4.0, 8.0]]])
    torch.testing.assert_close(resize_and_normalize(same_size, 2), same_size / 8)
    with pytest.raises(ValueError, match=r"maps: expected real maps of shape \(N, h, w\)"):
        resize_and_normalize(torch.zeros(2, 1, 4, 4), 8)
    with pytest.raises(ValueError, match="size: expected an int >= 1"):
        resize_and_normalize(maps, 0)


def test_create_saliency_dispatch_and_errors(models):
    assert isinstance(create_saliency("spectral"), SpectralResidual)
    cam = create_saliency(models["timm_resnet18"])
    assert isinstance(cam, ClassActivationMap) and cam.model is models["timm_resnet18"]
    assert create_saliency(cam) is cam
    spectral = SpectralResidual(size=16)
    assert create_saliency(spectral) is spectral

    def custom(images, targets):
        return images.mean(1)

    assert create_saliency(custom) is custom
    with pytest.raises(ValueError, match="saliency: unknown name 'cam'; expected 'spectral'"):
        create_saliency("cam")
    with pytest.raises(TypeError, match="saliency: got int; expected 'spectral'.*callable"):
        create_saliency(3)
    with pytest.raises(ValueError, match="saliency: cannot compute class activation maps.*"
                                         "lambda images, targets"):
        create_saliency(nn.Conv2d(3, 1, 1))


def test_spectral_residual_peaks_on_the_object_not_the_corners():
    """Objects on textured, non-periodic backgrounds: the FFT's wrap-around lights up the
    image border unless the image is mirrored first (margin)."""
    from tmix_aug.synthetic import SHAPES, render_object

    rendered = [render_object(SHAPES[i % 8], 32, torch.Generator().manual_seed(i)) for i in range(16)]
    x = torch.stack([image for image, _ in rendered])
    near_object = F.max_pool2d(torch.stack([mask for _, mask in rendered])[:, None], 5, 1, 2)[:, 0] > 0
    near_object = F.interpolate(near_object[:, None].float(), size=64, mode="nearest")[:, 0] > 0
    for margin, on_object_at_least, on_border_at_least in ((0.0, 0, 10), (0.25, 15, 0)):
        maps = SpectralResidual(margin=margin)(x, None)
        peak = maps.flatten(1).argmax(1)
        on_object = int(near_object.flatten(1).gather(1, peak[:, None]).sum())
        rows, cols = peak // 64, peak % 64
        on_border = int(((rows == 0) | (rows == 63) | (cols == 0) | (cols == 63)).sum())
        assert on_object >= on_object_at_least and on_border >= on_border_at_least, (margin, on_object, on_border)
    assert on_border == 0  # with the margin, no peak on the border


def test_cam_looks_through_a_distributed_data_parallel_wrapper(models, tmp_path):
    """World size 1 in this process, gloo: the wrapped model gives the plain model's maps."""
    import torch.distributed as dist

    model = models["timm_resnet18"]
    x, targets = _images(), _one_hot([0, 1, 2])
    plain = _cam(model)(x, targets)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        torch.testing.assert_close(_cam(wrapped)(x, targets), plain, rtol=0, atol=0)
        assert wrapped.module is model
    finally:
        dist.destroy_process_group()


def test_cam_looks_through_a_torch_compile_wrapper(models):
    """The maps come from the model inside the wrapper (``_orig_mod``), so nothing is compiled:
    the compiled forward is never run, and a torchvision ResNet is still recognised."""
    for name in ("torchvision_resnet18", "timm_resnet18"):
        model = models[name]
        compiled = torch.compile(model)
        assert compiled._orig_mod is model
        x, targets = _images(), _one_hot([0, 1, 2])
        torch.testing.assert_close(_cam(compiled)(x, targets), _cam(model)(x, targets), rtol=0, atol=0)


class PooledFeatures(nn.Module):
    """A CAM-able classifier whose last feature map is 1x1 (stride = image size)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, NUM_CLASSES)

    def forward_features(self, x):
        return self.conv(x).mean((2, 3), keepdim=True)

    def forward_head(self, x, pre_logits: bool = False):
        return self.fc(x.mean((2, 3)))

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class Stride16(PooledFeatures):
    """A CAM-able classifier with output stride 16."""

    def forward_features(self, x):
        return F.avg_pool2d(self.conv(x), 16)


def test_a_cam_below_the_minimum_map_size_raises_with_the_fixes():
    from tmix_aug import TransformMix
    from tmix_aug.saliency import MIN_MAP_SIZE

    x, targets = _images(size=32), _one_hot([0, 1, 2])
    with pytest.raises(ValueError) as info:
        ClassActivationMap(PooledFeatures())(x, targets)
    message = str(info.value)
    for words in ("1x1 cells for 32x32 images", f"minimum of {MIN_MAP_SIZE}x{MIN_MAP_SIZE}", "upscale=True",
                  "output_stride", "saliency='spectral'", "teacher"):
        assert words in message, words
    with pytest.raises(ValueError, match="1x1 cells"):  # through a mixer, at its first mix
        TransformMix(NUM_CLASSES, saliency=PooledFeatures()).mix(x, torch.tensor([0, 1, 2]))
    # The named fix works: a stride-16 model gives 2x2 maps at 32 px, 4x4 on the upsized pass.
    with pytest.raises(ValueError, match="2x2 cells for 32x32 images.*input_size=64, upscale=True"):
        ClassActivationMap(Stride16())(x, targets)
    assert ClassActivationMap(Stride16(), input_size=64, upscale=True)(x, targets).shape == (3, 4, 4)
    assert ClassActivationMap(PooledFeatures(), min_map_size=1)(x, targets).shape == (3, 1, 1)
    with pytest.raises(ValueError, match="upscale: needs an input_size"):
        ClassActivationMap(Stride16(), input_size=None, upscale=True)


def test_saliency_source_is_a_visible_holder_not_a_submodule(models):
    from tmix_aug import TransformMix
    from tmix_aug.saliency import SaliencySource

    model = models["timm_resnet18"]
    mixer = TransformMix(NUM_CLASSES, saliency=model)
    assert isinstance(mixer.saliency, SaliencySource) and mixer.saliency.size == mixer.size
    assert isinstance(mixer.saliency.fn, ClassActivationMap) and mixer.saliency.fn.model is model
    assert "saliency" not in dict(mixer.named_children())
    assert not any(name.startswith("saliency") for name in mixer.state_dict())
    maps = SaliencySource("spectral", 8)(_images(size=32), _one_hot([0, 1, 2]))
    assert maps.shape == (3, 8, 8) and maps.min() >= 0 and maps.max() <= 1
