"""tmix-train's checkpoints: timm's CheckpointSaver writing atomically, recovery points inside an
epoch (--recovery-interval), and the checks on a --resume checkpoint."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch.distributed as dist
from timm.utils import CheckpointSaver, get_state_dict, load_checkpoint_metadata, unwrap_model
from torch import nn

from ..atomic import write_atomic
from ..recovery import check_position


# Settings a resumed run must share with its checkpoint: they decide what the saved state means.
RESUME_MUST_MATCH = (
    "model", "num_classes", "opt", "model_ema", "amp", "amp_dtype",
    "mixer", "mixer_path", "mixer_mode", "mixer_k", "saliency", "teacher", "teacher_kwargs", "model_dtype",
    "saliency_refresh",
)  # fmt: skip


def read_resume_checkpoint(args: argparse.Namespace) -> dict[str, Any] | None:
    """Check that --resume is a readable timm checkpoint written with compatible settings.

    Returns:
        The position within its epoch when it is a mid-epoch recovery point (``--recovery-interval``;
        see ``tmix_aug.recovery``), else None.
    """
    path = args.resume
    if not os.path.isfile(path):
        raise ValueError(f"--resume: {path!r} is not a checkpoint file")
    try:
        checkpoint = load_checkpoint_metadata(path)
    except Exception as error:  # torch.load raises many types for empty or cut-short files
        raise ValueError(
            f"--resume: {path!r} cannot be read ({type(error).__name__}: {str(error)[:200]}); it may be empty or "
            "truncated by a crash: resume from checkpoint-N.pth.tar beside it"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ValueError(f"--resume: {path!r} is not a training checkpoint (no state_dict and epoch)")
    saved = vars(checkpoint.get("args") or argparse.Namespace())
    changed = [
        f"--{key.replace('_', '-')} {saved[key]!r} -> {getattr(args, key)!r}"
        for key in RESUME_MUST_MATCH
        if key in saved and saved[key] != getattr(args, key)
    ]
    if changed:
        raise ValueError(
            f"--resume: {path!r} was written with other settings ({'; '.join(changed)}); resume with the same ones"
        )
    position = checkpoint.get("recovery")
    if position is not None:
        check_position(position, path, args.world_size)
    return position


def read_saliency_refresh(path: str) -> dict[str, Any]:
    """The ``saliency_refresh`` entry of a checkpoint (see ``RefreshedSaliency.state_dict``), {} if it has none."""
    return load_checkpoint_metadata(path).get("saliency_refresh") or {}


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's CheckpointSaver, each checkpoint written to a temporary file and renamed
    (through ``write_atomic``, so the fault-injection hook sees every checkpoint write).

    A recovery checkpoint also holds ``recovery``, its position within the epoch (``save_recovery_at``).
    With ``saliency_refresh`` (``--saliency-refresh``), every checkpoint also holds its state:
    the epoch of the last refresh and the weights its maps were computed from.
    """

    def __init__(self, *, model: nn.Module, model_ema: Any = None, saliency_refresh: Any = None, **kwargs: Any) -> None:
        # timm's hook for extra checkpoint entries is a "task" giving the weights' state: see get_checkpoint_state.
        super().__init__(model=model, model_ema=model_ema, task=self, **kwargs)
        self.recovery_position: dict[str, Any] | None = None
        self.saliency_refresh = saliency_refresh

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = unwrap_model) -> dict[str, Any]:
        """The entries timm's saver asks its task for: the model's (or EMA's) weights, and a recovery position."""
        if ema:
            return {} if self.model_ema is None else {"state_dict_ema": get_state_dict(self.model_ema, unwrap_fn)}
        state = {"state_dict": get_state_dict(self.model, unwrap_fn)}
        if self.recovery_position is not None:
            state["recovery"] = self.recovery_position
        if self.saliency_refresh is not None:
            state["saliency_refresh"] = self.saliency_refresh.state_dict()
        return state

    def save_recovery_at(self, epoch: int, update: int, position: dict[str, Any]) -> None:
        """timm's recovery-EPOCH-UPDATE.pth.tar, with ``position`` (see ``tmix_aug.recovery``)."""
        self.recovery_position = position
        try:
            self.save_recovery(epoch, batch_idx=update)
        finally:
            self.recovery_position = None

    def _save(self, save_path: str, epoch: int, metric: float | None = None) -> None:
        write_atomic(save_path, lambda tmp: super(AtomicCheckpointSaver, self)._save(tmp, epoch, metric))


class RecoveryWriter:
    """timm's --recovery-interval: after every N-th optimizer update, a recovery checkpoint with the
    position in the epoch and every process's random streams (``tmix_aug.recovery``), so that
    --resume from it continues the epoch as an uninterrupted run would. Called on every process;
    the primary one writes."""

    def __init__(self, args: argparse.Namespace, saver: AtomicCheckpointSaver | None) -> None:
        self.args, self.saver = args, saver

    def due(self, update: int) -> bool:
        """Whether a recovery point follows update ``update`` (0-based within the epoch)."""
        return (update + 1) % self.args.recovery_interval == 0

    def save(self, epoch: int, step: int, update: int, state: dict[str, Any]) -> None:
        """Write ``recovery-EPOCH-UPDATE.pth.tar``; ``state``: this process's streams and running loss."""
        states = [state]
        if self.args.distributed:
            states = [None] * self.args.world_size
            dist.all_gather_object(states, state)
        if self.saver is not None:
            position = {"epoch": epoch, "step": step, "update": update, "ranks": states}
            self.saver.save_recovery_at(epoch, update, position)
