"""CIFAR ResNets (He et al. 2016, section 4.2) with the parameter-free "option A" shortcut.

Depth ``6n + 2``: a 3x3 stem with 16 channels, three stages of ``n`` basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the resolution), global average
pooling and one linear layer. The parameter names (``conv1``, ``bn1``, ``layer1..3.i.{conv1,
bn1,conv2,bn2}``, ``linear``) are those of the widely used CIFAR-10 ResNet-20 checkpoints, so
such a state dict loads with ``strict=True``.

Registered with timm as ``cifar_resnet20``, ``cifar_resnet32``, ``cifar_resnet44`` and
``cifar_resnet56``::

    model = timm.create_model("cifar_resnet20", num_classes=10, checkpoint_path="w.safetensors")
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._classifier import PooledClassifier, cifar_cfg

__all__ = ["OptionAShortcut", "BasicBlock", "CifarResNet"]



class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad the channels.

    The new channels are split half before and half after the input channels (the extra one,
    if odd, goes after).

    Args:
        in_chs: input channels C.
        out_chs: output channels C' >= C.
        stride: spatial subsampling step s (every s-th pixel, starting at 0).

    Shape: (N, C, H, W) -> (N, C', ceil(H / s), ceil(W / s)).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"out_chs must be >= in_chs, got in_chs={in_chs}, out_chs={out_chs}")
        if stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride}")
        self.in_chs = in_chs
        self.out_chs = out_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_chs - self.in_chs
        before = extra // 2
        return F.pad(x, (0, 0, 0, 0, before, extra - before))

    def extra_repr(self) -> str:
        return f"in_chs={self.in_chs}, out_chs={self.out_chs}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum.

    Args:
        in_chs: input channels C.
        out_chs: output channels C'.
        stride: stride of the first convolution.

    Shape: (N, C, H, W) -> (N, C', H / stride, W / stride). When the shape changes, the
    shortcut is :class:`OptionAShortcut`; otherwise it is the identity.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        if stride != 1 or in_chs != out_chs:
            self.shortcut = OptionAShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(PooledClassifier):
    """CIFAR ResNet of depth ``6 * blocks_per_stage + 2`` with the timm classifier interface.

    Args:
        blocks_per_stage: n, the number of basic blocks in each of the three stages.
        num_classes: classes of the linear head; 0 makes the head an identity.
        in_chans: input channels.
        widths: channels of the three stages.
        global_pool: timm pool type of the head ("avg" for global average pooling).
        drop_rate: dropout before the linear layer.

    Shape: (N, in_chans, H, W) -> logits (N, num_classes); ``forward_features`` gives the
    (N, widths[-1], H / 4, W / 4) map before pooling.
    """

    def __init__(
        self,
        blocks_per_stage: int = 3,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple = (16, 32, 64),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if len(widths) != 3:
            raise ValueError(f"widths must give 3 stage widths, got {widths!r}")
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        in_chs = widths[0]
        self.feature_info: List[dict] = [dict(num_chs=widths[0], reduction=1, module="act1")]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_chs, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=2 ** i, module=f"layer{i + 1}"))
            in_chs = width
        self.build_head(in_chs, num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, H / 4, W / 4) feature map before pooling."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)



default_cfgs = generate_default_cfgs({f"cifar_resnet{d}": cifar_cfg(pool_size=(8, 8)) for d in (20, 32, 44, 56)})


def _create(variant: str, depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        blocks_per_stage=(depth - 2) // 6,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage, 0.27M parameters)."""
    return _create("cifar_resnet20", 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage, 0.46M parameters)."""
    return _create("cifar_resnet32", 32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-44 (7 blocks per stage, 0.66M parameters)."""
    return _create("cifar_resnet44", 44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage, 0.85M parameters)."""
    return _create("cifar_resnet56", 56, pretrained, **kwargs)
