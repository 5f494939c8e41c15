"""What the small-image models share: timm's classifier interface over a pooled linear head."""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from torch import nn

# The mean/std the shared CIFAR-10 ResNet-20 teacher was trained with (ImageNet's), on [0, 1].
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)


def cifar_cfg(**kwargs) -> dict:
    """A timm pretrained config for 32x32 inputs (no download URL: weights come from the user)."""
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "first_conv": "conv1",
        "classifier": "linear",
        **kwargs,
    }


class PooledClassifier(nn.Module):
    """Base of the small-image models: subclasses build ``conv1`` and the stages and define
    ``forward_features``; this class owns the head (global pooling + ``linear``), the weight
    initialisation and timm's ``get_classifier`` / ``reset_classifier`` / ``forward_head``.
    """

    num_features: int
    drop_rate: float

    def build_head(self, num_features: int, num_classes: int, global_pool: str) -> None:
        """Create the head and initialise every conv (Kaiming) and BatchNorm (1, 0) weight."""
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.global_pool, self.linear = create_classifier(num_features, num_classes, pool_type=global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (an ``nn.Identity`` when ``num_classes == 0``)."""
        return self.linear

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (0: no linear layer)."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.num_classes = num_classes
        self.global_pool, self.linear = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        weight = self.conv1.weight
        self.linear.to(device=weight.device, dtype=weight.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, num_features, h, w) -> pooled (N, num_features) if ``pre_logits`` else logits."""
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> logits (N, num_classes)."""
        return self.forward_head(self.forward_features(x))
