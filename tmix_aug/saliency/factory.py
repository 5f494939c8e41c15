"""Saliency sources: what a mixer accepts as ``saliency=``, and the holder that reads maps from it.

Every saliency source is a callable ``(images (N, C, H, W), targets (N, num_classes)) -> (N, h, w)``
float32 non-negative maps at its own resolution; ``resize_and_normalize`` brings them to a
mixer's working resolution S x S and to [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int
from .cam import CAM_MODELS, ClassActivationMap
from .spectral import SpectralResidual

SaliencyFn = Callable[[Tensor, Tensor], Tensor]

ACCEPTED = (
    "expected 'spectral' (teacher-free spectral residual), a classifier nn.Module (class "
    f"activation maps; {CAM_MODELS}), a ClassActivationMap or SpectralResidual, or a "
    "callable(images, targets) -> (N, h, w) maps"
)


def resize_and_normalize(maps: Tensor, size: int) -> Tensor:
    """Bring raw saliency maps to the mixer's resolution and to [0, 1].

    Bilinear resize, then per map ``(m - min) / (max - min)`` (ours: min-max). A constant map
    (range at most 1e-6 of its magnitude, e.g. an all-zero CAM) becomes all zeros.

    Args:
        maps: (N, h, w) real maps.
        size: side S of the output.

    Returns:
        (N, S, S) float32 in [0, 1].
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps: expected a torch.Tensor (N, h, w), got {type(maps).__name__}")
    if maps.ndim != 3 or maps.is_complex():
        raise ValueError(
            f"maps: expected real maps of shape (N, h, w), got {tuple(maps.shape)} of {maps.dtype}"
        )
    check_int("size", size, 1)
    with torch.autocast(maps.device.type, enabled=False):
        maps = maps.float()
        if maps.shape[-2:] != (size, size):
            maps = F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True).squeeze(1)
        low = maps.amin((1, 2), keepdim=True)
        high = maps.amax((1, 2), keepdim=True)
        span = high - low
        flat = span <= 1e-6 * torch.maximum(high.abs(), low.abs())
        return ((maps - low) / torch.where(flat, 1.0, span)).masked_fill(flat, 0.0)


def create_saliency(spec: object) -> SaliencyFn:
    """A saliency function ``(images (N, C, H, W), targets (N, num_classes)) -> (N, h, w)``.

    Args:
        spec: "spectral" for ``SpectralResidual()``; a classifier nn.Module for
            ``ClassActivationMap(model)``; a ``ClassActivationMap``, ``SpectralResidual`` or any
            other callable(images, targets) is returned as is.

    Raises:
        ValueError: an unknown name, or a module that CAM does not support.
        TypeError: anything else.
    """
    if isinstance(spec, (ClassActivationMap, SpectralResidual)):
        return spec
    if isinstance(spec, str):
        if spec == "spectral":
            return SpectralResidual()
        raise ValueError(f"saliency: unknown name {spec!r}; {ACCEPTED}")
    if isinstance(spec, nn.Module):
        try:
            return ClassActivationMap(spec)
        except ValueError as err:
            raise ValueError(
                f"saliency: {err}. To use a module that itself returns saliency maps, pass "
                f"lambda images, targets: module(images, targets)"
            ) from err
    if callable(spec):
        return spec
    raise TypeError(f"saliency: got {type(spec).__name__}; {ACCEPTED}")


class SaliencySource:
    """Where a mixer's saliency maps come from, and their resolution S.

    A plain object on purpose, not an ``nn.Module``: a mixer holds it as ``mixer.saliency``,
    and a classifier inside it (often the model being trained) is used, not owned. It does
    not become a submodule of the mixer, so it does not move, train or save with it.

    Args:
        spec: anything ``create_saliency`` accepts.
        size: side S of the maps the mixer works at.
    """

    def __init__(self, spec: object, size: int) -> None:
        self.fn = create_saliency(spec)
        self.size = check_int("size", size, 1)

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        """Saliency of every image at the resolution ``size``.

        Args:
            x: (N, C, H, W) images.
            labels: (N, num_classes) soft targets (they pick the CAM class).

        Returns:
            (N, S, S) float32 in [0, 1], no autograd graph.
        """
        with torch.no_grad():
            maps = self.fn(x, labels)
        if not isinstance(maps, Tensor) or maps.ndim != 3 or maps.shape[0] != x.shape[0]:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(
                f"saliency: expected maps of shape ({x.shape[0]}, h, w) from the saliency source, got {shape}"
            )
        return resize_and_normalize(maps.float(), self.size)

    def __repr__(self) -> str:
        return f"SaliencySource({type(self.fn).__name__}, size={self.size})"
