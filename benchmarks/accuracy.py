"""Accuracy studies with seeds: does a mixer make the model better than Mixup and CutMix?

A *cell* is (protocol, method, seed). Each cell is one ``tmix-train`` run in its own folder
(``WORK/runs/<protocol>/<method>/seed<k>``, WORK defaults to ``~/.cache/tmix/accuracy``),
resumed from its last checkpoint when a sitting was cut short. When a run has finished, the
harness evaluates its final weights on the full test set and on the (unaugmented, unmixed)
training set, and appends one JSON line to ``benchmarks/results/accuracy.jsonl``: the command,
package versions, machine, wall and CPU time, final test top-1/top-5, best top-1 on the
per-epoch monitor set, clean train accuracy, final (mixed) train loss and the per-epoch curves.
Finished cells are skipped, so rerunning the same command continues where it stopped.

    # all cells, seed 0 of both protocols first; rerun the same line to resume
    nohup nice -n 10 env OMP_NUM_THREADS=1 bash benchmarks/accuracy_all.sh \\
        >> ~/.cache/tmix/accuracy/run.log 2>&1 &
    # stop: kill the driver, then the harness (`kill PID`: it stops its tmix-train run and
    # records the time spent); the next start resumes from the last finished epoch
    python benchmarks/accuracy.py run --protocol scratch --method none mixup --seed 0
    python benchmarks/accuracy.py status          # per cell: skip (recorded), record, resume or start
    python benchmarks/accuracy.py report          # accuracy.md (mean ± std) and accuracy.png

Evaluating the full test set after every epoch would cost about as much as the training
itself here, so ``tmix-train`` evaluates each epoch on a fixed, class-balanced *monitor*
subset of the test set (the curves and "best" come from it) and the harness scores the
final weights once on the whole test set (the headline figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_WORK = Path(os.environ.get("TMIX_ACCURACY_DIR", Path.home() / ".cache" / "tmix" / "accuracy"))
DATA_ROOT = Path.home() / ".cache" / "tmix"
SHARED = Path("/work/shared/data")
CIFAR_TEACHER = SHARED / "teachers" / "cifar10_resnet20.safetensors"
MOBILENET = SHARED / "weights" / "mobilenetv2_100_imagenet.safetensors"
MACHINE_NOTE = "2-core CPU, shared with other jobs; 1 thread per run (OMP_NUM_THREADS=1)"


@dataclass(frozen=True)
class Protocol:
    """How one study trains and scores.

    - ``prepare(work) -> data_dir``: builds (once) the image-folder view the run reads, with
      ``train``, ``monitor`` and ``test`` folders; None for the built-in synthetic data.
    - ``train_args``: tmix-train flags shared by every method (model, schedule, augmentation).
    - ``teacher_args``: the flags that give TransformMix a teacher's CAMs.
    - ``mixer``: the bundled mixer of the TransformMix methods, the one made for such images.
    - ``dataset``, ``train_split``, ``monitor_split``, ``test_split``: where the data is.
    """

    name: str
    description: str
    train_args: tuple[str, ...]
    teacher_args: tuple[str, ...]
    mixer: str
    prepare: Callable[[Path], Path | None] | None = None
    dataset: str = ""
    train_split: str = "train"
    monitor_split: str = "monitor"
    test_split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return int(self.train_args[self.train_args.index("--epochs") + 1])


def _balanced_pick(files_by_class: dict[str, list[str]], per_class: int, seed: int) -> dict[str, list[str]]:
    """``per_class`` files of each class, drawn without replacement by ``seed`` (sorted first,
    so the pick depends only on the file names and the seed)."""
    rng = random.Random(seed)
    picked = {}
    for name in sorted(files_by_class):
        files = sorted(files_by_class[name])
        if len(files) < per_class:
            raise ValueError(f"per_class: class {name!r} has {len(files)} files, fewer than {per_class}")
        picked[name] = sorted(rng.sample(files, per_class))
    return picked


def _link_folder(target: Path, files_by_class: dict[str, list[str]]) -> None:
    """An ImageFolder at ``target`` whose files are symlinks (built under a temp name, then renamed)."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.unlink() if path.is_symlink() or path.is_file() else path.rmdir()
        tmp.rmdir()
    for name, files in files_by_class.items():
        (tmp / name).mkdir(parents=True)
        for source in files:
            (tmp / name / Path(source).name).symlink_to(source)
    tmp.rename(target)


