"""Saliency maps for the mixer: class activation maps of a classifier, or a teacher-free detector.

Every saliency source is a callable ``(images (N, C, H, W), targets (N, num_classes)) -> (N, h, w)``
float32 non-negative maps at its own resolution; ``resize_and_normalize`` brings them to the
mixer's working resolution S x S and to [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import NormMlpClassifierHead
from torch import Tensor, nn
from torchvision.models import ResNet as TorchvisionResNet
from torchvision.transforms.v2.functional import gaussian_blur

SaliencyFn = Callable[[Tensor, Tensor], Tensor]

_MODELS = (
    "timm CNN classifiers whose head is global average pooling + nn.Linear (ResNet, "
    "EfficientNet, RegNet, ...) or global average pooling + LayerNorm + nn.Linear (ConvNeXt), "
    "and torchvision ResNet / ResNeXt / Wide-ResNet"
)
_SUPPORTED = "supported: " + _MODELS
_ACCEPTED = (
    "expected 'spectral' (teacher-free spectral residual), a classifier nn.Module (class "
    f"activation maps; {_MODELS}), a ClassActivationMap or SpectralResidual, or a "
    "callable(images, targets) -> (N, h, w) maps"
)
_CLASS_SOURCES = ("auto", "label", "prediction")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images: expected a torch.Tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(f"images: expected shape (N, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images: expected a floating-point tensor, got {images.dtype}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_non_negative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")


def _channel_values(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected a sequence of numbers (one per channel), got {values!r}"
        ) from None
    if not out:
        raise ValueError(f"{name}: expected one number per channel, got an empty sequence")
    return out


def _no_autocast(device: torch.device):
    """Context that turns off any autocast of the caller on ``device`` (for float32 maths)."""
    return torch.autocast(device.type, enabled=False)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, then give every submodule back its own training flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


@dataclass
class _Head:
    """Where a classifier's last feature map comes from and how its head maps it to logits."""

    features: Callable[[Tensor], Tensor]  # images -> (N, C_f, h, w)
    logits: Callable[[Tensor], Tensor]  # the model's own head: features -> (N, num_classes)
    linear: nn.Linear
    norm: nn.LayerNorm | None  # LayerNorm of the pooled features (ConvNeXt heads)


def _torchvision_resnet_head(net: TorchvisionResNet) -> _Head:
    if not isinstance(net.fc, nn.Linear):
        raise ValueError(
            f"cannot compute class activation maps for this torchvision ResNet: its fc is "
            f"{type(net.fc).__name__}, expected nn.Linear"
        )

    def features(x: Tensor) -> Tensor:
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def logits(feats: Tensor) -> Tensor:
        return net.fc(torch.flatten(net.avgpool(feats), 1))

    return _Head(features, logits, net.fc, None)


def _timm_head(net: nn.Module) -> _Head:
    unsupported = f"cannot compute class activation maps for {type(net).__name__}"
    if not all(hasattr(net, a) for a in ("forward_features", "forward_head", "get_classifier")):
        raise ValueError(
            f"{unsupported}: it has no forward_features / forward_head / get_classifier (timm) "
            f"and is not a torchvision ResNet; {_SUPPORTED}"
        )
    linear = net.get_classifier()
    if not isinstance(linear, nn.Linear):
        raise ValueError(
            f"{unsupported}: its classifier is {type(linear).__name__}, expected nn.Linear (a "
            f"model made with num_classes=0 has none); {_SUPPORTED}"
        )
    num_features = getattr(net, "num_features", linear.in_features)
    if linear.in_features != num_features:
        raise ValueError(
            f"{unsupported}: its head changes the pooled features ({num_features} channels) "
            f"before the classifier ({linear.in_features} inputs), e.g. MobileNetV3's conv_head "
            f"after pooling; {_SUPPORTED}"
        )
    norm = None
    for head in net.modules():
        if not (isinstance(head, NormMlpClassifierHead) and head.fc is linear):
            continue
        if not isinstance(head.pre_logits, nn.Identity):
            raise ValueError(
                f"{unsupported}: its head has a hidden layer between pooling and the "
                f"classifier; {_SUPPORTED}"
            )
        if isinstance(head.norm, nn.LayerNorm):
            norm = head.norm
        elif not isinstance(head.norm, nn.Identity):
            raise ValueError(
                f"{unsupported}: its head normalises the pooled features with "
                f"{type(head.norm).__name__}, expected a LayerNorm; {_SUPPORTED}"
            )
    return _Head(net.forward_features, net.forward_head, linear, norm)


