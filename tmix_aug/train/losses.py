"""The training loss of the flags, chosen as timm's train.py chooses it."""

from __future__ import annotations

import argparse

import torch
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, SoftTargetCrossEntropy
from torch import nn


def build_train_loss(args: argparse.Namespace) -> nn.Module:
    """The training loss, chosen as timm's train.py chooses it.

    Every mixer here, and ``NoMix`` when mixing is off, gives soft targets that already hold
    the label smoothing, so the choice is timm's for mixed targets: ``BinaryCrossEntropy`` with
    --bce-loss, else ``SoftTargetCrossEntropy``. On smoothed one-hot targets the latter equals
    timm's ``LabelSmoothingCrossEntropy`` (its choice without mixing), and with --smoothing 0 it
    equals ``nn.CrossEntropyLoss``.
    """
    if args.jsd_loss:  # only with --aug-splits and --mixer none (check_args): the targets are unmixed
        return HardLabelLoss(JsdCrossEntropy(num_splits=args.aug_splits, smoothing=args.smoothing))
    if args.bce_loss:
        return BinaryCrossEntropy(
            target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight
        )
    return SoftTargetCrossEntropy()


class HardLabelLoss(nn.Module):
    """A loss of integer labels (timm's ``JsdCrossEntropy``) fed the loop's unmixed soft targets.

    Unmixed targets are one-hot rows with label smoothing, so each row's largest entry is its label.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (N, num_classes), targets (N, num_classes) smoothed one-hot -> the scalar loss."""
        return self.loss(logits, targets.argmax(dim=-1))
