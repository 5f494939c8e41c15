"""MobileNetV2 with TensorFlow "same" padding, for Google's TF-slim ImageNet weights (timm's ``tf_`` naming).

``tf_mobilenetv2_100``: timm's ``mobilenetv2_100`` built with ``pad_type="same"`` and the
TF-slim input normalisation (mean = std = 0.5 on [0, 1]), the set-up those weights were
trained with (symmetric padding costs them about 6 points of ImageNet top-1).

``tf_mobilenetv2_100_up2_os16``: the same network for 64 px images (Tiny-ImageNet): it
resizes its input 2x (bilinear) before the stem and runs at output stride 16, so a 64 px
image gives an 8x8 last feature map, hence 8x8 class activation maps, instead of the 2x2
of stride 32 at 64 px. Measured on Tiny-ImageNet val (benchmarks/results/tinyimagenet.md):
the ImageNet weights score 26% top-1 at 64 px and 45% upsized to 128 px, and only the
upsized CAMs find the object (deleting their top quarter costs the true class more than
deleting a same-shaped region elsewhere).

No weights are downloaded: pass ``checkpoint_path=`` (safetensors) to ``timm.create_model``.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from torch import nn

TF_MEAN = TF_STD = (0.5, 0.5, 0.5)

# MobileNetV2 (Sandler et al. 2018, table 2): expansion t, channels c, repeats n, first stride s.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _block_strings() -> list[list[str]]:
    """The stages in timm's block-string notation (depthwise-separable first, then inverted residuals)."""
    return [
        [f"ds_r{n}_k3_s{s}_c{c}" if t == 1 else f"ir_r{n}_k3_s{s}_e{t}_c{c}"] for t, c, n, s in _STAGES
    ]


class UpsizedEfficientNet(EfficientNet):
    """A timm ``EfficientNet`` that resizes its input by ``input_scale`` (bilinear) before the stem."""

    def __init__(self, *args, input_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not input_scale > 0:
            raise ValueError(f"input_scale: expected a number > 0, got {input_scale!r}")
        self.input_scale = float(input_scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_features, H * scale / stride, W * scale / stride)."""
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        return super().forward_features(x)


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": TF_MEAN,
        "std": TF_STD,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "tf_mobilenetv2_100": _cfg(),
        "tf_mobilenetv2_100_up2_os16": _cfg(num_classes=200, input_size=(3, 64, 64), pool_size=(8, 8), crop_pct=1.0),
    }
)


def _create(variant: str, pretrained: bool, **kwargs) -> UpsizedEfficientNet:
    kwargs.setdefault("pad_type", "same")
    model_kwargs = dict(
        block_args=decode_arch_def(_block_strings()),
        num_features=1280,
        stem_size=32,
        round_chs_fn=partial(round_channels, multiplier=1.0),
        norm_layer=kwargs.pop("norm_layer", None) or nn.BatchNorm2d,
        act_layer=kwargs.pop("act_layer", None) or nn.ReLU6,
        **kwargs,
    )
    return build_model_with_cfg(UpsizedEfficientNet, variant, pretrained, **model_kwargs)


@register_model
def tf_mobilenetv2_100(pretrained: bool = False, **kwargs) -> UpsizedEfficientNet:
    """MobileNetV2 1.0 with TF "same" padding (3.5M parameters); ImageNet input 224 px."""
    return _create("tf_mobilenetv2_100", pretrained, **kwargs)


@register_model
def tf_mobilenetv2_100_up2_os16(pretrained: bool = False, **kwargs) -> UpsizedEfficientNet:
    """``tf_mobilenetv2_100`` for 64 px images: input resized 2x, output stride 16 (8x8 maps at 64 px)."""
    kwargs.setdefault("output_stride", 16)
    kwargs.setdefault("input_scale", 2.0)
    return _create("tf_mobilenetv2_100_up2_os16", pretrained, **kwargs)
