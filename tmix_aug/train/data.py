"""Datasets and loaders of tmix-train: timm's create_dataset / create_loader arguments of the flags,
timm's scheduled loader (--train-img-sizes, --train-batches-per-epoch) and --tta's grouping."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from timm.data import AugMixDataset, ScheduledBatchSampler, create_loader

from ..data import count_classes, create_image_dataset
from ..mixing import BatchMixer
from ..saliency_cache import dataset_fingerprint
from ..saliency_loader import MEMORY, clean_view, dataset_key, tmix_train_loader
from ..saliency_refresh import RefreshedSaliency
from .flags import model_dtype


# Flags passed to timm's create_dataset; our synthetic and transfer datasets have no use for them.
DATASET_FLAGS = {
    "train_num_samples": "num_samples",
    "class_map": "class_map",
    "input_img_mode": "input_img_mode",
    "input_key": "input_key",
    "target_key": "target_key",
    "dataset_trust_remote_code": "trust_remote_code",
    "epoch_repeats": "repeats",
}


def dataset_kwargs(args: argparse.Namespace, *, is_training: bool) -> dict[str, Any]:
    """timm's create_dataset arguments of the dataset flags that are set (--class-map, --input-key, ...)."""
    values = {timm_name: getattr(args, dest) for dest, timm_name in DATASET_FLAGS.items()}
    if not is_training:  # timm's train.py: evaluation gets its own sample count and no repeats
        values.update(num_samples=args.val_num_samples, repeats=0)
    return {key: value for key, value in values.items() if value not in (None, "", False, 0)}


