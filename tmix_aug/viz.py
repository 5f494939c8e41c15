"""Pictures of what a mixer did: inputs, saliency, moved inputs, masks and the mixed image."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from .atomic import write_atomic
from .functional import warp
from .result import MixResult


def heatmap(values: Tensor) -> Tensor:
    """(N, H, W) values in [0, 1] -> (N, 3, H, W) black-red-yellow-white colours."""
    values = values.clamp(0, 1)
    return torch.stack([(3 * values).clamp(0, 1), (3 * values - 1).clamp(0, 1), (3 * values - 2).clamp(0, 1)], dim=1)


def to_display(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """(N, C, H, W) model-space images -> (N, 3, H, W) float32 in [0, 1] (undoing mean/std)."""
    images = images.detach().float()
    if std is not None:
        images = images * torch.as_tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    if mean is not None:
        images = images + torch.as_tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images[:, :3].clamp(0, 1)


def mix_panels(
    result: MixResult,
    inputs: Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_samples: int = 8,
) -> tuple[Tensor, list[str]]:
    """One row per mixed sample: K inputs, K saliency maps, K moved inputs, K masks, the mix.

    Args:
        result: what ``mixer.mix(inputs, y)`` returned.
        inputs: (N, C, H, W) the batch that was mixed.
        mean, std: the normalisation of ``inputs``, undone for display.
        num_samples: rows (the first samples of the batch).

    Returns:
        panels (rows * (4K + 1), 3, H, W) float32 in [0, 1], row-major; the column titles.
    """
    rows = min(num_samples, inputs.shape[0])
    k = result.k
    height, width = inputs.shape[-2:]
    index = result.index[:rows].cpu()
    thetas = result.thetas[:rows].detach().float().cpu()
    originals = inputs.detach().float().cpu()[index]  # (rows, K, C, H, W)
    moved = warp(originals, thetas)
    columns = [to_display(originals[:, j], mean, std) for j in range(k)]
    if result.saliency.numel():
        saliency = F.interpolate(result.saliency[:rows].detach().float().cpu(), size=(height, width), mode="bilinear")
        columns += [heatmap(saliency[:, j]) for j in range(k)]
    else:
        columns += [torch.zeros(rows, 3, height, width) for _ in range(k)]
    columns += [to_display(moved[:, j], mean, std) for j in range(k)]
    masks = result.masks[:rows].detach().float().cpu()
    columns += [masks[:, j, None].expand(-1, 3, -1, -1) for j in range(k)]
    columns.append(to_display(result.images[:rows].cpu(), mean, std))
    titles = (
        [f"input {j + 1}" for j in range(k)]
        + [f"saliency {j + 1}" for j in range(k)]
        + [f"moved {j + 1}" for j in range(k)]
        + [f"mask {j + 1}" for j in range(k)]
        + ["mixed"]
    )
    return torch.stack(columns, dim=1).flatten(0, 1), titles


def save_mix_grid(
    path: str | os.PathLike,
    result: MixResult,
    inputs: Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_samples: int = 8,
    scale: int = 1,
) -> Path:
    """Write ``mix_panels`` as a titled PNG grid (written to a temporary name, then renamed).

    Args:
        path: the PNG file to write.
        result, inputs, mean, std, num_samples: see ``mix_panels``.
        scale: integer upscaling of each panel (nearest), for small images.

    Returns:
        The path written.
    """
    panels, titles = mix_panels(result, inputs, mean=mean, std=std, num_samples=num_samples)
    if scale > 1:
        panels = F.interpolate(panels, scale_factor=scale, mode="nearest")
    grid = make_grid(panels, nrow=len(titles), padding=2, pad_value=1.0)
    picture = Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy())
    cell = panels.shape[-1] + 2
    header = 14
    canvas = Image.new("RGB", (picture.width, picture.height + header), "white")
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * cell + 3, 1), title, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: canvas.save(tmp, format="PNG"))
