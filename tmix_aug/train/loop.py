"""The training and evaluation passes of one epoch."""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from timm.utils import AverageMeter, ModelEmaV3, NativeScaler, accuracy, dispatch_clip_grad
from torch import nn
from tqdm import tqdm

from ..atomic import write_atomic
from ..mixing import BatchMixer
from ..recovery import capture_streams, restore_streams
from ..saliency_loader import saliency_kwargs, unpack_batch
from ..sampling import stream_seed
from ..step_timer import PhaseTimer
from .checkpoints import RecoveryWriter
from .flags import model_dtype
from .losses import build_train_loss


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
