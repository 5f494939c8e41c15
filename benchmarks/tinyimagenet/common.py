"""Shared pieces of the Tiny-ImageNet scripts: the data, the teacher built from ImageNet weights, the val split.

Facts used here are in ../shared/data/README.md: the MobileNetV2 weights expect RGB in [0, 1]
normalised with mean = std = 0.5 and TF "same" padding; Tiny-ImageNet's 200 wnids are ImageNet-1k
classes, so the 200-class head starts as the ImageNet head's rows of those classes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.torch
import timm
import tmix_aug.models  # noqa: F401  (registers tf_mobilenetv2_100*)
import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo, create_dataset
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from tmix_aug.atomic import write_atomic

DATA = Path(os.environ.get("TINYIMAGENET", Path.home() / ".cache/tmix/tinyimagenet-64px"))
IMAGENET_WEIGHTS = Path("/work/shared/data/weights/mobilenetv2_100_imagenet.safetensors")
MEAN = STD = (0.5, 0.5, 0.5)
# The search holds out the first SEARCH_VAL_SAMPLES of a seed-0 permutation of the 10,000 val
# images in the order of timm's ImageFolder reader (tmix_aug.search.loop.held_out_subset with
# seed 0, val_samples 2000); every judge-style evaluation uses the other 8,000. timm sorts file
# names naturally (val_2 before val_10), torchvision lexicographically, so the indices differ.
SEARCH_SEED = 0
SEARCH_VAL_SAMPLES = 2000


def normalize() -> transforms.Normalize:
    return transforms.Normalize(MEAN, STD)


def folder(split: str, train: bool = False) -> datasets.ImageFolder:
    """Tiny-ImageNet split as an ImageFolder of normalised (3, 64, 64) tensors (greyscale -> RGB)."""
    steps = [transforms.RandomCrop(64, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()] if train else []
    return datasets.ImageFolder(
        str(DATA / split),
        transform=transforms.Compose([*steps, transforms.ToTensor(), normalize()]),
        loader=lambda p: datasets.folder.default_loader(p).convert("RGB"),
    )


def val_split_indices(dataset: datasets.ImageFolder) -> tuple[list[int], list[int]]:
    """Indices into ``dataset`` (the val ImageFolder): (the search's held-out images, the judge's images)."""
    timm_order = [path for path, _ in create_dataset("", root=str(DATA), split="val").reader.samples]
    position = {path: i for i, (path, _) in enumerate(dataset.samples)}
    order = [position[timm_order[i]] for i in np.random.default_rng(SEARCH_SEED).permutation(len(timm_order))]
    return order[:SEARCH_VAL_SAMPLES], order[SEARCH_VAL_SAMPLES:]


def imagenet_rows(classes: list[str]) -> list[int]:
    """ImageNet-1k class index of each wnid, in the order given."""
    wnids = list(ImageNetInfo().label_names())
    return [wnids.index(c) for c in classes]


def teacher_from_imagenet(classes: list[str], model_name: str = "tf_mobilenetv2_100", **kwargs) -> nn.Module:
    """A tmix_aug.models MobileNetV2 (TF "same" padding) with ImageNet weights and the head rows of ``classes``.

    ``kwargs`` go to ``timm.create_model`` (e.g. ``output_stride``, ``input_scale``).
    """
    model = timm.create_model(model_name, num_classes=len(classes), **kwargs)
    state = safetensors.torch.load_file(IMAGENET_WEIGHTS)
    rows = torch.tensor(imagenet_rows(classes))
    state["classifier.weight"] = state["classifier.weight"][rows]
    state["classifier.bias"] = state["classifier.bias"][rows]
    model.load_state_dict(state)
    return model


def hits(model: nn.Module, dataset, batch_size: int = 100) -> torch.Tensor:
    """(len(dataset),) bool on the CPU: whether the model's top-1 class is the label."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=0):
            out.append((model(x.to(device)).argmax(-1).cpu() == y))
    return torch.cat(out)


def top1(hit: torch.Tensor) -> float:
    """Top-1 (%) from ``hits``, two decimals."""
    return round(100.0 * float(hit.float().mean()), 2)


