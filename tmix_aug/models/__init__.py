"""Small-image classifiers registered with timm; importing this package registers them.

``cifar_resnet20/32/44/56`` (He et al. 2016, option-A shortcuts), ``preact_resnet18``, and
``tf_mobilenetv2_100`` / ``tf_mobilenetv2_100_up2_os16`` (MobileNetV2 with TF "same" padding for
Google's ImageNet weights; the second for 64 px images).
"""
from .cifar_resnet import CifarResNet, OptionAShortcut
from .preact_resnet import PreActResNet
from .tf_mobilenetv2 import UpsizedEfficientNet

__all__ = ["CifarResNet", "OptionAShortcut", "PreActResNet", "UpsizedEfficientNet"]
