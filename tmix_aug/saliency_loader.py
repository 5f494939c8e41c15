"""Training data with cached teacher saliency: what ``--saliency-cache`` of tmix-train and tmix-search builds.

timm's ``create_loader`` carries only (image, target), so a run with cached maps reads its
training data through a plain ``DataLoader`` of ``SaliencyDataset`` items (image, map, label):
the teacher's maps are computed once per image at the dataset's unaugmented resolution
(``SaliencyCache.build``), kept in memory or in a safetensors file keyed to the teacher's
weights and the dataset, and moved with their image by the same training augmentation; the
loop then mixes with ``mixer.mix(x, y, saliency=maps)``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator, Sequence

import torch
from timm.data.distributed_sampler import RepeatAugSampler
from timm.data.loader import _worker_init
from timm.data.random_erasing import RandomErasing
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms as v1

from .saliency import SaliencySource
from .saliency_cache import SaliencyCache, dataset_fingerprint, source_fingerprint
from .saliency_transforms import IMAGE_ONLY_V1, JointTransform, SaliencyDataset
from .synthetic import SyntheticObjects

FLAG = "--saliency-cache"
MEMORY = "memory"
"""The ``--saliency-cache`` value that keeps the maps in memory; anything else is a directory."""


def clean_view(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> v1.Compose:
    """The deterministic view the teacher's maps are computed from: the whole image resized
    (bilinear, antialiased) to the training input size, as a tensor, normalised as in training.

    Args:
        input_size: (C, H, W) or (H, W) of the training images.
        mean, std: the training normalisation.
    """
    height, width = input_size[-2:]
    return v1.Compose([
        v1.Resize((height, width), interpolation=v1.InterpolationMode.BILINEAR, antialias=True),
        v1.ToTensor(),
        v1.Normalize(tuple(mean), tuple(std)),
    ])  # fmt: skip


def dataset_key(dataset: Dataset) -> str | None:
    """A key for a dataset ``dataset_fingerprint`` cannot hash, or None to let it hash the data.

    The built-in synthetic set is a deterministic function of its arguments, so they are its key.
    """
    if isinstance(dataset, SyntheticObjects):
        fields = (dataset.num_samples, dataset.image_size, dataset.num_classes, dataset.seed, dataset.split)
        return "SyntheticObjects " + " ".join(map(str, fields))
    return None


def build_cache(
    dataset: Dataset,
    saliency: Any,
    *,
    where: str,
    num_classes: int,
    transform: Callable,
    map_size: int,
    batch_size: int,
    workers: int,
    device: torch.device,
) -> SaliencyCache:
    """The stored maps of ``dataset`` under ``saliency`` (computed now unless ``where`` holds them).

    Args:
        dataset: (PIL image, label) items before any augmentation (its ``transform`` unset).
        saliency: the teacher's ``ClassActivationMap`` (or a classifier module).
        where: ``MEMORY`` or a directory for the safetensors file.
        transform: the clean view of an item (``clean_view``).
        num_classes, map_size, batch_size, workers, device: see ``SaliencyCache.build``.

    Raises:
        ValueError: naming ``--saliency-cache`` when the dataset or the source cannot be keyed.
    """
    key = dataset_key(dataset)
    try:
        source = source_fingerprint(saliency)
        if key is None:
            dataset_fingerprint(dataset)  # raises for data it cannot key, before any map is computed
    except TypeError as error:
        raise ValueError(
            f"{FLAG}: cannot key stored maps to this data or teacher ({error}); use image folders, timm "
            "datasets with a file list, the transfer datasets, torchvision array datasets (torch/cifar10) or "
            "--dataset synthetic, or leave "
            f"{FLAG} out"
        ) from None
    return SaliencyCache.build(
        dataset, saliency, num_classes=num_classes, transform=transform, directory=None if where == MEMORY else where,
        map_size=map_size, batch_size=batch_size, num_workers=workers, device=device, source_key=source, dataset_key=key,
    )  # fmt: skip


def joint_augmentation(transform: Callable) -> JointTransform:
    """A timm / torchvision v1 training pipeline applied to image and map alike (see ``JointTransform``).

    timm's random erasing and ``RandomApply`` of photometric steps (its colour-jitter and blur
    probabilities) change pixel values only, so the map skips them.

    Raises:
        ValueError: naming ``--saliency-cache`` for a step the map cannot follow (auto-augment).
    """
    steps = transform.transforms if isinstance(transform, v1.Compose) else [transform]
    image_only: list[type] = [RandomErasing]
    photometric = IMAGE_ONLY_V1 + (RandomErasing,)
    if all(all(isinstance(inner, photometric) for inner in step.transforms) for step in steps if isinstance(step, v1.RandomApply)):
        image_only.append(v1.RandomApply)
    try:
        return JointTransform(transform, image_only=image_only)
    except ValueError as error:
        raise ValueError(
            f"{FLAG}: the training augmentation has a step the stored maps cannot follow ({error}); "
            f"leave out --aa (auto-augment), or {FLAG}"
        ) from None


def unpack_batch(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    """(x, y, maps or None) of a batch ``(x, y)`` or ``(x, maps, y)`` (the order of ``SaliencyDataset``)."""
    if len(batch) == 3:
        x, maps, y = batch
        return x, y, maps
    x, y = batch
    return x, y, None


def saliency_kwargs(mixer: Any, maps: Tensor | None) -> dict[str, Tensor]:
    """``{"saliency": maps}`` for ``mixer.mix`` when there are maps and the mixer reads saliency, else {}."""
    if maps is None or not isinstance(getattr(mixer, "saliency", None), SaliencySource):
        return {}
    return {"saliency": maps}


class DeviceBatches:
    """A DataLoader's (x, maps, y) batches moved to ``device`` (non-blocking from pinned memory).

    Has the loader's ``len`` and ``sampler`` (``set_epoch`` under DDP), as timm's loaders do.
    """

    def __init__(self, loader: DataLoader, device: torch.device, image_dtype: torch.dtype | None = None) -> None:
        self.loader, self.device, self.image_dtype = loader, device, image_dtype
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        for x, *rest in self.loader:
            x = x.to(self.device, dtype=self.image_dtype, non_blocking=True)
            yield (x, *(part.to(self.device, non_blocking=True) for part in rest))


def cached_saliency_loader(
    dataset: Dataset,
    cache: SaliencyCache,
    transform: Callable,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    distributed: bool = False,
    pin_memory: bool = False,
    aug_repeats: int = 0,
    worker_seeding: str = "all",
    image_dtype: torch.dtype | None = None,
) -> DeviceBatches:
    """Shuffled training batches (x (N, C, H, W), maps (N, H, W), y (N,)) on ``device``; the last partial batch is dropped.

    Samplers as in timm's ``create_loader``: a ``DistributedSampler`` under DDP (timm's
    ``RepeatAugSampler`` with ``aug_repeats``), else shuffling; workers seeded by timm's
    ``worker_seeding`` rule.

    Args:
        dataset: (PIL image, label) items before augmentation, in the cache's order.
        cache: their maps (``build_cache``).
        transform: the training augmentation (a timm / torchvision v1 pipeline with ToTensor and
            Normalize, or its ``joint_augmentation``), applied to image and map alike.
        image_dtype: the images' dtype on ``device`` (the model's, e.g. bfloat16); None keeps float32.
    """
    if aug_repeats and not distributed:
        raise ValueError(f"--aug-repeats: timm repeats augmentations only across distributed processes (with {FLAG} too)")
    if not isinstance(transform, JointTransform):
        transform = joint_augmentation(transform)
    items = SaliencyDataset(dataset, cache, transform)
    sampler = None
    if distributed:
        sampler = RepeatAugSampler(items, num_repeats=aug_repeats) if aug_repeats else DistributedSampler(items)
    loader = DataLoader(
        items, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=workers, drop_last=True,
        pin_memory=pin_memory, worker_init_fn=partial(_worker_init, worker_seeding=worker_seeding), persistent_workers=False,
    )  # fmt: skip
    return DeviceBatches(loader, device, image_dtype)


def tmix_train_loader(
    args: Any, dataset: Dataset, mixer: Any, data_config: dict, num_classes: int, device: torch.device,
    image_dtype: torch.dtype | None = None, cache: Any = None,
) -> DeviceBatches:
    """tmix-train's training batches with ``--saliency-cache``: timm's training augmentation of
    the same flags as its ``create_loader`` path, applied to each image and its stored map.

    Args:
        args: tmix-train's parsed flags.
        dataset: the training split, its ``transform`` unset.
        mixer: the run's mixer; its saliency source (the teacher's CAMs) computes the maps.
        data_config: timm's resolved data config of the model (input size, mean, std).
        cache: maps to carry instead of the teacher's (``--saliency-refresh``: a
            ``RefreshedSaliency`` of the model being trained); None builds the teacher's now.
    """
    from timm.data import create_transform

    if args.use_multi_epochs_loader:
        raise ValueError(f"--use-multi-epochs-loader: not available with {FLAG} (the maps come through a plain DataLoader)")
    transform = create_transform(
        data_config["input_size"], is_training=True, no_aug=args.no_aug, train_crop_mode=args.train_crop_mode,
        scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob,
        gaussian_blur_prob=args.gaussian_blur_prob, auto_augment=args.aa, interpolation=args.train_interpolation,
        mean=data_config["mean"], std=data_config["std"], re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        re_num_splits=2 if args.resplit else 0, use_prefetcher=False,
    )  # fmt: skip
    augmentation = joint_augmentation(transform)  # refused here, before any map is computed
    cache = cache if cache is not None else build_cache(
        dataset, mixer.saliency.fn, where=args.saliency_cache, num_classes=num_classes,
        transform=clean_view(data_config["input_size"], data_config["mean"], data_config["std"]),
        map_size=mixer.saliency.size, batch_size=args.validation_batch_size or args.batch_size, workers=args.workers, device=device,
    )  # fmt: skip
    return cached_saliency_loader(
        dataset, cache, augmentation, batch_size=args.batch_size, workers=args.workers, device=device,
        distributed=args.distributed, pin_memory=args.pin_mem, aug_repeats=args.aug_repeats, worker_seeding=args.worker_seeding,
        image_dtype=image_dtype,
    )  # fmt: skip
