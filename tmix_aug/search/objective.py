"""The search objective: the frozen teacher's soft-label cross-entropy on the mixer's images."""
from __future__ import annotations

import torch
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn

from ..mixer import TransformMix
from ..result import MixResult
from .calibration import calibrated_cross_entropy


class SearchObjective(nn.Module):
    """Mixer + frozen teacher in one module, so DistributedDataParallel can wrap the step.

    ``forward`` mixes a batch with gradients flowing into the mixer, runs the teacher on the
    mixed images and returns CE(teacher(x_mixed), sum_k lambda_k y_k). The teacher stays in
    eval mode and frozen whatever ``train()`` is called with.

    Args:
        mixer: the TransformMix being learned; its saliency should come from ``teacher``.
        teacher: a classifier pre-trained on the dataset, sharing its label space.
        calibrated: score the teacher at the temperature that fits each batch best (ours, the
            default of the search; see ``calibration``). False: the paper's plain cross-entropy.
    """

    def __init__(self, mixer: TransformMix, teacher: nn.Module, *, calibrated: bool = True) -> None:
        super().__init__()
        self.mixer = mixer
        self.teacher = teacher.eval().requires_grad_(False)
        self.calibrated = calibrated
        self.loss = SoftTargetCrossEntropy()

    def train(self, mode: bool = True) -> "SearchObjective":
        self.training = mode
        self.mixer.train(mode)
        self.teacher.eval()
        return self

    def forward(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None, saliency: Tensor | None = None
    ) -> tuple[Tensor, MixResult]:
        """Mix and score one batch.

        Args:
            x: (N, C, H, W) images normalised for the teacher.
            y: (N,) int64 labels.
            generator: CPU generator for the mix draws.
            saliency: (N, h, w) stored teacher maps of ``x`` (``saliency_cache``); None: the
                mixer computes them.

        Returns:
            The mean loss (0-d) and the ``MixResult``.
        """
        result = self.mixer.mix(x, y, generator=generator, saliency=saliency)
        logits = self.teacher(result.images).float()
        if self.calibrated:
            return calibrated_cross_entropy(logits, result.targets)[0], result
        return self.loss(logits, result.targets), result
