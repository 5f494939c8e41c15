"""The search loop: learn a mixer under a frozen teacher, on one process or many (torchrun)."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2
from timm.utils import NativeScaler, init_distributed_device
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from ..atomic import remove_stale_temporaries, write_atomic
from ..data import check_num_classes
from ..mixer import TransformMix
from ..teacher import load_teacher
from ..sampling import stream_seed
from .card import search_card
from .checkpoint import CheckpointContents, SearchCheckpoint
from .config import SearchConfig
from .datasets import held_out_subset, read_splits, set_transforms
from .objective import SearchObjective
from .output import publish, weights_loaded
from .records import evaluate_teacher, held_out_record, transform_size
from .selection import kept_record

RUN_FILES = ("checkpoint", "metrics.jsonl", "model.safetensors", "config.json", "README.md", "mixes.png")
"""What a search writes in its output directory (and what ``overwrite`` deletes)."""


@dataclass
class SearchRun:
    """Everything a running search holds: where it runs, its models, data, optimizer and state."""

    config: SearchConfig
    device: torch.device
    rank: int
    world_size: int
    teacher: nn.Module
    mixer: TransformMix
    step_module: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: NativeScaler | None
    amp_dtype: torch.dtype | None
    train_dataset: Dataset
    val_dataset: Dataset
    data_config: dict
    checkpoint: SearchCheckpoint
    state: dict
    kept: dict[str, torch.Tensor]
    notes: str | None

    @property
    def main(self) -> bool:
        return self.rank == 0


def search(
    config: SearchConfig,
    *,
    train_dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
    teacher: nn.Module | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> TransformMix:
    """Learn a mixer (the search stage of TransformMix) and write it to ``config.output``.

    Datasets and teacher may be passed directly (they then override ``data_dir`` /
    ``teacher``); datasets must yield (normalised image tensor, int label). Every epoch writes a
    checkpoint unit (``resume=True`` continues from it exactly), ``metrics.jsonl`` and the
    output mixer (config.json, model.safetensors, README.md with the curve so far); only rank 0
    writes. All bad input is found before the first write.

    Returns:
        The kept mixer (eval mode), on the run's device.
    """
    run = prepare(config, train_dataset, val_dataset, teacher, {"mean": mean, "std": std})
    if run.main and not run.state["history"]:
        start = dict(epoch=0, train_loss=None, mean_shift=0.0, mean_linear_change=0.0, images_per_second=None, seconds=0.0)
        finish_epoch(run, {**measure(run), **start})
    for epoch in range(run.state["epoch"], config.epochs):
        totals = train_epoch(run, epoch)
        if run.world_size > 1:
            dist.barrier()
        if run.main:
            finish_epoch(run, {**measure(run), "epoch": epoch + 1, **totals})
    if run.main:
        write_outputs(run)  # again: `--resume --card-notes FILE` on a finished run updates the card
        run.mixer.load_state_dict(run.kept)
        if config.push_to_hub:
            run.mixer.push_to_hub(config.push_to_hub, model_card=card(run, None))
    if run.world_size > 1:
        dist.barrier()
    return run.mixer.eval()


def prepare(config: SearchConfig, train_dataset: Dataset | None, val_dataset: Dataset | None, teacher: nn.Module | None, data_config: dict) -> SearchRun:
    """Check everything, build the run and restore its checkpoint; nothing is written before the checks pass."""
    config.check()
    output = Path(config.output)
    env = argparse.Namespace(device="cuda" if torch.cuda.is_available() else "cpu", dist_backend=None, dist_url=None)
    device = init_distributed_device(env)
    check_output(config)
    if env.distributed:
        dist.barrier()  # every process has looked at the output before rank 0 writes to it
    torch.manual_seed(config.seed)
    if teacher is None:
        if config.teacher_checkpoint is None:
            raise ValueError("teacher_checkpoint: a search needs a teacher trained on the dataset; pass its weights")
        train_dataset, val_dataset, num_classes = read_splits(config)
        check_num_classes(num_classes, f"{config.data_dir} ({config.train_split})")
        teacher = load_teacher(
            config.teacher, config.teacher_checkpoint, num_classes=num_classes, model_kwargs=config.teacher_kwargs
        )
        data_config = resolve_data_config(model=teacher)
        set_transforms(train_dataset, val_dataset, data_config)
    elif train_dataset is None or val_dataset is None:
        raise ValueError("train_dataset/val_dataset: pass both datasets with a teacher")
    teacher = teacher.to(device).eval().requires_grad_(False)
    num_classes = teacher.get_classifier().out_features if hasattr(teacher, "get_classifier") else teacher.num_classes
    check_num_classes(num_classes, "teacher")
    if len(train_dataset) // env.world_size < config.batch_size:
        raise ValueError(
            f"batch_size: {config.batch_size} per process is more than the {len(train_dataset) // env.world_size} training images "
            f"per process (the last partial batch is dropped, so an epoch would have no step)"
        )
    val_dataset = held_out_subset(val_dataset, config.val_samples, config.seed)
    mixer = TransformMix(
        num_classes, saliency=teacher, k=config.k, alpha=config.alpha, mode=config.mode, size=config.size,
        max_translation=config.max_translation, max_linear=config.max_linear,
        init_temperature=config.init_temperature, balance=config.balance,
    ).to(device)  # fmt: skip
    probe_saliency(mixer, val_dataset, config)
    step_module: nn.Module = SearchObjective(mixer, teacher, calibrated=config.calibrated).train()
    if env.distributed:
        step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    optimizer = create_optimizer_v2(mixer, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
    use_amp = config.amp if config.amp is not None else device.type == "cuda"
    amp_dtype = (torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = NativeScaler(device=device.type) if amp_dtype == torch.float16 else None
    run = SearchRun(
        config=config, device=device, rank=env.rank, world_size=env.world_size, teacher=teacher, mixer=mixer,
        step_module=step_module, optimizer=optimizer, scaler=scaler, amp_dtype=amp_dtype, train_dataset=train_dataset,
        val_dataset=val_dataset, data_config=data_config, checkpoint=SearchCheckpoint(output),
        state={"epoch": 0, "history": [], "config": dataclasses.asdict(config)},
        kept={key: value.detach().clone() for key, value in mixer.state_dict().items()},
        notes=Path(config.card_notes).read_text() if config.card_notes else None,
    )  # fmt: skip
    if config.resume:
        restore(run)
    elif run.main:
        remove_run_files(output)
    if run.main:
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output)  # left by a process killed while writing
        if "teacher_top1" not in run.state:
            run.state["teacher_top1"] = evaluate_teacher(teacher, val_dataset, batch_size=config.batch_size, workers=config.workers, device=device)
    return run


def check_output(config: SearchConfig) -> None:
    """The output directory must be new or empty, unless the run resumes it or overwrites it."""
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output: {output} is a file; expected a directory")
    if config.resume:
        if SearchCheckpoint(output).latest() is None:
            SearchCheckpoint(output).load()  # raises, naming what is there
    elif output.is_dir() and any(output.iterdir()) and not config.overwrite:
        raise ValueError(
            f"output: {output} exists and is not empty; pass resume to continue its run, overwrite to replace it, "
            "or choose another directory"
        )


def remove_run_files(output: Path) -> None:
    """Delete what an earlier search wrote in ``output`` (only those files), so no stale one remains."""
    for name in RUN_FILES:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def probe_saliency(mixer: TransformMix, val_dataset: Dataset, config: SearchConfig) -> None:
    """Mix ``k`` held-out images once, so a teacher that cannot give saliency maps fails before any write."""
    images, labels = next(iter(DataLoader(val_dataset, batch_size=config.k)))
    device = next(mixer.parameters()).device
    try:
        with torch.no_grad():
            mixer.eval().mix(images.to(device), labels.to(device), generator=torch.Generator().manual_seed(config.seed))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
        raise ValueError(f"teacher: {config.teacher} cannot give the saliency maps the mixer reads ({type(error).__name__}: {error})") from None


def restore(run: SearchRun) -> None:
    """Continue from the checkpoint: refuse one written with other settings, note changes that cost exactness."""
    contents = run.checkpoint.load()
    refused, inexact = run.config.changes_from(contents.state.get("config", {}))
    if refused:
        raise ValueError(
            f"resume: the run in {run.config.output} was started with other settings ({'; '.join(refused)}); "
            "resume with the same ones, or start a new run with overwrite"
        )
    if inexact and run.main:
        print(f"resume: {'; '.join(inexact)}: the resumed run will not repeat an uninterrupted one exactly", flush=True)
    run.mixer.load_state_dict(contents.mixer)
    run.optimizer.load_state_dict(contents.optimizer["optimizer"])
    if run.scaler is not None and contents.optimizer.get("scaler") is not None:
        run.scaler.load_state_dict(contents.optimizer["scaler"])
    run.kept, run.state = contents.kept, contents.state
    run.state["config"] = dataclasses.asdict(run.config)


def train_epoch(run: SearchRun, epoch: int) -> dict:
    """One epoch of search steps; the summary numbers of its record."""
    config, device = run.config, run.device
    # Random transforms in this process (workers=0) draw from the global stream: re-seed it per epoch.
    torch.manual_seed(stream_seed(config.seed, epoch, run.rank))
    if run.world_size > 1:
        sampler = DistributedSampler(run.train_dataset, num_replicas=run.world_size, rank=run.rank, seed=config.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(run.train_dataset, generator=torch.Generator().manual_seed(stream_seed(config.seed, epoch, 0)))
    loader = DataLoader(
        run.train_dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, drop_last=True,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(stream_seed(config.seed, epoch, run.rank + 1)),
    )  # fmt: skip
    mix_generator = torch.Generator().manual_seed(stream_seed(config.seed, epoch, run.rank + 10_000))
    steps = len(loader) if config.max_batches is None else min(len(loader), config.max_batches)
    run.step_module.train()
    sums = np.zeros(3)  # loss, mean shift, mean linear change
    started = time.perf_counter()
    bar = tqdm(total=steps, desc=f"search epoch {epoch + 1}/{config.epochs}", disable=not run.main, leave=False)
    for step, (x, y) in enumerate(itertools.islice(loader, steps)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            loss, result = run.step_module(x, y, generator=mix_generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"search: non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1}; stopped, and the last "
                f"good checkpoint ({run.checkpoint.latest()}) is kept: lower lr, or check the teacher and the data"
            )
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler(loss, run.optimizer)
        else:
            loss.backward()
            run.optimizer.step()
        sums += (loss.item(), *transform_size(result.thetas.detach()))
        bar.update()
        bar.set_postfix(loss=f"{sums[0] / (step + 1):.3f}")
    bar.close()
    seconds = time.perf_counter() - started
    loss, shift, linear = (sums / steps).tolist()
    return dict(train_loss=loss, mean_shift=shift, mean_linear_change=linear, images_per_second=steps * config.batch_size * run.world_size / seconds, seconds=seconds)


def measure(run: SearchRun) -> dict:
    """The held-out record of the mixer as it is now."""
    c = run.config
    return held_out_record(run.mixer, run.teacher, run.val_dataset, k=c.k, alpha=c.alpha, batch_size=c.batch_size, workers=c.workers, seed=c.seed, device=run.device)


def finish_epoch(run: SearchRun, record: dict) -> None:
    """Log one epoch's record, commit the checkpoint unit, then write the outputs from it."""
    state = run.state
    state["history"].append(record)
    state["epoch"] = record["epoch"]
    print(json.dumps(record), flush=True)
    # The output holds the best held-out epoch so far (ours): with a teacher that has memorised
    # its training images, the training objective can keep falling while the held-out one rises.
    best = kept_record(state["history"], run.config.calibrated)
    state["best_epoch"] = best["epoch"]
    if best is record:
        run.kept = {key: value.detach().clone() for key, value in run.mixer.state_dict().items()}
    optimizer = {"optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None}
    run.checkpoint.save(CheckpointContents(mixer=run.mixer.state_dict(), kept=run.kept, optimizer=optimizer, state=state))
    write_outputs(run)


def card(run: SearchRun, weights_sha256: str | None) -> str:
    return search_card(run.config, run.state, run.data_config, run.notes, weights_sha256)


def write_outputs(run: SearchRun) -> None:
    """metrics.jsonl and the kept mixer with its card, from the committed state."""
    output = Path(run.config.output)
    text = "".join(json.dumps(r) + "\n" for r in run.state["history"])
    write_atomic(output / "metrics.jsonl", lambda tmp: Path(tmp).write_text(text))
    with weights_loaded(run.mixer, run.kept) as mixer:
        publish(output, mixer, lambda sha: card(run, sha), run.val_dataset, run.data_config, run.config.seed)
