"""Class activation maps (CAM) of a classifier whose head is global average pooling + linear."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import NormMlpClassifierHead
from timm.utils import unwrap_model
from torch import Tensor, nn
from torchvision.models import ResNet as TorchvisionResNet

from ..checks import check_bool, check_channel_values, check_choice, check_images, check_int

CAM_MODELS = (
    "timm CNN classifiers whose head is global average pooling + nn.Linear (ResNet, "
    "EfficientNet, RegNet, ...) or global average pooling + LayerNorm + nn.Linear (ConvNeXt), "
    "and torchvision ResNet / ResNeXt / Wide-ResNet"
)
_SUPPORTED = "supported: " + CAM_MODELS
_CLASS_SOURCES = ("auto", "label", "prediction")

MIN_MAP_SIZE = 4
"""Smallest map side, in cells, a CAM source may give (ours). The masks are a softmax over
maps upsampled from h x w cells: at 4 x 4 each cell is a quarter of the image side, the
coarsest grid on which an object can hold a centre block with background on every side; a
2 x 2 map upsamples to a ramp with one extreme per quadrant, and a 1 x 1 map is flat, which
turns TransformMix and SaliencyMix into plain Mixup and centred CutMix without a word. A
ResNet (stride 32) needs 128 px images for 4 x 4 maps."""


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
        upscale: also resize batches whose longer side is below ``input_size`` up to it, for
            small images whose maps would otherwise be too coarse (see ``min_map_size``).
        mean, std: per-channel normalisation applied to the images before the model, for
            pipelines whose images are not normalised as the model expects; default none.
        min_map_size: the smallest side, in cells, a map may have; a call that gives a
            smaller map raises ValueError naming the fixes (default ``MIN_MAP_SIZE``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_source: str = "auto",
        input_size: int | None = 112,
        upscale: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        min_map_size: int = MIN_MAP_SIZE,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model: expected a classifier nn.Module, got {type(model).__name__}"
            )
        check_choice("class_source", class_source, _CLASS_SOURCES)
        if input_size is not None:
            check_int("input_size", input_size, 1)
        if check_bool("upscale", upscale) and input_size is None:
            raise ValueError("upscale: needs an input_size to resize up to, got input_size=None")
        self.min_map_size = check_int("min_map_size", min_map_size, 1)
        self.mean = check_channel_values("mean", mean)
        self.std = check_channel_values("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std: expected positive values, got {std!r}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean, std: expected the same length, got {len(self.mean)} and {len(self.std)}"
            )
        self.model = model
        self.class_source = class_source
        self.input_size = input_size
        self.upscale = upscale
        net = unwrap_model(model)
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
        check_images(images, name="images")
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
            self._check_map_size(feats, images)
            with torch.autocast(feats.device.type, enabled=False):
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

    def pass_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) at which images of this size go through the model (see ``input_size``)."""
        longer = max(height, width)
        if self.input_size is None or longer == self.input_size:
            return height, width
        if longer < self.input_size and not self.upscale:
            return height, width
        scale = self.input_size / longer
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _prepare(self, images: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Resize and normalise the batch as configured, on the model's device and dtype."""
        x = images.to(device=device, dtype=torch.float32)
        size = self.pass_size(*x.shape[-2:])
        with torch.autocast(device.type, enabled=False):
            if size != tuple(x.shape[-2:]):
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

    def _check_map_size(self, feats: Tensor, images: Tensor) -> None:
        """Raise if the maps are smaller than ``min_map_size`` cells on a side (see ``MIN_MAP_SIZE``)."""
        cells = min(feats.shape[-2:])
        if cells >= self.min_map_size:
            return
        height, width = images.shape[-2:]
        wanted = max(self.pass_size(height, width)) * -(-self.min_map_size // cells)  # ceil division
        raise ValueError(
            f"saliency: the class activation maps of {self._name} are {feats.shape[-2]}x{feats.shape[-1]} "
            f"cells for {height}x{width} images, below the minimum of {self.min_map_size}x{self.min_map_size}: "
            f"masks made from them are nearly flat and the mix degrades to Mixup. Fixes: upsize the "
            f"saliency pass (ClassActivationMap(model, input_size={wanted}, upscale=True)), a model with "
            f"a smaller output stride (timm.create_model(..., output_stride=8 or 16) where supported), "
            f"saliency='spectral' (no model), or a teacher with finer maps (tmix-train --saliency "
            f"teacher). min_map_size=1 accepts such maps knowingly."
        )

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
        with torch.autocast(feats.device.type, enabled=False):
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
