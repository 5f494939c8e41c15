"""Saliency maps for the mixers: class activation maps of a classifier, or a teacher-free detector.

- ``cam``: ``ClassActivationMap`` for timm / torchvision classifiers;
- ``spectral``: ``SpectralResidual``, needs no weights;
- ``factory``: ``create_saliency`` (what ``saliency=`` accepts), ``resize_and_normalize`` and
  ``SaliencySource``, the holder a mixer reads its maps through.
"""
from .cam import CAM_MODELS, MIN_MAP_SIZE, ClassActivationMap
from .factory import SaliencyFn, SaliencySource, create_saliency, resize_and_normalize
from .spectral import SpectralResidual

__all__ = [
    "CAM_MODELS",
    "MIN_MAP_SIZE",
    "ClassActivationMap",
    "SaliencyFn",
    "SaliencySource",
    "SpectralResidual",
    "create_saliency",
    "resize_and_normalize",
]
