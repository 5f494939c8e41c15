"""Train an image classifier with a batch mixer, timm style (``tmix-train``).

Built on timm's public API: datasets and loaders (with the prefetcher), models, optimizers,
schedulers, EMA, checkpoints and distributed set-up. Every flag of timm's train.py is accepted
with its name, meaning and default (only --naflex-loader, and combinations that cannot work,
stop the run with the reason), ``-c
FILE`` reads a YAML config as timm does, and ``--mixup/--cutmix`` run timm's own Mixup; the
mixer flags are ours. The mixer runs on the device inside the loop, after the batch arrives and
before autocast, so it works with timm's prefetcher.

    tmix-train --dataset synthetic --model cifar_resnet20 --epochs 4 --warmup-epochs 0 --lr 0.1 \\
        -b 64 -j 2 --scale 0.35 1 --mixer transformmix --mixer-path cifar10-resnet20 --mixer-prob 0.5
    torchrun --nproc_per_node=8 -m tmix_aug.train --data-dir DIR --model resnet50 --mixer cutmix ...

Each epoch appends train loss, eval top-1/top-5, images/s and the mixer's share of the step
time to ``summary.csv`` and rewrites ``summary.json``; ``last.pth.tar`` and
``model_best.pth.tar`` are timm checkpoints; ``args.yaml`` holds the flags; ``mix.png`` shows
the first mixed batch. With --recovery-interval N, ``recovery-EPOCH-UPDATE.pth.tar`` every N
updates resumes inside its epoch, exactly (``tmix_aug.recovery``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from types import SimpleNamespace
from pathlib import Path
from typing import Any

import timm
import torch
import torch.distributed as dist
import yaml
from timm.data import AugMixDataset, Mixup, ScheduledBatchSampler, create_loader, resolve_data_config
from timm.layers import convert_splitbn_model, set_fast_norm
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, SoftTargetCrossEntropy
from timm.models import load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.task import DistillationTeacher, LogitDistillationTask
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    CheckpointSaver,
    ModelEmaV3,
    get_state_dict,
    unwrap_model,
    NativeScaler,
    AverageMeter,
    ParseKwargs,
    accuracy,
    dispatch_clip_grad,
    get_outdir,
    distribute_bn,
    init_distributed_device,
    load_checkpoint_metadata,
    random_seed,
    set_jit_fuser,
    setup_default_logging,
    update_summary,
)
from torch import nn
from tqdm import tqdm

from .atomic import remove_stale_temporaries, write_atomic
from . import models as _models  # noqa: F401  registers the small-image classifiers with timm
from .baselines import NoMix
from .data import TRANSFER_DATASETS, check_num_classes, count_classes, create_image_dataset
from .hub import bundled_image_size, choose_bundled
from .mixing import BatchMixer
from .recovery import capture_streams, check_position, restore_streams
from .registry import create_mixer, list_mixers
from .saliency import ClassActivationMap
from .saliency_loader import saliency_kwargs, tmix_train_loader, unpack_batch
from .sampling import stream_seed
from .step_timer import PhaseTimer
from .teacher import load_teacher

_logger = logging.getLogger("tmix_aug.train")
SALIENCY_MIXERS = ("saliencymix", "transformmix")


def default_workers() -> int:
    """Loader workers per process: timm's 4, or fewer on a machine with fewer CPU cores."""
    return min(4, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags: every flag of timm's train.py, with timm's names and defaults, plus the mixer's.

    Deviations from timm's defaults: ``--device`` falls back to cpu without CUDA, and
    ``-j/--workers`` is at most the number of CPU cores. Flags this script does not implement
    are listed in ``NOT_SUPPORTED``: they parse, and a value other than timm's default stops
    the run with the reason (``check_args``).
    """
    parser = argparse.ArgumentParser(
        prog="tmix-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-c", "--config", default="", metavar="FILE",
        help="YAML file of flag defaults (timm's keys, e.g. a run's args.yaml); the command line overrides it",
    )
    parser.add_argument("data", nargs="?", metavar="DIR", help="path to dataset (same as --data-dir)")

    group = parser.add_argument_group("Dataset")
    group.add_argument("--data-dir", metavar="DIR", help="path to dataset (root dir)")
    group.add_argument(
        "--dataset", default="", metavar="NAME",
        help='"" (image folder, default), "synthetic" (built in, no data needed), "flowers102", '
        '"oxford_iiit_pet", "stanford_cars", "fgvc_aircraft" (torchvision layout), or a timm '
        'dataset name ("torch/cifar10", "hfds/...")',
    )
    group.add_argument("--train-split", default="train", metavar="NAME", help="training split (default: train)")
    group.add_argument("--val-split", default="validation", metavar="NAME", help="evaluation split (default: validation)")
    group.add_argument("--train-num-samples", type=int, default=None, metavar="N", help="training samples of an iterable dataset")
    group.add_argument("--val-num-samples", type=int, default=None, metavar="N", help="evaluation samples of an iterable dataset")
    group.add_argument("--dataset-download", action="store_true", help="let timm / torchvision download the dataset")
    group.add_argument("--class-map", default="", metavar="FILE", help="file mapping class names to indices")
    group.add_argument("--input-img-mode", default=None, metavar="MODE", help="PIL mode the images are converted to")
    group.add_argument("--input-key", default=None, metavar="KEY", help="image field of a keyed dataset")
    group.add_argument("--target-key", default=None, metavar="KEY", help="label field of a keyed dataset")
    group.add_argument("--dataset-trust-remote-code", action="store_true", help="let a Hugging Face dataset run its own code")
    group.add_argument("--synthetic-samples", type=int, default=4096, metavar="N",
                       help="size of the synthetic training set; evaluation gets a quarter (default: 4096)")
    group.add_argument("--synthetic-classes", type=int, default=8, metavar="N",
                       help="classes of the synthetic set, 2 to 8 (default: 8)")

    group = parser.add_argument_group("Model")
    group.add_argument("--model", default="resnet50", metavar="NAME", help="timm model (default: resnet50)")
    group.add_argument("--pretrained", action="store_true", help="start from the model's pretrained weights")
    group.add_argument("--pretrained-path", default=None, metavar="FILE",
                       help="load these weights as the pretrained ones (a different classifier is dropped)")
    group.add_argument("--initial-checkpoint", default="", metavar="PATH", help="load this checkpoint (same classes)")
    group.add_argument("--resume", default="", metavar="PATH", help="resume model, optimizer and schedule from a checkpoint")
    group.add_argument("--no-resume-opt", action="store_true", help="do not restore the optimizer when resuming")
    group.add_argument("--num-classes", type=int, default=None, metavar="N", help="classes (default: the dataset's)")
    group.add_argument("--gp", default=None, metavar="POOL", help="global pooling type (default: the model's)")
    group.add_argument("--img-size", type=int, default=None, metavar="N", help="image size (default: the model's)")
    group.add_argument("--in-chans", type=int, default=None, metavar="N", help="input channels (default: 3)")
    group.add_argument("--input-size", type=int, nargs=3, default=None, metavar="N", help="C H W (overrides --img-size)")
    group.add_argument("--crop-pct", type=float, default=None, metavar="PCT", help="evaluation centre crop")
    group.add_argument("--mean", type=float, nargs="+", default=None, metavar="MEAN", help="pixel mean")
    group.add_argument("--std", type=float, nargs="+", default=None, metavar="STD", help="pixel std")
    group.add_argument("--interpolation", default="", metavar="NAME", help="resize interpolation (default: the model's)")
    group.add_argument("-b", "--batch-size", type=int, default=128, metavar="N", help="batch size per process (default: 128)")
    group.add_argument("-vb", "--validation-batch-size", type=int, default=None, metavar="N", help="evaluation batch size")
    group.add_argument("--channels-last", action="store_true", help="use the channels_last memory layout")
    group.add_argument("--fuser", default="", metavar="NAME", help="TorchScript fuser: te, old or nvfuser")
    group.add_argument("--grad-accum-steps", type=int, default=1, metavar="N", help="batches per optimizer step")
    group.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in the backward pass")
    group.add_argument("--fast-norm", action="store_true", help="timm's fast normalisation layers")
    group.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="extra create_model arguments, e.g. img_size=32 depth=6")
    group.add_argument("--head-init-scale", type=float, default=None, help="multiply the classifier's initial weights")
    group.add_argument("--head-init-bias", type=float, default=None, help="initial classifier bias")
    group.add_argument("--torchcompile-mode", default=None, help="torch.compile mode")
    scripting = group.add_mutually_exclusive_group()
    scripting.add_argument("--torchscript", action="store_true", help="torch.jit.script the model")
    scripting.add_argument("--torchcompile", nargs="?", default=None, const="inductor", metavar="BACKEND",
                           help="torch.compile the model (backend, default inductor)")

    group = parser.add_argument_group("Device")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="device (default: cuda if present, else cpu)")
    group.add_argument("--amp", action="store_true", help="mixed precision")
    group.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"))
    group.add_argument("--model-dtype", default=None, help="model dtype without AMP")
    group.add_argument("--no-ddp-bb", action="store_true", help="DDP does not broadcast buffers")
    group.add_argument("--synchronize-step", action="store_true",
                       help="wait for the device after each step (tmix-train always does on CUDA, to time the mixer)")
    group.add_argument("--local_rank", type=int, default=0, help="set by older launchers; the rank comes from the environment")
    group.add_argument("--device-modules", nargs="+", default=None, metavar="MODULE",
                       help="modules to import for a device backend")

    group = parser.add_argument_group("Optimizer")
    group.add_argument("--opt", default="sgd", metavar="NAME", help="optimizer (default: sgd)")
    group.add_argument("--opt-eps", type=float, default=None, metavar="EPS")
    group.add_argument("--opt-betas", type=float, nargs="+", default=None, metavar="BETA")
    group.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum (default: 0.9)")
    group.add_argument("--weight-decay", type=float, default=2e-5, help="weight decay (default: 2e-5)")
    group.add_argument("--clip-grad", type=float, default=None, metavar="NORM", help="gradient clipping (default: off)")
    group.add_argument("--clip-mode", default="norm", help='"norm", "value" or "agc" (default: norm)')
    group.add_argument("--layer-decay", type=float, default=None, help="layer-wise learning rate decay")
    group.add_argument("--layer-decay-min-scale", type=float, default=0, help="lowest layer-wise lr scale")
    group.add_argument("--layer-decay-no-opt-scale", type=float, default=None, help="layers below this scale are frozen")
    group.add_argument("--opt-kwargs", nargs="*", default={}, action=ParseKwargs, help="extra optimizer arguments")

    group = parser.add_argument_group("Learning rate schedule")
    group.add_argument("--sched", default="cosine", metavar="NAME", help="schedule (default: cosine)")
    group.add_argument("--sched-on-updates", action="store_true", help="step the schedule every update")
    group.add_argument("--lr", type=float, default=None, metavar="LR",
                       help="learning rate (default: --lr-base scaled by the global batch size)")
    group.add_argument("--lr-base", type=float, default=0.1, metavar="LR", help="base learning rate (default: 0.1)")
    group.add_argument("--lr-base-size", type=int, default=256, metavar="N", help="batch size of --lr-base (default: 256)")
    group.add_argument("--lr-base-scale", default="", metavar="SCALE",
                       help='"linear" or "sqrt" (default: sqrt for adaptive optimizers, else linear)')
    group.add_argument("--lr-noise", type=float, nargs="+", default=None, metavar="PCT", help="lr noise on/off epoch fractions")
    group.add_argument("--lr-noise-pct", type=float, default=0.67, metavar="PCT")
    group.add_argument("--lr-noise-std", type=float, default=1.0, metavar="STD")
    group.add_argument("--lr-cycle-mul", type=float, default=1.0, metavar="MULT")
    group.add_argument("--lr-cycle-decay", type=float, default=0.5, metavar="MULT")
    group.add_argument("--lr-cycle-limit", type=int, default=1, metavar="N")
    group.add_argument("--lr-k-decay", type=float, default=1.0)
    group.add_argument("--warmup-lr", type=float, default=1e-5, metavar="LR", help="warm-up learning rate (default: 1e-5)")
    group.add_argument("--min-lr", type=float, default=0, metavar="LR", help="lowest learning rate (default: 0)")
    group.add_argument("--epochs", type=int, default=300, metavar="N", help="epochs (default: 300)")
    group.add_argument("--epoch-repeats", type=float, default=0.0, metavar="N", help="passes over the data per epoch")
    group.add_argument("--start-epoch", type=int, default=None, metavar="N", help="epoch to start at")
    group.add_argument("--decay-milestones", type=int, nargs="+", default=[90, 180, 270], metavar="N")
    group.add_argument("--decay-epochs", type=float, default=90, metavar="N")
    group.add_argument("--warmup-epochs", type=int, default=5, metavar="N", help="warm-up epochs (default: 5)")
    group.add_argument("--warmup-prefix", action="store_true", help="warm-up before, not inside, the schedule")
    group.add_argument("--cooldown-epochs", type=int, default=0, metavar="N")
    group.add_argument("--patience-epochs", type=int, default=10, metavar="N")
    group.add_argument("--decay-rate", "--dr", type=float, default=0.1, metavar="RATE")

    group = parser.add_argument_group("Augmentation and regularisation")
    group.add_argument("--no-aug", action="store_true", help="no per-image augmentation (the mixer still runs)")
    group.add_argument("--train-crop-mode", default=None, help="training crop mode")
    group.add_argument("--scale", type=float, nargs="+", default=[0.08, 1.0], metavar="PCT", help="random resized crop scale")
    group.add_argument("--ratio", type=float, nargs="+", default=[3.0 / 4.0, 4.0 / 3.0], metavar="RATIO")
    group.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    group.add_argument("--vflip", type=float, default=0.0, help="vertical flip probability")
    group.add_argument("--color-jitter", type=float, default=0.4, metavar="PCT")
    group.add_argument("--color-jitter-prob", type=float, default=None, metavar="PCT")
    group.add_argument("--grayscale-prob", type=float, default=None, metavar="PCT")
    group.add_argument("--gaussian-blur-prob", type=float, default=None, metavar="PCT")
    group.add_argument("--aa", default=None, metavar="NAME", help='auto augment policy, e.g. "rand-m9-mstd0.5"')
    group.add_argument("--aug-repeats", type=float, default=0, help="repeated augmentation count (distributed)")
    group.add_argument("--aug-splits", type=int, default=0, help="AugMix splits")
    group.add_argument("--jsd-loss", action="store_true", help="Jensen-Shannon loss over AugMix splits")
    group.add_argument("--bce-loss", action="store_true", help="binary cross-entropy on the (mixed) targets")
    group.add_argument("--bce-sum", action="store_true", help="BCE: sum over classes")
    group.add_argument("--bce-target-thresh", type=float, default=None, help="BCE: binarise targets at this value")
    group.add_argument("--bce-pos-weight", type=float, default=None, help="BCE: weight of positive targets")
    group.add_argument("--reprob", type=float, default=0.0, metavar="PCT", help="random erase probability")
    group.add_argument("--remode", default="pixel", help="random erase mode")
    group.add_argument("--recount", type=int, default=1, help="random erase count")
    group.add_argument("--resplit", action="store_true", help="no random erasing on the first AugMix split")
    group.add_argument("--mixup", type=float, default=0.0, help="timm Mixup alpha; on if > 0 (timm's own Mixup class)")
    group.add_argument("--cutmix", type=float, default=0.0, help="timm CutMix alpha; on if > 0 (timm's own Mixup class)")
    group.add_argument("--cutmix-minmax", type=float, nargs="+", default=None, help="timm CutMix box size range")
    group.add_argument("--mixup-prob", "--mixer-prob", dest="mixer_prob", type=float, default=1.0,
                       help="probability a batch (timm) / a sample (--mixer) is mixed (default: 1)")
    group.add_argument("--mixup-switch-prob", "--mixer-switch-prob", dest="mixer_switch_prob", type=float, default=0.5,
                       help="CutMix probability when both mixup and cutmix are on (default: 0.5)")
    group.add_argument("--mixup-mode", default="batch", choices=("batch", "pair", "elem"),
                       help="timm Mixup: draw per batch, pair or element")
    group.add_argument("--mixup-off-epoch", "--mixer-off-epoch", dest="mixer_off_epoch", type=int, default=0,
                       metavar="N", help="stop mixing from this epoch; 0: never (default)")
    group.add_argument("--smoothing", type=float, default=0.1, help="label smoothing (default: 0.1)")
    group.add_argument("--train-interpolation", default="random", help="training resize interpolation")
    group.add_argument("--drop", type=float, default=0.0, metavar="PCT", help="dropout rate (default: 0)")
    group.add_argument("--drop-connect", type=float, default=None, metavar="PCT", help="deprecated by timm; use --drop-path")
    group.add_argument("--drop-path", type=float, default=None, metavar="PCT", help="drop path rate")
    group.add_argument("--drop-block", type=float, default=None, metavar="PCT", help="drop block rate")

    group = parser.add_argument_group("BatchNorm")
    group.add_argument("--bn-momentum", type=float, default=None, help="BatchNorm momentum")
    group.add_argument("--bn-eps", type=float, default=None, help="BatchNorm epsilon")
    group.add_argument("--sync-bn", action="store_true", help="synchronised BatchNorm across processes")
    group.add_argument("--dist-bn", default="reduce", choices=("reduce", "broadcast", ""),
                       help="share BatchNorm statistics across processes after each epoch")
    group.add_argument("--split-bn", action="store_true", help="BatchNorm per AugMix split")

    group = parser.add_argument_group("EMA")
    group.add_argument("--model-ema", action="store_true", help="keep an exponential moving average of the weights")
    group.add_argument("--model-ema-force-cpu", action="store_true", help="keep the average on the CPU")
    group.add_argument("--model-ema-decay", type=float, default=0.9998)
    group.add_argument("--model-ema-warmup", action="store_true")

    group = parser.add_argument_group("Miscellaneous")
    group.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    group.add_argument("--worker-seeding", default="all", help="loader worker seeding (default: all)")
    group.add_argument("--log-interval", type=int, default=50, metavar="N", help="steps between progress updates")
    group.add_argument("--val-interval", type=int, default=1, metavar="N", help="epochs between evaluations")
    group.add_argument("--recovery-interval", type=int, default=0, metavar="N", help="steps between recovery checkpoints")
    group.add_argument("--checkpoint-hist", type=int, default=10, metavar="N", help="checkpoints kept (default: 10)")
    group.add_argument("-j", "--workers", type=int, default=default_workers(), metavar="N",
                       help=f"data loading workers per process (default: min(4, CPU cores) = {default_workers()})")
    group.add_argument("--save-images", action="store_true", help="save input batches as pictures")
    group.add_argument("--pin-mem", action="store_true", help="pin CPU memory in the loader")
    group.add_argument("--no-prefetcher", action="store_true", help="do not use timm's prefetching loader")
    group.add_argument("--output", default="", metavar="PATH", help="output base folder (default: ./output/train)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace the run in a non-empty run folder (its own files only)")
    group.add_argument("--experiment", default="", metavar="NAME", help="run folder name (default: date-model-mixer)")
    group.add_argument("--eval-metric", default="top1", choices=("top1", "top5", "loss"), help="best-checkpoint metric")
    group.add_argument("--tta", type=int, default=0, metavar="N", help="test-time augmentation factor")
    group.add_argument("--use-multi-epochs-loader", action="store_true", help="keep one loader iterator across epochs")
    group.add_argument("--log-wandb", action="store_true", help="log metrics to Weights & Biases")
    group.add_argument("--wandb-project", default=None, help="wandb project (with --log-wandb)")
    group.add_argument("--wandb-tags", nargs="+", default=[], help="wandb tags (with --log-wandb)")
    group.add_argument("--wandb-resume-id", default="", metavar="ID", help="wandb run to resume (with --log-wandb)")
    group.add_argument("--train-img-sizes", type=int, nargs="+", default=None, help="per-batch image sizes")
    group.add_argument("--train-batch-sizes", type=int, nargs="+", default=None, help="with --train-img-sizes")
    group.add_argument("--train-size-probs", type=float, nargs="+", default=None, help="with --train-img-sizes")
    group.add_argument("--train-size-schedule", default="constant", choices=("constant", "progressive"),
                       help="with --train-img-sizes")
    group.add_argument("--train-size-schedule-spread", type=float, default=0.65, help="with --train-img-sizes")
    group.add_argument("--train-size-random-mix", type=float, default=0.1, help="with --train-img-sizes")
    group.add_argument("--train-batches-per-epoch", "--train-steps-per-epoch", type=int, default=None,
                       help="fixed number of batches per epoch")
    group.add_argument("--variable-batch-loss-scale", default="none", choices=("none", "sqrt", "linear"),
                       help="with --train-img-sizes")
    group.add_argument("--naflex-loader", action="store_true", help="timm's NaFlex patch-sequence loader")
    group.add_argument("--naflex-train-seq-lens", type=int, nargs="+", default=[128, 256, 576, 784, 1024],
                       help="with --naflex-loader")
    group.add_argument("--naflex-max-seq-len", type=int, default=576, help="with --naflex-loader")
    group.add_argument("--naflex-patch-sizes", type=int, nargs="+", default=None, help="with --naflex-loader")
    group.add_argument("--naflex-patch-size-probs", type=float, nargs="+", default=None, help="with --naflex-loader")
    group.add_argument("--naflex-loss-scale", default="linear", choices=("none", "sqrt", "linear"),
                       help="with --naflex-loader")
    group.add_argument("--naflex-patchify-channels-first", action="store_true", help="with --naflex-loader")
    group.add_argument("--dist-backend", default=None, help="distributed backend (default: nccl on CUDA, gloo on CPU)")
    group.add_argument("--dist-url", default=None, help="distributed init url (default: env://)")
    group.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    group.add_argument("--mix-grid", default="mix.png", metavar="FILE",
                       help="picture of the first mixed batch, in the run folder ('' for none)")

    group = parser.add_argument_group("Knowledge distillation")
    group.add_argument("--kd-model-name", default=None, metavar="MODEL", help="teacher model for distillation")
    group.add_argument("--kd-distill-type", default="logit", choices=("logit", "feature", "token"), help="with --kd-model-name")
    group.add_argument("--kd-loss-type", default="kl", help="with --kd-model-name")
    group.add_argument("--distill-loss-weight", type=float, default=None, help="with --kd-model-name")
    group.add_argument("--task-loss-weight", type=float, default=None, help="with --kd-model-name")
    group.add_argument("--kd-temperature", type=float, default=4.0, help="with --kd-model-name")
    group.add_argument("--kd-student-feature-dim", type=int, default=None, help="with --kd-model-name")
    group.add_argument("--kd-teacher-feature-dim", type=int, default=None, help="with --kd-model-name")
    group.add_argument("--kd-token-distill-type", default="soft", choices=("soft", "hard"), help="with --kd-model-name")

    group = parser.add_argument_group(
        "Mixer",
        "A batch mixer of tmix_aug, run on the device inside the loop. It replaces timm's --mixup/--cutmix "
        "(give one or the other); --mixup-prob, --mixup-switch-prob and --mixup-off-epoch (alias --mixer-...) "
        "apply to both.",
    )
    group.add_argument("--mixer", default="none", choices=list_mixers(), help="batch mixer (default: none)")
    group.add_argument("--mixer-path", default=None, metavar="NAME|DIR|HUB_ID",
                       help="TransformMix weights: a bundled name, a directory or a Hub repo id "
                       "(default: the bundled mixer nearest the image size)")
    group.add_argument("--mixer-mode", default=None, metavar="MODE",
                       help="TransformMix mode without weights: saliency-softmax (the paper's ablation)")
    group.add_argument("--mixer-k", type=int, default=None, metavar="K", help="inputs per mixed image (default: 2)")
    group.add_argument("--mixer-alpha", type=float, default=1.0, help="Dirichlet / Beta concentration (default: 1)")
    group.add_argument("--saliency", default=None, choices=("self", "teacher", "spectral"),
                       help="saliency of saliencymix / transformmix: CAMs of the model being trained, of "
                       "--teacher, or teacher-free spectral residual (default: spectral)")
    group.add_argument("--teacher", default=None, metavar="MODEL", help="timm model giving CAMs for --saliency teacher")
    group.add_argument("--teacher-checkpoint", default=None, metavar="FILE", help="weights of --teacher")
    group.add_argument("--teacher-num-classes", type=int, default=None, metavar="N", help="classes of --teacher's checkpoint")
    group.add_argument("--teacher-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="extra create_model arguments of --teacher, as --model-kwargs, e.g. pad_type=same")
    group.add_argument("--saliency-input-size", type=int, default=None, metavar="N",
                       help="CAMs (--saliency self / teacher) from images resized so their longer side is at most N "
                       "(default 112); e.g. 16 for 32 px images: a quarter of the CAM pass's cost")
    group.add_argument("--saliency-cache", default=None, metavar="memory|DIR",
                       help="with --saliency teacher: compute the teacher's maps once per training image and carry "
                       "them through the augmentation with their image; 'memory' keeps them in memory, a directory "
                       "holds them in a safetensors file keyed to the teacher's weights and the data (reused by later runs)")
    group.add_argument("--transmix", action="store_true",
                       help="re-weight mixed labels by the ViT's class-token attention (TransMix)")
    return parser


# timm train.py flags that tmix-train parses but does not implement: any value other than
# timm's default stops the run with the reason. Flags that only matter together with one of
# these (e.g. --naflex-max-seq-len) are accepted, as they are inert in timm too.
NOT_SUPPORTED = {
    "naflex_loader": "NaFlex batches are dicts of patch sequences of varying length, not (N, C, H, W) images; "
    "the mixers warp and blend images and this loop feeds images to the model; use timm's train.py for NaFlex",
}
MODEL_DTYPES = ("float32", "float16", "bfloat16")
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


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    """Parse the command line as timm's train.py does: ``-c FILE`` first sets defaults, the rest overrides them.

    Returns:
        The arguments and their YAML text, written to the run folder as ``args.yaml``.
    """
    parser = build_parser()
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("-c", "--config", default="")
    known, _ = config_parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_config_file(parser, known.config))
    args = parser.parse_args(argv)
    return args, yaml.safe_dump(vars(args), default_flow_style=False)


def read_config_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The flag defaults in a YAML config file, keyed by ``parser``'s destinations.

    Keys are flag names with ``_`` for ``-`` (``mixup_off_epoch``; timm's and our spellings alike).
    An unknown key, or a value of the wrong kind, is an error naming the file and the key.
    """
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except OSError as error:
        parser.error(f"--config: cannot read {path!r} ({error.strerror})")
    except yaml.YAMLError as error:
        parser.error(f"--config: {path} is not valid YAML ({error})")
    if config is None:
        return {}
    if not isinstance(config, dict):
        parser.error(f"--config: {path} must hold a mapping of flag names to values, got {type(config).__name__}")
    destinations = {}
    for action in parser._actions:  # argparse keeps the flag spellings only here
        for option in action.option_strings:
            if option.startswith("--"):
                destinations[option[2:].replace("-", "_")] = action
        if not action.option_strings:
            destinations[action.dest] = action
    defaults = {}
    for key, value in config.items():
        if key == "config":  # a run's args.yaml names the file it was read from
            continue
        action = destinations.get(str(key))
        if action is None or action.dest == "help":
            parser.error(f"--config: {path}: unknown key {key!r} (not a tmix-train or timm train.py flag)")
        if value is not None and action.type in (int, float) and action.nargs is None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                parser.error(f"--config: {path}: {key} expected a number, got {value!r}")
            value = action.type(value) if action.type is float or float(value).is_integer() else value
        if action.choices is not None and value not in action.choices and not (value is None is action.default):
            parser.error(f"--config: {path}: {key} expected one of {list(action.choices)}, got {value!r}")
        defaults[action.dest] = value
    return defaults


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


def model_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """The dtype of --model-dtype (model weights and input images), or None for the default float32."""
    return getattr(torch, args.model_dtype) if args.model_dtype else None


def timm_mixup_active(args: argparse.Namespace) -> bool:
    """Whether timm's own Mixup/CutMix is on (timm's rule: --mixup or --cutmix > 0, or --cutmix-minmax)."""
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None


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
    if args.saliency_cache is not None and args.saliency != "teacher":
        raise ValueError(
            f"--saliency-cache: stores the maps of a fixed teacher, so it needs --saliency teacher (got --saliency "
            f"{args.saliency or 'spectral (the default)'}): the model being trained changes its maps every step, "
            "and spectral maps are cheap to compute per batch"
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


def model_factory_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """timm's create_model arguments of the model flags that are set (--gp, --in-chans, --drop-block, ...)."""
    in_chans = args.in_chans if args.in_chans is not None else (args.input_size[0] if args.input_size else None)
    given = {
        "global_pool": args.gp,
        "in_chans": in_chans,
        "drop_block_rate": args.drop_block,
        "bn_momentum": args.bn_momentum,
        "bn_eps": args.bn_eps,
    }
    return {key: value for key, value in given.items() if value is not None}


def finish_model(args: argparse.Namespace, model: nn.Module) -> None:
    """What timm's train.py does to a new model: head initialisation and gradient checkpointing."""
    if args.head_init_scale is not None:
        with torch.no_grad():
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
    if args.head_init_bias is not None:
        nn.init.constant_(model.get_classifier().bias, args.head_init_bias)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)


def dataset_kwargs(args: argparse.Namespace, *, is_training: bool) -> dict[str, Any]:
    """timm's create_dataset arguments of the dataset flags that are set (--class-map, --input-key, ...)."""
    values = {timm_name: getattr(args, dest) for dest, timm_name in DATASET_FLAGS.items()}
    if not is_training:  # timm's train.py: evaluation gets its own sample count and no repeats
        values.update(num_samples=args.val_num_samples, repeats=0)
    return {key: value for key, value in values.items() if value not in (None, "", False, 0)}


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


def prepare_runtime(args: argparse.Namespace) -> None:
    """Process-wide settings of timm's flags: device backend modules, the JIT fuser, fast norm."""
    for module in args.device_modules or ():
        importlib.import_module(module)
    if args.fuser:
        set_jit_fuser(args.fuser)
    if args.fast_norm:
        set_fast_norm()


def resolve_lr(args: argparse.Namespace, batch_size: float | None = None) -> None:
    """Set ``args.lr`` from --lr-base scaled to the global batch (per-process batch x processes x
    --grad-accum-steps) when --lr is not given (timm's rule). ``batch_size``: the per-process
    batch when it is not -b (the average of timm's scheduled loader, ``scheduled_batch_size``)."""
    if args.lr is not None:
        return
    ratio = (batch_size or args.batch_size) * args.world_size * args.grad_accum_steps / args.lr_base_size
    scale = args.lr_base_scale or (
        "sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb")) else "linear"
    )
    args.lr = args.lr_base * (math.sqrt(ratio) if scale == "sqrt" else ratio)


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


