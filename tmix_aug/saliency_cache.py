"""Saliency maps computed once per image and stored, keyed to the saliency source and the dataset.

A frozen teacher's class activation map of an image never changes, so it need not be computed
every step: ``SaliencyCache.build`` runs the source once over the dataset at its unaugmented
resolution and keeps the maps in memory or in a safetensors file. The file name carries a
hash of the source (the teacher's weights and CAM options) and of the dataset, so a new
teacher or new data never reads stale maps; files are written to a temporary name, then
renamed. ``tmix_aug.saliency_transforms`` makes each map follow its image through the
training augmentation in the loader workers; the mixer then takes the batch of maps:
``mixer(x, y, saliency=maps)``.

Under ``torch.distributed`` every rank calls ``build`` with the same arguments: with a
directory, rank 0 computes and writes the file while the others wait at a barrier, then all
read it; in memory, each rank computes every world_size-th map and the ranks exchange them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .atomic import write_atomic
from .saliency import ClassActivationMap, SpectralResidual, create_saliency, resize_and_normalize

FORMAT = 1
"""Version of the stored layout: one float16 tensor ``maps`` (len, m, m) and string metadata."""


def source_fingerprint(saliency: Any) -> str:
    """A hash of what decides the maps of a saliency source.

    For a ``ClassActivationMap`` (or a classifier module): every parameter and buffer of the
    model (names, dtypes, shapes, values), its module tree (so that e.g. another padding of the
    same weights counts) and the CAM options; for ``SpectralResidual``: its
    options. Other callables have no fingerprint: pass ``source_key=`` to ``build``.

    Raises:
        TypeError: for a source it cannot fingerprint.
    """
    saliency = create_saliency(saliency)
    digest = hashlib.sha256()
    if isinstance(saliency, ClassActivationMap):
        options = (saliency.class_source, saliency.input_size, saliency.mean, saliency.std)
        digest.update(f"cam {type(saliency.model).__name__} {options}".encode())
        digest.update(repr(saliency.model).encode())
        for name, tensor in sorted(saliency.model.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    if isinstance(saliency, SpectralResidual):
        digest.update(f"spectral {sorted(vars(saliency).items())}".encode())
        return digest.hexdigest()
    raise TypeError(
        f"saliency: cannot fingerprint a {type(saliency).__name__}; pass source_key= (a string that "
        "changes whenever its maps would) to SaliencyCache.build"
    )


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) under an initialised ``torch.distributed`` process group, else (0, 1)."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def dataset_fingerprint(dataset: Dataset) -> str:
    """A hash of a dataset's identity, cheap enough to recompute at every start.

    Image folders (torchvision's ``samples``, timm's ``reader.samples``, the file lists of
    torchvision's Flowers102, OxfordIIITPet, StanfordCars and FGVCAircraft, also inside
    ``tmix_aug.data.TransformedDataset`` and ``ConcatDataset``; see ``file_samples``): every
    relative file path, label, file size and modification time. Array datasets (``data`` and
    ``targets``, e.g. torchvision's CIFAR10) and ``TensorDataset``: their contents. Anything
    else: pass ``dataset_key=`` to ``build``.

    Raises:
        TypeError: for a dataset it cannot fingerprint.
    """
    digest = hashlib.sha256(f"{type(dataset).__name__} {len(dataset)}".encode())
    samples = file_samples(dataset)
    if samples is not None:
        paths = [str(path) for path, _ in samples]
        root = os.path.commonpath(paths) if paths else ""
        for path, label in samples:
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)} {label} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    arrays: list[Any] = []
    if hasattr(dataset, "data") and hasattr(dataset, "targets"):
        arrays = [dataset.data, dataset.targets]
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        arrays = list(dataset.tensors)
    if arrays:
        for array in arrays:
            values = array.detach().cpu().contiguous().numpy() if isinstance(array, Tensor) else np.ascontiguousarray(array)
            digest.update(f"{values.dtype} {values.shape}".encode())
            digest.update(values.tobytes())
        return digest.hexdigest()
    raise TypeError(
        f"dataset: cannot fingerprint a {type(dataset).__name__} (no samples, data/targets or tensors); "
        "pass dataset_key= (a string that changes whenever the data does) to SaliencyCache.build"
    )


def file_samples(dataset: Dataset) -> list[tuple[Any, Any]] | None:
    """The (file path, label) list behind a dataset read from image files, in item order, or None.

    Looks at ``samples`` (torchvision's ImageFolder), ``reader.samples`` (timm), the lists
    torchvision's Flowers102 / FGVCAircraft (``_image_files``, ``_labels``), OxfordIIITPet
    (``_images``, ``_labels``) and StanfordCars (``_samples``) keep, and through wrappers with
    one ``dataset`` (``tmix_aug.data.TransformedDataset``) or several (``ConcatDataset``).
    """
    for samples in (getattr(dataset, "samples", None), getattr(getattr(dataset, "reader", None), "samples", None),
                    getattr(dataset, "_samples", None)):  # fmt: skip
        if samples is not None:
            return list(samples)
    files = getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
    labels = getattr(dataset, "_labels", None)
    if files is not None and labels is not None and len(files) == len(labels):
        return list(zip(files, labels))
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        parts = [file_samples(part) for part in dataset.datasets]
        return None if any(part is None for part in parts) else [item for part in parts for item in part]
    inner = getattr(dataset, "dataset", None)
    if isinstance(inner, Dataset) and len(inner) == len(dataset) and not isinstance(dataset, torch.utils.data.Subset):
        return file_samples(inner)
    return None


class _Prepared(Dataset):
    """(image tensor, label) of a dataset through a deterministic transform, for the saliency pass."""

    def __init__(self, dataset: Dataset, transform: Callable | None, indices: Sequence[int]) -> None:
        self.dataset, self.transform, self.indices = dataset, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Tensor, int]:
        image, label = self.dataset[self.indices[position]][:2]
        if self.transform is not None:
            image = self.transform(image)
        if not isinstance(image, Tensor) or image.ndim != 3:
            raise TypeError(
                f"transform: expected it to turn dataset items into image tensors (C, H, W), got "
                f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}"
            )
        return image, int(label)


def compute_maps(
    dataset: Dataset,
    saliency: Any,
    *,
    num_classes: int,
    transform: Callable | None = None,
    map_size: int = 32,
    batch_size: int = 128,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    indices: Sequence[int] | None = None,
) -> Tensor:
    """Saliency maps of dataset items, at the dataset's unaugmented resolution.

    Args:
        dataset: items ``(image, label, ...)``; images of one size per batch (use
            ``batch_size=1`` or a resizing ``transform`` for mixed sizes).
        saliency: a saliency source (see ``tmix_aug.saliency.create_saliency``); the labels
            reach it as one-hot targets (they pick the CAM class).
        num_classes: number of classes of the labels.
        transform: turns an item's image into the source's input tensor (C, H, W), e.g.
            ToTensor + the teacher's Normalize; no random augmentation.
        map_size: side m of the stored maps (bilinear, antialiased; the augmentation later
            resizes them to each image's size, so non-square images keep their geometry).
        batch_size, num_workers: of the DataLoader that reads the images.
        device: where the source runs.
        indices: which items (default all), in this order.

    Returns:
        (len(indices), m, m) float16 maps in [0, 1] (min-max per map), on the CPU.
    """
    source = create_saliency(saliency)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    loader = DataLoader(_Prepared(dataset, transform, indices), batch_size=batch_size, num_workers=num_workers)
    out = torch.empty(len(indices), map_size, map_size, dtype=torch.float16)
    start = 0
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(device)
            targets = F.one_hot(labels.to(device), num_classes).float()
            maps = resize_and_normalize(source(images, targets).float(), map_size)
            out[start : start + len(maps)] = maps.cpu().half()
            start += len(maps)
    return out


class SaliencyCache:
    """Stored saliency maps of a dataset, one per item: ``cache[i]`` is (m, m) float32 in [0, 1].

    Build it with ``SaliencyCache.build``. A cache backed by a file reads each map from the
    file when asked (memory-mapped by safetensors), so DataLoader workers share the page cache
    instead of copies; it pickles as its path.

    Args:
        maps: (len, m, m) maps in memory, or None with ``path``.
        path: a safetensors file written by ``build``.
        key: what the maps were computed from (source and dataset hashes, options).
    """

    def __init__(self, maps: Tensor | None = None, *, path: str | os.PathLike | None = None, key: dict | None = None) -> None:
        if (maps is None) == (path is None):
            raise ValueError("SaliencyCache: give exactly one of maps (a tensor) and path (a file)")
        self.maps = maps
        self.path = None if path is None else Path(path)
        self.key = dict(key or {})
        self._file = None
        if maps is not None:
            if maps.ndim != 3:
                raise ValueError(f"maps: expected (len, m, m) maps, got shape {tuple(maps.shape)}")
            self._length, self.map_size = maps.shape[0], maps.shape[-1]
        else:
            metadata = read_metadata(self.path)
            self._length, self.map_size = int(metadata["count"]), int(metadata["map_size"])
            self.key = {**metadata, **self.key}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Tensor:
        """(m, m) float32 map of item ``index``."""
        if not -self._length <= index < self._length:
            raise IndexError(f"index: {index} is out of range for a cache of {self._length} maps")
        index %= self._length
        if self.maps is not None:
            return self.maps[index].float()
        if self._file is None:  # opened lazily, once per process (workers included)
            self._file = safe_open(str(self.path), framework="pt")
        return self._file.get_slice("maps")[index : index + 1][0].float()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        saliency: Any,
        *,
        num_classes: int,
        transform: Callable | None = None,
        directory: str | os.PathLike | None = None,
        map_size: int = 32,
        batch_size: int = 128,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        source_key: str | None = None,
        dataset_key: str | None = None,
    ) -> "SaliencyCache":
        """Load the maps of ``dataset`` under ``saliency`` if stored, else compute (and store) them.

        Args:
            dataset, saliency, num_classes, transform, map_size, batch_size, num_workers, device:
                see ``compute_maps``.
            directory: where the file lives (created if missing); None keeps the maps in memory.
            source_key: identifies the source when ``source_fingerprint`` cannot (any callable).
            dataset_key: identifies the data when ``dataset_fingerprint`` cannot.

        Returns:
            The cache; ``cache.key`` says what it was computed from.
        """
        key = {
            "format": str(FORMAT),
            "source": source_key if source_key is not None else source_fingerprint(saliency),
            "dataset": dataset_key if dataset_key is not None else dataset_fingerprint(dataset),
            "count": str(len(dataset)),
            "map_size": str(map_size),
            "num_classes": str(num_classes),
            "transform": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform)),  # no object addresses
        }
        compute = dict(
            num_classes=num_classes, transform=transform, map_size=map_size,
            batch_size=batch_size, num_workers=num_workers, device=device,
        )
        rank, world = rank_and_world()
        if directory is None:
            if world == 1:
                return cls(compute_maps(dataset, saliency, **compute), key=key)
            shard = compute_maps(dataset, saliency, indices=range(rank, len(dataset), world), **compute)
            shards: list[Any] = [None] * world
            dist.all_gather_object(shards, shard)
            maps = torch.empty(len(dataset), map_size, map_size, dtype=torch.float16)
            for part, values in enumerate(shards):
                maps[part::world] = values
            return cls(maps, key=key)
        path = Path(directory) / cache_file_name(key)
        if rank == 0 and not _matches(path, key):
            path.parent.mkdir(parents=True, exist_ok=True)
            maps = compute_maps(dataset, saliency, **compute)
            write_atomic(path, lambda tmp: save_file({"maps": maps.contiguous()}, tmp, metadata=key))
        if world > 1:
            dist.barrier()  # the others wait for rank 0's file
        if not _matches(path, key):
            raise RuntimeError(f"saliency cache: {path} is missing or was written for other data after the build")
        return cls(path=path, key=key)


def cache_file_name(key: dict) -> str:
    """File name of the maps for ``key``: the source and dataset hashes and the options."""
    options = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"saliency-{key['source'][:16]}-{key['dataset'][:16]}-{options}.safetensors"


def read_metadata(path: str | os.PathLike) -> dict:
    """The string metadata of a cache file (its key)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _matches(path: Path, key: dict) -> bool:
    """Whether ``path`` holds maps for exactly ``key`` (a file that cannot be read does not)."""
    if not path.is_file():
        return False
    try:
        metadata = read_metadata(path)
    except Exception:  # a damaged file is recomputed and replaced
        return False
    return all(metadata.get(name) == value for name, value in key.items())
