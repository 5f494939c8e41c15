"""tmix_aug: TransformMix, learned transformation + mixing augmentation for timm and torchvision."""
from .result import MixResult

__all__ = ["MixResult"]
