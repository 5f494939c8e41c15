"""tmix_aug: TransformMix, learned transformation + mixing augmentation for timm and torchvision."""
from . import models, saliency, viz  # models: registers the small-image classifiers with timm
from .collate import TransformMixCollate
from .mixer import TransformMix
from .mixing import BatchMixer
from .result import MixResult
from .saliency import ClassActivationMap, SpectralResidual
from .transmix import TransMixLabels

__all__ = [
    "BatchMixer",
    "ClassActivationMap",
    "MixResult",
    "SpectralResidual",
    "TransMixLabels",
    "TransformMix",
    "TransformMixCollate",
]
