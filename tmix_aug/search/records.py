"""What a search measures each epoch: the mixer against Mixup and CutMix on held-out images."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..baselines import CutMix, Mixup
from ..mixer import TransformMix
from .evaluate import compare_mixers


def transform_size(thetas: torch.Tensor) -> tuple[float, float]:
    """Mean shift |t| and mean |A - I| (Frobenius) of (N, K, 2, 3) transforms."""
    eye = torch.eye(2, dtype=thetas.dtype, device=thetas.device)
    return float(thetas[..., 2].norm(dim=-1).mean()), float((thetas[..., :2] - eye).flatten(-2).norm(dim=-1).mean())


def held_out_record(
    mixer: TransformMix, teacher: nn.Module, val_dataset: Dataset, *, k: int, alpha: float, batch_size: int, workers: int, seed: int, device: torch.device
) -> dict:
    """The mixer against Mixup (and CutMix when ``k`` is 2) on the held-out images, scored by the teacher."""
    mixer.eval()
    num_classes = mixer.num_classes
    baselines: dict[str, Any] = {"mixup": Mixup(num_classes, k=k, alpha=alpha)}
    if k == 2:
        baselines["cutmix"] = CutMix(num_classes, alpha=alpha)
    held_out = compare_mixers(
        teacher,
        {"transformmix": mixer, **baselines},
        DataLoader(val_dataset, batch_size=batch_size, num_workers=workers),
        seed=seed,
        device=device,
    )
    return {
        "held_out_ce": {name: round(m["cross_entropy"], 4) for name, m in held_out.items()},
        "held_out_calibrated_ce": {name: round(m["calibrated_cross_entropy"], 4) for name, m in held_out.items()},
        "held_out_top2": {name: round(m["top2_both"], 4) for name, m in held_out.items()},
        "held_out_area_gap": round(held_out["transformmix"]["area_gap"], 5),
        "teacher_temperature": round(held_out["transformmix"]["temperature"], 4),
        "temperature": mixer.temperature.item(),
    }


@torch.no_grad()
def evaluate_teacher(teacher: nn.Module, dataset: Dataset, *, batch_size: int, workers: int, device: torch.device) -> float:
    """Top-1 accuracy (%) of the teacher on the clean held-out images."""
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        correct += int((teacher(x.to(device)).argmax(-1).cpu() == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)
