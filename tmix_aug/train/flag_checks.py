"""Flag combinations tmix-train refuses before building anything: ValueError naming the flag and what to change."""

from __future__ import annotations

import argparse
import math

from ..data import TRANSFER_DATASETS
from .data import DATASET_FLAGS
from .flags import SALIENCY_MIXERS, build_parser, timm_mixup_active


# timm train.py flags that tmix-train parses but does not implement: any value other than
# timm's default stops the run with the reason. Flags that only matter together with one of
# these (e.g. --naflex-max-seq-len) are accepted, as they are inert in timm too.
NOT_SUPPORTED = {
    "naflex_loader": "NaFlex batches are dicts of patch sequences of varying length, not (N, C, H, W) images; "
    "the mixers warp and blend images and this loop feeds images to the model; use timm's train.py for NaFlex",
}


MODEL_DTYPES = ("float32", "float16", "bfloat16")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace) -> None:
    """Flag combinations that cannot work; raise ValueError saying what to change."""
    parser = build_parser()
    for dest, reason in NOT_SUPPORTED.items():
        if getattr(args, dest) != parser.get_default(dest):
            raise ValueError(f"{_flag(dest)}: not supported by tmix-train: {reason}")
    for dest in ("grad_accum_steps", "val_interval"):
        if getattr(args, dest) < 1:
            raise ValueError(f"{_flag(dest)}: expected a whole number >= 1, got {getattr(args, dest)}")
    _check_timm_extras(args)
    if args.data and args.data_dir and args.data != args.data_dir:
        raise ValueError(
            f"DIR: given twice with different values ({args.data!r} and --data-dir {args.data_dir!r})"
        )
    args.data_dir = args.data_dir or args.data
    if args.dataset != "synthetic" and not args.data_dir:
        raise ValueError("--data-dir: required unless --dataset synthetic")
    given = [dest for dest in DATASET_FLAGS if getattr(args, dest) not in (None, "", False, 0)]
    if given and (args.dataset == "synthetic" or args.dataset.lower().removeprefix("torch/") in TRANSFER_DATASETS):
        raise ValueError(
            f"{_flag(given[0])}: used by image folders and timm datasets, not by --dataset {args.dataset}"
        )
    for name in ("mixer_prob", "mixer_switch_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(
                f"{_flag(name)}: expected a probability in [0, 1], got {getattr(args, name)}"
            )
    for name in ("mixup", "cutmix", "mixer_alpha", "smoothing", "lr_base", "warmup_lr", "min_lr", "weight_decay"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{_flag(name)}: expected a finite number >= 0, got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr >= 0):
        raise ValueError(f"--lr: expected a finite number >= 0, got {args.lr}")
    if not 0.0 <= args.smoothing < 1.0:
        raise ValueError(f"--smoothing: expected a value in [0, 1), got {args.smoothing}")
    if timm_mixup_active(args):
        _check_timm_mixup(args)
    else:
        for dest in ("cutmix_minmax", "mixup_mode"):
            if getattr(args, dest) != parser.get_default(dest):
                raise ValueError(f"{_flag(dest)}: configures timm's --mixup/--cutmix, which are off")
    _check_mixer(args)
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError(
            f"--epochs, --batch-size: expected positive numbers, got {args.epochs} and {args.batch_size}"
        )


