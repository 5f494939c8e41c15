"""Does a smaller working resolution S mix as well? The teacher's loss on mixed CIFAR-10 test images.

    OMP_NUM_THREADS=1 python benchmarks/working_size.py --data-dir ~/.cache/tmix/test \
        --teacher-checkpoint /work/shared/data/teachers/cifar10_resnet20.safetensors --limit 512

Quality proxy (no independent judge checkpoint on this machine): the CIFAR ResNet-20 teacher's
soft-label cross-entropy against the lambda-mixed targets (lower: both inputs stay
recognisable) and top-2 recovery (the two classes of a mixed image are its top-2
predictions), for the bundled mixer run at S = 32 (its native size) and S = 16, with the
teacher's CAMs as saliency, and at S = 32 with the CAMs computed from the images resized to
16 px (``ClassActivationMap(model, input_size=16)``: a quarter of the CAM pass's cost, the
cheaper self-saliency of issue 14); Mixup on the same pairs and lambdas as the reference. The teacher
is the model the bundled mixer was searched against, so the figures favour the mixer in
absolute terms; the comparison between the two sizes is what this measures.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

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
    parser.add_argument("--output", default="benchmarks/results/working_size.md")
    args = parser.parse_args()
    dataset = datasets.ImageFolder(str(args.data_dir), transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
    subset = torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.limit].tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=128)
    teacher = timm.create_model("cifar_resnet20", num_classes=10, checkpoint_path=args.teacher_checkpoint).eval()
    methods = {f"TransformMix `cifar10-resnet20`, S = {size}": (size, None) for size in (32, 16)}
    methods["TransformMix `cifar10-resnet20`, S = 32, CAMs from a 16 px pass"] = (32, 16)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in [*methods, "Mixup (same pairs and lambdas)"]}
    with torch.no_grad():
        for seed in range(args.seeds):
            for batch, (x, y) in enumerate(loader):
                for name, (size, cam_input) in methods.items():
                    saliency = teacher if cam_input is None else ClassActivationMap(teacher, input_size=cam_input)
                    mixer = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, saliency=saliency)
                    mixer.size = mixer.saliency.size = size
                    out = mixer.mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                    results[name].append(scores(teacher, out))
                out = Mixup(10).mix(x, y, generator=torch.Generator().manual_seed(1000 * seed + batch))
                results["Mixup (same pairs and lambdas)"].append(scores(teacher, out))
    lines = [
        "# Working resolution S for 32 px images", "", __doc__.split("\n\n", 2)[2].strip(), "",
        f"Command: `{' '.join(['python benchmarks/working_size.py', '--data-dir', str(args.data_dir), '--teacher-checkpoint', args.teacher_checkpoint, '--limit', str(args.limit), '--seeds', str(args.seeds)])}`; "
        "2-core CPU, shared.", "",
        f"{len(subset)} test images, {args.seeds} draws each; mean over batches.", "",
        "| method | teacher soft-label CE (lower is better) | top-2 recovery |", "|---|---|---|",
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.mean(v[0] for v in values):.3f} | {statistics.mean(v[1] for v in values):.3f} |")
    text = "\n".join(lines) + "\n"
    write_atomic(args.output, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