def _folder_files(root: Path) -> dict[str, list[str]]:
    return {d.name: [str(f) for f in d.iterdir()] for d in sorted(root.iterdir()) if d.is_dir()}


def prepare_cifar_scratch(work: Path, per_class: int, monitor_per_class: int, seed: int = 0) -> Path:
    """CIFAR-10 view: ``per_class`` training JPEGs per class, ``monitor_per_class`` test JPEGs
    per class for the per-epoch curve, and the full test set (10,000) as ``test``."""
    view = work / "data" / f"cifar10-{per_class}pc-m{monitor_per_class}-seed{seed}"
    if not (view / "test").exists():
        view.mkdir(parents=True, exist_ok=True)
        if not (view / "train").exists():
            _link_folder(view / "train", _balanced_pick(_folder_files(DATA_ROOT / "train"), per_class, seed))
        if not (view / "monitor").exists():
            _link_folder(
                view / "monitor", _balanced_pick(_folder_files(DATA_ROOT / "test"), monitor_per_class, seed)
            )
        (view / "test").symlink_to(DATA_ROOT / "test")
    return view


def prepare_flowers(work: Path, monitor_per_class: int, seed: int = 0) -> Path:
    """Flowers-102 view of the official split: ``train`` = train + val (2,040), ``test`` = test
    (6,149), ``monitor`` = ``monitor_per_class`` test images per class; class folders 000-101."""
    from scipy.io import loadmat

    view = work / "data" / f"flowers102-trainval-m{monitor_per_class}-seed{seed}"
    if (view / "test").exists():
        return view
    base = DATA_ROOT / "flowers-102"
    labels = loadmat(base / "imagelabels.mat")["labels"][0]
    setid = loadmat(base / "setid.mat")

    def by_class(keys: Iterable[str]) -> dict[str, list[str]]:
        files: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            for index in setid[key][0]:
                files[f"{int(labels[index - 1]) - 1:03d}"].append(str(base / "jpg" / f"image_{index:05d}.jpg"))
        return dict(files)

    view.mkdir(parents=True, exist_ok=True)
    test = by_class(["tstid"])
    for split, files in (
        ("train", by_class(["trnid", "valid"])),
        ("monitor", _balanced_pick(test, monitor_per_class, seed)),
        ("test", test),
    ):
        if not (view / split).exists():
            _link_folder(view / split, files)
    return view


PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


register(
    Protocol(
        name="scratch",
        description=(
            "CIFAR-10 from scratch: 100 JPEG training images per class (1,000, a fixed subset, data "
            "seed 0), CIFAR ResNet-20, 32 px, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine, 80 "
            "epochs, batch 64, random resized crop (scale 0.35-1) + flip + colour jitter 0.4, no label "
            "smoothing; test: all 10,000 JPEG test images"
        ),
        prepare=lambda work: prepare_cifar_scratch(work, per_class=100, monitor_per_class=50),
        train_args=(
            "--model", "cifar_resnet20", "--img-size", "32", "--epochs", "80", "--warmup-epochs", "0",
            "--lr", "0.1", "--weight-decay", "5e-4", "-b", "64", "--scale", "0.35", "1",
            "--smoothing", "0", "-j", "0", "--no-progress", "--checkpoint-hist", "1",
        ),
        teacher_args=(
            "--saliency", "teacher", "--teacher", "cifar_resnet20", "--teacher-checkpoint", str(CIFAR_TEACHER),
        ),
        mixer="cifar10-resnet20",
    )
)


