"""A small built-in image dataset where saliency matters: one coloured object on a textured
background, at a random position and scale; the class is the object's shape."""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar", "frame")

_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
_SUPERSAMPLE = 2


def _shape_mask(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Boolean mask of ``shape`` over coordinates (u, v) in units of the object's radius."""
    radius = (u * u + v * v).sqrt()
    box = torch.maximum(u.abs(), v.abs())
    if shape == "disc":
        return radius <= 1.0
    if shape == "square":
        return box <= 0.8
    if shape == "triangle":
        return (v >= -0.8) & (v <= 0.8) & (u.abs() <= (v + 0.8) / 1.6)
    if shape == "ring":
        return (radius <= 1.0) & (radius >= 0.55)
    if shape == "cross":
        return ((u.abs() <= 0.3) & (v.abs() <= 1.0)) | ((v.abs() <= 0.3) & (u.abs() <= 1.0))
    if shape == "diamond":
        return u.abs() + v.abs() <= 1.0
    if shape == "bar":
        return (u.abs() <= 1.0) & (v.abs() <= 0.35)
    return (box <= 0.95) & (box >= 0.6)


def render_object(
    shape: str, image_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Render one image of ``shape`` with random colour, position, scale and background.

    Args:
        shape: one of ``SHAPES``.
        image_size: side length H = W.
        generator: CPU generator all randomness is drawn from.

    Returns:
        image (3, H, W) float32 in [0, 1]; object mask (H, W) float32 in [0, 1] (coverage).
    """
    size = image_size * _SUPERSAMPLE

    def uniform(low: float, high: float, shape_=()) -> Tensor:
        return low + (high - low) * torch.rand(shape_, generator=generator)

    # Background: a muted colour, low-frequency blotches and faint stripes.
    base = uniform(0.2, 0.6, (3, 1, 1))
    blotches = torch.nn.functional.interpolate(
        uniform(-0.15, 0.15, (1, 3, 4, 4)), size=(size, size), mode="bicubic", align_corners=False
    )[0]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angle = uniform(0.0, 3.1416)
    frequency = uniform(6.0, 14.0)
    stripes = 0.06 * torch.sin(frequency * (xs * torch.cos(angle) + ys * torch.sin(angle)))
    background = (base + blotches + stripes).clamp(0, 1)

    # Object: a saturated colour far from the background's.
    radius = uniform(0.3, 0.55)
    cx, cy = uniform(-1 + radius.item(), 1 - radius.item(), (2,))
    mask = _shape_mask(shape, (xs - cx) / radius, (ys - cy) / radius).float()
    colour = torch.rand(3, generator=generator)
    colour = (colour - colour.min()) / (colour.max() - colour.min() + 1e-6)
    colour = 0.15 + 0.85 * colour
    shading = 1.0 - 0.25 * ((xs - cx) + (ys - cy)).clamp(-1, 1)
    image = background * (1 - mask) + (colour[:, None, None] * shading).clamp(0, 1) * mask
    image = torch.nn.functional.avg_pool2d(image[None], _SUPERSAMPLE)[0]
    mask = torch.nn.functional.avg_pool2d(mask[None, None], _SUPERSAMPLE)[0, 0]
    return image, mask


class SyntheticObjects(Dataset):
    """A deterministic dataset of coloured shapes on textured backgrounds.

    Sample ``i`` of a split is always the same image; the class is ``i % num_classes`` (the
    classes are balanced). Images are PIL RGB images, like torchvision's datasets, passed
    through ``transform`` when given.

    Args:
        num_samples: length of the dataset.
        image_size: side length of the square images.
        num_classes: number of shape classes, 2 to 8 (the first ``num_classes`` of ``SHAPES``).
        seed: changes every image.
        split: "train", "val" or "test": disjoint streams of images.
        transform: applied to the PIL image.
        target_transform: applied to the int label.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        image_size: int = 32,
        num_classes: int = 8,
        seed: int = 0,
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size: expected an int >= 8, got {image_size!r}")
        if not isinstance(num_classes, int) or not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes: expected an int from 2 to {len(SHAPES)}, got {num_classes!r}")
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split: expected one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
        self.num_samples = num_samples
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.classes = list(SHAPES[:num_classes])

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[Tensor, int]:
        """Sample ``index`` as a (3, H, W) float32 tensor in [0, 1] and its label."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index: expected 0 <= index < {self.num_samples}, got {index}")
        label = index % self.num_classes
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + _SPLIT_OFFSET[self.split]) * 10_000_019 + index
        )
        image, _ = render_object(SHAPES[label], self.image_size, generator)
        return image, label

    def __getitem__(self, index: int):
        image, label = self.render(index)
        pil = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
        if self.transform is not None:
            pil = self.transform(pil)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return pil, label
