"""The settings of a search run, their checks, and which of them a resume may change."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from timm.optim import list_optimizers

from ..mixer import MODES

# Fields a resumed run may change without changing what it computes (paths, the stop point, notes).
RESUMABLE_CHANGES = ("data_dir", "teacher_checkpoint", "output", "epochs", "resume", "overwrite", "push_to_hub", "card_notes")
# Fields that change only the data order a worker count gives: a change is allowed, with a note.
INEXACT_CHANGES = ("workers",)


@dataclass
class SearchConfig:
    """Everything a search run needs; the defaults are the paper's (METHOD.md).

    Data: ``data_dir`` with ``dataset`` "" (an ImageFolder with train / validation folders) or
    any name ``timm.data.create_dataset`` knows. Teacher: a timm model name (the small-image
    models of ``tmix_aug.models`` included) and a checkpoint (safetensors, or a state dict
    loaded with ``weights_only=True``). ``output`` must be new or empty unless ``resume`` (continue
    from its checkpoint) or ``overwrite`` (delete it first).
    """

    data_dir: str | None = None
    dataset: str = ""
    train_split: str = "train"
    val_split: str = "validation"
    teacher: str = "cifar_resnet20"
    teacher_checkpoint: str | None = None
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments of the teacher
    output: str = "runs/mixer"
    epochs: int = 100
    batch_size: int = 128
    opt: str = "momentum"  # a timm optimizer name; SGD with momentum is the paper's
    lr: float = 5e-4
    weight_decay: float = 0.01
    momentum: float = 0.9  # the paper does not give it (ours)
    alpha: float = 1.0
    k: int = 2
    size: int = 32
    mode: str = "transformmix"
    workers: int = 4
    seed: int = 0
    val_samples: int = 2000
    max_batches: int | None = None
    max_translation: float = 0.5
    max_linear: float = 0.5
    init_temperature: float = 0.3  # the mask temperature tau the search starts from (ours)
    balance: bool = True  # each input covers its lambda share of the image (ours, see TransformMix)
    calibrated: bool = True  # the teacher at its best temperature per batch (ours, see calibration.py)
    amp: bool | None = None
    resume: bool = False
    overwrite: bool = False
    push_to_hub: str | None = None
    card_notes: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first field out of range (every number must be finite)."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{item.name}: expected a finite number, got {value}")
        if not isinstance(self.teacher_kwargs, dict):
            raise ValueError(f"teacher_kwargs: expected a dict of create_model arguments, got {self.teacher_kwargs!r}")
        positive = ("epochs", "batch_size", "lr", "alpha", "size", "val_samples", "init_temperature")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
        for name in ("max_translation", "max_linear", "workers"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"weight_decay/momentum: expected >= 0 and in [0, 1), got {self.weight_decay}, {self.momentum}")
        if self.k < 2:
            raise ValueError(f"k: expected >= 2 inputs per mixed image, got {self.k}")
        if self.k > self.batch_size:
            raise ValueError(f"k: {self.k} inputs per mixed image needs a batch of at least {self.k}, got batch_size {self.batch_size}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.opt not in list_optimizers():
            raise ValueError(f"opt: expected a timm optimizer name (timm.optim.list_optimizers()), got {self.opt!r}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches: expected None or >= 1, got {self.max_batches}")
        if self.resume and self.overwrite:
            raise ValueError("resume/overwrite: choose one: resume continues the run in output, overwrite deletes it")

    def changes_from(self, saved: dict) -> tuple[list[str], list[str]]:
        """Compare with the config a checkpoint was written with.

        Returns:
            (refused, inexact): "field: saved -> now" for each change a resume cannot make, and for
            each change it can make but that stops the resumed run repeating an uninterrupted one.
        """
        refused, inexact = [], []
        for item in dataclasses.fields(self):
            if item.name in RESUMABLE_CHANGES or item.name not in saved:
                continue
            now, before = getattr(self, item.name), saved[item.name]
            if now != before:
                (inexact if item.name in INEXACT_CHANGES else refused).append(f"{item.name}: {before!r} -> {now!r}")
        return refused, inexact
