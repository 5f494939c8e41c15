"""The search checkpoint: one crash-consistent unit per epoch, verified when it is read back.

``output/checkpoint/epoch-N/`` holds the latest mixer weights, the kept (best) mixer weights, the
optimizer and loss-scaler state, the run state (``state.json``) and ``manifest.json``: the SHA-256
of each of those files. A unit is written under a hidden temporary name and renamed to
``epoch-N`` only when complete (a directory rename is atomic), so a kill or a full disk at any
moment leaves the previous unit whole. Reading checks every file against the manifest and
refuses a unit that was changed or cut short, naming the file.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from ..atomic import sha256_file, write_atomic

UNIT = re.compile(r"^epoch-(\d+)$")
MANIFEST = "manifest.json"
FILES = ("mixer.safetensors", "kept.safetensors", "optimizer.pt", "state.json")


@dataclass
class CheckpointContents:
    """What one unit holds: the latest and the kept mixer weights, optimizer / scaler state, run state."""

    mixer: dict[str, torch.Tensor]
    kept: dict[str, torch.Tensor]
    optimizer: dict
    state: dict


def _cpu(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().contiguous() for key, value in weights.items()}


class SearchCheckpoint:
    """The checkpoint units of one search run, under ``output/checkpoint``."""

    def __init__(self, output: str | Path) -> None:
        self.root = Path(output) / "checkpoint"

    def latest(self) -> Path | None:
        """The complete unit of the highest epoch, or None when there is none."""
        units = [(int(m.group(1)), p) for p in self.root.glob("epoch-*") if p.is_dir() and (m := UNIT.match(p.name))]
        return max(units)[1] if units else None

    def save(self, contents: CheckpointContents) -> Path:
        """Write one unit for ``contents.state["epoch"]``; older units are removed once it is in place."""
        epoch = int(contents.state["epoch"])
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".epoch-{epoch}.{uuid.uuid4().hex}.partial"
        final = self.root / f"epoch-{epoch}"
        partial.mkdir()
        try:
            mixer, kept = _cpu(contents.mixer), _cpu(contents.kept)
            write_atomic(partial / "mixer.safetensors", lambda tmp: safetensors.torch.save_file(mixer, tmp))
            write_atomic(partial / "kept.safetensors", lambda tmp: safetensors.torch.save_file(kept, tmp))
            write_atomic(partial / "optimizer.pt", lambda tmp: torch.save(contents.optimizer, tmp))
            text = json.dumps(contents.state, indent=1)
            write_atomic(partial / "state.json", lambda tmp: Path(tmp).write_text(text))
            manifest = {"epoch": epoch, "files": {name: sha256_file(partial / name) for name in FILES}}
            write_atomic(partial / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
            if final.exists():  # left by an earlier run of this epoch that was never resumed from
                shutil.rmtree(final)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        for stale in self.root.iterdir():
            if stale == final:
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        return final

    def load(self) -> CheckpointContents:
        """Read and verify the latest unit; errors name the file and say what is wrong."""
        unit = self.latest()
        if unit is None:
            found = sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []
            raise FileNotFoundError(
                f"resume: no complete checkpoint in {self.root} (found {', '.join(found) or 'nothing'}); "
                "a run stopped before its first checkpoint was written cannot resume: start it again with overwrite"
            )
        manifest_path = unit / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
            expected = {name: manifest["files"][name] for name in FILES}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{manifest_path}: not a checkpoint manifest ({type(error).__name__}: {error})") from None
        for name, digest in expected.items():
            path = unit / name
            if not path.is_file():
                raise ValueError(f"{path}: missing from the checkpoint named in {manifest_path}")
            if sha256_file(path) != digest:
                raise ValueError(
                    f"{path}: torn or changed checkpoint: its SHA-256 differs from {manifest_path}; "
                    "resume from a copy of the run or start again with overwrite"
                )
        try:
            return CheckpointContents(
                mixer=safetensors.torch.load_file(unit / "mixer.safetensors"),
                kept=safetensors.torch.load_file(unit / "kept.safetensors"),
                optimizer=torch.load(unit / "optimizer.pt", map_location="cpu", weights_only=True),
                state=json.loads((unit / "state.json").read_text()),
            )
        except Exception as error:  # safetensors, torch.load and json raise their own types
            raise ValueError(f"{unit}: checkpoint files match the manifest but cannot be read ({type(error).__name__}: {error})") from None
