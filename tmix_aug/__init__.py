"""tmix_aug: TransformMix, learned transformation + mixing augmentation for timm and torchvision."""
from __future__ import annotations

import importlib
from typing import Any

# models registers the small-image classifiers with timm; baselines and mixer register the mixers.
from . import baselines, functional, mixer, models, saliency  # noqa: F401
from .collate import TransformMixCollate
from .mixer import TransformMix
from .mixing import BatchMixer
from .registry import create_mixer, list_mixers, register_mixer
from .result import MixResult
from .saliency import ClassActivationMap, SpectralResidual
from .sampling import stream_seed
from .transmix import TransMixLabels

__all__ = [
    "BatchMixer",
    "ClassActivationMap",
    "MixResult",
    "SpectralResidual",
    "TransMixLabels",
    "TransformMix",
    "TransformMixCollate",
    "create_mixer",
    "list_mixers",
    "register_mixer",
    "stream_seed",
]


def __getattr__(name: str) -> Any:
    # viz needs PIL: imported on first use (tmix_aug.viz), not with the package.
    if name == "viz":
        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
