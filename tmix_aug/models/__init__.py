"""Small-image classifiers registered with timm; importing this package registers them.

``cifar_resnet20/32/44/56`` (He et al. 2016, option-A shortcuts) and ``preact_resnet18``.
"""
from .cifar_resnet import CifarResNet, OptionAShortcut
from .preact_resnet import PreActResNet

__all__ = ["CifarResNet", "OptionAShortcut", "PreActResNet"]
