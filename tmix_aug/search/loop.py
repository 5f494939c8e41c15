"""The search loop: learn a mixer under a frozen teacher, on one process or many (torchrun)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import timm
import torch
import torch.distributed as dist
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.optim import create_optimizer_v2, list_optimizers
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from torchvision.transforms import Compose, RandomHorizontalFlip
from tqdm import tqdm

from ..baselines import CutMix, Mixup
from .. import hub
from ..atomic import write_atomic
from ..mixer import MODES, TransformMix
from ..viz import save_mix_grid
from .card import search_card
from .evaluate import compare_mixers
from .objective import SearchObjective


@dataclass
class SearchConfig:
    """Everything a search run needs; the defaults are the paper's (METHOD.md).

    Data: ``data_dir`` with ``dataset`` "" (an ImageFolder with train / validation folders) or
    any name ``timm.data.create_dataset`` knows. Teacher: a timm model name (the small-image
    models of ``tmix_aug.models`` included) and a checkpoint (safetensors, or a state dict
    loaded with ``weights_only=True``).
    """

    data_dir: str | None = None
    dataset: str = ""
    train_split: str = "train"
    val_split: str = "validation"
    teacher: str = "cifar_resnet20"
    teacher_checkpoint: str | None = None
    output: str = "runs/mixer"
    epochs: int = 100
    batch_size: int = 128
    opt: str = "momentum"  # a timm optimizer name; SGD with momentum is the paper's
    lr: float = 5e-4
    weight_decay: float = 0.01
    momentum: float = 0.9  # the paper does not give it (ours)
    alpha: float = 1.0
    k: int = 2
    size: int = 32
    mode: str = "transformmix"
    workers: int = 4
    seed: int = 0
    val_samples: int = 2000
    max_batches: int | None = None
    max_translation: float = 0.5
    max_linear: float = 0.5
    init_temperature: float = 0.3  # the mask temperature tau the search starts from (ours)
    balance: bool = True  # each input covers its lambda share of the image (ours, see TransformMix)
    calibrated: bool = True  # the teacher at its best temperature per batch (ours, see calibration.py)
    amp: bool | None = None
    resume: bool = False
    push_to_hub: str | None = None
    card_notes: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first field out of range."""
        positive = ("epochs", "batch_size", "lr", "alpha", "size", "val_samples", "init_temperature")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"weight_decay/momentum: expected >= 0 and in [0, 1), got {self.weight_decay}, {self.momentum}")
        if self.k < 2:
            raise ValueError(f"k: expected >= 2 inputs per mixed image, got {self.k}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.opt not in list_optimizers():
            raise ValueError(f"opt: expected a timm optimizer name (timm.optim.list_optimizers()), got {self.opt!r}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches: expected None or >= 1, got {self.max_batches}")


@dataclass
class Distributed:
    """Where this process runs and who it is among the torchrun processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group when launched by torchrun (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size == 1:
        return Distributed(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def load_teacher(name: str, checkpoint: str | None, num_classes: int) -> nn.Module:
    """A timm classifier with ``num_classes`` outputs, weights from ``checkpoint`` (never unpickled)."""
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"teacher_checkpoint: {checkpoint} is not a file")
    if checkpoint is None:
        raise ValueError("teacher_checkpoint: a search needs a teacher trained on the dataset; pass its weights")
    return timm.create_model(name, num_classes=num_classes, checkpoint_path=checkpoint)


def build_datasets(config: SearchConfig, teacher: nn.Module) -> tuple[Dataset, Dataset, dict]:
    """Train and held-out datasets with timm transforms and the teacher's normalisation."""
    if config.data_dir is None and not config.dataset:
        raise ValueError("data_dir: pass an ImageFolder directory (train/ and validation/ folders) or a dataset name")
    data_config = resolve_data_config(model=teacher)
    train = create_dataset(config.dataset, root=config.data_dir, split=config.train_split, is_training=True)
    held_out = create_dataset(config.dataset, root=config.data_dir, split=config.val_split, is_training=False)
    size = data_config["input_size"][-2:]
    held_out.transform = create_transform(size, is_training=False, crop_pct=1.0, mean=data_config["mean"], std=data_config["std"], interpolation="bilinear")
    # Search images are the teacher's clean view, flipped at random (ours): random crops and
    # colour jitter lower the frozen teacher's accuracy and make the objective noisier.
    train.transform = Compose([RandomHorizontalFlip(), *held_out.transform.transforms])
    return train, held_out, data_config


def held_out_subset(dataset: Dataset, samples: int, seed: int) -> Dataset:
    """A fixed random subset of at most ``samples`` items, in random order."""
    # Random order on purpose: a sorted subset of a class-sorted folder would make most
    # batches, and so most mixed pairs, a single class.
    return Subset(dataset, np.random.default_rng(seed).permutation(len(dataset))[:samples].tolist())


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for everything random in one epoch, so a resumed run repeats an uninterrupted one."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def transform_size(thetas: torch.Tensor) -> tuple[float, float]:
    """Mean shift |t| and mean |A - I| (Frobenius) of (N, K, 2, 3) transforms."""
    eye = torch.eye(2, dtype=thetas.dtype, device=thetas.device)
    return float(thetas[..., 2].norm(dim=-1).mean()), float((thetas[..., :2] - eye).flatten(-2).norm(dim=-1).mean())


class Checkpoint:
    """The per-epoch state of a search in ``output/checkpoint``: weights, optimizer, history."""

    def __init__(self, output: Path) -> None:
        self.directory = output / "checkpoint"

    def exists(self) -> bool:
        return (self.directory / "state.json").is_file()

    def save(self, mixer: TransformMix, optimizer: torch.optim.Optimizer, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in mixer.state_dict().items()}
        write_atomic(self.directory / "mixer.safetensors", lambda tmp: safetensors.torch.save_file(weights, tmp))
        write_atomic(self.directory / "optimizer.pt", lambda tmp: torch.save(optimizer.state_dict(), tmp))
        # state.json last: a checkpoint counts only once it names its epoch.
        write_atomic(self.directory / "state.json", lambda tmp: Path(tmp).write_text(json.dumps(state, indent=1)))

    def load(self, mixer: TransformMix, optimizer: torch.optim.Optimizer) -> dict:
        mixer.load_state_dict(safetensors.torch.load_file(self.directory / "mixer.safetensors"))
        optimizer.load_state_dict(torch.load(self.directory / "optimizer.pt", map_location="cpu", weights_only=True))
        return json.loads((self.directory / "state.json").read_text())


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
    ``teacher``); datasets must yield (normalised image tensor, int label). Every epoch writes
    ``metrics.jsonl``, a checkpoint (``resume=True`` continues from it exactly) and the mixer
    directory itself (config.json, model.safetensors, README.md with the curve so far); only
    rank 0 writes.

    Returns:
        The learned mixer (eval mode), on the run's device.
    """
    config.check()
    env = setup_distributed()
    torch.manual_seed(config.seed)
    output = Path(config.output)
    data_config: dict[str, Any] = {"mean": mean, "std": std}
    if teacher is None:
        probe = train_dataset if train_dataset is not None else create_dataset(config.dataset, root=config.data_dir, split=config.train_split)
        num_classes = len(getattr(probe, "classes", None) or probe.reader.class_to_idx)
        teacher = load_teacher(config.teacher, config.teacher_checkpoint, num_classes)
    teacher = teacher.to(env.device).eval().requires_grad_(False)
    num_classes = teacher.get_classifier().out_features if hasattr(teacher, "get_classifier") else teacher.num_classes
    if train_dataset is None or val_dataset is None:
        train_dataset, val_dataset, data_config = build_datasets(config, teacher)
    val_dataset = held_out_subset(val_dataset, config.val_samples, config.seed)

    mixer = TransformMix(
        num_classes,
        saliency=teacher,
        k=config.k,
        alpha=config.alpha,
        mode=config.mode,
        size=config.size,
        max_translation=config.max_translation,
        max_linear=config.max_linear,
        init_temperature=config.init_temperature,
        balance=config.balance,
    ).to(env.device)
    objective = SearchObjective(mixer, teacher, calibrated=config.calibrated).train()
    step_module: nn.Module = objective
    if env.world_size > 1:
        step_module = nn.parallel.DistributedDataParallel(
            objective, device_ids=[env.device.index] if env.device.type == "cuda" else None, broadcast_buffers=False
        )
    optimizer = create_optimizer_v2(mixer, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
    use_amp = config.amp if config.amp is not None else env.device.type == "cuda"
    amp_dtype = torch.bfloat16 if env.device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(env.device.type, enabled=use_amp and amp_dtype == torch.float16)

    checkpoint = Checkpoint(output)
    notes = Path(config.card_notes).read_text() if config.card_notes else None
    state: dict[str, Any] = {"epoch": 0, "history": [], "config": dataclasses.asdict(config)}
    if config.resume and checkpoint.exists():
        state = checkpoint.load(mixer, optimizer)
    if env.main:
        output.mkdir(parents=True, exist_ok=True)
        if "teacher_top1" not in state:
            state["teacher_top1"] = evaluate_teacher(teacher, val_dataset, config, env.device)

    if env.main and not state["history"]:
        start = held_out_record(mixer, teacher, val_dataset, config, env.device)
        start.update(epoch=0, train_loss=None, mean_shift=0.0, mean_linear_change=0.0, images_per_second=None, seconds=0.0)
        finish_epoch(start, state, mixer, optimizer, checkpoint, config, data_config, notes, val_dataset)

    for epoch in range(state["epoch"], config.epochs):
        sampler = (
            DistributedSampler(train_dataset, num_replicas=env.world_size, rank=env.rank, seed=config.seed, drop_last=True)
            if env.world_size > 1
            else RandomSampler(train_dataset, generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch)))
        )
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        loader = DataLoader(
            train_dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=True,
            pin_memory=env.device.type == "cuda",
            generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank + 1)),
        )
        mix_generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank + 10_000))
        objective.train()
        totals = {"loss": 0.0, "shift": 0.0, "linear": 0.0, "batches": 0, "images": 0}
        started = time.perf_counter()
        steps = len(loader) if config.max_batches is None else min(len(loader), config.max_batches)
        bar = tqdm(total=steps, desc=f"search epoch {epoch + 1}/{config.epochs}", disable=not env.main, leave=False)
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            with torch.autocast(env.device.type, dtype=amp_dtype, enabled=use_amp):
                loss, result = step_module(x, y, generator=mix_generator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            shift, linear = transform_size(result.thetas.detach())
            totals["loss"] += loss.item()
            totals["shift"] += shift
            totals["linear"] += linear
            totals["batches"] += 1
            totals["images"] += x.shape[0] * env.world_size
            bar.update()
            bar.set_postfix(loss=f"{totals['loss'] / totals['batches']:.3f}", img_s=f"{totals['images'] / (time.perf_counter() - started):.0f}")
        bar.close()
        seconds = time.perf_counter() - started
        if env.world_size > 1:
            dist.barrier()
        if not env.main:
            continue
        record = held_out_record(mixer, teacher, val_dataset, config, env.device)
        record.update(
            epoch=epoch + 1,
            train_loss=totals["loss"] / max(totals["batches"], 1),
            mean_shift=totals["shift"] / max(totals["batches"], 1),
            mean_linear_change=totals["linear"] / max(totals["batches"], 1),
            images_per_second=totals["images"] / seconds,
            seconds=seconds,
        )
        finish_epoch(record, state, mixer, optimizer, checkpoint, config, data_config, notes, val_dataset)

    if env.main:
        hub.load_weights(mixer, output)
        # The card of the final state: also what `--resume --card-notes FILE` on a finished run gives.
        card = search_card(config, state, data_config, notes)
        hub.write_card(output, mixer.architecture, card)
        if config.push_to_hub:
            mixer.push_to_hub(config.push_to_hub, model_card=card)
    if env.world_size > 1:
        dist.barrier()
    return mixer.eval()


def held_out_record(mixer: TransformMix, teacher: nn.Module, val_dataset: Dataset, config: SearchConfig, device: torch.device) -> dict:
    """The mixer against Mixup and CutMix on the held-out images, scored by the teacher."""
    mixer.eval()
    num_classes = mixer.num_classes
    baselines: dict[str, Any] = {"mixup": Mixup(num_classes, k=config.k, alpha=config.alpha)}
    if config.k == 2:
        baselines["cutmix"] = CutMix(num_classes, alpha=config.alpha)
    held_out = compare_mixers(
        teacher,
        {"transformmix": mixer, **baselines},
        DataLoader(val_dataset, batch_size=config.batch_size, num_workers=config.workers),
        seed=config.seed,
        device=device,
    )
    return {
        "held_out_ce": {name: round(m["cross_entropy"], 4) for name, m in held_out.items()},
        "held_out_calibrated_ce": {name: round(m["calibrated_cross_entropy"], 4) for name, m in held_out.items()},
        "held_out_top2": {name: round(m["top2_both"], 4) for name, m in held_out.items()},
        "held_out_area_gap": round(held_out["transformmix"]["area_gap"], 5),
        "teacher_temperature": round(held_out["transformmix"]["temperature"], 4),
        "temperature": mixer.temperature.item(),
    }


def kept_record(history: list[dict], calibrated: bool) -> dict:
    """The epoch whose mixer the output keeps (ours), from the per-epoch records.

    The lowest held-out objective among the epochs whose mixes the teacher reads as both
    classes (top-2) at least as often as the best baseline's and the unsearched start's (the
    first record, epoch 0); when no epoch passes, the lowest objective of all. Why: the
    objective can also fall by making an input harder to recognise (without balanced masks,
    by shrinking the input with the smaller lambda), and on CIFAR-10 the teacher's top-2 ranks
    mixers as a classifier that took no part in the search does. A searched epoch replaces the
    start only when it is better at the objective and no worse at that.
    """
    start = history[0]["held_out_top2"]["transformmix"]

    def rank(record: dict) -> tuple[bool, float]:
        top2 = record["held_out_top2"]
        floor = max(start, *(value for name, value in top2.items() if name != "transformmix"))
        objective = record["held_out_calibrated_ce" if calibrated else "held_out_ce"]["transformmix"]
        return top2["transformmix"] < floor, objective

    return min(history, key=rank)


def finish_epoch(
    record: dict,
    state: dict,
    mixer: TransformMix,
    optimizer: torch.optim.Optimizer,
    checkpoint: "Checkpoint",
    config: SearchConfig,
    data_config: dict,
    notes: str | None,
    val_dataset: Dataset,
) -> None:
    """Log one epoch's record, checkpoint, and write the output if this epoch is the best so far."""
    output = Path(config.output)
    state["history"].append(record)
    state["epoch"] = record["epoch"]
    print(json.dumps(record), flush=True)
    write_atomic(output / "metrics.jsonl", lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in state["history"])))
    # The output holds the best held-out epoch so far (ours): with a teacher that has memorised
    # its training images, the training objective can keep falling while the held-out one rises.
    best = kept_record(state["history"], config.calibrated)
    improved = best is record
    state["best_epoch"] = best["epoch"]
    checkpoint.save(mixer, optimizer, state)
    card = search_card(config, state, data_config, notes)
    if improved:
        mixer.save_pretrained(output, model_card=card)
        save_picture(mixer, val_dataset, data_config, output / "mixes.png", config.seed)
    else:
        hub.write_card(output, mixer.architecture, card)


@torch.no_grad()
def evaluate_teacher(teacher: nn.Module, dataset: Dataset, config: SearchConfig, device: torch.device) -> float:
    """Top-1 accuracy (%) of the teacher on the clean held-out images."""
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers):
        correct += int((teacher(x.to(device)).argmax(-1).cpu() == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def save_picture(mixer: TransformMix, dataset: Dataset, data_config: dict, path: Path, seed: int) -> None:
    """A picture of the learned strategy on the first held-out images."""
    x, y = next(iter(DataLoader(dataset, batch_size=min(8, len(dataset)))))
    device = next(mixer.parameters()).device
    result = mixer.mix(x.to(device), y.to(device), generator=torch.Generator().manual_seed(seed))
    scale = max(1, math.ceil(64 / x.shape[-1]))
    save_mix_grid(path, result, x, mean=data_config.get("mean"), std=data_config.get("std"), num_samples=8, scale=scale)
