"""The model being trained, as timm's train.py makes it from the flags, and the --kd-model-name
distillation task around it."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from timm.layers import convert_splitbn_model, set_fast_norm
from timm.models import load_checkpoint
from timm.task import DistillationTeacher, LogitDistillationTask
from timm.utils import set_jit_fuser
from torch import nn

from .flags import model_dtype
from .losses import build_train_loss

_logger = logging.getLogger("tmix_aug.train")


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


def prepare_runtime(args: argparse.Namespace) -> None:
    """Process-wide settings of timm's flags: device backend modules, the JIT fuser, fast norm."""
    for module in args.device_modules or ():
        importlib.import_module(module)
    if args.fuser:
        set_jit_fuser(args.fuser)
    if args.fast_norm:
        set_fast_norm()


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The model of --model and its flags on ``device``, and timm's data config for it (input size, mean, std, ...).

    As timm's train.py: weights (--pretrained, --pretrained-path, --initial-checkpoint), head
    initialisation, split / synchronised BatchNorm, dtype, memory layout and TorchScript.
    """
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
    return model, data_config


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
