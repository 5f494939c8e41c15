"""Shared pieces of the Tiny-ImageNet scripts: the data, the teacher built from ImageNet weights, the val split.

Facts used here are in ../shared/data/README.md: the MobileNetV2 weights expect RGB in [0, 1]
normalised with mean = std = 0.5 and TF "same" padding; Tiny-ImageNet's 200 wnids are ImageNet-1k
classes, so the 200-class head starts as the ImageNet head's rows of those classes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import safetensors.torch
import timm
import tmix_aug.models  # noqa: F401  (registers tf_mobilenetv2_100*)
import torch
from timm.data import ImageNetInfo
from torch import nn
from torchvision import datasets, transforms

DATA = Path(os.environ.get("TINYIMAGENET", Path.home() / ".cache/tmix/tinyimagenet-64px"))
IMAGENET_WEIGHTS = Path("/work/shared/data/weights/mobilenetv2_100_imagenet.safetensors")
MEAN = STD = (0.5, 0.5, 0.5)
# The search holds out the first SEARCH_VAL_SAMPLES of a seed-0 permutation of the 10,000 val
# images (tmix_aug.search.loop.held_out_subset with seed 0, val_samples 2000); every judge-style
# evaluation uses the other 8,000.
SEARCH_SEED = 0
SEARCH_VAL_SAMPLES = 2000


def normalize() -> transforms.Normalize:
    return transforms.Normalize(MEAN, STD)


def folder(split: str, train: bool = False) -> datasets.ImageFolder:
    """Tiny-ImageNet split as an ImageFolder of normalised (3, 64, 64) tensors (greyscale -> RGB)."""
    steps = [transforms.RandomCrop(64, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()] if train else []
    return datasets.ImageFolder(
        str(DATA / split),
        transform=transforms.Compose([*steps, transforms.ToTensor(), normalize()]),
        loader=lambda p: datasets.folder.default_loader(p).convert("RGB"),
    )


def val_split_indices() -> tuple[list[int], list[int]]:
    """(indices the search holds out, indices every judge-style evaluation uses) of the val folder."""
    order = np.random.default_rng(SEARCH_SEED).permutation(10_000)
    return order[:SEARCH_VAL_SAMPLES].tolist(), order[SEARCH_VAL_SAMPLES:].tolist()


def imagenet_rows(classes: list[str]) -> list[int]:
    """ImageNet-1k class index of each wnid, in the order given."""
    wnids = list(ImageNetInfo().label_names())
    return [wnids.index(c) for c in classes]


def teacher_from_imagenet(classes: list[str], model_name: str = "tf_mobilenetv2_100", **kwargs) -> nn.Module:
    """A tmix_aug.models MobileNetV2 (TF "same" padding) with ImageNet weights and the head rows of ``classes``.

    ``kwargs`` go to ``timm.create_model`` (e.g. ``output_stride``, ``input_scale``).
    """
    model = timm.create_model(model_name, num_classes=len(classes), **kwargs)
    state = safetensors.torch.load_file(IMAGENET_WEIGHTS)
    rows = torch.tensor(imagenet_rows(classes))
    state["classifier.weight"] = state["classifier.weight"][rows]
    state["classifier.bias"] = state["classifier.bias"][rows]
    model.load_state_dict(state)
    return model
