"""Saliency maps of the model being trained, recomputed every few epochs and reused in between.

Self-saliency per step runs a CAM pass of the model on every batch. ``RefreshedSaliency``
instead computes the model's maps of every training image once, at the clean (unaugmented)
view, at the start of epochs 0, N, 2N, ... (``SaliencyCache.build``: eval mode, no gradients,
the same ``ClassActivationMap`` as the per-step path); ``SaliencyDataset`` carries each stored
map through its image's augmentation until the next refresh. That is one no-grad forward per
image every N epochs instead of one per image per epoch, at the price of maps up to N - 1
epochs old. Epoch 0 uses the maps of the untrained model, which mean as little as per-step
maps at the first steps.

The maps are computed from a snapshot of the weights (rank 0's under ``torch.distributed``,
so every rank's maps come from one model), run through a private copy of the model; the
training model is not touched. ``state_dict`` holds the refresh epoch and that snapshot, so a
run resumed between refreshes rebuilds the very same maps.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable

import torch
import torch.distributed as dist
from timm.utils import unwrap_model
from torch import Tensor, nn
from torch.utils.data import Dataset

from .checks import check_int
from .saliency import ClassActivationMap, create_saliency
from .saliency_cache import SaliencyCache, dataset_fingerprint, rank_and_world

_logger = logging.getLogger(__name__)


class RefreshedSaliency:
    """Stored CAMs of a model in training, one per dataset item, recomputed every ``every`` epochs.

    Pass it to ``SaliencyDataset`` as the cache and call ``update(epoch)`` at the start of every
    epoch, before the epoch's DataLoader iterator starts its workers (they take a copy of the
    maps, so use ``persistent_workers=False``). ``refreshed[i]`` is the (m, m) float32 map of
    item i from the last refresh.

    Args:
        dataset: items ``(image, label, ...)`` before augmentation, as for ``SaliencyCache.build``.
        saliency: the model being trained, or a ``ClassActivationMap`` of it (its options, e.g.
            ``input_size``, are kept).
        num_classes: classes of the labels (they pick the CAM class).
        every: epochs between refreshes (>= 1): maps are computed at epochs 0, every, 2 * every, ...
        transform, map_size, batch_size, num_workers, device: see ``SaliencyCache.build``.
        directory: None keeps the maps in memory; a directory holds each refresh's maps in a
            safetensors file keyed to the weights' hash, replacing the previous refresh's file.
        dataset_key: see ``SaliencyCache.build`` (needed with ``directory`` for data it cannot hash).

    Raises:
        TypeError: a saliency other than a CAM-able model, or, with ``directory``, data that
            ``dataset_fingerprint`` cannot hash and no ``dataset_key``.
    """

    def __init__(
        self,
        dataset: Dataset,
        saliency: nn.Module | ClassActivationMap,
        *,
        num_classes: int,
        every: int,
        transform: Callable | None = None,
        map_size: int = 32,
        directory: str | os.PathLike | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        dataset_key: str | None = None,
    ) -> None:
        cam = create_saliency(saliency)
        if not isinstance(cam, ClassActivationMap):
            raise TypeError(f"saliency: expected the model being trained or its ClassActivationMap, got {type(cam).__name__}")
        self.every = check_int("every", every, 1)
        self.model = cam.model
        self.cam_options = dict(
            class_source=cam.class_source, input_size=cam.input_size, upscale=cam.upscale,
            mean=cam.mean, std=cam.std, min_map_size=cam.min_map_size,
        )  # fmt: skip
        self.dataset, self.num_classes, self.directory = dataset, num_classes, directory
        self.build_options = dict(
            transform=transform, map_size=map_size, batch_size=batch_size, num_workers=num_workers, device=device,
        )  # fmt: skip
        if dataset_key is None:  # hashed once, not at every refresh; maps in memory need no key
            dataset_key = dataset_fingerprint(dataset) if directory is not None else "in memory"
        self.dataset_key = dataset_key
        self.epoch: int | None = None  # the refresh the current maps come from
        self.weights: dict[str, Tensor] | None = None  # the snapshot they were computed from
        self.passes = 0  # refresh passes run by this object
        self._stored: dict[str, Any] | None = None  # a state to resume from (load_state_dict)
        self._copy: nn.Module | None = None
        self._cache: SaliencyCache | None = None
        self._length = len(dataset)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Tensor:
        """(m, m) float32 map of item ``index`` from the last refresh."""
        if self._cache is None:
            raise RuntimeError("RefreshedSaliency: no maps yet; call update(epoch) at the start of each epoch")
        return self._cache[index]

    def __getstate__(self) -> dict:
        # DataLoader workers need the maps only, not the model and its copy.
        return {"_cache": self._cache, "_length": self._length}

    def last_refresh(self, epoch: int) -> int:
        """The refresh epoch whose maps epoch ``epoch`` trains with: ``epoch - epoch % every``."""
        return epoch - epoch % self.every

    def update(self, epoch: int, *, mid_epoch: bool = False) -> bool:
        """Make the maps those ``epoch`` trains with; call before the epoch's first batch.

        At a refresh epoch (a multiple of ``every``) started from its beginning, the current
        weights are snapshot and the maps computed from them. Otherwise the maps of the last
        refresh are kept, or, after ``load_state_dict``, rebuilt from the snapshot stored with
        them. ``mid_epoch``: the epoch continues from a point inside it (a recovery point), so
        its start, where a refresh would have happened, lies in the past.

        Returns:
            Whether maps were computed.
        """
        refresh = self.last_refresh(epoch)
        if self.epoch == refresh and self._cache is not None:
            return False
        if epoch == refresh and not mid_epoch:
            weights = self._snapshot()
        elif self._stored is not None and self._stored["epoch"] == refresh:
            weights = {name: value.clone() for name, value in self._stored["weights"].items()}
        else:
            _logger.warning(
                f"saliency refresh: the maps of epoch {refresh}'s refresh are not stored with the resumed state "
                f"{'(none was loaded)' if self._stored is None else '(it holds epoch ' + str(self._stored['epoch']) + ')'}; "
                f"computing them from the current weights, so epochs {epoch} to {refresh + self.every - 1} mix with "
                "other maps than an uninterrupted run would"
            )
            weights = self._snapshot()
        self._compute(refresh, weights)
        self._stored = None
        return True

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch": refresh epoch, "weights": {name: CPU tensor}}`` of the current maps ({} before any)."""
        return {} if self.weights is None else {"epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``update`` between refreshes rebuilds the maps from ``state``'s weights."""
        if state and (not isinstance(state.get("epoch"), int) or not isinstance(state.get("weights"), dict)):
            raise ValueError(f"state: expected {{'epoch': int, 'weights': dict}}, got keys {sorted(state)}")
        self._stored = dict(state) if state else None

    def close(self) -> None:
        """At the end of training: delete the current refresh's file (with ``directory``, on rank 0)."""
        if self._cache is not None and self._cache.path is not None and rank_and_world()[0] == 0:
            self._cache.path.unlink(missing_ok=True)

    def _snapshot(self) -> dict[str, Tensor]:
        """The model's weights and buffers on the CPU, rank 0's under torch.distributed."""
        weights = {name: value.detach().to("cpu", copy=True) for name, value in unwrap_model(self.model).state_dict().items()}
        if rank_and_world()[1] > 1:
            shared = [weights]
            dist.broadcast_object_list(shared, src=0)
            weights = shared[0]
        return weights

    def _compute(self, epoch: int, weights: dict[str, Tensor]) -> None:
        if self._copy is None:
            self._copy = copy.deepcopy(unwrap_model(self.model)).requires_grad_(False)
        self._copy.load_state_dict(weights)
        cam = ClassActivationMap(self._copy, **self.cam_options)
        previous = self._cache
        self._cache = SaliencyCache.build(
            self.dataset, cam, num_classes=self.num_classes, directory=self.directory,
            dataset_key=self.dataset_key, **self.build_options,
        )  # fmt: skip
        if previous is not None and previous.path is not None and previous.path != self._cache.path:
            if rank_and_world()[1] > 1:
                dist.barrier()  # every rank has left the previous file
            if rank_and_world()[0] == 0:
                previous.path.unlink(missing_ok=True)
        self.epoch, self.weights = epoch, weights
        self.passes += 1
