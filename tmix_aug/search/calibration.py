"""The teacher's soft-label cross-entropy at its best temperature (the calibrated search objective).

Why (ours): a teacher trained on clean images is far too sure of itself on mixed images (on
CIFAR-10 the best temperature for mixed images is about 4). The plain cross-entropy then
rewards anything that makes the teacher less sure, blur included, and a search that follows it
learned sub-pixel shifts that blur both inputs: lower teacher loss, worse mixes for every other
classifier. Fitting the temperature per batch removes that reward: at the best temperature the
loss is flat along "scale all logits", so the mixer gains only by changing *which* classes the
teacher sees, not how sure it is.
"""
from __future__ import annotations

import torch
from torch import Tensor

BETA_RANGE = (1e-3, 1e3)


@torch.no_grad()
def fit_inverse_temperature(logits: Tensor, targets: Tensor, *, steps: int = 40) -> Tensor:
    """The inverse temperature beta minimising ``mean CE(softmax(beta * logits), targets)``.

    The loss is convex in beta, so its derivative ``mean sum_c (p_c - t_c) z_c`` is increasing;
    bisection on log beta finds its root within ``BETA_RANGE`` (clamped to the range's ends).

    Args:
        logits: (N, C) logits (not modified; no gradient is recorded).
        targets: (N, C) soft targets, rows summing to 1.
        steps: bisection steps (40 halve the log-range to about 1e-11).

    Returns:
        A 0-d float32 tensor on the logits' device.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits/targets: expected two (N, C) tensors of one shape, got {tuple(logits.shape)} and {tuple(targets.shape)}")
    z, t = logits.float(), targets.float()
    lo = torch.tensor(BETA_RANGE[0], device=z.device).log()
    hi = torch.tensor(BETA_RANGE[1], device=z.device).log()
    for _ in range(steps):
        mid = (lo + hi) / 2
        slope = torch.sum(((mid.exp() * z).softmax(-1) - t) * z)
        rising = slope > 0
        hi = torch.where(rising, mid, hi)
        lo = torch.where(rising, lo, mid)
    return ((lo + hi) / 2).exp()


def calibrated_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Soft-label cross-entropy of ``beta * logits`` with beta fitted to this batch and held fixed.

    Args:
        logits: (N, C) logits; gradients flow into them.
        targets: (N, C) soft targets.

    Returns:
        The mean loss (0-d) and beta (0-d, no gradient).
    """
    beta = fit_inverse_temperature(logits.detach(), targets)
    loss = torch.sum(-targets * (beta * logits.float()).log_softmax(-1), dim=-1).mean()
    return loss, beta
