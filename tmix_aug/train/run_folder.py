"""The run folder: its name, the files of an earlier run in it, and the finished epochs of summary.csv."""

from __future__ import annotations

import argparse
import csv
import os
from datetime import datetime
from typing import Any

from ..atomic import write_atomic


def earlier_run_files(output_dir: str, args: argparse.Namespace) -> list[str]:
    """The files of an earlier run in ``output_dir`` that a new run would replace or leave stale."""
    names = ("last.pth.tar", "model_best.pth.tar", "tmp.pth.tar", "summary.csv", "summary.json", "args.yaml")
    patterns = ("checkpoint-", "recovery")
    if not os.path.isdir(output_dir):
        return []
    return sorted(
        os.path.join(output_dir, name)
        for name in os.listdir(output_dir)
        if name in names
        or name == args.mix_grid
        or (name.startswith(patterns) and name.endswith(".pth.tar"))
        or (name.startswith("train-batch-") and name.endswith(".jpg"))  # --save-images
    )


def choose_output_dir(args: argparse.Namespace) -> str:
    """The run folder; refuse one holding an earlier run unless --resume or --overwrite."""
    name = args.experiment or "-".join(
        [datetime.now().strftime("%Y%m%d-%H%M%S"), args.model.replace("/", "_"), args.mixer]
    )
    path = os.path.join(args.output or os.path.join("output", "train"), name)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output/--experiment: {path} is a file; expected a run folder")
    if earlier_run_files(path, args) and not (args.resume or args.overwrite):
        raise ValueError(
            f"--experiment: {path} holds an earlier run ({', '.join(os.path.basename(f) for f in earlier_run_files(path, args)[:4])}); "
            "pass --resume PATH to continue it, --overwrite to replace it, or another --experiment"
        )
    return path


def read_history(path: str, start_epoch: int) -> list[dict[str, Any]]:
    """The rows of summary.csv before ``start_epoch``; the file is rewritten (atomically) with only those.
    Empty cells (the eval columns of an epoch skipped by --val-interval) read as None."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("epoch", "").isdigit()]
    kept = [row for row in rows if int(row["epoch"]) < start_epoch]
    if len(kept) != len(rows):

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)

        write_atomic(path, write)
    return [
        {key: int(value) if key == "epoch" else None if value == "" else float(value) for key, value in row.items()}
        for row in kept
    ]
