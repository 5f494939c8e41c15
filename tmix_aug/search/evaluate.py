"""Held-out comparison of mixers at the same partners and lambdas, scored by a classifier."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from ..mixing import BatchMixer
from ..result import mix_labels, smooth_labels
from ..sampling import draw_mix


@torch.no_grad()
def compare_mixers(
    classifier: nn.Module,
    mixers: Mapping[str, BatchMixer],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Score every mixer on the same held-out mixes.

    Each batch gets one draw of partners and lambdas, shared by all mixers, so the figures
    differ only by how the images are mixed. Per mixer:

    - ``cross_entropy``: the classifier's soft-label cross-entropy against the mixed targets
      (the search objective when the classifier is the teacher; lower is better);
    - ``top2_both``: the fraction of mixed images (of two different classes) whose top-2
      predictions are exactly those two classes;
    - ``top1_in``: the fraction whose top-1 prediction is one of the mixed classes.

    Args:
        classifier: any (N, C, H, W) -> (N, num_classes) model; put in eval mode here.
        mixers: name -> mixer, all with the same ``num_classes`` and ``k``.
        batches: (images (N, C, H, W), int64 labels (N,)) normalised for the classifier.
        seed: seeds the shared draws.
        device: where to compute.

    Returns:
        name -> {"cross_entropy", "top2_both", "top1_in", "images"}.
    """
    first = next(iter(mixers.values()))
    generator = torch.Generator().manual_seed(seed)
    classifier = classifier.eval()
    totals = {name: {"cross_entropy": 0.0, "top2_both": 0.0, "top1_in": 0.0, "pairs": 0, "images": 0} for name in mixers}
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        draw = draw_mix(x.shape[0], first.k, first.alpha, 1.0, x.device, generator)
        labels = smooth_labels(y, first.num_classes)
        classes = y[draw.index]  # (N, K)
        distinct = classes[:, 0] != classes[:, 1]
        for name, mixer in mixers.items():
            parts = mixer.mix_images(x, labels, draw)
            lam = draw.lam if parts.lam is None else parts.lam
            targets = mix_labels(labels, lam, draw.index)
            logits = classifier(parts.images).float()
            total = totals[name]
            total["cross_entropy"] += float(torch.sum(-targets * logits.log_softmax(-1)))
            top2 = logits.topk(2, dim=-1).indices.sort(dim=-1).values
            both = (top2 == classes[:, :2].sort(dim=-1).values).all(-1)
            total["top2_both"] += float((both & distinct).sum())
            total["top1_in"] += float((logits.argmax(-1)[:, None] == classes).any(-1).sum())
            total["pairs"] += int(distinct.sum())
            total["images"] += x.shape[0]
    return {
        name: {
            "cross_entropy": t["cross_entropy"] / max(t["images"], 1),
            "top2_both": t["top2_both"] / max(t["pairs"], 1),
            "top1_in": t["top1_in"] / max(t["images"], 1),
            "images": t["images"],
        }
        for name, t in totals.items()
    }