class ClassActivationMap:
    """CAM saliency from a classifier whose head is global average pooling + linear.

    ``CAM = ReLU(sum_c w_c F_c)`` with ``F`` the last feature map (N, C_f, h, w) and ``w`` the
    classifier weights of the chosen class; with soft targets ``t`` the weight vector is
    ``t @ W``, a target-weighted CAM. For a ConvNeXt-style head (pooling, LayerNorm, linear)
    the map also uses the pooled features' mean and spread, so that, as for a plain head, its
    spatial mean plus the bias is exactly the logit. The bias is not part of the map.

    Each call runs the model once, in eval mode under ``torch.no_grad`` and the caller's
    autocast, and leaves it as it was (training flags, buffers, parameters); it may be in
    train mode (the model being trained as its own saliency source). The first call checks
    the model's own logits against the maps and raises ValueError if they disagree.

    Args:
        model: a timm CNN classifier (ResNet, EfficientNet, RegNet, ConvNeXt, ...) or a
            torchvision ResNet / ResNeXt / Wide-ResNet. DataParallel, DistributedDataParallel
            and torch.compile wrappers are looked through.
        class_source: which class the map is for: "label" (the targets, which must be over the
            model's classes), "prediction" (the model's top-1 class), or "auto" (the label when
            the targets have as many classes as the model, else the prediction).
        input_size: when the longer image side exceeds it, the batch is resized (bilinear,
            antialiased) to this longer side before the pass; None keeps full resolution.
        mean, std: per-channel normalisation applied to the images before the model, for
            pipelines whose images are not normalised as the model expects; default none.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_source: str = "auto",
        input_size: int | None = 112,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model: expected a classifier nn.Module, got {type(model).__name__}"
            )
        if class_source not in _CLASS_SOURCES:
            raise ValueError(
                f"class_source: expected one of {_CLASS_SOURCES}, got {class_source!r}"
            )
        if input_size is not None:
            _check_int("input_size", input_size, 1)
        self.mean = _channel_values("mean", mean)
        self.std = _channel_values("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std: expected positive values, got {std!r}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean, std: expected the same length, got {len(self.mean)} and {len(self.std)}"
            )
        self.model = model
        self.class_source = class_source
        self.input_size = input_size
        net = _unwrap(model)
        self._name = type(net).__name__
        if isinstance(net, TorchvisionResNet):
            self._head = _torchvision_resnet_head(net)
        else:
            self._head = _timm_head(net)
        self._head_checked = False

    @property
    def num_classes(self) -> int:
        """Number of classes of the model."""
        return self._head.linear.out_features

    def __call__(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Class activation maps.

        Args:
            images: (N, C, H, W) float, any float dtype, any device, any memory format.
            targets: (N, num_classes_task) float soft targets (rows sum to 1); may be None
                unless ``class_source`` is "label".

        Returns:
            (N, h, w) float32 non-negative maps on the images' device, without autograd graph.
        """
        maps, _ = self.scores(images, targets)
        return maps.clamp_min_(0)

    def scores(self, images: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The maps before the ReLU, and what their spatial mean lacks to be the logit.

        Args:
            images, targets: as for ``__call__``.

        Returns:
            maps (N, h, w) float32 and offsets (N,) float32 such that
            ``maps.mean((1, 2)) + offsets`` is the model's logit of the chosen class (for soft
            targets, the target-weighted sum of the logits).
        """
        _check_images(images)
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != images.shape[1]:
                raise ValueError(
                    f"{name}: has {len(values)} values for {images.shape[1]}-channel images"
                )
        use_labels = self._use_labels(targets, images.shape[0])
        weight = self._head.linear.weight
        with torch.no_grad(), _eval_mode(self.model):
            feats = self._head.features(self._prepare(images, weight.device, weight.dtype))
            if not self._head_checked:
                self._check_head(feats)
            with _no_autocast(feats.device):
                maps, offsets = self._class_maps(feats, targets if use_labels else None)
        return maps.to(images.device), offsets.to(images.device)

    def _use_labels(self, targets: Tensor | None, n: int) -> bool:
        """Validate ``targets``; True if the maps follow them, False for the top-1 prediction."""
        if targets is None:
            if self.class_source == "label":
                raise ValueError("targets: class_source='label' needs the targets, got None")
            return False
        if not isinstance(targets, Tensor):
            raise TypeError(
                f"targets: expected a torch.Tensor (N, num_classes), got {type(targets).__name__}"
            )
        if targets.ndim != 2 or not targets.is_floating_point():
            raise ValueError(
                f"targets: expected (N, num_classes) float soft targets, got shape "
                f"{tuple(targets.shape)} of {targets.dtype}"
            )
        if targets.shape[0] != n:
            raise ValueError(
                f"targets: expected {n} rows to match the images, got {targets.shape[0]}"
            )
        matches = targets.shape[1] == self.num_classes
        if self.class_source == "label" and not matches:
            raise ValueError(
                f"targets: class_source='label' needs targets over the model's "
                f"{self.num_classes} classes, got {targets.shape[1]}; use class_source='auto' "
                f"or 'prediction' for a model with another label space"
            )
        # (ours) "auto": the label when the model shares the label space, else its top-1 class.
        return self.class_source == "label" or (self.class_source == "auto" and matches)

    def _prepare(self, images: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Resize and normalise the batch as configured, on the model's device and dtype."""
        x = images.to(device=device, dtype=torch.float32)
        height, width = x.shape[-2:]
        with _no_autocast(device):
            if self.input_size is not None and max(height, width) > self.input_size:
                scale = self.input_size / max(height, width)
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=True)
            if self.mean is not None:
                x = x - torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            if self.std is not None:
                x = x / torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return x.to(dtype)

    def _linear_head(self, feats: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None,
                                                   Tensor | None]:
        """The head written as one linear map of the pooled features.

        Args:
            feats: (N, C_f, h, w) float32.

        Returns:
            z (N, C_f), the classifier's input; w (K, C_f) and b (K,) with logits ``z @ w.T + b``;
            for a LayerNorm head, shift and scale (N, 1) with ``z = (mean_p F_p - shift) * scale``
            (both None for a plain head).
        """
        linear, norm = self._head.linear, self._head.norm
        w = linear.weight.float()
        b = linear.bias.float() if linear.bias is not None else w.new_zeros(w.shape[0])
        z = feats.mean((2, 3))
        if norm is None:
            return z, w, b, None, None
        # LN(mean_p F_p) = mean_p[gamma * (F_p - mu) / sigma] + beta, mu and sigma of the pooled
        # vector: with gamma folded into w and W beta into b the map stays exact.
        shift = z.mean(1, keepdim=True)
        scale = torch.rsqrt(z.var(1, unbiased=False, keepdim=True) + norm.eps)
        if norm.bias is not None:
            b = b + w @ norm.bias.float()
        if norm.weight is not None:
            w = w * norm.weight.float()
        return (z - shift) * scale, w, b, shift, scale

    def _class_maps(self, feats: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """Pre-ReLU maps (N, h, w) and offsets (N,) for the targets, or the top-1 class."""
        feats = feats.float()
        z, w, b, shift, scale = self._linear_head(feats)
        if targets is None:
            top1 = (z @ w.T + b).argmax(1)
            vectors, offsets = w[top1], b[top1]
        else:
            targets = targets.to(device=feats.device, dtype=torch.float32)
            vectors, offsets = targets @ w, targets @ b
        maps = torch.einsum("nc,nchw->nhw", vectors, feats)
        if shift is not None:
            centre = (shift * vectors.sum(1, keepdim=True)).unsqueeze(-1)
            maps = (maps - centre) * scale.unsqueeze(-1)
        return maps, offsets

    def _check_head(self, feats: Tensor) -> None:
        """Once: the model's own logits must equal the mean of the per-position scores + bias."""
        unsupported = f"cannot compute class activation maps for {self._name}"
        channels = self._head.linear.in_features
        if feats.ndim != 4 or feats.shape[1] != channels:
            raise ValueError(
                f"{unsupported}: its last features have shape {tuple(feats.shape)}, expected an "
                f"NCHW map with {channels} channels (vision transformers and channels-last "
                f"feature models are not supported); {_SUPPORTED}"
            )
        theirs = self._head.logits(feats)
        with _no_autocast(feats.device):
            z, w, b, _, _ = self._linear_head(feats.float())
            ours = z @ w.T + b
            theirs = theirs.float()
        full_precision = (torch.float32, torch.float64)
        precise = feats.dtype in full_precision and self._head.linear.weight.dtype in full_precision
        tolerance = (1e-2 if precise else 1e-1) * theirs.abs().max().clamp_min(1e-6)
        if theirs.shape != ours.shape or not bool((theirs - ours).abs().max() <= tolerance):
            raise ValueError(
                f"{unsupported}: its head is not global average pooling + linear (its logits "
                f"differ from the mean of the per-position scores, e.g. max or avg+max pooling); "
                f"{_SUPPORTED}"
            )
        self._head_checked = True


class SpectralResidual:
    """Teacher-free saliency (Hou & Zhang 2007 spectral residual), needs no weights.

    Grayscale (mean over channels), resize to ``size`` x ``size``, FFT, log amplitude minus its
    3x3 local mean, inverse FFT with the original phase, squared magnitude, Gaussian blur; as
    in the authors' reference code (64 px, 3x3 mean with replicated edges, blur sigma 2.5).
    Batched on the images' device.

    Args:
        size: side of the square working resolution and of the output maps.
        blur_sigma: standard deviation of the final Gaussian blur, in pixels of the maps; 0
            turns the blur off.
        amplitude_floor: amplitudes below this fraction of the image's mean amplitude are
            raised to it before the logarithm (ours), so exact zeros of the spectrum of flat
            synthetic images do not dominate; 0 turns it off (as the reference code).
        margin: the image is mirrored by this fraction of ``size`` on every side before the
            FFT and the maps cropped back (ours). The FFT treats the image as periodic, so
            without it the jump between opposite borders lights up the corners of most
            natural images; 0 turns it off (as the reference code).
    """

    def __init__(
        self,
        *,
        size: int = 64,
        blur_sigma: float = 2.5,
        amplitude_floor: float = 1e-2,
        margin: float = 0.25,
    ) -> None:
        _check_int("size", size, 2)
        _check_non_negative("blur_sigma", blur_sigma)
        _check_non_negative("amplitude_floor", amplitude_floor)
        if not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"margin: expected a number in [0, 1), got {margin!r}")
        self.size = size
        self.blur_sigma = float(blur_sigma)
        self.amplitude_floor = float(amplitude_floor)
        self.pad = int(round(margin * size))

    def __call__(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Spectral residual saliency.

        Args:
            images: (N, C, H, W) float, any C, any float dtype, any device.
            targets: ignored (accepted for the common saliency signature).

        Returns:
            (N, size, size) float32 non-negative maps on the images' device, without autograd
            graph.
        """
        _check_images(images)
        size = (self.size, self.size)
        with torch.no_grad(), _no_autocast(images.device):
            gray = images.mean(dim=1, keepdim=True, dtype=torch.float32)
            gray = F.interpolate(gray, size=size, mode="bilinear", align_corners=False,
                                 antialias=True)
            if self.pad:
                gray = F.pad(gray, (self.pad,) * 4, mode="reflect")
            spectrum = torch.fft.fft2(gray)
            amplitude = spectrum.abs()
            floor = amplitude.mean((-2, -1), keepdim=True) * self.amplitude_floor
            log_amplitude = torch.log(torch.maximum(amplitude, floor.clamp_min(1e-12)))
            padded = F.pad(log_amplitude, (1, 1, 1, 1), mode="replicate")
            residual = log_amplitude - F.avg_pool2d(padded, 3, stride=1)
            maps = torch.fft.ifft2(torch.polar(residual.exp(), spectrum.angle())).abs().square()
            if self.blur_sigma > 0:
                kernel = min(2 * math.ceil(2 * self.blur_sigma) + 1, 2 * self.size - 1)
                maps = gaussian_blur(maps, [kernel, kernel], [self.blur_sigma, self.blur_sigma])
        end = self.pad + self.size
        return maps[:, 0, self.pad : end, self.pad : end].clamp_min(0)


def resize_and_normalize(maps: Tensor, size: int) -> Tensor:
    """Bring raw saliency maps to the mixer's resolution and to [0, 1].

    Bilinear resize, then per map ``(m - min) / (max - min)`` (ours: min-max). A constant map
    (range at most 1e-6 of its magnitude, e.g. an all-zero CAM) becomes all zeros.

    Args:
        maps: (N, h, w) real maps.
        size: side S of the output.

    Returns:
        (N, S, S) float32 in [0, 1].
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps: expected a torch.Tensor (N, h, w), got {type(maps).__name__}")
    if maps.ndim != 3 or maps.is_complex():
        raise ValueError(
            f"maps: expected real maps of shape (N, h, w), got {tuple(maps.shape)} of {maps.dtype}"
        )
    _check_int("size", size, 1)
    with _no_autocast(maps.device):
        maps = maps.float()
        if maps.shape[-2:] != (size, size):
            maps = F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True).squeeze(1)
        low = maps.amin((1, 2), keepdim=True)
        high = maps.amax((1, 2), keepdim=True)
        span = high - low
        flat = span <= 1e-6 * torch.maximum(high.abs(), low.abs())
        return ((maps - low) / torch.where(flat, 1.0, span)).masked_fill(flat, 0.0)


def create_saliency(spec: object) -> SaliencyFn:
    """A saliency function ``(images (N, C, H, W), targets (N, num_classes)) -> (N, h, w)``.

    Args:
        spec: "spectral" for ``SpectralResidual()``; a classifier nn.Module for
            ``ClassActivationMap(model)``; a ``ClassActivationMap``, ``SpectralResidual`` or any
            other callable(images, targets) is returned as is.

    Raises:
        ValueError: an unknown name, or a module that CAM does not support.
        TypeError: anything else.
    """
    if isinstance(spec, (ClassActivationMap, SpectralResidual)):
        return spec
    if isinstance(spec, str):
        if spec == "spectral":
            return SpectralResidual()
        raise ValueError(f"saliency: unknown name {spec!r}; {_ACCEPTED}")
    if isinstance(spec, nn.Module):
        try:
            return ClassActivationMap(spec)
        except ValueError as err:
            raise ValueError(
                f"saliency: {err}. To use a module that itself returns saliency maps, pass "
                f"lambda images, targets: module(images, targets)"
            ) from err
    if callable(spec):
        return spec
    raise TypeError(f"saliency: got {type(spec).__name__}; {_ACCEPTED}")