def build_datasets(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """Training and evaluation datasets and the number of classes the model needs."""
    common = dict(
        download=args.dataset_download,
        image_size=args.img_size or (args.input_size[-1] if args.input_size else 32),
        synthetic_samples=args.synthetic_samples,
        synthetic_classes=args.synthetic_classes,
        seed=args.seed,
    )
    train = create_image_dataset(
        args.dataset, args.data_dir, args.train_split, is_training=True, **common,
        **dataset_kwargs(args, is_training=True),
    )
    evaluation = create_image_dataset(
        args.dataset, args.data_dir, args.val_split, **common, **dataset_kwargs(args, is_training=False)
    )
    found = [n for n in (count_classes(train), count_classes(evaluation)) if n is not None]
    if args.num_classes is None:
        if not found:
            raise ValueError(
                f"--num-classes: cannot tell how many classes dataset {args.dataset!r} has; pass it"
            )
        return train, evaluation, max(found)
    if found and max(found) > args.num_classes:
        raise ValueError(
            f"--num-classes: the dataset has {max(found)} classes (labels up to {max(found) - 1}) but "
            f"--num-classes is {args.num_classes}; raise it to {max(found)} or leave it out"
        )
    return train, evaluation, args.num_classes


def train_loader_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """timm's create_loader arguments of the training-augmentation flags beyond the basic ones."""
    return dict(
        re_split=args.resplit,
        train_crop_mode=args.train_crop_mode,
        color_jitter_prob=args.color_jitter_prob,
        grayscale_prob=args.grayscale_prob,
        gaussian_blur_prob=args.gaussian_blur_prob,
        num_aug_repeats=args.aug_repeats,
        num_aug_splits=args.aug_splits,
        worker_seeding=args.worker_seeding,
        use_multi_epochs_loader=args.use_multi_epochs_loader,
    )


def scheduled_sampler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """timm's ScheduledBatchSampler arguments of --train-batch-sizes, --train-size-* and --train-batches-per-epoch."""
    choices = len(args.train_img_sizes) if args.train_img_sizes is not None else 1
    return dict(
        batch_sizes=args.train_batch_sizes or [args.batch_size] * choices,
        choice_weights=args.train_size_probs,
        seed=args.seed,
        num_batches=args.train_batches_per_epoch,
        choice_schedule=args.train_size_schedule,
        schedule_epochs=args.epochs if args.train_size_schedule == "progressive" else None,
        schedule_spread=args.train_size_schedule_spread,
        schedule_random_mix=args.train_size_random_mix,
    )


# create_loader's names of the ScheduledBatchSampler arguments
_SCHEDULED_LOADER_NAMES = {
    "batch_sizes": "batch_size_choices",
    "choice_weights": "batch_choice_weights",
    "seed": "batch_choice_seed",
    "num_batches": "num_batches",
    "choice_schedule": "batch_choice_schedule",
    "schedule_epochs": "batch_schedule_epochs",
    "schedule_spread": "batch_schedule_spread",
    "schedule_random_mix": "batch_schedule_random_mix",
}


def scheduled_loader_kwargs(args: argparse.Namespace, input_size: tuple) -> dict[str, Any]:
    """timm's create_loader arguments of --train-img-sizes / --train-batches-per-epoch (timm's scheduled loader).

    timm's own loader applies --train-batches-per-epoch only with --train-img-sizes; here it also
    works alone, as a scheduled loader with the one --img-size, so an epoch is exactly that many batches.
    """
    if args.train_img_sizes is None and args.train_batches_per_epoch is None:
        return {}
    kwargs = {_SCHEDULED_LOADER_NAMES[key]: value for key, value in scheduled_sampler_kwargs(args).items()}
    return {"input_size_choices": args.train_img_sizes or [tuple(input_size)], **kwargs}


def scheduled_batch_size(args: argparse.Namespace, num_samples: int) -> float | None:
    """The average batch size of timm's scheduled loader for --train-img-sizes (timm scales --lr-base by it), else None."""
    if args.train_img_sizes is None:
        return None
    return ScheduledBatchSampler(range(num_samples), **scheduled_sampler_kwargs(args)).average_batch_size


def check_tta(args: argparse.Namespace, num_eval: int) -> None:
    """--tta N averages the logits of every N consecutive evaluation images (timm's meaning: the
    evaluation set holds N augmented copies of each image in a row), so the rows must group exactly."""
    if args.tta <= 1:
        return
    batch = args.validation_batch_size or args.batch_size
    if args.distributed:
        raise ValueError(
            f"--tta: the {args.tta} copies of an image must be consecutive rows of one process's batches; "
            "the distributed evaluation sampler deals rows to processes in turn"
        )
    if batch % args.tta or num_eval % args.tta:
        raise ValueError(
            f"--tta: the evaluation batch ({batch}) and the evaluation set ({num_eval} images) must be multiples "
            f"of {args.tta}, so that each group of {args.tta} copies stays together"
        )


def build_saliency_refresh(
    args: argparse.Namespace, train_set: Any, mixer: BatchMixer, data_config: dict[str, Any], num_classes: int,
    device: torch.device,
) -> RefreshedSaliency:
    """--saliency-refresh N: the model's own maps of ``train_set`` (its CAMs as ``mixer`` reads them), recomputed
    every N epochs from the whole image at the input size; no map is computed yet (see ``RefreshedSaliency.update``)."""
    directory = None if args.saliency_cache == MEMORY else args.saliency_cache
    key = dataset_key(train_set)
    if directory is not None and key is None:
        try:
            key = dataset_fingerprint(train_set)
        except TypeError as error:
            raise ValueError(
                f"--saliency-cache: cannot key stored maps to this data ({error}); use --saliency-cache memory"
            ) from None
    return RefreshedSaliency(
        train_set, mixer.saliency.fn, num_classes=num_classes, every=args.saliency_refresh,
        transform=clean_view(data_config["input_size"], data_config["mean"], data_config["std"]),
        map_size=mixer.saliency.size, directory=directory, batch_size=args.validation_batch_size or args.batch_size,
        num_workers=args.workers, device=device, dataset_key=key,
    )  # fmt: skip


def build_loaders(
    args: argparse.Namespace,
    train_set: Any,
    eval_set: Any,
    mixer: BatchMixer,
    data_config: dict[str, Any],
    num_classes: int,
    device: torch.device,
    saliency_maps: Any = None,
) -> tuple[Any, Any]:
    """The training and evaluation loaders: timm's (with the prefetcher unless --no-prefetcher), or,
    with --saliency-cache, a loader whose batches carry stored maps: ``saliency_maps`` (the model's
    own with --saliency-refresh, ``build_saliency_refresh``), else the teacher's of ``mixer``.
    """
    loader_common = dict(
        use_prefetcher=not args.no_prefetcher,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
        num_workers=args.workers,
        distributed=args.distributed,
        pin_memory=args.pin_mem,
        device=device,
        img_dtype=model_dtype(args) or torch.float32,
    )
    if args.aug_splits:
        train_set = AugMixDataset(train_set, num_splits=args.aug_splits)
    cached = args.saliency_cache is not None  # the maps ride with their images through a plain DataLoader
    train_loader = tmix_train_loader(
        args, train_set, mixer, data_config, num_classes, device, model_dtype(args), cache=saliency_maps
    ) if cached else create_loader(
        train_set,
        input_size=data_config["input_size"],
        batch_size=args.batch_size,
        is_training=True,
        no_aug=args.no_aug,
        re_prob=args.reprob,
        re_mode=args.remode,
        re_count=args.recount,
        scale=args.scale,
        ratio=args.ratio,
        hflip=args.hflip,
        vflip=args.vflip,
        color_jitter=args.color_jitter,
        auto_augment=args.aa,
        **train_loader_kwargs(args),
        **scheduled_loader_kwargs(args, data_config["input_size"]),
        # Fresh workers each epoch, seeded from the epoch's stream (see runner.run): persistent workers
        # keep the random state of the epoch they started in, so a resumed run would draw otherwise.
        persistent_workers=False,
        **{**loader_common, "interpolation": args.train_interpolation},
    )
    eval_loader = create_loader(
        eval_set,
        input_size=data_config["input_size"],
        batch_size=args.validation_batch_size or args.batch_size,
        is_training=False,
        crop_pct=data_config["crop_pct"],
        **loader_common,
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"--batch-size: {args.batch_size} per process is more than the {len(train_set)} training "
            f"images{' per process' if args.distributed else ''} (the last partial batch is dropped)"
        )
    return train_loader, eval_loader


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's dataset and (batch) sampler the epoch, as timm's train.py does: the
    distributed sampler's order and the scheduled loader's sizes depend on it."""
    dataset, batch_sampler, sampler = (getattr(loader, name, None) for name in ("dataset", "batch_sampler", "sampler"))
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if hasattr(batch_sampler, "set_epoch"):
        batch_sampler.set_epoch(epoch)
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