def longer(base: Protocol, name: str, epochs: int) -> Protocol:
    """``base`` with another number of epochs (the cosine schedule stretches with it)."""
    args = list(base.train_args)
    at = args.index("--epochs") + 1
    old = f"cosine, {args[at]} epochs"
    if old not in base.description:
        raise ValueError(f"{base.name}: its description does not say {old!r}")
    args[at] = str(epochs)
    return dataclasses.replace(
        base, name=name, description=base.description.replace(old, f"cosine, {epochs} epochs"), train_args=tuple(args)
    )


# The same study, three times as long. At 80 epochs (1,280 steps) the mixers underfit: on seed 0
# Mixup's clean train top-1 was 63% against 90% without mixing, and its test top-1 6 points lower.
register(longer(PROTOCOLS["scratch"], "scratch-long", 240))

register(
    Protocol(
        name="transfer",
        description=(
            "Flowers-102 (official split: train+val, 2,040 images, to train; test, 6,149), 64 px "
            "thumbnails upsized to 112 px, fine-tuned from the ImageNet MobileNetV2 (TF-same "
            "padding), SGD lr 0.05 with timm's layer-wise decay 0.6 (19 layer groups: the new head at 0.05, "
            "each group below it 0.6x the next, the stem at 5e-6), momentum 0.9, weight decay 1e-4, cosine, 8 epochs, batch 64, random "
            "resized crop (scale 0.35-1) + flip + colour jitter 0.4, no label smoothing; teacher: the "
            "frozen ImageNet MobileNetV2 with its TF padding"
        ),
        prepare=lambda work: prepare_flowers(work, monitor_per_class=5),
        train_args=(
            "--model", "mobilenetv2_100", "--model-kwargs", "pad_type=same", "--pretrained-path", str(MOBILENET),
            "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5", "--img-size", "112",
            "--crop-pct", "1.0", "--epochs", "8", "--warmup-epochs", "0", "--lr", "0.05", "--layer-decay", "0.6",
            "--weight-decay", "1e-4", "-b", "64", "--scale", "0.35", "1", "--smoothing", "0", "-j", "0",
            "--no-progress", "--checkpoint-hist", "1",
        ),
        teacher_args=(
            "--saliency", "teacher", "--teacher", "mobilenetv2_100", "--teacher-kwargs", "pad_type=same",
            "--teacher-checkpoint", str(MOBILENET),
        ),
        # Photos of objects, upsized to 112 px: the mixer searched on Tiny-ImageNet under an
        # ImageNet MobileNetV2 is the one made for them (no transfer cell with a mixer had run
        # when it replaced cifar10-resnet20 here).
        mixer="tinyimagenet-mobilenetv2",
    )
)

# The same fine-tune, three times as long. At 8 epochs the mixers underfit: on seed 0 Mixup's
# clean train top-1 was 83% against 96% without mixing, and its test top-1 7.5 points lower.
register(longer(PROTOCOLS["transfer"], "transfer-long", 24))

METHODS: dict[str, Callable[[Protocol], tuple[str, ...]]] = {
    "none": lambda p: ("--mixer", "none"),
    "mixup": lambda p: ("--mixer", "mixup"),
    "cutmix": lambda p: ("--mixer", "cutmix"),
    "transformmix-teacher": lambda p: ("--mixer", "transformmix", "--mixer-path", p.mixer, *p.teacher_args),
    "transformmix-self": lambda p: ("--mixer", "transformmix", "--mixer-path", p.mixer, "--saliency", "self"),
    "saliency-softmax-teacher": lambda p: (
        "--mixer", "transformmix", "--mixer-mode", "saliency-softmax", *p.teacher_args,
    ),
}
METHOD_LABELS = {
    "none": "no mixing",
    "mixup": "Mixup",
    "cutmix": "CutMix",
    "transformmix-teacher": "TransformMix, teacher CAMs",
    "transformmix-self": "TransformMix, CAMs of the model itself",
    "saliency-softmax-teacher": "saliency-softmax (unsearched ablation), teacher CAMs",
}