class TimmMixup(nn.Module):
    """timm's own ``Mixup`` (``--mixup/--cutmix/...``) behind the loop's ``mix`` call.

    It draws from numpy's and Python's global random streams, as in timm (tmix-train seeds
    them per epoch, so resume stays exact); the ``generator`` argument is not used. timm's
    Mixup reports no masks, so ``--transmix`` and ``mix.png`` need a ``--mixer``.
    """

    def __init__(self, mixup: Mixup) -> None:
        super().__init__()
        self.mixup = mixup

    def mix(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> SimpleNamespace:
        """x (N,C,H,W), y (N,) int -> ``images`` (N,C,H,W) and ``targets`` (N,num_classes), rows summing to 1."""
        images, targets = self.mixup(x, y)
        return SimpleNamespace(images=images, targets=targets)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixup(x, y)


def timm_mixup_kwargs(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The arguments timm's train.py gives ``timm.data.Mixup`` for these flags."""
    return dict(
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
        cutmix_minmax=args.cutmix_minmax,
        prob=args.mixer_prob,
        switch_prob=args.mixer_switch_prob,
        mode=args.mixup_mode,
        label_smoothing=args.smoothing,
        num_classes=num_classes,
    )


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


def build_mixer(
    args: argparse.Namespace, num_classes: int, model: nn.Module, device: torch.device
) -> nn.Module:
    """The mixer the flags ask for, on ``device``, in eval mode: timm's Mixup, a tmix_aug mixer or NoMix."""
    if timm_mixup_active(args):
        return TimmMixup(Mixup(**timm_mixup_kwargs(args, num_classes))).to(device).eval()
    kwargs: dict[str, Any] = {"label_smoothing": args.smoothing}
    if args.mixer != "none":
        kwargs.update(alpha=args.mixer_alpha, prob=args.mixer_prob)
        if args.mixer_k is not None:
            kwargs["k"] = args.mixer_k
    if args.mixer == "mixup-cutmix":
        kwargs["switch_prob"] = args.mixer_switch_prob
    if args.mixer == "transformmix" and args.mixer_mode is not None:
        kwargs["mode"] = args.mixer_mode
    if args.mixer == "transformmix" and args.mixer_path is None and args.mixer_mode is None:
        image_size = resolve_data_config(vars(args), model=model, verbose=False)["input_size"][-1]
        args.mixer_path = choose_bundled(image_size)
        if args.rank == 0:
            _logger.info(
                f"tmix-train: --mixer transformmix without --mixer-path: using the bundled mixer {args.mixer_path!r} "
                f"(made for {bundled_image_size(args.mixer_path)} px images; these are {image_size} px)"
            )
    if args.mixer in SALIENCY_MIXERS:
        kwargs["saliency"] = build_saliency(args, model, device)
    mixer = create_mixer(args.mixer, num_classes, path=args.mixer_path, **kwargs)
    return mixer.to(device).eval()


def kd_teacher_model(args: argparse.Namespace, num_classes: int, in_chans: int) -> nn.Module:
    """The --kd-model-name teacher as timm's train.py makes it: the model with its pretrained weights."""
    return timm.create_model(args.kd_model_name, pretrained=True, num_classes=num_classes, in_chans=in_chans)


def build_distillation(
    args: argparse.Namespace, model: nn.Module, num_classes: int, data_config: dict[str, Any], device: torch.device
) -> LogitDistillationTask:
    """timm's logit distillation task for --kd-model-name and its flags, around the student ``model``.

    The teacher sees the mixed images (renormalised to its own mean and std, as in timm); the
    task loss is this loop's loss on the mixed targets.
    """
    teacher = kd_teacher_model(args, num_classes, data_config["input_size"][0])
    teacher = teacher.to(device=device, dtype=model_dtype(args)).requires_grad_(False)
    teacher = DistillationTeacher(teacher, device=device, dtype=model_dtype(args))
    return LogitDistillationTask(
        student_model=model,
        teacher_model=teacher,
        criterion=build_train_loss(args).to(device),
        loss_type=args.kd_loss_type,
        distill_loss_weight=args.distill_loss_weight,
        task_loss_weight=args.task_loss_weight,
        temperature=args.kd_temperature,
        device=device,
        dtype=model_dtype(args),
        verbose=args.rank == 0,
    )


def build_saliency(args: argparse.Namespace, model: nn.Module, device: torch.device) -> Any:
    """The saliency source of --saliency: the model itself, a frozen teacher, or "spectral"."""
    if args.saliency == "spectral" or args.saliency is None:
        return "spectral"
    if args.saliency == "self":
        source = model  # CAMs in eval mode without gradients; BatchNorm statistics stay untouched
    else:
        source = load_teacher(
            args.teacher,
            args.teacher_checkpoint,
            num_classes=args.teacher_num_classes,
            device=device,
            model_kwargs=args.teacher_kwargs,
        )
    if args.saliency_input_size is None:
        return source
    return ClassActivationMap(source, input_size=args.saliency_input_size)


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


def _autocast(args: argparse.Namespace, device: torch.device):
    if not args.amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, args.amp_dtype))


