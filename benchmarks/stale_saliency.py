"""What do stale self-saliency maps cost in mix quality? (``--saliency-refresh N``, issue 14)

    nohup nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/stale_saliency.py > /tmp/stale_saliency.log 2>&1 &

With ``--saliency self --saliency-cache memory --saliency-refresh N``, epoch e mixes with the
CAMs of the model of epoch e - (e mod N): up to N - 1 epochs old. This script measures what that
age costs, in two stages, each resumed where it stopped:

1. Train: ``tmix-train`` on the accuracy study's CIFAR-10 subset (1,000 training images, 100 per
   class) with the ``scratch-long`` recipe (CIFAR ResNet-20, SGD lr 0.1, weight decay 5e-4,
   batch 64, random resized crop 0.35-1 + flip + colour jitter 0.4), its cosine schedule
   squeezed to ``--epochs``, mixing with TransformMix ``cifar10-resnet20`` on maps refreshed
   every ``--refresh`` epochs (the setting under study), keeping every epoch's checkpoint.
2. Measure: at each epoch e of ``--at`` ("the model at e": the weights epoch e starts from,
   which a refresh at e would use), on ``--images`` training images at the clean view (the view
   the refresh computes its maps from; no augmentation) compute the maps of the model at e
   (fresh) and at e - a for every age a of ``--ages`` exactly as the refresh does
   (``compute_maps``: CAM of the label's class, eval mode, min-max normalised, float16 at the
   mixer's S), then mix the images with each set of maps on the same draws (partners, lambdas,
   noise) and score the mixes:
   - map similarity to the fresh maps: Pearson r per image (mean over images) and the mean
     absolute difference of the [0, 1] maps; references: the maps of the model at e from a 16 px
     pass (``--saliency-input-size 16``) and the fresh maps of other images (a fixed shuffle);
   - mix quality: soft-label cross-entropy against the lambda-mixed targets (lower: both inputs
     stay recognisable) and top-2 recovery, judged by the model at e (the one that trains on the
     mixes) and by the CIFAR ResNet-20 teacher (an independent judge that took no part in this
     training); reference rows on the same draws: the 16 px pass of the model at e, constant maps
     (no saliency: all-zero maps) and Mixup.
   "vs fresh" is the difference from the fresh maps on the same draw, mean over draws, with
   its lowest and highest draw; the fresh row's spread is the lowest and highest per-draw mean.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
from timm.data import create_dataset
from timm.models import load_checkpoint

import tmix_aug  # noqa: F401  (registers the CIFAR models with timm)
from tmix_aug import TransformMix
from tmix_aug.atomic import write_atomic
from tmix_aug.baselines import Mixup
from tmix_aug.saliency import ClassActivationMap
from tmix_aug.saliency_cache import compute_maps
from tmix_aug.saliency_loader import clean_view

from accuracy import CIFAR_TEACHER, DEFAULT_WORK, METHODS, PROTOCOLS, longer
from working_size import scores

MIXER = "cifar10-resnet20"
NUM_CLASSES = 10
MACHINE = "2-core CPU, shared, 1 thread"
GENERATED = "<!-- written by benchmarks/stale_saliency.py from here on; the text above it is kept -->"


def train_argv(args: argparse.Namespace, data_dir: Path) -> list[str]:
    """tmix-train's arguments: the scratch-long recipe at ``--epochs``, refreshed self-saliency, every checkpoint kept."""
    protocol = longer(PROTOCOLS["scratch-long"], "stale-saliency", args.epochs)
    recipe = list(protocol.train_args)
    recipe[recipe.index("--checkpoint-hist") + 1] = str(args.epochs)  # keep every epoch's weights
    return [
        "--data-dir", str(data_dir), "--train-split", protocol.train_split, "--val-split", protocol.monitor_split,
        *recipe, *METHODS["transformmix-self"](protocol),
        "--saliency-cache", "memory", "--saliency-refresh", str(args.refresh), "--seed", str(args.seed),
        "--mix-grid", "", "--output", str(args.work), "--experiment", "run",
    ]  # fmt: skip


def checkpoint(run: Path, epoch: int) -> Path:
    """The weights epoch ``epoch`` starts from: those saved at the end of epoch ``epoch - 1``."""
    return run / f"checkpoint-{epoch - 1}.pth.tar"