def _check_timm_extras(args: argparse.Namespace) -> None:
    """timm's rules for --model-dtype, --torchscript, AugMix splits, --tta, scheduled sizes and recovery points."""
    if args.model_dtype is not None and args.model_dtype not in MODEL_DTYPES:
        raise ValueError(f"--model-dtype: expected one of {', '.join(MODEL_DTYPES)}, got {args.model_dtype!r}")
    if args.amp and args.model_dtype not in (None, "float32"):
        raise ValueError(
            f"--model-dtype: AMP (--amp) casts inside autocast and needs float32 weights, as in timm; "
            f"drop --amp or --model-dtype {args.model_dtype}"
        )
    if args.torchscript:
        needs_hooks = [flag for flag, on in (("--saliency self", args.saliency == "self"), ("--transmix", args.transmix)) if on]
        if needs_hooks:
            raise ValueError(
                f"--torchscript: {' and '.join(needs_hooks)} read{'s' if len(needs_hooks) == 1 else ''} the model's "
                "features through forward hooks, "
                "which a TorchScript model does not run; use --torchcompile, or --saliency teacher/spectral"
            )
        if args.sync_bn:
            raise ValueError("--torchscript: timm cannot script a model with SyncBatchNorm (--sync-bn)")
    if args.aug_splits:
        if args.aug_splits < 2:
            raise ValueError(f"--aug-splits: expected 0 (off) or >= 2 splits, got {args.aug_splits} (as timm)")
        if args.mixer != "none" or timm_mixup_active(args):
            raise ValueError(
                f"--aug-splits: each batch holds the clean image and {args.aug_splits - 1} AugMix cop"
                f"{'y' if args.aug_splits == 2 else 'ies'} of it in separate rows; "
                f"{'--mixer ' + args.mixer if args.mixer != 'none' else 'timm --mixup/--cutmix'} would mix rows "
                "across those copies (timm's train.py refuses Mixup with splits too); use --mixer none"
            )
        if args.no_prefetcher:
            raise ValueError(
                "--aug-splits: the splits are stacked into one batch by timm's prefetcher collate; without it "
                "(--no-prefetcher) a batch is a list of splits, which timm's train.py cannot train on either"
            )
    if args.jsd_loss and args.aug_splits < 2:
        raise ValueError("--jsd-loss: compares the AugMix splits of each image; give --aug-splits N (N >= 2), as timm")
    if args.split_bn and args.aug_splits < 2 and not args.resplit:
        raise ValueError("--split-bn: BatchNorm per split needs --aug-splits N (N >= 2) or --resplit, as timm")
    if args.split_bn and args.sync_bn:
        raise ValueError("--split-bn: cannot be combined with --sync-bn (timm refuses it too)")
    if args.tta < 0:
        raise ValueError(f"--tta: expected 0 (off) or a number of copies >= 1, got {args.tta}")
    if args.recovery_interval < 0:
        raise ValueError(f"--recovery-interval: expected 0 (off) or a number of updates >= 1, got {args.recovery_interval}")
    if args.train_batches_per_epoch is not None and args.train_batches_per_epoch < 1:
        raise ValueError(f"--train-batches-per-epoch: expected a number of batches >= 1, got {args.train_batches_per_epoch}")
    if args.train_img_sizes is not None or args.train_batches_per_epoch is not None:
        flag = "--train-img-sizes" if args.train_img_sizes is not None else "--train-batches-per-epoch"
        if args.aug_splits:
            raise ValueError(f"{flag}: timm's scheduled loader does not take --aug-splits")
        if args.use_multi_epochs_loader:
            raise ValueError(f"{flag}: timm's scheduled loader does not take --use-multi-epochs-loader")
    if args.kd_model_name is not None:
        if args.kd_distill_type != "logit":
            raise ValueError(
                f"--kd-distill-type: {args.kd_distill_type} distillation adds trainable projection layers "
                f"{'and a distillation token ' if args.kd_distill_type == 'token' else ''}that this loop's optimizer, "
                "checkpoints and evaluation do not carry; --kd-distill-type logit (timm's default) is supported"
            )
        if args.kd_loss_type != "kl":
            raise ValueError(f"--kd-loss-type: timm's logit distillation has only 'kl', got {args.kd_loss_type!r}")
        for flag, on in (("--transmix", args.transmix), ("--torchscript", args.torchscript)):
            if on:
                raise ValueError(
                    f"--kd-model-name: not with {flag}: "
                    + ("TransMix relabels the targets from the model call, which timm's distillation task makes itself"
                       if flag == "--transmix" else "timm's distillation task reads the student's pretrained_cfg, "
                       "which a TorchScript model does not keep")
                )
    if args.log_wandb and args.wandb_resume_id and not args.resume:
        raise ValueError("--wandb-resume-id: continues the wandb run of a resumed training; give --resume too (as timm)")


def _check_timm_mixup(args: argparse.Namespace) -> None:
    if args.mixer != "none":
        raise ValueError(
            f"--mixer: --mixer {args.mixer} replaces timm's --mixup/--cutmix; give one or the other "
            f"(got --mixup {args.mixup} --cutmix {args.cutmix})"
        )
    if args.transmix:
        raise ValueError("--transmix: needs the masks of a --mixer; timm's Mixup does not report its boxes")
    if args.batch_size % 2:
        raise ValueError(f"--batch-size: timm's Mixup pairs each batch with its reverse, so it must be even (got {args.batch_size})")
    if args.cutmix_minmax is not None and len(args.cutmix_minmax) != 2:
        raise ValueError(f"--cutmix-minmax: expected two numbers, MIN MAX, got {args.cutmix_minmax}")


