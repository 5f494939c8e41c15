"""What a search measures each epoch: the mixer against Mixup and CutMix on held-out images."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..baselines import CutMix, Mixup
from ..mixer import TransformMix
from .evaluate import compare_mixers


def transform_size(thetas: torch.Tensor) -> tuple[float, float]:
    """Mean shift |t| and mean |A - I| (Frobenius) of (N, K, 2, 3) transforms."""
    eye = torch.eye(2, dtype=thetas.dtype, device=thetas.device)
    return float(thetas[..., 2].norm(dim=-1).mean()), float((thetas[..., :2] - eye).flatten(-2).norm(dim=-1).mean())


def transform_statistics(thetas: Tensor, saliency: Tensor) -> dict[str, float]:
    """How a spatial transformer moves the inputs: the distributions a search records.

    ``affine_grid`` transforms map output to input coordinates, ``q = A p + t``, so an input's
    content at ``q`` shows at ``A^-1 (q - t)``: its centre moves by ``-A^-1 t``, it is scaled by
    ``1 / sqrt|det A|`` and turned by the rotation part of ``A^-1``. "Moved apart" compares the
    mean distance between the inputs' saliency centroids after the transforms with the one before.

    Args:
        thetas: (N, K, 2, 3) transforms of mixed samples.
        saliency: (N, K, S, S) non-negative saliency of each input before its transform.

    Returns:
        ``shift_p50``/``shift_p90`` (centre displacement as a fraction of the image side),
        ``scale_p10``/``scale_p50``/``scale_p90``, ``rotation_p50``/``rotation_p90`` (absolute,
        degrees), ``moved_apart`` and ``moved_together`` (fractions of samples whose centroids
        end more than 2% of the image side farther apart / closer together).
    """
    if thetas.ndim != 4 or thetas.shape[-2:] != (2, 3):
        raise ValueError(f"thetas: expected (N, K, 2, 3) transforms, got {tuple(thetas.shape)}")
    if saliency.ndim != 4 or saliency.shape[:2] != thetas.shape[:2]:
        raise ValueError(f"saliency: expected (N, K, S, S) maps matching thetas {tuple(thetas.shape[:2])}, got {tuple(saliency.shape)}")
    thetas, saliency = thetas.double(), saliency.double().clamp_min(0)
    inverse = torch.linalg.inv(thetas[..., :2])  # (N, K, 2, 2)
    shift = -(inverse @ thetas[..., 2:]).squeeze(-1)  # (N, K, 2), normalised coordinates span 2
    scale = thetas[..., :2].det().abs().rsqrt()
    rotation = torch.rad2deg(torch.atan2(inverse[..., 1, 0] - inverse[..., 0, 1], inverse[..., 0, 0] + inverse[..., 1, 1]))
    size = saliency.shape[-1]
    coords = (torch.arange(size, dtype=torch.float64, device=saliency.device) * 2 + 1) / size - 1
    mass = saliency.sum(dim=(-2, -1)).clamp_min(1e-12)
    centroid = torch.stack(
        [(saliency.sum(dim=-2) * coords).sum(-1) / mass, (saliency.sum(dim=-1) * coords).sum(-1) / mass], dim=-1
    )  # (N, K, 2) as (x, y)
    moved = (inverse @ (centroid - thetas[..., 2]).unsqueeze(-1)).squeeze(-1)
    k = thetas.shape[1]
    first, second = torch.triu_indices(k, k, offset=1, device=thetas.device)
    before = (centroid[:, first] - centroid[:, second]).norm(dim=-1).mean(-1)
    after = (moved[:, first] - moved[:, second]).norm(dim=-1).mean(-1)
    margin = 2 * 0.02  # 2% of the image side in normalised coordinates

    def quantile(values: Tensor, q: float) -> float:
        return round(float(values.flatten().quantile(q)), 4)

    return {
        "shift_p50": quantile(shift.norm(dim=-1) / 2, 0.5),
        "shift_p90": quantile(shift.norm(dim=-1) / 2, 0.9),
        "scale_p10": quantile(scale, 0.1),
        "scale_p50": quantile(scale, 0.5),
        "scale_p90": quantile(scale, 0.9),
        "rotation_p50": quantile(rotation.abs(), 0.5),
        "rotation_p90": quantile(rotation.abs(), 0.9),
        "moved_apart": round(float((after > before + margin).double().mean()), 4),
        "moved_together": round(float((after < before - margin).double().mean()), 4),
    }


@torch.no_grad()
def held_out_transforms(mixer: TransformMix, val_dataset: Dataset, *, batch_size: int, seed: int, device: torch.device, samples: int = 512) -> dict[str, float]:
    """``transform_statistics`` of the mixer on (at most ``samples``) held-out images."""
    generator = torch.Generator().manual_seed(seed)
    thetas, saliency, seen = [], [], 0
    for x, y in DataLoader(val_dataset, batch_size=batch_size):
        if x.shape[0] < 2:
            break
        result = mixer.mix(x.to(device), y.to(device), generator=generator)
        thetas.append(result.thetas.cpu())
        saliency.append(result.saliency.cpu())
        seen += x.shape[0]
        if seen >= samples:
            break
    if not thetas:
        raise ValueError("val_dataset: expected at least 2 held-out images to record the transforms")
    return transform_statistics(torch.cat(thetas), torch.cat(saliency))


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
        "transforms": held_out_transforms(mixer, val_dataset, batch_size=batch_size, seed=seed, device=device),
    }


@torch.no_grad()
def evaluate_teacher(teacher: nn.Module, dataset: Dataset, *, batch_size: int, workers: int, device: torch.device) -> float:
    """Top-1 accuracy (%) of the teacher on the clean held-out images."""
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        correct += int((teacher(x.to(device)).argmax(-1).cpu() == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)
