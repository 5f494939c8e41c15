"""What every batch mixer shares: arguments, input checks, random draws, label mixing, the on/off switch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .checks import check_images, check_int, check_labels, check_number, check_positive, check_probability
from .functional import mix_labels, smooth_labels
from .result import MixResult
from .sampling import MixDraw, check_generator, draw_mix


@dataclass
class MixedImages:
    """What a mixer's image step returns (shapes as in ``MixResult``).

    ``lam`` replaces the drawn label weights when the method changes them (e.g. CutMix's
    box clipped at the border); None keeps the drawn ones.
    """

    images: Tensor
    masks: Tensor
    thetas: Tensor
    saliency: Tensor
    lam: Tensor | None = None


class BatchMixer(nn.Module):
    """Base of every mixer: ``x, y = mixer(x, y)`` like timm's ``Mixup``, ``mixer.mix`` for details.

    Subclasses implement ``mix_images``. Everything else (argument checks, partner and
    lambda draws, label smoothing and mixing, ``prob``) is here, so all mixers agree.

    ``mixer.mixup_enabled = False`` switches mixing off as for timm's ``Mixup``: every sample
    keeps its image and gets its own (smoothed) one-hot target, from the same random draws.

    Args:
        num_classes: number of classes of the targets.
        k: inputs per mixed image (>= 2).
        alpha: Dirichlet concentration of the label weights (Beta(alpha, alpha) for K = 2).
        label_smoothing: smoothing applied to each input's target before mixing.
        prob: probability that a sample is mixed; the others keep their own image and target.
        check_inputs: also check values (finite images, labels in range). These checks read
            the data, which on an accelerator makes the host wait for the device every step;
            None checks values only for CPU tensors. Shapes and dtypes are always checked.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        k: int = 2,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        prob: float = 1.0,
        check_inputs: bool | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.k = check_int("k", k, 2)
        self.alpha = check_positive("alpha", alpha)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
        self.prob = check_probability("prob", prob)
        if check_inputs not in (None, True, False):
            raise TypeError(f"check_inputs: expected None, True or False, got {check_inputs!r}")
        self.check_inputs = check_inputs
        self.mixup_enabled = True  # timm's name for the switch

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: (N, C, H, W) float images.
            y: (N,) integer class indices or (N, num_classes) float soft targets.

        Returns:
            images (N, C, H, W) in the dtype of ``x``; targets (N, num_classes) float32,
            rows sum to 1.
        """
        result = self.mix(x, y)
        return result.images, result.targets

    def mix(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> MixResult:
        """Mix a batch and return every decision (see ``MixResult``).

        A batch of one image is returned unmixed.

        Args:
            x: (N, C, H, W) float images.
            y: (N,) integer class indices or (N, num_classes) float soft targets.
            generator: a CPU ``torch.Generator`` to make the mix reproducible.
        """
        values = self.check_inputs if self.check_inputs is not None else x.device.type == "cpu"
        check_images(x, values=values)
        check_labels(y, x.shape[0], self.num_classes, values=values)
        check_generator(generator)
        if y.device != x.device:
            raise ValueError(f"y: expected labels on the images' device {x.device}, got {y.device}")
        prob = self.prob if self.mixup_enabled else 0.0
        draw = draw_mix(x.shape[0], self.k, self.alpha, prob, x.device, generator)
        labels = smooth_labels(y, self.num_classes, self.label_smoothing)
        parts = self.mix_images(x, labels, draw)
        lam = draw.lam if parts.lam is None else parts.lam
        return MixResult(
            images=parts.images,
            targets=mix_labels(labels, lam, draw.index),
            masks=parts.masks,
            thetas=parts.thetas,
            lam=lam,
            index=draw.index,
            saliency=parts.saliency,
            labels=labels,
        )

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Make the mixed images of one checked batch.

        Args:
            x: (N, C, H, W) float images.
            labels: (N, num_classes) float32 each sample's own smoothed target.
            draw: partners, label weights and which samples are mixed.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, k={self.k}, alpha={self.alpha}, "
            f"label_smoothing={self.label_smoothing}, prob={self.prob}, mixup_enabled={self.mixup_enabled}"
        )
