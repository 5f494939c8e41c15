"""Held-out comparison of mixers at the same partners and lambdas, scored by a classifier."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from ..mixing import BatchMixer
from ..functional import mix_labels, smooth_labels
from ..sampling import draw_mix
from .calibration import fit_inverse_temperature


@torch.no_grad()
def compare_mixers(
    classifier: nn.Module,
    mixers: Mapping[str, BatchMixer],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    per_image: bool = False,
) -> dict[str, dict]:
    """Score every mixer on the same held-out mixes.

    Each batch gets one draw of partners and lambdas, shared by all mixers, so the figures
    differ only by how the images are mixed. Per mixer:

    - ``cross_entropy``: the classifier's soft-label cross-entropy against the mixed targets
      (the paper's search objective when the classifier is the teacher; lower is better);
    - ``calibrated_cross_entropy``: the same at the one temperature that fits this mixer's
      images best (the calibrated search objective; it does not reward making the classifier
      unsure), and ``temperature``, that temperature;
    - ``top2_both``: the fraction of mixed images (of two different classes) whose top-2
      predictions are exactly those two classes;
    - ``top1_in``: the fraction whose top-1 prediction is one of the mixed classes;
    - ``area_gap``: how far the inputs' shares of the image are from their label weights
      (see ``area_gap``; 0 for Mixup, CutMix and balanced masks).

    With ``per_image``, each mixer also gets ``cross_entropy_per_image`` (M,) and
    ``top2_both_per_pair`` (P,) bool over the P mixed images of two different classes, in the
    same order for every mixer, so that two mixers can be compared image by image
    (``paired_gap``).

    Args:
        classifier: any (N, C, H, W) -> (N, num_classes) model; put in eval mode here.
        mixers: name -> mixer, all with the same ``num_classes`` and ``k``.
        batches: (images (N, C, H, W), int64 labels (N,)) normalised for the classifier.
        seed: seeds the shared draws.
        device: where to compute.
        per_image: also return the per-image scores above (on the CPU).

    Returns:
        name -> {"cross_entropy", "calibrated_cross_entropy", "temperature", "top2_both", "top1_in",
        "area_gap", "images"} (floats; "images" an int), plus the per-image tensors with ``per_image``.
    """
    first = next(iter(mixers.values()))
    generator = torch.Generator().manual_seed(seed)
    classifier = classifier.eval()
    scored = {name: {"logits": [], "targets": [], "top2_both": [], "top1_in": 0, "area_gap": 0.0} for name in mixers}
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        draw = draw_mix(x.shape[0], first.k, first.alpha, 1.0, x.device, generator)
        labels = smooth_labels(y, first.num_classes)
        classes = y[draw.index]  # (N, K)
        distinct = classes[:, 0] != classes[:, 1]
        for name, mixer in mixers.items():
            parts = mixer.mix_images(x, labels, draw)
            lam = draw.lam if parts.lam is None else parts.lam
            logits = classifier(parts.images).float()
            record = scored[name]
            record["logits"].append(logits)
            record["targets"].append(mix_labels(labels, lam, draw.index))
            top2 = logits.topk(2, dim=-1).indices.sort(dim=-1).values
            both = (top2 == classes[:, :2].sort(dim=-1).values).all(-1)
            record["top2_both"].append(both[distinct].cpu())
            record["top1_in"] += int((logits.argmax(-1)[:, None] == classes).any(-1).sum())
            record["area_gap"] += float(area_gap(parts.masks, lam)) * x.shape[0]
    if not scored[next(iter(mixers))]["logits"]:
        raise ValueError("batches: expected at least one batch of held-out images, got none")
    results = {}
    for name, record in scored.items():
        logits, targets = torch.cat(record["logits"]), torch.cat(record["targets"])
        beta = fit_inverse_temperature(logits, targets)
        losses = torch.sum(-targets * logits.log_softmax(-1), -1)
        top2_both = torch.cat(record["top2_both"])
        results[name] = {
            "cross_entropy": float(losses.mean()),
            "calibrated_cross_entropy": float(torch.sum(-targets * (beta * logits).log_softmax(-1), -1).mean()),
            "temperature": float(1 / beta),
            "top2_both": int(top2_both.sum()) / max(len(top2_both), 1),  # over the pairs of two classes
            "top1_in": record["top1_in"] / len(logits),
            "area_gap": record["area_gap"] / len(logits),
            "images": len(logits),
        }
        if per_image:
            results[name]["cross_entropy_per_image"] = losses.cpu()
            results[name]["top2_both_per_pair"] = top2_both
    return results


def paired_gap(scores: Tensor, reference: Tensor) -> tuple[float, float]:
    """Mean and standard error of a per-image difference between two mixers on the same mixes.

    Pairing removes the image-to-image spread both mixers share (a hard image is hard for
    both), so the standard error is that of the difference, not of either score.

    Args:
        scores: (M,) per-image scores of one mixer (e.g. ``cross_entropy_per_image``, or the
            bool ``top2_both_per_pair``).
        reference: (M,) the same scores of another mixer, on the same mixes in the same order.

    Returns:
        (mean of scores - reference, its standard error), floats.
    """
    if scores.shape != reference.shape or scores.dim() != 1 or len(scores) < 2:
        raise ValueError(
            f"scores, reference: expected two (M,) tensors with M >= 2 of the same mixes, got shapes "
            f"{tuple(scores.shape)} and {tuple(reference.shape)}"
        )
    difference = scores.double() - reference.double()
    return float(difference.mean()), float(difference.std() / len(difference) ** 0.5)


def area_gap(masks: Tensor, lam: Tensor) -> Tensor:
    """How far each input's share of the mixed image is from its share of the label.

    The label says input k makes up lambda_k of the image, as it does exactly for Mixup and
    CutMix; a learned mask may show more or less of an input than that.

    Args:
        masks: (N, K, H, W) masks summing to 1 over K.
        lam: (N, K) label weights.

    Returns:
        0-d ``mean_n sum_k (mean_pixels masks[n, k] - lam[n, k]) ** 2``.
    """
    return (masks.float().mean(dim=(-2, -1)) - lam.float()).square().sum(dim=1).mean()
