"""Does a mixer keep both inputs recognisable? Scored by a classifier that took no part in the search.

    python benchmarks/mix_quality.py --mixer cifar10-resnet20 runs/my-mixer \
        --data-dir ~/.cache/tmix/cifar10 --split test \
        --classifier cifar_resnet32 --classifier-checkpoint ~/.cache/tmix/classifiers/r32.safetensors \
        --output benchmarks/results/mix_quality_cifar10.md

On held-out images, every method mixes the same pairs at the same lambdas (one shared draw
per batch); the classifier then scores each mixed image:
- soft-label cross-entropy against the lambda-mixed targets (lower is better);
- the same at the classifier's best temperature for each method's images (calibrated);
- top-2 recovery: the two classes of the mixed image are exactly its top-2 predictions;
- top-1 in: the top-1 prediction is one of the two classes;
- share gap: mean over images of sum_k (share of the image shown from input k - lambda_k)^2.

A second table compares every other method with the first --mixer image by image (the same
mixes, pooled over the draws): the mean difference in cross-entropy and in top-2 recovery,
each with its standard error. A lead counts only where it exceeds twice its standard error.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import torch
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.utils import ParseKwargs
from torch.utils.data import DataLoader

import tmix_aug  # noqa: F401  (registers the CIFAR models with timm)
from tmix_aug import TransformMix
from tmix_aug.baselines import CutMix, Mixup
from tmix_aug.saliency import create_saliency
from tmix_aug.search import compare_mixers, paired_gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixer", required=True, nargs="+", help="bundled names, directories or Hub ids of mixers")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--classifier", required=True, help="timm model name of the judge")
    parser.add_argument("--classifier-checkpoint", required=True)
    parser.add_argument("--classifier-kwargs", nargs="*", default={}, action=ParseKwargs,
                        help="extra create_model arguments of the judge (and of the CAM model), e.g. pad_type=same")
    parser.add_argument("--saliency-model", default=None, help="timm name of the CAM model (default: the judge)")
    parser.add_argument("--saliency-checkpoint", default=None)
    parser.add_argument("--img-size", type=int, default=None, help="input size (default: the judge's pretrained config)")
    parser.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default: the judge's)")
    parser.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default: the judge's)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--limit", type=int, default=0, help="use only N images (0: all)")
    parser.add_argument(
        "--exclude-held-out", type=int, default=0,
        help="leave out the N images the search used to pick its best epoch (its --val-samples)",
    )
    parser.add_argument("--search-seed", type=int, default=0, help="the search's --seed (which images it held out)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with this many draws")
    parser.add_argument(
        "--unsearched-temperatures", type=float, nargs="+", default=[0.3],
        help="mask temperatures of the unsearched 'softmax over saliency' rows, each unbalanced (the paper's) and balanced",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    dataset = create_dataset("", root=str(args.data_dir), split=args.split)  # the search's reader and order
    classes = len(dataset.reader.class_to_idx)
    judge = timm.create_model(args.classifier, num_classes=classes, checkpoint_path=args.classifier_checkpoint, **args.classifier_kwargs).eval()
    saliency_model = judge
    if args.saliency_model:
        saliency_model = timm.create_model(args.saliency_model, num_classes=classes, checkpoint_path=args.saliency_checkpoint, **args.classifier_kwargs).eval()
    data_config = resolve_data_config(model=judge)
    size = args.img_size or data_config["input_size"][-1]
    mean, std = args.mean or data_config["mean"], args.std or data_config["std"]
    dataset.transform = create_transform(size, is_training=False, crop_pct=1.0, mean=mean, std=std)
    # The search held out permutation(seed)[:val_samples] of this split; judge the others.
    order = np.random.default_rng(args.search_seed).permutation(len(dataset))[args.exclude_held_out :]
    if args.limit:
        order = order[: args.limit]
    dataset = torch.utils.data.Subset(dataset, order.tolist())
    num_classes = len(dataset.dataset.reader.class_to_idx)
    saliency = SameBatchSaliency(create_saliency(saliency_model))
    mixers = {
        **{
            f"transformmix `{name}`": TransformMix.from_pretrained(name, num_classes=num_classes, saliency=saliency)
            for name in args.mixer
        },
        "mixup": Mixup(num_classes),
        "cutmix": CutMix(num_classes),
        **{
            f"saliency-softmax, tau {tau}{', balanced (a search starts here)' if balance else ' (paper ablation)'}": TransformMix(
                num_classes, mode="saliency-softmax", init_temperature=tau, balance=balance, saliency=saliency
            )
            for tau in args.unsearched_temperatures
            for balance in (False, True)
        },
    }
    rows = []
    for seed in range(args.seeds):
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=2)
        rows.append(compare_mixers(judge, mixers, loader, seed=seed, per_image=True))
    lines = [
        f"Judge: `{args.classifier}` ({args.classifier_checkpoint}); saliency from "
        f"`{args.saliency_model or args.classifier}`; {rows[0]['mixup']['images']} "
        f"images of {args.data_dir / args.split} (leaving out the {args.exclude_held_out} the search "
        f"used to pick its epoch); {args.seeds} draw(s), mean shown.",
        "",
        "| method | cross-entropy (lower is better) | top-2 recovers both classes | top-1 is one of them "
        "| calibrated cross-entropy | share gap |",
        "|---|---|---|---|---|---|",
    ]
    for name in mixers:
        ce, top2, top1, calibrated, gap = (
            sum(r[name][key] for r in rows) / len(rows)
            for key in ("cross_entropy", "top2_both", "top1_in", "calibrated_cross_entropy", "area_gap")
        )
        lines.append(f"| {name} | {ce:.4f} | {100 * top2:.2f}% | {100 * top1:.2f}% | {calibrated:.4f} | {gap:.4f} |")
    lines += paired_table(rows, list(mixers))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


class SameBatchSaliency:
    """A saliency source that computes the maps of a batch once for all the methods mixing it.

    Every method mixes the same images of a batch with the same draw, so each would run the
    same CAM pass; this returns the last maps again when the images and targets are equal.

    Args:
        source: a saliency function (images (N, C, H, W), targets (N, num_classes)) -> (N, h, w).
    """

    def __init__(self, source) -> None:
        self.source = source
        self.last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            seen, seen_targets, maps = self.last
            if seen.shape == images.shape and torch.equal(seen, images) and torch.equal(seen_targets, targets):
                return maps
        maps = self.source(images, targets)
        self.last = (images, targets, maps)
        return maps


def paired_table(rows: list[dict], names: list[str]) -> list[str]:
    """Markdown lines: each method after the first against the first, image by image.

    Args:
        rows: one ``compare_mixers(..., per_image=True)`` result per draw.
        names: the methods, the reference first.
    """
    reference, pooled = names[0], {}
    for name in names:
        pooled[name] = {
            key: torch.cat([r[name][key] for r in rows]) for key in ("cross_entropy_per_image", "top2_both_per_pair")
        }

    def lead(mean: float, error: float) -> str:
        return "yes" if mean > 2 * error else "no"

    lines = [
        "",
        f"Against {reference}, on the same mixes ({len(pooled[reference]['cross_entropy_per_image'])} mixed images, "
        f"{len(pooled[reference]['top2_both_per_pair'])} of two different classes, pooled over the draws): "
        "the method's score minus the reference's, mean ± standard error. The reference leads where the "
        "difference exceeds twice its standard error (cross-entropy above 0, top-2 below 0).",
        "",
        "| method | cross-entropy difference | reference leads | top-2 recovery difference (points) | reference leads |",
        "|---|---|---|---|---|",
    ]
    for name in names[1:]:
        ce, ce_error = paired_gap(pooled[name]["cross_entropy_per_image"], pooled[reference]["cross_entropy_per_image"])
        top2, top2_error = paired_gap(pooled[name]["top2_both_per_pair"], pooled[reference]["top2_both_per_pair"])
        lines.append(
            f"| {name} | {ce:+.4f} ± {ce_error:.4f} | {lead(ce, ce_error)} "
            f"| {100 * top2:+.2f} ± {100 * top2_error:.2f} | {lead(-top2, top2_error)} |"
        )
    return lines


if __name__ == "__main__":
    main()
