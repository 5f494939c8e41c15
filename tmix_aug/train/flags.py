"""The tmix-train command line: every flag of timm's train.py plus the mixer's, and ``-c FILE`` configs.

Also the values read off the flags that several parts of the run need (``model_dtype``,
``timm_mixup_active``); the refusals of flag combinations are in ``flag_checks``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
import yaml
from timm.utils import ParseKwargs

from ..registry import list_mixers


SALIENCY_MIXERS = ("saliencymix", "transformmix")


def default_workers() -> int:
    """Loader workers per process: timm's 4, or fewer on a machine with fewer CPU cores."""
    return min(4, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags: every flag of timm's train.py, with timm's names and defaults, plus the mixer's.

    Deviations from timm's defaults: ``--device`` falls back to cpu without CUDA, and
    ``-j/--workers`` is at most the number of CPU cores. Flags this script does not implement
    are listed in ``flag_checks.NOT_SUPPORTED``: they parse, and a value other than timm's default
    stops the run with the reason (``flag_checks.check_args``).
    """
    parser = argparse.ArgumentParser(
        prog="tmix-train",
        description=sys.modules[__package__].__doc__,  # the package's docstring: what tmix-train does
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
                       "holds them in a safetensors file keyed to the teacher's weights and the data (reused by later runs); "
                       "with --saliency self, see --saliency-refresh")
    group.add_argument("--saliency-refresh", type=int, default=None, metavar="N",
                       help="with --saliency self and --saliency-cache: compute the model's own CAMs of every training "
                       "image (whole image at the input size, eval mode, no grad) at the start of epochs 0, N, 2N, ... "
                       "and carry the stored maps through the augmentation in between: one CAM pass per image every N "
                       "epochs instead of one per step. Epochs 0 to N-1 mix with the untrained model's maps (as "
                       "per-step self maps are at the first steps). A directory keeps only the latest refresh's file, "
                       "keyed to the weights, deleted at the end; checkpoints hold those weights, so a resume rebuilds "
                       "the same maps")
    group.add_argument("--transmix", action="store_true",
                       help="re-weight mixed labels by the ViT's class-token attention (TransMix)")
    return parser


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


def model_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """The dtype of --model-dtype (model weights and input images), or None for the default float32."""
    return getattr(torch, args.model_dtype) if args.model_dtype else None


def timm_mixup_active(args: argparse.Namespace) -> bool:
    """Whether timm's own Mixup/CutMix is on (timm's rule: --mixup or --cutmix > 0, or --cutmix-minmax)."""
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