def updates_per_epoch(batches: int, accum_steps: int) -> int:
    """Optimizer steps in an epoch of ``batches`` batches: one per ``accum_steps`` batches, the last partial group included."""
    return (batches + accum_steps - 1) // accum_steps


def train_one_epoch(
    epoch: int,
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    mixer: BatchMixer,
    args: argparse.Namespace,
    device: torch.device,
    *,
    scheduler: Any = None,
    scaler: NativeScaler | None = None,
    model_ema: ModelEmaV3 | None = None,
    transmix: Any = None,
    on_first_mix: Any = None,
    images_dir: str | None = None,
    recovery: RecoveryWriter | None = None,
    resume_at: dict[str, Any] | None = None,
    batch_size_reference: float | None = None,
    distill: Any = None,
) -> dict[str, float]:
    """One pass over the training data; ``on_first_mix(x, y)`` is called after the first batch.

    timm's extras: ``images_dir`` receives the mixed batch at each log step (--save-images);
    ``recovery`` writes a recovery point after every --recovery-interval updates; ``resume_at``
    (a recovery position) skips the batches trained before it and puts the random streams back;
    ``batch_size_reference`` scales each batch's loss by its size under --variable-batch-loss-scale;
    ``distill`` (timm's LogitDistillationTask, --kd-model-name) makes the loss of the mixed batch.

    Every batch is mixed; its gradients are accumulated over ``args.grad_accum_steps`` batches
    (each loss divided by the number of batches in its group) before one optimizer step, EMA
    update and scheduler update. A last, shorter group at the end of the epoch still steps.
    Under DDP the batches before a group's last one skip the gradient all-reduce (``no_sync``).

    Returns:
        loss (mean over all samples and processes), images_per_sec (all processes), and
        mixer_share: the mixer's share of the step time (batch arrival to optimizer step).
    """
    model.train()
    criterion = build_train_loss(args).to(device)
    generator = torch.Generator().manual_seed(stream_seed(args.seed, epoch, args.rank, bits=31))
    batches = len(loader)
    group_size = args.grad_accum_steps
    updates = updates_per_epoch(batches, group_size)
    last_group_start = (updates - 1) * group_size
    can_skip_sync = args.distributed and hasattr(model, "no_sync")
    losses = AverageMeter()
    timer = PhaseTimer(device)  # CUDA events: no host-device sync per step for timing
    bar = tqdm(
        loader, desc=f"train {epoch}", disable=args.no_progress or args.rank != 0, leave=False
    )
    skip = resume_at["step"] + 1 if resume_at is not None else 0
    resumed = resume_at["ranks"][args.rank] if resume_at is not None else None
    if skip == 1:  # the streams when the first batch is fetched
        restore_streams(resumed["before"], device)
    streams = capture_streams(device) if recovery is not None else None
    loss_scale = variable_loss_scale(args, batch_size_reference)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(bar):
        if step < skip:  # trained before the recovery point: read (the loader's draws) and dropped
            if step == skip - 2:  # the loader may fetch the next batch before the saved step runs
                restore_streams(resumed["before"], device)
            elif step == skip - 1:
                restore_streams(resumed["after"], device)
                generator.set_state(resumed["generator"])
                losses.sum, losses.count = resumed["loss_sum"], resumed["loss_count"]
                streams = capture_streams(device) if recovery is not None else None
            continue
        x, y, maps = unpack_batch(batch)  # maps: the teacher's stored maps with --saliency-cache
        update = step // group_size
        in_group = (batches - last_group_start) if step >= last_group_start else group_size
        need_update = step + 1 == batches or (step + 1) % group_size == 0
        if args.no_prefetcher:
            x, y = x.to(device, dtype=model_dtype(args), non_blocking=True), y.to(device, non_blocking=True)
        arrived = timer.mark()
        result = mixer.mix(x, y, generator=generator, **saliency_kwargs(mixer, maps))
        mixed = timer.mark()
        images = result.images
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with model.no_sync() if can_skip_sync and not need_update else nullcontext():
            with _autocast(args, device):
                if distill is not None:  # the student's loss on the mixed targets plus its KL to the teacher
                    loss = distill(images, result.targets)["loss"]
                else:
                    logits = model(images)
                    targets = transmix.relabel(result) if transmix is not None else result.targets
                    loss = criterion(logits, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"tmix-train: non-finite loss ({loss.item()}) at epoch {epoch}, step {step}; stopped before "
                    "this epoch's checkpoint, so the last good one is kept: lower --lr, or check the data and mixer"
                )
            scaled = loss / in_group if in_group > 1 else loss
            if loss_scale is not None:  # timm's --variable-batch-loss-scale
                scaled = scaled * loss_scale(x.shape[0])
            if scaler is not None:
                scaler(
                    scaled,
                    optimizer,
                    clip_grad=args.clip_grad,
                    clip_mode=args.clip_mode,
                    parameters=model.parameters(),
                    need_update=need_update,
                )
            else:
                scaled.backward()
                if need_update:
                    if args.clip_grad is not None:
                        dispatch_clip_grad(model.parameters(), args.clip_grad, mode=args.clip_mode)
                    optimizer.step()
        if need_update:
            optimizer.zero_grad(set_to_none=True)
            if model_ema is not None:
                model_ema.update(model, step=epoch * updates + update)
            if scheduler is not None and args.sched_on_updates:
                scheduler.step_update(num_updates=epoch * updates + update + 1)
        losses.update(loss.item(), x.shape[0])
        timer.add("mix", arrived, mixed)
        timer.add("step", arrived, timer.mark())
        if on_first_mix is not None and step == 0:
            on_first_mix(x, y)
        if need_update and ((update + 1) % args.log_interval == 0 or step + 1 == batches):
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if images_dir is not None and need_update and (update % args.log_interval == 0 or step + 1 == batches):
            save_batch_images(images, os.path.join(images_dir, f"train-batch-{step}.jpg"))
        if recovery is not None:
            before, streams = streams, capture_streams(device)
            if need_update and recovery.due(update):
                own = {"before": before, "after": streams, "generator": generator.get_state()}
                recovery.save(epoch, step, update, {**own, "loss_sum": losses.sum, "loss_count": losses.count})
    elapsed = time.perf_counter() - start
    seconds = timer.totals()
    mix_time, step_time = seconds.get("mix", 0.0), seconds.get("step", 0.0)
    totals = torch.tensor([losses.sum, losses.count], dtype=torch.float64, device=device)
    if args.distributed:
        dist.all_reduce(totals)
    return {
        "loss": float(totals[0] / totals[1]),
        "images_per_sec": float(totals[1]) / elapsed,
        "mixer_share": mix_time / step_time if step_time > 0 else 0.0,
    }


