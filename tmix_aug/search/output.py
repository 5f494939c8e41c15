"""The search's output directory: the kept mixer, its model card and its picture, always consistent.

Published in this order: ``model.safetensors`` and ``config.json`` (``save_pretrained``), then
``mixes.png``, then ``README.md``, whose card names the epoch and the SHA-256 of the weights it
describes. A crash in between leaves a card that does not match the weights (the hash says so);
every resume publishes again from the checkpoint, so a finished run is always consistent.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .. import hub
from ..atomic import sha256_file
from ..mixer import TransformMix
from ..viz import save_mix_grid


@contextlib.contextmanager
def weights_loaded(mixer: TransformMix, weights: dict[str, torch.Tensor] | None) -> Iterator[TransformMix]:
    """``mixer`` holding ``weights`` inside the block, its own weights again after it (None: as it is)."""
    if weights is None:
        yield mixer
        return
    own = {key: value.detach().clone() for key, value in mixer.state_dict().items()}
    mixer.load_state_dict(weights)
    try:
        yield mixer
    finally:
        mixer.load_state_dict(own)


def publish(output: Path, mixer: TransformMix, card: Callable[[str | None], str], val_dataset: Dataset, data_config: dict, seed: int) -> None:
    """Write the mixer as the output (weights, config, picture), then its card with the weights' hash.

    ``card(weights_sha256)`` renders the card's markdown (``None``: the hash is not known yet).
    """
    mixer.save_pretrained(output, model_card=card(None))
    save_picture(mixer, val_dataset, data_config, output / "mixes.png", seed)
    hub.write_card(output, mixer.architecture, card(sha256_file(output / hub.WEIGHTS_NAME)))


@torch.no_grad()
def save_picture(mixer: TransformMix, dataset: Dataset, data_config: dict, path: Path, seed: int) -> None:
    """A picture of the learned strategy on the first held-out images."""
    x, y = next(iter(DataLoader(dataset, batch_size=min(8, len(dataset)))))
    device = next(mixer.parameters()).device
    was_training = mixer.training
    result = mixer.eval().mix(x.to(device), y.to(device), generator=torch.Generator().manual_seed(seed))
    mixer.train(was_training)
    scale = max(1, math.ceil(64 / x.shape[-1]))
    save_mix_grid(path, result, x, mean=data_config.get("mean"), std=data_config.get("std"), num_samples=8, scale=scale)