def append_result(path: Path, record: dict) -> None:
    """Append ``record`` (with the UTC time) as one JSON line to ``path`` and print it."""
    record = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def run_facts() -> dict:
    """Versions and machine, for every result record."""
    return {
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        "machine": "GPU " + torch.cuda.get_device_name() if torch.cuda.is_available()
        else f"{os.cpu_count()}-core CPU, shared, {torch.get_num_threads()} torch thread(s)",
    }


def batch_indices(epoch_size: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The sample indices of global step ``step``: epochs are seeded permutations, cut into batches."""
    per_epoch = epoch_size // batch_size
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(epoch_size)
    return order[within * batch_size : (within + 1) * batch_size].tolist()


@dataclass
class StepSchedule:
    """SGD (Nesterov momentum 0.9, no weight decay on biases and norms), linear warm-up then cosine to 0."""

    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    clip: float
    save_every: int
    seed: int = 0
    label_smoothing: float = 0.1

    def lr_at(self, step: int) -> float:
        return self.lr * min((step + 1) / self.warmup, 0.5 * (1 + math.cos(math.pi * step / self.steps)))


def train_steps(
    model: nn.Module, train, work: Path, schedule: StepSchedule, on_save: Callable[[dict], None] | None = None
) -> dict:
    """Train ``model`` for ``schedule.steps`` steps, resumable from ``work``; returns the final state.

    Every ``save_every`` steps (and at the end) weights, optimizer and ``state.json`` (written
    last: it names the step) are replaced atomically in ``work``; a rerun continues from them.
    Step ``i`` trains on ``batch_indices(.., i, seed)`` with augmentation drawn from a seed of
    (seed, i), so a resumed run sees the batches an uninterrupted one would. ``on_save(state)``
    runs after each save (e.g. an evaluation).
    """
    device = next(model.parameters()).device
    work.mkdir(parents=True, exist_ok=True)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=schedule.lr, momentum=0.9, nesterov=True,
    )
    state = {"step": 0, "seconds": 0.0, "loss_sum": 0.0, "loss_steps": 0}
    if (work / "state.json").is_file():
        state = json.loads((work / "state.json").read_text())
        model.load_state_dict(safetensors.torch.load_file(work / "model.safetensors", device=str(device)))
        optimizer.load_state_dict(torch.load(work / "optimizer.pt", map_location=device, weights_only=True))
        print(f"resumed at step {state['step']}", flush=True)

    def save() -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        write_atomic(work / "model.safetensors", lambda tmp: safetensors.torch.save_file(weights, tmp))
        write_atomic(work / "optimizer.pt", lambda tmp: torch.save(optimizer.state_dict(), tmp))
        write_atomic(work / "state.json", lambda tmp: Path(tmp).write_text(json.dumps(state)))

    while state["step"] < schedule.steps:
        model.train()
        started = time.perf_counter()
        step = state["step"]
        torch.manual_seed(int(np.random.SeedSequence([schedule.seed, step]).generate_state(1)[0]))
        indices = batch_indices(len(train), schedule.batch_size, step, schedule.seed)
        x, y = next(iter(DataLoader(Subset(train, indices), batch_size=len(indices), num_workers=0)))
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=schedule.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.clip)
        optimizer.step()
        state["step"] = step + 1
        state["seconds"] += time.perf_counter() - started
        state["loss_sum"] += loss.item()
        state["loss_steps"] += 1
        if state["step"] % schedule.save_every == 0 or state["step"] == schedule.steps:
            state["train_loss"] = round(state["loss_sum"] / state["loss_steps"], 4)
            state["loss_sum"], state["loss_steps"] = 0.0, 0
            save()
            print(json.dumps({"step": state["step"], "train_loss": state["train_loss"], "train_seconds": round(state["seconds"]),
                              "time_utc": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)
            if on_save is not None:
                on_save(state)
    return state


def save_half(model: nn.Module, path: Path) -> None:
    """The model's state dict as fp16 safetensors (integer buffers kept), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    half = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: safetensors.torch.save_file(half, tmp, metadata={"format": "pt"}))
