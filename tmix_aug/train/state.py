"""Everything before the first step (``setup``): devices, data, model, mixer, optimizer, schedule, resume."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from timm.models import load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import ModelEmaV3, NativeScaler, init_distributed_device, random_seed
from torch import nn

from ..data import check_num_classes
from .batch_mixer import build_mixer, probe_mixer
from .checkpoints import read_resume_checkpoint, read_saliency_refresh
from .data import build_datasets, build_loaders, build_saliency_refresh, check_tta, scheduled_batch_size
from .flag_checks import check_args, check_finite
from .loop import updates_per_epoch
from .model import build_distillation, build_model
from .run_folder import choose_output_dir


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


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Everything before the first step: devices, data, model, mixer, optimizer, schedule.

    All bad input is found here and raised as ValueError / TypeError / FileNotFoundError.
    """
    check_args(args)
    device = init_distributed_device(args)
    random_seed(args.seed, args.rank)
    check_finite(args)
    output_dir = choose_output_dir(args)
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

    model, data_config = build_model(args, num_classes, device)
    mixer = build_mixer(args, num_classes, model, device)
    probe_mixer(args, mixer, data_config["input_size"], num_classes, device)
    transmix = None
    if args.transmix:
        from ..transmix import TransMixLabels  # only vision transformers need it

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

    saliency_refresh = None
    if args.saliency_refresh is not None:
        saliency_refresh = build_saliency_refresh(args, train_set, mixer, data_config, num_classes, device)
        if args.resume:
            saliency_refresh.load_state_dict(read_saliency_refresh(args.resume))
    train_loader, eval_loader = build_loaders(
        args, train_set, eval_set, mixer, data_config, num_classes, device, saliency_maps=saliency_refresh
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
        saliency_refresh=saliency_refresh,
        train_loader=train_loader,
        eval_loader=eval_loader,
        data_config=data_config,
        num_classes=num_classes,
        train_size=len(train_set),
        eval_size=len(eval_set),
        output_dir=output_dir,
    )
