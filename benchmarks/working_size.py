"""Does a smaller working resolution S mix as well? The search teacher's loss on mixed held-out images.

    OMP_NUM_THREADS=1 python benchmarks/working_size.py --data-dir ~/.cache/tmix/test \
        --teacher-checkpoint /work/shared/data/teachers/cifar10_resnet20.safetensors --limit 512 \
        [--mixer runs/my-s16-mixer] [--exclude-held-out 1000]
    # the Tiny-ImageNet mixer at S = 64 (native) and 32, judged by its search teacher:
    OMP_NUM_THREADS=1 python benchmarks/working_size.py --data-dir ~/.cache/tmix/tinyimagenet-64px/val \
        --base tinyimagenet-mobilenetv2 --teacher tf_mobilenetv2_100_up2_os16 --num-classes 200 \
        --teacher-checkpoint benchmarks/results/tinyimagenet/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors \
        --cam-input-size 0 --exclude-held-out 2000 --limit 2000

Quality proxy (no independent judge checkpoint on this machine): the search teacher's
soft-label cross-entropy against the lambda-mixed targets (lower: both inputs stay
recognisable) and top-2 recovery (the two classes of a mixed image are its top-2
predictions), for a bundled mixer (``--base``, by default ``cifar10-resnet20``) run at its
native S and at each of ``--sizes`` (by default half of it), with the teacher's CAMs as
saliency, and at the native S with the CAMs computed from the images resized to
``--cam-input-size`` px (``ClassActivationMap(model, input_size=16)`` for CIFAR: a quarter of
the CAM pass's cost, the cheaper self-saliency of issue 14); Mixup on the same pairs and
lambdas as the reference. The teacher is the model the mixer was searched against, so the
figures favour the mixer in absolute terms; the comparison between the sizes is what this
measures. Each ``--mixer`` (a directory or a bundled name, e.g. one searched at S = 16) adds a
row at its own working size. Images are normalised as the teacher's timm config says. Every
draw mixes the same pairs at the same lambdas for all rows; the spread is the lowest and
highest of the per-draw means, and "vs native" is the per-draw difference from the base mixer
at its native size (same images, same draw).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import create_dataset
from torchvision import transforms

import tmix_aug  # noqa: F401  (registers the CIFAR models with timm)
from tmix_aug import TransformMix
from tmix_aug.baselines import Mixup
from tmix_aug.atomic import write_atomic
from tmix_aug.saliency import ClassActivationMap


def scores(teacher: torch.nn.Module, out) -> tuple[float, float]:
    logits = teacher(out.images)
    ce = -(out.targets * F.log_softmax(logits, 1)).sum(1).mean().item()
    top2 = logits.topk(2, dim=1).indices.sort(1).values
    pair = out.labels.argmax(1)[out.index].sort(1).values
    return ce, (top2 == pair).all(1).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--teacher-checkpoint", required=True)
    parser.add_argument("--teacher", default="cifar_resnet20", help="timm name of the search teacher")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--base", default="cifar10-resnet20", help="the mixer run at several working sizes")
    parser.add_argument("--sizes", type=int, nargs="*", help="working sizes besides the native one (default: half of it)")
    parser.add_argument("--cam-input-size", type=int, default=16,
                        help="a row with CAMs from the images resized to this size (0: no such row)")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mixer", nargs="*", default=[], help="more mixers (directories or bundled names), each at its own S")
    parser.add_argument(
        "--exclude-held-out", type=int, default=0,
        help="leave out the first N images of the search's held-out order (its --val-samples; seed 0), which picked its epoch",
    )
    parser.add_argument("--output", default="benchmarks/results/working_size.md")
    args = parser.parse_args()
    if args.limit < 1 or args.seeds < 1 or args.exclude_held_out < 0:
        raise ValueError(f"--limit/--seeds: expected >= 1 and --exclude-held-out >= 0, got {args.limit}, {args.seeds}, {args.exclude_held_out}")
    teacher = timm.create_model(args.teacher, num_classes=args.num_classes, checkpoint_path=args.teacher_checkpoint).eval()
    config = timm.data.resolve_model_data_config(teacher)
    dataset = create_dataset("", root=str(args.data_dir))  # timm's reader: the search's image order
    dataset.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(config["mean"], config["std"])])
    if args.exclude_held_out:  # the images the searches held out (permutation(seed 0)[:N]) are not judged
        order = np.random.default_rng(0).permutation(len(dataset))[args.exclude_held_out:][: args.limit]
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.limit].numpy()
    subset = torch.utils.data.Subset(dataset, order.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=128)
    native = TransformMix.from_pretrained(args.base, num_classes=args.num_classes).size
    sizes = [native, *(args.sizes if args.sizes is not None else [native // 2])]
    methods = {f"TransformMix `{args.base}`, S = {size}": (args.base, size, None) for size in sizes}
    if args.cam_input_size:
        methods[f"TransformMix `{args.base}`, S = {native}, CAMs from a {args.cam_input_size} px pass"] = (
            args.base, native, args.cam_input_size)
    for path in args.mixer:
        size = TransformMix.from_pretrained(path, num_classes=args.num_classes).size
        methods[f"TransformMix `{path}` (its own S = {size})"] = (path, size, None)
    reference = f"TransformMix `{args.base}`, S = {native}"
    names = [*methods, "Mixup (same pairs and lambdas)"]
    per_draw: dict[str, list[tuple[float, float]]] = {name: [] for name in names}  # (CE, top-2) mean of each draw
    with torch.no_grad():
        for seed in range(args.seeds):
            draw: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for batch, (x, y) in enumerate(loader):
                for name, (source, size, cam_input) in methods.items():
                    saliency = teacher if cam_input is None else ClassActivationMap(teacher, input_size=cam_input)
                    mixer = TransformMix.from_pretrained(source, num_classes=args.num_classes, saliency=saliency)
                    mixer.size = mixer.saliency.size = size
                    out = mixer.mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                    draw[name].append(scores(teacher, out))
                out = Mixup(args.num_classes).mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                draw["Mixup (same pairs and lambdas)"].append(scores(teacher, out))
            for name, values in draw.items():
                per_draw[name].append((statistics.mean(v[0] for v in values), statistics.mean(v[1] for v in values)))
    command = ["python benchmarks/working_size.py", "--data-dir", str(args.data_dir), "--teacher-checkpoint", args.teacher_checkpoint,
               "--limit", str(args.limit), "--seeds", str(args.seeds)]
    for key in ("teacher", "num_classes", "base", "cam_input_size"):
        if getattr(args, key) != parser.get_default(key):
            command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    command += ["--sizes", *map(str, args.sizes)] if args.sizes is not None else []
    command += ["--mixer", *args.mixer] if args.mixer else []
    command += ["--exclude-held-out", str(args.exclude_held_out)] if args.exclude_held_out else []
    held_out = f", leaving out the {args.exclude_held_out} the searches held out" if args.exclude_held_out else ""
    lines = [
        f"# Working resolution S of `{args.base}`", "", __doc__.split("\n\n", 2)[2].strip(), "",
        f"Command: `OMP_NUM_THREADS=1 {' '.join(command)}`; 2-core CPU, shared, 1 thread.", "",
        f"{len(subset)} images of {args.data_dir}{held_out}, {args.seeds} draws each; mean over batches, then over draws.", "",
        f"| method | teacher soft-label CE (lower is better) | CE spread over draws | CE vs S = {native}, per draw "
        f"| top-2 recovery | top-2 spread over draws | top-2 vs S = {native}, per draw |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, draws in per_draw.items():
        cells = []
        for i in range(2):
            values = [d[i] for d in draws]
            diffs = [d[i] - r[i] for d, r in zip(draws, per_draw[reference])]
            cells += [f"{statistics.mean(values):.3f}", f"{min(values):.3f}-{max(values):.3f}",
                      "" if name == reference else " ".join(f"{v:+.3f}" for v in diffs)]
        lines.append(f"| {name} | {' | '.join(cells[:3])} | {' | '.join(cells[3:])} |")
    text = "\n".join(lines) + "\n"
    write_atomic(args.output, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
