"""Search steps per second with and without ``--saliency-cache`` (issue 14), in one run.

    OMP_NUM_THREADS=1 python benchmarks/search_cache_speed.py --data-dir DIR --teacher NAME \
        --teacher-checkpoint FILE [--size 64] [--batch-size 32] [--max-batches 3] [--repeats 2]

First the cache is built once in a temporary directory (the one-off cost, timed); then short
searches (one epoch of ``--max-batches`` steps) run alternately without the cache (a CAM
pass of the teacher on every batch) and with it (the stored maps, flipped with their image),
and each search's training images per second is read from its ``metrics.jsonl``. The
median of ``--repeats`` runs of each is printed as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tmix_aug.search import SearchConfig, search
from tmix_aug.search.datasets import read_splits, set_transforms
from tmix_aug.saliency import ClassActivationMap
from tmix_aug.saliency_loader import build_cache
from tmix_aug.teacher import load_teacher
from timm.data import resolve_data_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--teacher-checkpoint", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    common = dict(
        data_dir=args.data_dir, val_split=args.val_split, teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint,
        size=args.size, batch_size=args.batch_size, epochs=1, max_batches=args.max_batches, val_samples=args.batch_size,
        workers=args.workers, opt="adamw", lr=1e-3, seed=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = Path(scratch) / "cache"
        config = SearchConfig(**common)
        train, held_out, num_classes = read_splits(config)
        teacher = load_teacher(args.teacher, args.teacher_checkpoint, num_classes=num_classes)
        set_transforms(train, held_out, resolve_data_config(model=teacher))
        train.transform = None
        started = time.perf_counter()
        build_cache(train, ClassActivationMap(teacher), where=str(cache_dir), num_classes=num_classes,
                    transform=held_out.transform, map_size=args.size, batch_size=args.batch_size, workers=args.workers,
                    device=torch.device("cpu"))  # fmt: skip
        build_seconds = time.perf_counter() - started
        rates: dict[str, list[float]] = {"without the cache (a CAM pass per batch)": [], "with --saliency-cache DIR": []}
        for repeat in range(args.repeats):
            for name, cache in zip(rates, (None, str(cache_dir))):
                output = Path(scratch) / f"run-{repeat}-{cache is not None}"
                search(SearchConfig(output=str(output), saliency_cache=cache, **common))
                record = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()][-1]
                rates[name].append(record["images_per_second"])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    plain = medians["without the cache (a CAM pass per batch)"]
    lines = [
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/search_cache_speed.py --data-dir {args.data_dir} --teacher "
        f"{args.teacher} --size {args.size} --batch-size {args.batch_size} --max-batches {args.max_batches} "
        f"--repeats {args.repeats}`; machine: {platform.machine()} 2-core CPU, shared, {torch.get_num_threads()} thread.",
        "",
        f"Cache build (once): {len(train)} images in {build_seconds:.1f} s, {len(train) / build_seconds:.1f} images/s.",
        "",
        "| search step | median images/s | runs | ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {value:.2f} | {', '.join(f'{r:.2f}' for r in rates[name])} | {value / plain:.2f}x |"
        for name, value in medians.items()
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
