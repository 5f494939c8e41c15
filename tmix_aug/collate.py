"""TransformMixCollate: a DataLoader ``collate_fn`` that stacks samples and mixes the batch."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .checks import check_int, check_labels
from .functional import smooth_labels
from .mixer import TransformMix
from .mixing import BatchMixer
from .sampling import draw_seed, stream_seed


def _to_image(image: Any, position: int) -> Tensor:
    """One sample's image as a (C, H, W) float or uint8 tensor; errors name ``batch[position][0]``."""
    where = f"batch[{position}][0]"
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, Tensor):
        raise TypeError(
            f"{where}: expected an image tensor (C, H, W) or a uint8 numpy array, got "
            f"{type(image).__name__}; add a transform such as torchvision's ToTensor() to the dataset"
        )
    if image.ndim != 3:
        raise ValueError(f"{where}: expected an image of shape (C, H, W), got {tuple(image.shape)}")
    if image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"{where}: expected an image of shape (C, H, W), got {tuple(image.shape)}, which looks like "
            f"(H, W, C); put the channels first (e.g. np.transpose(image, (2, 0, 1)), or ToTensor())"
        )
    if not (image.is_floating_point() or image.dtype == torch.uint8):
        raise TypeError(f"{where}: expected a float or uint8 image, got {image.dtype}")
    return image


def _to_label(label: Any, position: int, num_classes: int) -> Tensor:
    """One sample's label as a class index (0-d integer) or a soft target (num_classes,) float;
    errors name ``batch[position][1]``."""
    where = f"batch[{position}][1]"
    try:
        label = torch.as_tensor(label)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{where}: expected a class index or a 1-D soft target, got {type(label).__name__}") from None
    if label.ndim == 0:
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise TypeError(f"{where}: expected an integer class index, got {label.item()!r} ({label.dtype})")
        if not 0 <= int(label) < num_classes:
            raise ValueError(f"{where}: expected a class index in [0, {num_classes}), got {int(label)}")
        return label
    if label.ndim == 1:
        if not label.is_floating_point() or label.shape[0] != num_classes:
            raise ValueError(
                f"{where}: expected a float soft target of {num_classes} values, got {label.dtype} of shape {tuple(label.shape)}"
            )
        return label
    raise ValueError(f"{where}: expected a class index or a 1-D soft target, got shape {tuple(label.shape)}")


def _same(values: Sequence[Tensor], what: str, part: int, key: Callable[[Tensor], Any], wanted: str) -> None:
    """Raise naming the first sample whose ``key`` differs from sample 0's."""
    first = key(values[0])
    for position, value in enumerate(values):
        if key(value) != first:
            raise ValueError(
                f"batch[{position}][{part}]: {what} {key(value)} differs from batch[0]'s {first}; {wanted}"
            )


class TransformMixCollate:
    """Collate (image, label) samples and mix the batch: ``DataLoader(..., collate_fn=collate)``.

    Images may be float tensors (C, H, W) or uint8 tensors / numpy arrays (as timm's fast
    collate produces); uint8 batches are mixed in float32 and returned as rounded uint8, so a
    normalising prefetcher downstream still works. Labels may be ints or soft targets. Returns
    ``(images (N, C, H, W), targets (N, num_classes) float32)``.

    Works with worker processes, persistent or not: ``enabled`` and ``set_epoch`` live in
    shared memory, so switching mixing off (or reaching ``off_epoch``) reaches the workers,
    where timm's ``mixup_off_epoch`` does not; ``mixup_enabled`` is the same switch under
    timm's name. Each batch draws from its own generator, keyed by
    the seed, the worker's DataLoader seed, the epoch and a per-worker batch counter: streams
    differ across workers and epochs, and one ``torch.manual_seed`` (or ``seed``) reproduces
    the whole run. Call ``set_epoch(epoch)`` at the start of every epoch, as for
    ``DistributedSampler``.

    Args:
        mixer: any batch mixer (``TransformMix`` or a baseline), on the CPU.
        seed: base seed; drawn from torch's global generator when None.
        off_epoch: from this epoch on, batches are not mixed (like timm's ``mixup_off_epoch``).
    """

    def __init__(self, mixer: BatchMixer, *, seed: int | None = None, off_epoch: int | None = None) -> None:
        if not isinstance(mixer, BatchMixer):
            raise TypeError(f"mixer: expected a tmix_aug mixer (TransformMix or a baseline), got {type(mixer).__name__}")
        if off_epoch is not None:
            check_int("off_epoch", off_epoch, 0)
        self.mixer = mixer
        self.seed = draw_seed() if seed is None else int(seed)
        self.off_epoch = off_epoch
        self.rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        self._shared = torch.tensor([1, 0], dtype=torch.int64).share_memory_()  # [enabled, epoch]
        self._batches = 0  # per process: each worker counts its own batches

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        seed: int | None = None,
        off_epoch: int | None = None,
        **mixer_options: Any,
    ) -> "TransformMixCollate":
        """A collate around ``TransformMix.from_pretrained(name_or_path, **mixer_options)``."""
        return cls(TransformMix.from_pretrained(name_or_path, **mixer_options), seed=seed, off_epoch=off_epoch)

    @property
    def enabled(self) -> bool:
        """Whether batches are mixed (also seen by running worker processes)."""
        return bool(self._shared[0])

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._shared[0] = int(bool(value))

    @property
    def mixup_enabled(self) -> bool:
        """timm's name for ``enabled``: False switches mixing off, also in running workers."""
        return self.enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.enabled = value

    @property
    def epoch(self) -> int:
        return int(self._shared[1])

    def set_epoch(self, epoch: int) -> None:
        """Tell the collate (and its workers) the epoch: it keys the random stream and ``off_epoch``."""
        self._shared[1] = check_int("epoch", epoch, 0)

    def _generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        worker_seed = 0 if info is None else info.seed
        seed = stream_seed(self.seed, self.rank, worker_seed % 2**63, self.epoch, self._batches)
        self._batches += 1
        return torch.Generator().manual_seed(seed)

    def __call__(self, batch: Sequence[tuple[Any, Any]]) -> tuple[Tensor, Tensor]:
        """Stack and mix a list of (image, label) samples.

        Returns:
            images (N, C, H, W) in the samples' dtype; targets (N, num_classes) float32.
        """
        if not batch:
            raise ValueError("batch: expected at least one (image, label) sample, got none")
        images = [_to_image(sample[0], i) for i, sample in enumerate(batch)]
        _same(images, "image dtype", 0, lambda image: image.dtype, "convert every sample the same way")
        _same(images, "image shape", 0, lambda image: tuple(image.shape), "resize or crop every sample to one size")
        labels = [_to_label(sample[1], i, self.mixer.num_classes) for i, sample in enumerate(batch)]
        _same(labels, "label kind", 1, lambda label: "soft target" if label.ndim else "class index",
              "give every sample a class index or every sample a soft target")
        images, labels = torch.stack(images), torch.stack(labels)
        generator = self._generator()
        mixing = self.enabled and (self.off_epoch is None or self.epoch < self.off_epoch)
        if not mixing:
            check_labels(labels, len(batch), self.mixer.num_classes, values=True)
            return images, smooth_labels(labels, self.mixer.num_classes, self.mixer.label_smoothing)
        if images.dtype == torch.uint8:
            mixed = self.mixer.mix(images.float(), labels, generator=generator)
            return mixed.images.round().clamp(0, 255).to(torch.uint8), mixed.targets
        mixed = self.mixer.mix(images, labels, generator=generator)
        return mixed.images, mixed.targets
