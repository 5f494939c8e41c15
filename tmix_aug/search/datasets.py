"""The search's images: training and held-out splits with the teacher's clean view."""
from __future__ import annotations

import numpy as np
import torch
from timm.data import create_transform
from torch.utils.data import Dataset, Subset
from torchvision.transforms import Compose, RandomHorizontalFlip

from ..data import count_classes, create_image_dataset
from ..saliency_loader import build_cache, joint_augmentation
from ..saliency_transforms import SaliencyDataset
from .config import SearchConfig


def read_splits(config: SearchConfig) -> tuple[Dataset, Dataset, int]:
    """The training and held-out splits (no transforms yet) and their number of classes (>= 2)."""
    if config.data_dir is None and not config.dataset:
        raise ValueError("data_dir: pass an ImageFolder directory (train/ and validation/ folders) or a dataset name")
    train = create_image_dataset(config.dataset, config.data_dir, config.train_split, is_training=True, seed=config.seed)
    held_out = create_image_dataset(config.dataset, config.data_dir, config.val_split, seed=config.seed)
    num_classes = count_classes(train)
    if num_classes is None:
        raise ValueError(f"dataset: cannot tell how many classes {config.dataset or config.data_dir!r} has")
    return train, held_out, num_classes


def set_transforms(train: Dataset, held_out: Dataset, data_config: dict) -> None:
    """Give both splits the teacher's input size and normalisation; training images are flipped at random."""
    size = data_config["input_size"][-2:]
    held_out.transform = create_transform(size, is_training=False, crop_pct=1.0, mean=data_config["mean"], std=data_config["std"], interpolation="bilinear")
    # Search images are the teacher's clean view, flipped at random (ours): random crops and
    # colour jitter lower the frozen teacher's accuracy and make the objective noisier.
    train.transform = Compose([RandomHorizontalFlip(), *held_out.transform.transforms])


def held_out_subset(dataset: Dataset, samples: int, seed: int) -> Dataset:
    """A fixed random subset of at most ``samples`` items, in random order."""
    # Random order on purpose: a sorted subset of a class-sorted folder would make most
    # batches, and so most mixed pairs, a single class.
    return Subset(dataset, np.random.default_rng(seed).permutation(len(dataset))[:samples].tolist())


def with_stored_saliency(train: Dataset, held_out: Dataset, saliency, config: SearchConfig, num_classes: int, map_size: int, device: torch.device) -> SaliencyDataset:
    """The training split as (image, stored teacher map, label) items (``saliency_cache``).

    Each map is computed once from the teacher's clean view of the image (the held-out
    transform), then flipped, resized and cropped with its image by the training transform.

    Args:
        train, held_out: the splits after ``set_transforms``.
        saliency: the mixer's CAM source (the teacher).
        map_size: side of the stored maps (the mixer's S).
    """
    augment, train.transform = train.transform, None
    cache = build_cache(
        train, saliency, where=config.saliency_cache, num_classes=num_classes, transform=held_out.transform,
        map_size=map_size, batch_size=config.batch_size, workers=config.workers, device=device,
    )  # fmt: skip
    return SaliencyDataset(train, cache, joint_augmentation(augment))
