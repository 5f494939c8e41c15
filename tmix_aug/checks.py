"""Validation of the tensors a mixer is given, with messages that name the argument."""
from __future__ import annotations

import torch
from torch import Tensor


def check_images(x: Tensor, *, values: bool) -> None:
    """Raise unless ``x`` is a floating (N, C, H, W) batch; with ``values``, also finite.

    ``values`` needs the data on the host, so on an accelerator it makes the host wait for
    the device; callers decide when that is worth it.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x: expected images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}; convert uint8 images with x.float()")
    if x.shape[0] == 0:
        raise ValueError("x: expected at least one image, got an empty batch")
    if values and not bool(torch.isfinite(x).all()):
        raise ValueError("x: images contain NaN or infinite values")


def check_labels(y: Tensor, n: int, num_classes: int, *, values: bool) -> None:
    """Raise unless ``y`` is (N,) int64 class indices or (N, num_classes) float soft targets.

    With ``values``, also check the indices lie in [0, num_classes) and soft targets are
    finite and non-negative (this reads the data, see ``check_images``).
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor of labels, got {type(y).__name__}")
    if y.ndim == 1:
        if y.is_floating_point():
            raise TypeError(
                "y: 1-D labels must be int64 class indices, got a float tensor; "
                f"pass soft targets as (N, {num_classes})"
            )
        if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"y: expected int64 class indices, got {y.dtype}")
    elif y.ndim == 2:
        if not y.is_floating_point():
            raise TypeError(f"y: 2-D labels must be float soft targets, got {y.dtype}")
        if y.shape[1] != num_classes:
            raise ValueError(f"y: soft targets must have num_classes={num_classes} columns, got {y.shape[1]}")
    else:
        raise ValueError(
            f"y: expected (N,) class indices or (N, {num_classes}) soft targets, got shape {tuple(y.shape)}"
        )
    if y.shape[0] != n:
        raise ValueError(f"y: expected {n} labels to match the {n} images in x, got {y.shape[0]}")
    if not values:
        return
    if y.ndim == 1:
        if bool(((y < 0) | (y >= num_classes)).any()):
            raise ValueError(
                f"y: class indices must lie in [0, {num_classes}), got values from "
                f"{int(y.min())} to {int(y.max())}; is num_classes right?"
            )
    elif not bool((torch.isfinite(y) & (y >= 0)).all()):
        raise ValueError("y: soft targets must be finite and non-negative")


def check_probability(name: str, value: float) -> None:
    """Raise unless ``value`` is a number in [0, 1]."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` is a number > 0."""
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
