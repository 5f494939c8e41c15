"""Does the search objective reward moving inputs at all? Hand-set transforms, scored like the search.

The searched spatial transformer of a mixer can stay at the identity for two reasons: the
objective (the teacher's calibrated soft-label cross-entropy on the mixed images) does not
reward any move, or the search does not find the moves it would reward. This probe tells them
apart: it keeps a searched mixer's mask network and replaces its transformer by fixed rules,

- ``apart d``: each input is shifted by d/2 (normalised units, 2 = the image width) along the
  line through the two saliency centroids, away from the other one;
- ``shrink s``: each input is scaled by s about the image centre (the frame fills with 0, the
  mean colour);
- ``shrink s, apart d``: both;
- ``random d``: each input shifted by d/2 in a random direction (the control for ``apart``);

and scores every rule, the searched mixer, Mixup and CutMix on the same held-out images,
partners and lambdas with ``tmix_aug.search.compare_mixers``. If no rule beats the identity,
the objective itself keeps the transformer still.

    OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/transform_probe.py \\
        --mixer ~/.cache/tmix/search/tinyimagenet-mobilenetv2 --data-dir ~/.cache/tmix/tinyimagenet-64px \\
        --teacher tf_mobilenetv2_100_up2_os16 \\
        --teacher-checkpoint benchmarks/results/tinyimagenet/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors \\
        --skip 2000 --limit 500 --output benchmarks/results/tinyimagenet/transform_probe.md
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from timm.data import create_dataset, create_transform, resolve_data_config
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from tmix_aug import TransformMix
from tmix_aug.baselines import CutMix, Mixup
from tmix_aug.search import compare_mixers
from tmix_aug.teacher import load_teacher


def saliency_centroids(saliency: Tensor) -> Tensor:
    """(M, K, S, S) non-negative maps -> (M, K, 2) centroids (x, y) in [-1, 1] (pixel centres)."""
    s = saliency.shape[-1]
    coords = (torch.arange(s, device=saliency.device, dtype=saliency.dtype) * 2 + 1) / s - 1
    weights = saliency.clamp_min(0) + 1e-8
    total = weights.sum(dim=(-2, -1))
    cx = (weights.sum(dim=-2) * coords).sum(-1) / total
    cy = (weights.sum(dim=-1) * coords).sum(-1) / total
    return torch.stack([cx, cy], dim=-1)


class FixedTransforms(nn.Module):
    """Stands in for a mixer's spatial transformer: (M, 2K+1, S, S) planes -> (M, K, 2, 3) thetas.

    The first K planes are the inputs' saliency maps (see ``TransformMix._mix_images``).
    ``affine_grid`` maps output to input coordinates, so content moves by minus the
    translation and shrinks by s when the linear part is 1/s.
    """

    def __init__(self, k: int, shrink: float = 1.0, apart: float = 0.0, random_direction: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.k, self.shrink, self.apart, self.random_direction = k, shrink, apart, random_direction
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, planes: Tensor) -> Tensor:
        m, k = planes.shape[0], self.k
        thetas = torch.zeros(m, k, 2, 3, device=planes.device, dtype=planes.dtype)
        thetas[:, :, 0, 0] = thetas[:, :, 1, 1] = 1.0 / self.shrink
        if self.apart:
            if self.random_direction:
                angle = torch.rand(m, generator=self.generator) * 2 * math.pi
                direction = torch.stack([angle.cos(), angle.sin()], dim=-1).to(planes)
            else:
                centres = saliency_centroids(planes[:, :k])
                direction = centres[:, 1] - centres[:, 0]  # from input 0 towards input 1
                direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            # content of input 0 moves by -d/2 along the direction, input 1 by +d/2
            thetas[:, 0, :, 2] = direction * self.apart / 2
            thetas[:, 1, :, 2] = -direction * self.apart / 2
        return thetas


def with_fixed_transforms(mixer: TransformMix, rule: FixedTransforms) -> TransformMix:
    """A copy of ``mixer`` whose spatial transformer is ``rule`` (mask net and temperature kept)."""
    probe = copy.deepcopy(mixer)
    probe.stn = rule
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixer", required=True, help="directory (or bundled name) of a searched mixer, k = 2")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--teacher-checkpoint", required=True)
    parser.add_argument("--skip", type=int, default=2000, help="leave out the first N of the search's held-out order")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=1, help="draws of partners and lambdas")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    started = time.time()
    dataset = create_dataset("", root=str(args.data_dir), split=args.split)
    num_classes = len(dataset.reader.class_to_idx)
    teacher = load_teacher(args.teacher, args.teacher_checkpoint, num_classes=num_classes)
    config = resolve_data_config(model=teacher)
    dataset.transform = create_transform(config["input_size"][-2:], is_training=False, crop_pct=1.0, mean=config["mean"], std=config["std"])
    order = np.random.default_rng(0).permutation(len(dataset))[args.skip : args.skip + args.limit]
    images = Subset(dataset, order.tolist())

    searched = TransformMix.from_pretrained(args.mixer, num_classes=num_classes, saliency=teacher).eval()
    if searched.k != 2 or searched.stn is None:
        raise ValueError(f"--mixer: expected a k = 2 mixer with a spatial transformer, got k = {searched.k}, mode {searched.mode!r}")
    rules = {
        "identity (searched mask net, no move)": FixedTransforms(2),
        "apart 0.2": FixedTransforms(2, apart=0.2),
        "apart 0.4": FixedTransforms(2, apart=0.4),
        "apart 0.8": FixedTransforms(2, apart=0.8),
        "random 0.4 (control)": FixedTransforms(2, apart=0.4, random_direction=True),
        "shrink 0.85": FixedTransforms(2, shrink=0.85),
        "shrink 0.7": FixedTransforms(2, shrink=0.7),
        "shrink 0.7, apart 0.4": FixedTransforms(2, shrink=0.7, apart=0.4),
    }
    mixers = {
        "searched (its own transformer)": searched,
        **{name: with_fixed_transforms(searched, rule) for name, rule in rules.items()},
        "mixup": Mixup(num_classes),
        "cutmix": CutMix(num_classes),
    }
    rows = []
    for seed in range(args.seeds):
        loader = DataLoader(images, batch_size=args.batch_size, num_workers=1)
        rows.append(compare_mixers(teacher, mixers, loader, seed=seed))
    lines = [
        f"Scored by the search's teacher `{args.teacher}` ({args.teacher_checkpoint}), as the search scores "
        f"its held-out images; mixer `{args.mixer}`; {rows[0]['mixup']['images']} images of "
        f"{args.data_dir / args.split} (positions {args.skip}-{args.skip + args.limit - 1} of the search's "
        f"held-out order, none of them used by the search); {args.seeds} draw(s), mean shown; "
        f"{time.time() - started:.0f} s on a 2-core CPU (shared), 1 thread.",
        "",
        "| transform rule | calibrated CE (the search objective; lower is better) | CE | top-1 is one of the two | top-2 both |",
        "|---|---|---|---|---|",
    ]
    for name in mixers:
        calibrated, ce, top1, top2 = (
            sum(r[name][key] for r in rows) / len(rows)
            for key in ("calibrated_cross_entropy", "cross_entropy", "top1_in", "top2_both")
        )
        lines.append(f"| {name} | {calibrated:.4f} | {ce:.4f} | {100 * top1:.2f}% | {100 * top2:.2f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)


if __name__ == "__main__":
    main()
