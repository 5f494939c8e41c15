"""Mid-epoch recovery points of tmix-train (timm's ``--recovery-interval``), resumable exactly.

timm's train.py writes ``recovery-EPOCH-UPDATE.pth.tar`` every N optimizer updates, and resuming
from one restarts at the next epoch. tmix-train continues within the epoch instead and repeats
an uninterrupted run: the recovery checkpoint also holds where the epoch stood (batch, update,
the running loss) and the random streams of every process (torch, the device, numpy, Python,
the mixer's generator). On resume the epoch's loader is started from the same seed, its first
batches are read and dropped (data loading only, no step), and the streams are put back.

Two states are kept because a loader may fetch a batch before the step of the previous one ran
(timm's prefetcher reads one batch ahead, and random erasing and ``-j 0`` transforms draw from
the main process's streams): ``before`` is the state after the step that precedes the saved
one, when the next batch is fetched; ``after`` is the state after the saved step.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_streams(device: torch.device) -> dict[str, Any]:
    """The global random streams of this process, in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    return state


def restore_streams(state: dict[str, Any], device: torch.device) -> None:
    """Put back the streams ``capture_streams`` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "device" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["device"], device)


def check_position(position: Any, path: str, world_size: int) -> None:
    """Refuse a recovery record that is malformed or written by another number of processes."""
    if not isinstance(position, dict) or not {"epoch", "step", "update", "ranks"} <= set(position):
        raise ValueError(f"--resume: {path!r} holds a malformed recovery record (expected epoch, step, update, ranks)")
    if len(position["ranks"]) != world_size:
        raise ValueError(
            f"--resume: {path!r} is a recovery point of {len(position['ranks'])} process(es); resume it with "
            f"the same number (got {world_size}), or resume from an epoch checkpoint"
        )
