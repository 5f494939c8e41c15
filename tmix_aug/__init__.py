"""tmix_aug: TransformMix, learned transformation + mixing augmentation for timm and torchvision."""
from . import models  # registers the small-image classifiers with timm
from .collate import TransformMixCollate
from .mixer import TransformMix
from .mixing import BatchMixer
from .result import MixResult
from .transmix import TransMixLabels

__all__ = ["BatchMixer", "MixResult", "TransMixLabels", "TransformMix", "TransformMixCollate"]