def variable_loss_scale(args: argparse.Namespace, batch_size_reference: float | None) -> Any:
    """timm's --variable-batch-loss-scale with --train-img-sizes: a function of a batch's size giving
    the factor on its loss (batch / the schedule's average batch, or its square root), or None."""
    if args.train_img_sizes is None or args.variable_batch_loss_scale == "none" or not batch_size_reference:
        return None
    power = 0.5 if args.variable_batch_loss_scale == "sqrt" else 1.0
    return lambda batch: (batch / batch_size_reference) ** power


def save_batch_images(images: torch.Tensor, path: str) -> None:
    """timm's --save-images: the (mixed) input batch (N, C, H, W) as one picture, each image stretched to its range."""
    from torchvision.utils import save_image

    write_atomic(path, lambda tmp: save_image(images.float(), tmp, format="JPEG", padding=0, normalize=True))


def eval_columns(with_ema: bool) -> list[str]:
    """The keys ``validate`` returns, and their ``ema_`` copies when an EMA model is evaluated too."""
    keys = ["loss", "top1", "top5"]
    return keys + [f"ema_{key}" for key in keys] if with_ema else keys


def validate(
    model: nn.Module,
    loader: Any,
    args: argparse.Namespace,
    device: torch.device,
    *,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and cross-entropy on the evaluation data, over all processes."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1, top-5 hits, samples
    with torch.no_grad():
        for x, y in tqdm(
            loader, desc=desc, disable=args.no_progress or args.rank != 0, leave=False
        ):
            if args.no_prefetcher:
                x, y = x.to(device, dtype=model_dtype(args), non_blocking=True), y.to(device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(args, device):
                logits = model(x)
            if args.tta > 1:  # timm's --tta: each run of N rows is N copies of one image (check_tta)
                logits = logits.unfold(0, args.tta, args.tta).mean(dim=2)
                y = y[:: args.tta]
            top1, top5 = accuracy(logits.float(), y, topk=(1, 5))
            n = logits.shape[0]
            totals += torch.stack(
                [
                    criterion(logits.float(), y).double(),
                    top1.double() * n / 100,
                    top5.double() * n / 100,
                    torch.tensor(float(n), dtype=torch.float64, device=device),
                ]
            )
    if args.distributed:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    return {"loss": loss / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n}


# Settings a resumed run must share with its checkpoint: they decide what the saved state means.
RESUME_MUST_MATCH = (
    "model", "num_classes", "opt", "model_ema", "amp", "amp_dtype",
    "mixer", "mixer_path", "mixer_mode", "mixer_k", "saliency", "teacher", "teacher_kwargs", "model_dtype",
)  # fmt: skip


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's CheckpointSaver, each checkpoint written to a temporary file and renamed
    (through ``write_atomic``, so the fault-injection hook sees every checkpoint write).

    A recovery checkpoint also holds ``recovery``, its position within the epoch (``save_recovery_at``).
    """

    def __init__(self, *, model: nn.Module, model_ema: Any = None, **kwargs: Any) -> None:
        # timm's hook for extra checkpoint entries is a "task" giving the weights' state: see get_checkpoint_state.
        super().__init__(model=model, model_ema=model_ema, task=self, **kwargs)
        self.recovery_position: dict[str, Any] | None = None

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = unwrap_model) -> dict[str, Any]:
        """The entries timm's saver asks its task for: the model's (or EMA's) weights, and a recovery position."""
        if ema:
            return {} if self.model_ema is None else {"state_dict_ema": get_state_dict(self.model_ema, unwrap_fn)}
        state = {"state_dict": get_state_dict(self.model, unwrap_fn)}
        if self.recovery_position is not None:
            state["recovery"] = self.recovery_position
        return state

    def save_recovery_at(self, epoch: int, update: int, position: dict[str, Any]) -> None:
        """timm's recovery-EPOCH-UPDATE.pth.tar, with ``position`` (see ``tmix_aug.recovery``)."""
        self.recovery_position = position
        try:
            self.save_recovery(epoch, batch_idx=update)
        finally:
            self.recovery_position = None

    def _save(self, save_path: str, epoch: int, metric: float | None = None) -> None:
        write_atomic(save_path, lambda tmp: super(AtomicCheckpointSaver, self)._save(tmp, epoch, metric))


def _run_files(output_dir: str, args: argparse.Namespace) -> list[str]:
    """The files of an earlier run in ``output_dir`` that a new run would replace or leave stale."""
    names = ("last.pth.tar", "model_best.pth.tar", "tmp.pth.tar", "summary.csv", "summary.json", "args.yaml")
    patterns = ("checkpoint-", "recovery")
    if not os.path.isdir(output_dir):
        return []
    return sorted(
        os.path.join(output_dir, name)
        for name in os.listdir(output_dir)
        if name in names
        or name == args.mix_grid
        or (name.startswith(patterns) and name.endswith(".pth.tar"))
        or (name.startswith("train-batch-") and name.endswith(".jpg"))  # --save-images
    )


def _output_dir(args: argparse.Namespace) -> str:
    """The run folder; refuse one holding an earlier run unless --resume or --overwrite."""
    name = args.experiment or "-".join(
        [datetime.now().strftime("%Y%m%d-%H%M%S"), args.model.replace("/", "_"), args.mixer]
    )
    path = os.path.join(args.output or os.path.join("output", "train"), name)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output/--experiment: {path} is a file; expected a run folder")
    if _run_files(path, args) and not (args.resume or args.overwrite):
        raise ValueError(
            f"--experiment: {path} holds an earlier run ({', '.join(os.path.basename(f) for f in _run_files(path, args)[:4])}); "
            "pass --resume PATH to continue it, --overwrite to replace it, or another --experiment"
        )
    return path


def check_finite(args: argparse.Namespace) -> None:
    """Every number given must be finite (--lr nan or --mixer-alpha inf would train to NaN)."""
    for name, value in sorted(vars(args).items()):
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"--{name.replace('_', '-')}: expected finite numbers, got {value}")


def read_resume_checkpoint(args: argparse.Namespace) -> dict[str, Any] | None:
    """Check that --resume is a readable timm checkpoint written with compatible settings.

    Returns:
        The position within its epoch when it is a mid-epoch recovery point (``--recovery-interval``;
        see ``tmix_aug.recovery``), else None.
    """
    path = args.resume
    if not os.path.isfile(path):
        raise ValueError(f"--resume: {path!r} is not a checkpoint file")
    try:
        checkpoint = load_checkpoint_metadata(path)
    except Exception as error:  # torch.load raises many types for empty or cut-short files
        raise ValueError(
            f"--resume: {path!r} cannot be read ({type(error).__name__}: {str(error)[:200]}); it may be empty or "
            "truncated by a crash: resume from checkpoint-N.pth.tar beside it"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ValueError(f"--resume: {path!r} is not a training checkpoint (no state_dict and epoch)")
    saved = vars(checkpoint.get("args") or argparse.Namespace())
    changed = [
        f"--{key.replace('_', '-')} {saved[key]!r} -> {getattr(args, key)!r}"
        for key in RESUME_MUST_MATCH
        if key in saved and saved[key] != getattr(args, key)
    ]
    if changed:
        raise ValueError(
            f"--resume: {path!r} was written with other settings ({'; '.join(changed)}); resume with the same ones"
        )
    position = checkpoint.get("recovery")
    if position is not None:
        check_position(position, path, args.world_size)
    return position


def probe_mixer(
    args: argparse.Namespace, mixer: BatchMixer, input_size: tuple, num_classes: int, device: torch.device
) -> None:
    """Reject, before the first step, a k larger than the batch and a saliency model without maps."""
    k = getattr(mixer, "k", None)
    if k is None or args.mixer == "none":
        return
    if k > args.batch_size:
        raise ValueError(f"--mixer-k: {k} inputs per mixed image need a batch of at least {k}, got -b {args.batch_size}")
    if args.mixer not in SALIENCY_MIXERS:
        return
    images = torch.zeros(k, *input_size, device=device)
    labels = torch.arange(k, device=device) % num_classes
    try:
        with torch.no_grad():
            mixer.mix(images, labels, generator=torch.Generator().manual_seed(0))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
        source = {"self": args.model, "teacher": args.teacher}.get(args.saliency or "", "spectral")
        raise ValueError(
            f"--saliency {args.saliency or 'spectral'}: {source} cannot give the saliency maps --mixer {args.mixer} "
            f"reads ({type(error).__name__}: {error})"
        ) from None


def read_history(path: str, start_epoch: int) -> list[dict[str, Any]]:
    """The rows of summary.csv before ``start_epoch``; the file is rewritten (atomically) with only those.
    Empty cells (the eval columns of an epoch skipped by --val-interval) read as None."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("epoch", "").isdigit()]
    kept = [row for row in rows if int(row["epoch"]) < start_epoch]
    if len(kept) != len(rows):

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)

        write_atomic(path, write)
    return [
        {key: int(value) if key == "epoch" else None if value == "" else float(value) for key, value in row.items()}
        for row in kept
    ]


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Everything before the first step: devices, data, model, mixer, optimizer, schedule.

    All bad input is found here and raised as ValueError / TypeError / FileNotFoundError.
    """
    check_args(args)
    device = init_distributed_device(args)
    random_seed(args.seed, args.rank)
    check_finite(args)
    output_dir = _output_dir(args)
    recovery = read_resume_checkpoint(args) if args.resume else None
    if recovery is not None and args.start_epoch is not None:
        raise ValueError(
            f"--start-epoch: {args.resume!r} is a recovery point inside epoch {recovery['epoch']}, which it continues; "
            "drop --start-epoch, or resume from an epoch checkpoint"
        )
    train_set, eval_set, num_classes = build_datasets(args)
    check_num_classes(num_classes, f"{args.dataset or args.data_dir} ({args.train_split})")
    batch_size_reference = scheduled_batch_size(args, len(train_set))
    resolve_lr(args, batch_size_reference)
    check_tta(args, len(eval_set))

    prepare_runtime(args)
    model_kwargs = {**model_factory_kwargs(args), **args.model_kwargs, "num_classes": num_classes, "drop_rate": args.drop}
    if args.drop_path is not None:
        model_kwargs["drop_path_rate"] = args.drop_path
    if args.pretrained_path:
        if not os.path.isfile(args.pretrained_path):
            raise ValueError(f"--pretrained-path: {args.pretrained_path!r} is not a file")
        model_kwargs["pretrained_cfg_overlay"] = {"file": args.pretrained_path}
    if args.torchscript:
        model_kwargs["scriptable"] = True
    model = timm.create_model(
        args.model, pretrained=args.pretrained or bool(args.pretrained_path), **model_kwargs
    )
    if args.initial_checkpoint:
        load_checkpoint(model, args.initial_checkpoint)
    finish_model(args, model)
    data_config = resolve_data_config(vars(args), model=model, verbose=args.rank == 0)
    if args.split_bn:  # timm's: BatchNorm statistics per AugMix split (or per --resplit half)
        model = convert_splitbn_model(model, max(args.aug_splits, 2))
    if args.model_dtype == "float16" and args.rank == 0:
        _logger.warning("--model-dtype float16: timm does not recommend float16 for training; bfloat16 is safer")
    model.to(device=device, dtype=model_dtype(args))
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.torchscript:  # check_args refused what needs hooks (--saliency self, --transmix)
        model = torch.jit.script(model)

    mixer = build_mixer(args, num_classes, model, device)
    probe_mixer(args, mixer, data_config["input_size"], num_classes, device)
    transmix = None
    if args.transmix:
        from .transmix import TransMixLabels  # only vision transformers need it

        transmix = TransMixLabels(model)

    distill = build_distillation(args, model, num_classes, data_config, device) if args.kd_model_name else None
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    scaler = NativeScaler(device=device.type) if args.amp and args.amp_dtype == "float16" else None
    start_epoch = 0
    if args.resume:
        try:
            start_epoch = (
                resume_checkpoint(
                    model,
                    args.resume,
                    optimizer=None if args.no_resume_opt else optimizer,
                    loss_scaler=None if args.no_resume_opt else scaler,
                    log_info=args.rank == 0,
                )
                or 0
            )
        except (RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"--resume: {args.resume!r} does not fit this model and optimizer ({error})") from None
    if recovery is not None:  # a mid-epoch recovery point: the epoch it was written in continues
        start_epoch = recovery["epoch"]
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(
            model,
            decay=args.model_ema_decay,
            use_warmup=args.model_ema_warmup,
            device=torch.device("cpu") if args.model_ema_force_cpu else None,
        )
        if args.resume:
            load_checkpoint(model_ema.module, args.resume, use_ema=True)
    train_model = model
    if args.torchcompile:
        train_model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)
    if args.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=not args.no_ddp_bb
        )
    if distill is not None:
        distill.trainable_module = train_model  # the student as trained: compiled and / or DDP-wrapped

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
    train_loader = tmix_train_loader(args, train_set, mixer, data_config, num_classes, device, model_dtype(args)) if cached else create_loader(
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
        # Fresh workers each epoch, seeded from the epoch's stream (see run): persistent workers
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
    scheduler, num_epochs = create_scheduler_v2(
        optimizer,
        **scheduler_kwargs(args, decreasing_metric=args.eval_metric == "loss"),
        updates_per_epoch=updates_per_epoch(len(train_loader), args.grad_accum_steps),
    )
    if scheduler is not None and (start_epoch > 0 or recovery is not None):
        if args.sched_on_updates:
            done = start_epoch * updates_per_epoch(len(train_loader), args.grad_accum_steps)
            scheduler.step_update(done + (recovery["update"] + 1 if recovery is not None else 0))
        else:
            scheduler.step(start_epoch)
    return dict(
        device=device,
        model=model,
        train_model=train_model,
        mixer=mixer,
        transmix=transmix,
        optimizer=optimizer,
        scaler=scaler,
        model_ema=model_ema,
        scheduler=scheduler,
        num_epochs=num_epochs,
        start_epoch=start_epoch,
        recovery=recovery,
        distill=distill,
        batch_size_reference=batch_size_reference,
        train_loader=train_loader,
        eval_loader=eval_loader,
        data_config=data_config,
        num_classes=num_classes,
        train_size=len(train_set),
        eval_size=len(eval_set),
        output_dir=output_dir,
    )


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


def start_wandb(args: argparse.Namespace, name: str) -> Any:
    """timm's --log-wandb on the primary process: a wandb run, or None when off or when the wandb
    package is missing (then, as timm, a warning and the run goes on; wandb is not a dependency)."""
    if not args.log_wandb:
        return None
    try:
        import wandb
    except ImportError:
        _logger.warning("--log-wandb: the wandb package is not installed, so metrics are not sent to wandb "
                        "(pip install wandb); training goes on, and summary.csv / summary.json hold them")
        return None
    return wandb.init(
        project=args.wandb_project,
        name=name,
        config=vars(args),
        tags=args.wandb_tags,
        resume="must" if args.wandb_resume_id else None,
        id=args.wandb_resume_id or None,
    )


class RecoveryWriter:
    """timm's --recovery-interval: after every N-th optimizer update, a recovery checkpoint with the
    position in the epoch and every process's random streams (``tmix_aug.recovery``), so that
    --resume from it continues the epoch as an uninterrupted run would. Called on every process;
    the primary one writes."""

    def __init__(self, args: argparse.Namespace, saver: AtomicCheckpointSaver | None) -> None:
        self.args, self.saver = args, saver

    def due(self, update: int) -> bool:
        """Whether a recovery point follows update ``update`` (0-based within the epoch)."""
        return (update + 1) % self.args.recovery_interval == 0

    def save(self, epoch: int, step: int, update: int, state: dict[str, Any]) -> None:
        """Write ``recovery-EPOCH-UPDATE.pth.tar``; ``state``: this process's streams and running loss."""
        states = [state]
        if self.args.distributed:
            states = [None] * self.args.world_size
            dist.all_gather_object(states, state)
        if self.saver is not None:
            position = {"epoch": epoch, "step": step, "update": update, "ranks": states}
            self.saver.save_recovery_at(epoch, update, position)


def run(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    """Train from ``state`` (see ``setup``); return the summary written to ``summary.json``."""
    device, model, mixer = state["device"], state["model"], state["mixer"]
    primary = args.rank == 0
    output_dir = state["output_dir"]
    saver = wandb_run = None
    history: list[dict[str, Any]] = []
    if primary:
        if args.overwrite and not args.resume:
            for path in _run_files(output_dir, args):
                os.remove(path)
        get_outdir(output_dir)
        remove_stale_temporaries(output_dir)  # left by a process killed while writing
        args_text = state.get("args_text") or yaml.safe_dump(vars(args), default_flow_style=False)
        write_atomic(os.path.join(output_dir, "args.yaml"), lambda tmp: Path(tmp).write_text(args_text))
        saver = AtomicCheckpointSaver(
            model=model,
            optimizer=state["optimizer"],
            args=args,
            model_ema=state["model_ema"],
            amp_scaler=state["scaler"],
            checkpoint_dir=output_dir,
            recovery_dir=output_dir,
            decreasing=args.eval_metric == "loss",
            max_history=args.checkpoint_hist,
        )
        if args.resume:
            saver.load_state_dict_from_checkpoint(args.resume)
        wandb_run = start_wandb(args, os.path.basename(output_dir))
        # summary.csv is the record of finished epochs: rows past the checkpoint are dropped.
        history = read_history(os.path.join(output_dir, "summary.csv"), state["start_epoch"])
        _logger.info(
            f"tmix-train: {args.model} on {args.dataset or 'image folder'} ({state['train_size']} train / "
            f"{state['eval_size']} eval images, {state['num_classes']} classes), mixer {args.mixer}"
            f"{' ' + args.mixer_path if args.mixer_path else ''}, {args.world_size} process(es) on {device}, "
            f"lr {args.lr:.4g}; writing {output_dir}"
        )
    summary_path = os.path.join(output_dir, "summary.json")
    no_mix = NoMix(state["num_classes"], label_smoothing=args.smoothing).to(device)
    mean, std = state["data_config"]["mean"], state["data_config"]["std"]

    def save_grid(x: torch.Tensor, y: torch.Tensor) -> None:
        from .viz import save_mix_grid  # pictures only at the start of a run

        # A separate mix of the first images, so the picture leaves the training stream alone.
        x, y = x[:8], y[:8]
        with torch.no_grad():
            result = mixer.mix(x, y, generator=torch.Generator().manual_seed(args.seed))
        path = os.path.join(output_dir, args.mix_grid)
        save_mix_grid(
            path, result, x, mean=mean, std=std, num_samples=8, scale=max(1, 96 // x.shape[-1])
        )
        _logger.info(f"wrote {path}")

    best: dict[str, Any] = {}
    # timm's --model-ema-force-cpu: the average is kept on the CPU and not evaluated
    ema_evaluated = state["model_ema"] is not None and not args.model_ema_force_cpu
    metric_key = f"ema_{args.eval_metric}" if ema_evaluated else args.eval_metric
    recovery = RecoveryWriter(args, saver) if args.recovery_interval else None
    for epoch in range(state["start_epoch"], state["num_epochs"]):
        random_seed(stream_seed(args.seed, epoch, 0, bits=31), args.rank)
        set_loader_epoch(state["train_loader"], epoch)
        mixing = args.mixer_off_epoch <= 0 or epoch < args.mixer_off_epoch
        first_mix = (
            save_grid
            if primary
            and args.mix_grid
            and mixing
            and args.mixer != "none"
            and epoch == state["start_epoch"]
            else None
        )
        train_metrics = train_one_epoch(
            epoch,
            state["train_model"],
            state["train_loader"],
            state["optimizer"],
            mixer if mixing else no_mix,
            args,
            device,
            scheduler=state["scheduler"],
            scaler=state["scaler"],
            model_ema=state["model_ema"],
            transmix=state["transmix"] if mixing else None,
            on_first_mix=first_mix,
            images_dir=output_dir if primary and args.save_images else None,
            recovery=recovery,
            resume_at=state.get("recovery") if epoch == state["start_epoch"] else None,
            batch_size_reference=state.get("batch_size_reference"),
            distill=state.get("distill"),
        )
        if args.distributed and args.dist_bn:
            distribute_bn(model, args.world_size, args.dist_bn == "reduce")
        # timm's --val-interval: evaluate every N epochs and at the last one. The other epochs
        # keep the eval columns empty (None) and save last.pth.tar unranked, so resume stays exact.
        evaluating = (epoch + 1) % args.val_interval == 0 or epoch + 1 == state["num_epochs"]
        eval_metrics: dict[str, Any] = dict.fromkeys(eval_columns(ema_evaluated))
        if evaluating:
            eval_metrics = validate(model, state["eval_loader"], args, device)
            if ema_evaluated:
                ema_metrics = validate(
                    state["model_ema"].module, state["eval_loader"], args, device, desc="eval ema"
                )
                eval_metrics.update({f"ema_{key}": value for key, value in ema_metrics.items()})
        lr = state["optimizer"].param_groups[0]["lr"]
        if state["scheduler"] is not None:
            state["scheduler"].step(epoch + 1, eval_metrics[args.eval_metric])
        if not primary:
            continue
        update_summary(
            epoch,
            train_metrics,
            {key: "" if value is None else value for key, value in eval_metrics.items()},
            os.path.join(output_dir, "summary.csv"),
            lr=lr,
        )
        best_metric, best_epoch = saver.save_checkpoint(epoch, metric=eval_metrics[metric_key])
        row = {
            "epoch": epoch,
            "lr": lr,
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"eval_{k}": v for k, v in eval_metrics.items()},
        }
        history.append(row)
        if wandb_run is not None:
            wandb_run.log({key: value for key, value in row.items() if value is not None})
        best = {"epoch": best_epoch, args.eval_metric: best_metric}
        summary = json.dumps(
            {
                "model": args.model,
                "dataset": args.dataset or args.data_dir,
                "mixer": args.mixer,
                "mixer_path": args.mixer_path,
                "saliency": args.saliency,
                "num_classes": state["num_classes"],
                "world_size": args.world_size,
                "best": best,
                "last": row,
                "epochs": history,
                "args": vars(args),
            },
            indent=2,
            default=str,
        )
        write_atomic(summary_path, lambda tmp, text=summary: Path(tmp).write_text(text))
        evaluated = (
            f"eval top-1 {eval_metrics['top1']:.2f}% top-5 {eval_metrics['top5']:.2f}%"
            if evaluating
            else f"no eval (--val-interval {args.val_interval})"
        )
        _logger.info(
            f"epoch {epoch}: train loss {train_metrics['loss']:.4f}, {evaluated}, "
            f"{train_metrics['images_per_sec']:.0f} images/s, "
            f"mixer {100 * train_metrics['mixer_share']:.1f}% of step time"
        )
    if wandb_run is not None:
        wandb_run.finish()
    if primary and history and history[-1]["eval_top1"] is not None:
        _logger.info(
            f"best {metric_key} {best.get(args.eval_metric)} at epoch {best.get('epoch')}; "
            f"last top-1 {history[-1]['eval_top1']:.2f}%; checkpoints and summary in {output_dir}"
        )
    return {"best": best, "epochs": history, "output_dir": output_dir}


def train_from_args(argv: list[str] | None = None) -> dict[str, Any]:
    """Run tmix-train with these command-line arguments; return the run's summary
    (best metric, per-epoch rows, output folder). Bad input exits with status 2 and a message."""
    args, args_text = parse_args(argv)
    try:
        state = setup(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad input; a RuntimeError is a failure
        if dist.is_initialized():
            dist.destroy_process_group()
        build_parser().error(str(error))
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    state["args_text"] = args_text
    try:
        return run(args, state)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``tmix-train``): timm's console logging, then the run."""
    setup_default_logging()
    train_from_args(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