def train(args: argparse.Namespace, data_dir: Path, log: dict) -> None:
    run = args.work / "run"
    if checkpoint(run, args.epochs).exists():
        return
    argv = train_argv(args, data_dir)
    if (run / "last.pth.tar").exists():
        argv += ["--resume", str(run / "last.pth.tar")]
    elif run.exists():
        raise RuntimeError(f"{run}: holds no last.pth.tar to resume from; remove it to train afresh")
    print(f"tmix-train {shlex.join(argv)}", flush=True)
    start, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "tmix_aug.train", *argv], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.setdefault("train_sittings", []).append(
        {"wall_s": time.time() - start, "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}
    )


def load_model(run: Path, epoch: int) -> torch.nn.Module:
    model = timm.create_model("cifar_resnet20", num_classes=NUM_CLASSES)
    load_checkpoint(model, str(checkpoint(run, epoch)), weights_only=False)  # our own checkpoint
    return model.eval()


def map_similarity(maps: torch.Tensor, fresh: torch.Tensor) -> dict[str, float]:
    """Pearson r per image (mean over images; a constant map counts as r = 0) and the mean absolute
    difference of two (N, S, S) sets of [0, 1] maps."""
    a, b = maps.flatten(1).float(), fresh.flatten(1).float()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return {"pearson": r.mean().item(), "mad": (maps.float() - fresh.float()).abs().mean().item()}


def measure_epoch(args: argparse.Namespace, epoch: int, dataset, indices: list[int], teacher: torch.nn.Module) -> dict:
    """Similarities and per-draw (CE, top-2) of every row at ``epoch``, under both judges."""
    run = args.work / "run"
    mixer = TransformMix.from_pretrained(MIXER, num_classes=NUM_CLASSES)
    model = load_model(run, epoch)
    view = clean_view(*(model.pretrained_cfg[k] for k in ("input_size", "mean", "std")))  # the refresh's view
    x = torch.stack([view(dataset[i][0]) for i in indices])
    y = torch.tensor([dataset[i][1] for i in indices])

    def maps_of(source) -> torch.Tensor:
        return compute_maps(dataset, source, num_classes=NUM_CLASSES, transform=view, map_size=mixer.size, indices=indices)

    rows = {"fresh": maps_of(ClassActivationMap(model))}
    for age in args.ages:
        rows[f"{age} epoch{'s' if age > 1 else ''} old"] = maps_of(ClassActivationMap(load_model(run, epoch - age)))
    rows["16 px pass of the model at e"] = maps_of(ClassActivationMap(model, input_size=16))
    shuffle = torch.randperm(len(indices), generator=torch.Generator().manual_seed(1))
    similarity = {name: map_similarity(maps, rows["fresh"]) for name, maps in rows.items() if name != "fresh"}
    similarity["fresh maps of other images (shuffled)"] = map_similarity(rows["fresh"][shuffle], rows["fresh"])
    rows["constant maps (no saliency)"] = torch.zeros_like(rows["fresh"])
    judges = {"model at e": model, "teacher": teacher}
    quality = {judge: {name: [] for name in [*rows, "Mixup"]} for judge in judges}
    with torch.no_grad():
        for seed in range(args.seeds):
            draw = {judge: {name: [] for name in [*rows, "Mixup"]} for judge in judges}
            for batch, start in enumerate(range(0, len(indices), args.batch_size)):
                part = slice(start, start + args.batch_size)
                outs = {
                    name: mixer.mix(x[part], y[part], torch.Generator().manual_seed(1000 * seed + batch), saliency=maps[part].float())
                    for name, maps in rows.items()
                }
                outs["Mixup"] = Mixup(NUM_CLASSES).mix(x[part], y[part], torch.Generator().manual_seed(1000 * seed + batch))
                for judge, net in judges.items():
                    for name, out in outs.items():
                        draw[judge][name].append((*scores(net, out), len(out.images)))
            for judge in judges:  # mean over images of this draw
                for name, values in draw[judge].items():
                    count = sum(v[2] for v in values)
                    quality[judge][name].append(tuple(sum(v[i] * v[2] for v in values) / count for i in range(2)))
    return {"similarity": similarity, "quality": quality, "images": len(indices)}


def cell(values: list[float], reference: list[float] | None, digits: int = 3) -> str:
    """Mean and spread of per-draw values, or of their per-draw differences from ``reference``."""
    if reference is not None:
        values = [v - r for v, r in zip(values, reference)]
        return f"{statistics.mean(values):+.{digits}f} ({min(values):+.{digits}f} to {max(values):+.{digits}f})"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(args: argparse.Namespace, results: dict, log: dict, command: str) -> str:
    at = [e for e in args.at if str(e) in results]
    first = results[str(at[0])]
    similarity_rows = list(first["similarity"])
    quality_rows = list(first["quality"]["teacher"])
    train_cpu = sum(s["cpu_s"] for s in log.get("train_sittings", []))
    train_wall = sum(s["wall_s"] for s in log.get("train_sittings", []))
    measure_cpu = sum(results[str(e)]["cpu_s"] for e in at)
    measure_wall = sum(results[str(e)]["wall_s"] for e in at)
    summary = json.loads((args.work / "run" / "summary.json").read_text())
    lines = [
        "## How it was measured",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        f"Command: `{command}`; {MACHINE}. Training: {args.epochs} epochs, refresh every {args.refresh}, seed "
        f"{args.seed}; {train_cpu / 60:.1f} CPU min ({train_wall / 60:.1f} min wall); top-1 on the 500 monitor "
        f"test images {summary['last']['eval_top1']:.1f}% at the end (best {summary['best']['top1']:.1f}% at "
        f"epoch {summary['best']['epoch']}). Measuring: {first['images']} training images, {args.seeds} draws, "
        f"batches of {args.batch_size}; {measure_cpu / 60:.1f} CPU min ({measure_wall / 60:.1f} min wall).",
        "",
        "## Map similarity to the fresh maps (the maps at S, [0, 1])",
        "",
        "| epoch e | " + " | ".join(f"{name}: r / MAD" for name in similarity_rows) + " |",
        "|---|" + "---|" * len(similarity_rows),
    ]
    for e in at:
        s = results[str(e)]["similarity"]
        lines.append(f"| {e} | " + " | ".join(f"{s[n]['pearson']:.3f} / {s[n]['mad']:.3f}" for n in similarity_rows) + " |")
    for judge, title in (("model at e", "the model at e (the one that trains on the mixes)"), ("teacher", "the CIFAR ResNet-20 teacher (independent)")):
        for metric, label, digits in ((0, "soft-label CE (lower is better)", 3), (1, "top-2 recovery (higher is better)", 3)):
            lines += [
                "",
                f"## {label}, judged by {title}",
                "",
                "Fresh: mean over draws (lowest-highest draw); the others: difference from fresh on the same draw, "
                "mean (lowest to highest draw).",
                "",
                "| epoch e | " + " | ".join(quality_rows) + " |",
                "|---|" + "---|" * len(quality_rows),
            ]
            for e in [*at, "mean"]:
                if e == "mean":  # per draw, the mean over the epochs
                    per = {
                        name: [statistics.mean(results[str(k)]["quality"][judge][name][d][metric] for k in at) for d in range(args.seeds)]
                        for name in quality_rows
                    }
                else:
                    per = {name: [v[metric] for v in results[str(e)]["quality"][judge][name]] for name in quality_rows}
                cells = [cell(per[name], None if name == "fresh" else per["fresh"], digits) for name in quality_rows]
                lines.append(f"| {'mean over e' if e == 'mean' else e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="ImageFolder root with train/ and monitor/ (default: the accuracy study's scratch view, made if missing)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "tmix" / "stale_saliency",
                        help="the training run (WORK/run, every epoch's checkpoint) and the measurements (WORK/results.json)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (the cosine schedule spans them)")
    parser.add_argument("--refresh", type=int, default=4, help="--saliency-refresh of the training run")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--at", type=int, nargs="+", default=[4, 8, 16, 32, 48, 56], help="epochs e to measure at")
    parser.add_argument("--ages", type=int, nargs="+", default=[1, 2, 3], help="stale maps: of the model at e - age")
    parser.add_argument("--images", type=int, default=384, help="training images mixed (a fixed random subset)")
    parser.add_argument("--seeds", type=int, default=3, help="draws of partners and lambdas")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-checkpoint", default=str(CIFAR_TEACHER))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/stale_saliency.md"),
                        help="the report; rewritten from its marker line on, the text above the marker is kept")
    args = parser.parse_args()
    for name in ("epochs", "refresh", "images", "seeds", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if min(args.ages) < 1 or min(args.at) - max(args.ages) < 1 or max(args.at) > args.epochs:
        raise ValueError(
            f"--at/--ages: every e - age must be an epoch >= 1 whose start weights are saved and every e <= --epochs "
            f"({args.epochs}); got --at {args.at}, --ages {args.ages}"
        )
    data_dir = args.data_dir or PROTOCOLS["scratch-long"].prepare(DEFAULT_WORK)
    args.work.mkdir(parents=True, exist_ok=True)
    state_path = args.work / "results.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"log": {}, "results": {}}
    settings = {k: getattr(args, k) for k in ("epochs", "refresh", "seed", "ages", "images", "seeds", "batch_size")}
    if state.get("settings", settings) != settings:
        raise ValueError(f"{state_path}: measured with {state['settings']}, not {settings}; use another --work")
    state["settings"] = settings

    def save() -> None:
        text = json.dumps(state, indent=1)
        write_atomic(state_path, lambda tmp: Path(tmp).write_text(text))

    train(args, data_dir, state["log"])
    save()
    dataset = create_dataset("", root=str(data_dir), split="train")  # tmix-train's reader: its class indices
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.images].tolist()
    teacher = timm.create_model("cifar_resnet20", num_classes=NUM_CLASSES, checkpoint_path=args.teacher_checkpoint).eval()
    for epoch in args.at:
        if str(epoch) in state["results"]:
            continue
        start, before = time.time(), time.process_time()
        result = measure_epoch(args, epoch, dataset, indices, teacher)
        result.update(wall_s=time.time() - start, cpu_s=time.process_time() - before)
        state["results"][str(epoch)] = result
        save()
        print(f"epoch {epoch}: measured in {result['wall_s']:.0f} s", flush=True)
    command = "OMP_NUM_THREADS=1 python benchmarks/stale_saliency.py " + shlex.join(sys.argv[1:])
    text = report(args, state["results"], state["log"], command.strip())
    kept = "# Stale self-saliency maps (`--saliency-refresh N`): what their age costs in mix quality\n\n"
    if args.output.exists() and GENERATED in args.output.read_text():
        kept = args.output.read_text().split(GENERATED)[0]
    text = f"{kept}{GENERATED}\n\n{text}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
