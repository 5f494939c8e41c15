"""The two small networks of TransformMix; both work at the mixer's resolution S x S."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class LocalizationNet(nn.Module):
    """Spatial transformer localisation net: saliency, lambda and noise planes -> K affine maps.

    The classic STN shape (Jaderberg et al.): two conv + max-pool stages, then two
    fully-connected layers, the last one widened to 6 numbers per input.

    Transforms are bounded (ours): ``A = I + max_linear * tanh(a)`` and
    ``t = max_translation * tanh(b)`` for the raw outputs (a, b), so the search cannot push the
    content out of the frame, the failure mode seen at large learning rates. The last layer
    starts at zero, so every transform starts as the identity (ours).

    Args:
        in_channels: input planes (2K + 1: K saliency maps, K lambda planes, one noise plane).
        k: number of inputs K.
        channels: output channels of the two conv stages.
        hidden: width of the hidden fully-connected layer.
        max_translation: largest shift, in normalised coordinates ([-1, 1] spans the image).
        max_linear: largest change of each entry of the 2x2 linear part.
    """

    def __init__(
        self,
        in_channels: int,
        k: int,
        *,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        max_translation: float = 0.5,
        max_linear: float = 0.5,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.k = k
        self.max_translation = max_translation
        self.max_linear = max_linear
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(c2 * 16, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, 6 * k)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, planes: Tensor) -> Tensor:
        """(N, in_channels, S, S) -> thetas (N, K, 2, 3), identity for zero raw outputs."""
        raw = torch.tanh(self.head(self.fc(self.features(planes)))).view(-1, self.k, 6)
        linear = torch.eye(2, device=planes.device, dtype=raw.dtype) + self.max_linear * raw[..., :4].view(-1, self.k, 2, 2)
        shift = self.max_translation * raw[..., 4:].unsqueeze(-1)
        return torch.cat([linear, shift], dim=-1)


PADDING_MODES = ("replicate", "reflect", "zeros")


class MaskNet(nn.Module):
    """Mask prediction network: warped saliency and lambda planes -> K mask logits per pixel.

    ``layers`` conv layers of ``channels`` channels with ReLU, padding that keeps S x S, then a
    1x1 conv to K channels: a correction added to the saliency (see ``TransformMix``). The
    1x1 conv starts at zero (ours), so the search starts from masks that follow the saliency.

    Replicate padding (ours, the default): constant input planes give a constant correction,
    so the masks have no border artefacts of their own. Zero padding (the mixers of config
    format 1 and 2) makes the border pixels see zeros, and a searched net turns that into a
    learned stripe along the edges of every mask.

    Args:
        in_channels: input planes (2K: K warped saliency maps, K lambda planes).
        k: number of inputs K.
        channels: width of the hidden conv layers.
        layers: number of hidden conv layers.
        kernel: odd kernel size of the hidden conv layers.
        padding: how the hidden conv layers pad their input, one of ``PADDING_MODES``.
    """

    def __init__(
        self, in_channels: int, k: int, *, channels: int = 32, layers: int = 3, kernel: int = 3, padding: str = "replicate"
    ) -> None:
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {PADDING_MODES}, got {padding!r}")
        body: list[nn.Module] = []
        width = in_channels
        for _ in range(layers):
            body += [nn.Conv2d(width, channels, kernel, padding=kernel // 2, padding_mode=padding), nn.ReLU(inplace=True)]
            width = channels
        self.body = nn.Sequential(*body)
        self.head = nn.Conv2d(width, k, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, planes: Tensor) -> Tensor:
        """(N, in_channels, S, S) -> mask logits (N, K, S, S)."""
        return self.head(self.body(planes))
