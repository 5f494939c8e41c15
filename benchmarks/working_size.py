"""Does a smaller working resolution S mix as well? The teacher's loss on mixed CIFAR-10 test images.

    OMP_NUM_THREADS=1 python benchmarks/working_size.py --data-dir ~/.cache/tmix/test \
        --teacher-checkpoint /work/shared/data/teachers/cifar10_resnet20.safetensors --limit 512 \
        [--mixer runs/my-s16-mixer] [--exclude-held-out 1000]

Quality proxy (no independent judge checkpoint on this machine): the CIFAR ResNet-20 teacher's
soft-label cross-entropy against the lambda-mixed targets (lower: both inputs stay
recognisable) and top-2 recovery (the two classes of a mixed image are its top-2
predictions), for the bundled mixer run at S = 32 (its native size) and S = 16, with the
teacher's CAMs as saliency, and at S = 32 with the CAMs computed from the images resized to
16 px (``ClassActivationMap(model, input_size=16)``: a quarter of the CAM pass's cost, the
cheaper self-saliency of issue 14); Mixup on the same pairs and lambdas as the reference. The teacher
is the model the bundled mixer was searched against, so the figures favour the mixer in
absolute terms; the comparison between the two sizes is what this measures. Each ``--mixer``
(a directory or a bundled name, e.g. one searched at S = 16) adds a row at its own working size.
Every draw mixes the same pairs at the same lambdas for all rows; the spread is the lowest and
highest of the per-draw means, and "vs S = 32" is the per-draw difference from the bundled
mixer at its native size (same images, same draw).
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

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
    dataset = create_dataset("", root=str(args.data_dir))  # timm's reader: the search's image order
    dataset.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    if args.exclude_held_out:  # the images the searches held out (permutation(seed 0)[:N]) are not judged
        order = np.random.default_rng(0).permutation(len(dataset))[args.exclude_held_out:][: args.limit]
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.limit].numpy()
    subset = torch.utils.data.Subset(dataset, order.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=128)
    teacher = timm.create_model("cifar_resnet20", num_classes=10, checkpoint_path=args.teacher_checkpoint).eval()
    methods = {f"TransformMix `cifar10-resnet20`, S = {size}": ("cifar10-resnet20", size, None) for size in (32, 16)}
    methods["TransformMix `cifar10-resnet20`, S = 32, CAMs from a 16 px pass"] = ("cifar10-resnet20", 32, 16)
    for path in args.mixer:
        size = TransformMix.from_pretrained(path, num_classes=10).size
        methods[f"TransformMix `{path}` (its own S = {size})"] = (path, size, None)
    reference = "TransformMix `cifar10-resnet20`, S = 32"
    names = [*methods, "Mixup (same pairs and lambdas)"]
    per_draw: dict[str, list[tuple[float, float]]] = {name: [] for name in names}  # (CE, top-2) mean of each draw
    with torch.no_grad():
        for seed in range(args.seeds):
            draw: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for batch, (x, y) in enumerate(loader):
                for name, (source, size, cam_input) in methods.items():
                    saliency = teacher if cam_input is None else ClassActivationMap(teacher, input_size=cam_input)
                    mixer = TransformMix.from_pretrained(source, num_classes=10, saliency=saliency)
                    mixer.size = mixer.saliency.size = size
                    out = mixer.mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                    draw[name].append(scores(teacher, out))
                out = Mixup(10).mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                draw["Mixup (same pairs and lambdas)"].append(scores(teacher, out))
            for name, values in draw.items():
                per_draw[name].append((statistics.mean(v[0] for v in values), statistics.mean(v[1] for v in values)))
    command = ["python benchmarks/working_size.py", "--data-dir", str(args.data_dir), "--teacher-checkpoint", args.teacher_checkpoint,
               "--limit", str(args.limit), "--seeds", str(args.seeds)]
    command += ["--mixer", *args.mixer] if args.mixer else []
    command += ["--exclude-held-out", str(args.exclude_held_out)] if args.exclude_held_out else []
    held_out = f", leaving out the {args.exclude_held_out} the searches held out" if args.exclude_held_out else ""
    lines = [
        "# Working resolution S for 32 px images", "", __doc__.split("\n\n", 2)[2].strip(), "",
        f"Command: `OMP_NUM_THREADS=1 {' '.join(command)}`; 2-core CPU, shared, 1 thread.", "",
        f"{len(subset)} test images{held_out}, {args.seeds} draws each; mean over batches, then over draws.", "",
        "| method | teacher soft-label CE (lower is better) | CE spread over draws | CE vs S = 32, per draw "
        "| top-2 recovery | top-2 spread over draws | top-2 vs S = 32, per draw |",
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