@dataclass(frozen=True)
class Cell:
    protocol: str
    method: str
    seed: int

    def folder(self, work: Path) -> Path:
        return work / "runs" / self.protocol / self.method / f"seed{self.seed}"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.method, self.seed)


def cell_argv(cell: Cell, work: Path, data_dir: Path | None) -> list[str]:
    """tmix-train's arguments for ``cell`` (without --resume)."""
    protocol = PROTOCOLS[cell.protocol]
    argv = ["--dataset", protocol.dataset] if protocol.dataset else []
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += ["--train-split", protocol.train_split, "--val-split", protocol.monitor_split]
    argv += [*protocol.train_args, *METHODS[cell.method](protocol), "--seed", str(cell.seed)]
    folder = cell.folder(work)
    argv += ["--output", str(folder.parent), "--experiment", folder.name]
    return argv


def spec_hash(cell: Cell) -> str:
    """Fingerprint of what the cell runs (protocol flags and method flags; not paths of the work folder)."""
    protocol = PROTOCOLS[cell.protocol]
    text = json.dumps([protocol.train_args, protocol.teacher_args, METHODS[cell.method](protocol), protocol.extra])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (whole line in one write, flushed to disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write(json.dumps(record, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _summary(folder: Path) -> dict[str, Any] | None:
    path = folder / "summary.json"
    if not path.exists():
        return None
    with open(path) as file:
        return json.load(file)


def plan(cell: Cell, work: Path, results: Path) -> str:
    """What running ``cell`` would do now: "skip" (recorded), "record" (trained, not yet
    scored), "resume" (has a checkpoint) or "start".

    Raises:
        ValueError: the cell was recorded or started with different flags (rename the protocol).
    """
    digest = spec_hash(cell)
    for record in read_records(results):
        if (record["protocol"], record["method"], record["seed"]) == cell.key:
            if record["spec"] != digest:
                raise ValueError(
                    f"cell {cell.key}: recorded with other flags (spec {record['spec']}, now {digest}); "
                    "give the changed protocol a new name"
                )
            return "skip"
    folder = cell.folder(work)
    marker = folder / "cell.json"
    if marker.exists():
        started = json.loads(marker.read_text())["spec"]
        if started != digest:
            raise ValueError(
                f"cell {cell.key}: {folder} was started with other flags (spec {started}, now {digest}); "
                "delete the folder or give the changed protocol a new name"
            )
    summary = _summary(folder)
    if summary and summary["epochs"] and summary["epochs"][-1]["epoch"] + 1 >= PROTOCOLS[cell.protocol].epochs:
        return "record"
    if (folder / "last.pth.tar").exists():
        return "resume"
    return "start"


def versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision

    import tmix_aug

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "tmix_aug": getattr(tmix_aug, "__version__", "unknown"),
        "git_commit": commit,
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "note": MACHINE_NOTE,
    }


def evaluate(summary: dict[str, Any], folder: Path, split: str, data_dir: Path | None) -> dict[str, float]:
    """Top-1/top-5 (%) and mean cross-entropy of the run's final weights on ``split``, with
    the evaluation transform (no augmentation, no mixing)."""
    import timm
    import torch
    from timm.data import create_loader, resolve_data_config
    from timm.models import load_checkpoint

    import tmix_aug.models  # noqa: F401  registers the CIFAR models
    from tmix_aug.data import create_image_dataset

    args = summary["args"]
    model = timm.create_model(args["model"], num_classes=summary["num_classes"], **args["model_kwargs"])
    load_checkpoint(model, str(folder / "last.pth.tar"), weights_only=False)  # our own checkpoint
    model.eval()
    config = resolve_data_config(args, model=model)
    dataset = create_image_dataset(
        args["dataset"], None if data_dir is None else str(data_dir), split,
        image_size=args["img_size"] or 32, synthetic_samples=args["synthetic_samples"],
        synthetic_classes=args["synthetic_classes"], seed=args["seed"],
    )
    loader = create_loader(
        dataset, input_size=config["input_size"], batch_size=256, is_training=False, use_prefetcher=False,
        interpolation=config["interpolation"], mean=config["mean"], std=config["std"],
        crop_pct=config["crop_pct"], num_workers=0,
    )
    hits1 = hits5 = loss = total = 0.0
    cam_hw = None
    with torch.no_grad():
        for x, y in loader:
            if cam_hw is None:
                cam_hw = cam_map_size(args, model, x[:2], summary["num_classes"])
            logits = model(x)
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits1 += float((top[:, 0] == y).sum())
            hits5 += float((top == y[:, None]).any(dim=1).sum())
            total += len(y)
    return {
        "top1": 100 * hits1 / total, "top5": 100 * hits5 / total, "loss": loss / total, "images": int(total),
        "cam_map_hw": cam_hw,
    }


def cam_map_size(args: dict[str, Any], model: Any, x: Any, num_classes: int) -> list[int] | None:
    """(h, w) of the class activation maps the run's mixer read (the model itself or its
    teacher, through the same ``ClassActivationMap`` pass with its default downsizing), for a
    batch ``x`` (N, C, H, W) at the training size; None when the run used no CAMs."""
    import timm
    import torch

    from tmix_aug.saliency import ClassActivationMap

    if args.get("saliency") == "self":
        source = model
    elif args.get("saliency") == "teacher":
        kwargs = {} if args.get("teacher_num_classes") is None else {"num_classes": args["teacher_num_classes"]}
        source = timm.create_model(args["teacher"], checkpoint_path=args.get("teacher_checkpoint") or "", **kwargs)
    else:
        return None
    targets = torch.full((x.shape[0], num_classes), 1.0 / num_classes)
    return list(ClassActivationMap(source.eval())(x, targets).shape[-2:])


def curves(summary: dict[str, Any]) -> dict[str, list[float]]:
    rows = summary["epochs"]
    keys = ("lr", "train_loss", "train_images_per_sec", "train_mixer_share", "eval_top1", "eval_top5", "eval_loss")
    out = {"epoch": [row["epoch"] for row in rows]}
    for key in keys:
        if all(key in row for row in rows):
            out[key.replace("eval_", "monitor_")] = [row[key] for row in rows]
    return out


def run_cell(cell: Cell, work: Path, results: Path, log=print) -> dict[str, Any] | None:
    """Train (or resume) ``cell`` and record it; return the record, or None when already recorded."""
    action = plan(cell, work, results)
    if action == "skip":
        return None
    protocol = PROTOCOLS[cell.protocol]
    data_dir = protocol.prepare(work) if protocol.prepare else None
    folder = cell.folder(work)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(json.dumps({"spec": spec_hash(cell), "key": list(cell.key)}))
    argv = cell_argv(cell, work, data_dir)
    sittings_path = folder / "sittings.jsonl"
    if action in ("start", "resume"):
        run_argv = argv + (["--resume", str(folder / "last.pth.tar")] if action == "resume" else [])
        log(f"[{_now()}] {action} {cell.key}: tmix-train {shlex.join(run_argv)}")
        began = _now()
        # A sitting killed outright (the end of a session) never reaches the ``finally`` below;
        # this marker lets the record count it as untimed instead of silently losing it.
        append_record(sittings_path, {"action": action, "began": began})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        returncode = None
        try:
            with open(folder / "train.log", "a") as out:
                # subprocess.run kills the run when this process is interrupted (SIGINT / SIGTERM)
                returncode = subprocess.run(
                    [sys.executable, "-m", "tmix_aug.train", *run_argv], stdout=out, stderr=subprocess.STDOUT
                ).returncode
        finally:  # the sitting's time counts even when it was stopped
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            append_record(sittings_path, {
                "action": action,
                "began": began,
                "wall_s": time.perf_counter() - start,
                "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                "returncode": returncode,
                "ended": _now(),
            })
        if returncode != 0:
            raise RuntimeError(f"cell {cell.key}: tmix-train exited with {returncode}; see {folder / 'train.log'}")
        if plan(cell, work, results) != "record":
            raise RuntimeError(f"cell {cell.key}: tmix-train ended before the last epoch; see {folder / 'train.log'}")
    summary = _summary(folder)
    log(f"[{_now()}] scoring {cell.key} on {protocol.test_split} and {protocol.train_split}")
    scoring_start = time.perf_counter()
    test = evaluate(summary, folder, protocol.test_split, data_dir)
    train = evaluate(summary, folder, protocol.train_split, data_dir)
    entries = read_records(sittings_path)
    sittings = [s for s in entries if "wall_s" in s]  # the timed ones
    timed_beginnings = {s.get("began") for s in sittings}
    untimed = sum(1 for s in entries if "wall_s" not in s and s["began"] not in timed_beginnings)
    last = summary["epochs"][-1]
    record = {
        "protocol": cell.protocol,
        "method": cell.method,
        "seed": cell.seed,
        "spec": spec_hash(cell),
        "protocol_description": protocol.description,
        "command": "tmix-train " + shlex.join(argv),
        "versions": versions(),
        "machine": machine(),
        "wall_s": sum(s["wall_s"] for s in sittings),
        "cpu_s": sum(s["cpu_s"] for s in sittings),
        "sittings": len(sittings),
        # sittings that began but were killed before they could be timed: wall_s and cpu_s
        # leave them out, so they are lower bounds when this is > 0
        "untimed_sittings": untimed,
        "scoring_s": time.perf_counter() - scoring_start,
        "epochs": len(summary["epochs"]),
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "test_loss": test["loss"],
        "test_images": test["images"],
        "cam_map_hw": test["cam_map_hw"],
        "train_clean_top1": train["top1"],
        "train_clean_loss": train["loss"],
        "train_images": train["images"],
        "final_train_loss": last["train_loss"],
        "monitor_final_top1": last["eval_top1"],
        "monitor_best_top1": max(row["eval_top1"] for row in summary["epochs"]),
        "monitor_best_epoch": max(summary["epochs"], key=lambda row: row["eval_top1"])["epoch"],
        "curves": curves(summary),
        "finished": _now(),
    }
    append_record(results, record)
    log(
        f"[{_now()}] recorded {cell.key}: test top-1 {test['top1']:.2f}%, clean train top-1 "
        f"{train['top1']:.2f}%, {record['cpu_s'] / 60:.1f} CPU min"
    )
    return record


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def default_cells(protocols: list[str], methods: list[str], seeds: list[int]) -> list[Cell]:
    """Cells ordered so the first ones finished are informative: seed by seed, each protocol's
    methods in the given order within a seed."""
    return [Cell(p, m, s) for s in seeds for p in protocols for m in methods]


# ----------------------------------------------------------------------------------------------
# Aggregation


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None for a single value."""
    if not values:
        raise ValueError("values: expected at least one value")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(values: list[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (protocol, method): number of seeds, and mean / std of each headline figure."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["protocol"], record["method"])].append(record)
    out = {}
    for key, rows in groups.items():
        seeds = sorted(r["seed"] for r in rows)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"records: seed recorded twice for {key}: {seeds}")
        stats = {"n": len(rows), "seeds": seeds}
        for metric in ("test_top1", "test_top5", "monitor_best_top1", "train_clean_top1", "final_train_loss", "cpu_s"):
            stats[metric] = mean_std([r[metric] for r in rows])
        stats["gap"] = mean_std([r["train_clean_top1"] - r["test_top1"] for r in rows])
        stats["rows"] = rows
        out[key] = stats
    return out


SEEDS_FOR_A_VERDICT = 3


def verdict(stats: dict[tuple[str, str], dict[str, Any]], protocol: str, method: str) -> str | None:
    """The study's goal for ``method``, None until it, Mixup and CutMix each have 3 seeds.

    Two bars: the issue's, mean test top-1 >= the better of Mixup and CutMix plus that baseline's
    standard deviation; and the one for a claim, a lead over that baseline larger than the
    spread (the larger of the two standard deviations).
    """
    baselines = [stats.get((protocol, b)) for b in ("mixup", "cutmix")]
    ours = stats.get((protocol, method))
    if any(s is None or s["n"] < SEEDS_FOR_A_VERDICT for s in (ours, *baselines)):
        return None
    best = max(baselines, key=lambda b: b["test_top1"][0])
    (mean, std), (best_mean, best_std) = ours["test_top1"], best["test_top1"]
    threshold = best_mean + best_std
    lead, spread = mean - best_mean, max(std, best_std)
    goal = "meets" if mean >= threshold else "misses"
    claim = "better beyond the spread" if lead > spread else "no claim"
    return f"{goal} (needs {threshold:.2f}); lead {lead:+.2f} vs spread {spread:.2f}: {claim}"


TABLES_BEGIN = "<!-- tables: written by `python benchmarks/accuracy.py report` -->"
TABLES_END = "<!-- end of tables -->"


def write_markdown(records: list[dict[str, Any]], path: Path) -> str:
    stats = aggregate(records)
    lines = [
        "Each row: mean ± sample standard deviation over the seeds recorded in `accuracy.jsonl`. Test "
        "top-1/top-5: final weights on the full test set. Best monitor top-1: best epoch on the per-epoch "
        "monitor subset of the test set (an optimistic, test-selected figure). Clean train top-1: final "
        "weights on the training images without augmentation or mixing; gap = clean train top-1 - test "
        "top-1 (mixing only helps where training without it overfits: a large gap for no mixing). Goal "
        "(once every method has 3 seeds): mean test top-1 >= the better of Mixup and CutMix + its std; "
        "a claim that a mixer is better also needs its lead over that baseline to exceed the larger of the "
        "two standard deviations.",
        "",
        f"Machine: {MACHINE_NOTE}. CPU min: CPU time of the training run, per cell (>=: a sitting of "
        "some cell was killed before it could be timed, so its time is missing; cells recorded before "
        "28 Nov 2026 do not say).",
        "",
    ]
    for protocol in PROTOCOLS:
        rows = [(m, stats[(protocol, m)]) for m in METHODS if (protocol, m) in stats]
        if not rows:
            continue
        lines += [f"## {protocol}", "", PROTOCOLS[protocol].description + ".", ""]
        lines += [f"TransformMix rows: the bundled mixer `{PROTOCOLS[protocol].mixer}`.", ""]
        command = rows[0][1]["rows"][0]["command"]
        lines += ["Command (seed 0 of the first method):", "", f"    {command}", ""]
        lines += [
            "| method | seeds | test top-1 | test top-5 | best monitor top-1 | clean train top-1 | gap | final train loss (mixed) | CPU min | goal |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, s in rows:
            goal = verdict(stats, protocol, method) if method.startswith(("transformmix", "saliency")) else ""
            rs = s["rows"]
            lines.append(
                f"| {METHOD_LABELS[method]} | {s['n']} ({', '.join(map(str, s['seeds']))}) | "
                f"{_fmt([r['test_top1'] for r in rs])} | {_fmt([r['test_top5'] for r in rs])} | "
                f"{_fmt([r['monitor_best_top1'] for r in rs])} | {_fmt([r['train_clean_top1'] for r in rs])} | "
                f"{_fmt([r['train_clean_top1'] - r['test_top1'] for r in rs])} | "
                f"{_fmt([r['final_train_loss'] for r in rs], 3)} | {'>= ' if any(r.get('untimed_sittings') for r in rs) else ''}"
                f"{_fmt([r['cpu_s'] / 60 for r in rs], 1)} | "
                f"{goal or ''} |"
            )
        lines.append("")
    text = "\n".join(lines)
    # The tables replace what lies between the markers; the prose around them is hand-written.
    page = path.read_text() if path.exists() else f"{TABLES_BEGIN}\n{TABLES_END}\n"
    if TABLES_BEGIN not in page or TABLES_END not in page:
        raise ValueError(f"path: {path} lacks the markers {TABLES_BEGIN} / {TABLES_END}")
    head, rest = page.split(TABLES_BEGIN, 1)
    page = head + TABLES_BEGIN + "\n" + text + "\n" + TABLES_END + rest.split(TABLES_END, 1)[1]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return text


def write_plot(records: list[dict[str, Any]], path: Path) -> None:
    """Per protocol: monitor top-1 and (mixed) train loss per epoch, mean over seeds per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(records)
    protocols = [p for p in PROTOCOLS if any(k[0] == p for k in stats)]
    if not protocols:
        raise ValueError("records: nothing to plot")
    fig, axes = plt.subplots(len(protocols), 2, figsize=(11, 3.6 * len(protocols)), squeeze=False)
    for row, protocol in enumerate(protocols):
        for method in METHODS:
            s = stats.get((protocol, method))
            if s is None:
                continue
            for col, key in enumerate(("monitor_top1", "train_loss")):
                series = [r["curves"][key] for r in s["rows"]]
                length = min(len(c) for c in series)
                mean = [sum(c[i] for c in series) / len(series) for i in range(length)]
                axes[row][col].plot(range(1, length + 1), mean, label=f"{METHOD_LABELS[method].replace('`', '')} (n={s['n']})")
        axes[row][0].set_title(f"{protocol}: monitor top-1 (%)")
        axes[row][1].set_title(f"{protocol}: train loss (on the mixed batches)")
        for ax in axes[row]:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Command line


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop)  # `kill PID` stops the running cell and records its time
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "status", "report", "argv"))
    parser.add_argument("--protocol", nargs="+", default=list(PROTOCOLS), choices=sorted(PROTOCOLS))
    parser.add_argument("--method", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"run folders (default: {DEFAULT_WORK})")
    parser.add_argument("--results", type=Path, default=RESULTS / "accuracy.jsonl")
    parser.add_argument("--keep-going", action="store_true", help="after a failed cell, go on with the next")
    args = parser.parse_args(argv)
    cells = default_cells(args.protocol, args.method, args.seed)
    if args.command == "argv":
        for cell in cells:
            print(f"{cell.key}: tmix-train {shlex.join(cell_argv(cell, args.work, args.work / 'data' / '...'))}")
    elif args.command == "status":
        for cell in cells:
            print(f"{plan(cell, args.work, args.results):>6}  {cell.protocol} {cell.method} seed{cell.seed}")
    elif args.command == "run":
        for cell in cells:
            try:
                run_cell(cell, args.work, args.results, log=lambda m: print(m, flush=True))
            except RuntimeError as error:
                print(f"[{_now()}] FAILED {error}", flush=True)
                if not args.keep_going:
                    raise
    else:
        records = read_records(args.results)
        print(write_markdown(records, args.results.with_suffix(".md")))
        if records:
            write_plot(records, args.results.with_suffix(".png"))
        print(f"wrote {args.results.with_suffix('.md')}" + (f" and {args.results.with_suffix('.png')}" if records else
                                                            " (no cells recorded yet: no plot)"))


if __name__ == "__main__":
    main()