def _check_mixer(args: argparse.Namespace) -> None:
    if args.mixer_path is not None and args.mixer != "transformmix":
        raise ValueError(
            f"--mixer-path: only --mixer transformmix loads weights (got --mixer {args.mixer})"
        )
    if args.mixer_mode is not None and args.mixer != "transformmix":
        raise ValueError(
            f"--mixer-mode: a TransformMix mode; use it with --mixer transformmix (got --mixer {args.mixer})"
        )
    if args.mixer == "transformmix" and args.mixer_path is None and args.mixer_mode not in (None, "saliency-softmax"):
        raise ValueError(
            f"--mixer-mode: without --mixer-path only saliency-softmax needs no weights (got {args.mixer_mode!r})"
        )
    if args.saliency is not None and args.mixer not in SALIENCY_MIXERS:
        raise ValueError(
            f"--saliency: used only by --mixer {' or '.join(SALIENCY_MIXERS)} (got --mixer {args.mixer})"
        )
    if (args.saliency == "teacher") != (args.teacher is not None):
        raise ValueError("--teacher: give --teacher MODEL exactly when --saliency teacher")
    _check_saliency_refresh(args)
    if args.saliency_cache is not None and args.saliency not in ("teacher", "self"):
        raise ValueError(
            f"--saliency-cache: stores the maps of a fixed teacher (--saliency teacher) or, with --saliency-refresh, "
            f"of the model being trained (--saliency self); got --saliency {args.saliency or 'spectral (the default)'}, "
            "whose maps are cheap to compute per batch"
        )
    if args.saliency_input_size is not None and (args.saliency not in ("self", "teacher") or args.saliency_input_size < 1):
        raise ValueError(
            f"--saliency-input-size: sets the CAM pass of --saliency self or teacher to a size >= 1 "
            f"(got {args.saliency_input_size} with --saliency {args.saliency or 'spectral'})"
        )
    if args.saliency_cache == "":
        raise ValueError("--saliency-cache: expected 'memory' or a directory, got an empty string")
    if args.saliency_cache is not None:
        scheduled = [flag for flag, value in (("--train-img-sizes", args.train_img_sizes),
                                              ("--train-batches-per-epoch", args.train_batches_per_epoch)) if value]
        if scheduled:
            raise ValueError(
                f"--saliency-cache: its loader is a plain DataLoader of one image size and one pass per epoch; "
                f"timm's scheduled loader ({' and '.join(scheduled)}) cannot carry the stored maps; drop one of them"
            )
    if args.teacher_checkpoint and not args.teacher:
        raise ValueError("--teacher-checkpoint: needs --teacher MODEL")
    if args.teacher_kwargs and not args.teacher:
        raise ValueError("--teacher-kwargs: needs --teacher MODEL")
    if args.transmix and args.mixer == "none":
        raise ValueError("--transmix: re-weights mixed labels; choose a --mixer")


def _check_saliency_refresh(args: argparse.Namespace) -> None:
    """--saliency-refresh N: stale maps of the model itself, which need --saliency self and a --saliency-cache."""
    if args.saliency_refresh is None:
        if args.saliency == "self" and args.saliency_cache is not None:
            raise ValueError(
                "--saliency-cache: the model being trained (--saliency self) changes its maps as it learns; add "
                "--saliency-refresh N to recompute them every N epochs, or leave --saliency-cache out for a CAM pass per step"
            )
        return
    if args.saliency_refresh < 1:
        raise ValueError(f"--saliency-refresh: expected a number of epochs >= 1, got {args.saliency_refresh}")
    if args.saliency != "self":
        raise ValueError(
            f"--saliency-refresh: recomputes the maps of the model being trained, so it needs --saliency self (got "
            f"--saliency {args.saliency or 'spectral (the default)'}"
            + ("; a teacher's maps never change: --saliency-cache alone stores them once)" if args.saliency == "teacher" else ")")
        )
    if args.saliency_cache is None:
        raise ValueError(
            "--saliency-refresh: the stored maps ride with their images in the --saliency-cache loader; give "
            "--saliency-cache memory (or a directory)"
        )


def check_finite(args: argparse.Namespace) -> None:
    """Every number given must be finite (--lr nan or --mixer-alpha inf would train to NaN)."""
    for name, value in sorted(vars(args).items()):
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"--{name.replace('_', '-')}: expected finite numbers, got {value}")
