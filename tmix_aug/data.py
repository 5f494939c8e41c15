"""Datasets for training with a mixer: image folders and timm datasets, the paper's four
transfer datasets (torchvision classes reading the user's disk), and the built-in synthetic set.

Every dataset returned has a settable ``transform`` applied to its PIL images, which is what
timm's ``create_loader`` sets, and yields (image, int label).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from timm.data import create_dataset
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tv_datasets

from .synthetic import SyntheticObjects

TRAIN_SPLITS = ("train", "training")
EVAL_SPLITS = ("val", "valid", "validation", "eval", "evaluation")


@dataclass(frozen=True)
class TransferDataset:
    """How one of the paper's transfer datasets sits on disk and which splits it has.

    - ``cls``: the torchvision dataset class that reads it.
    - ``folder``: the directory torchvision expects under the root.
    - ``splits``: our split name -> the torchvision splits concatenated for it.
    - ``kwargs``: extra constructor arguments (which labels to return).
    """

    cls: type
    folder: str
    splits: dict[str, tuple[str, ...]]
    kwargs: dict[str, Any] = field(default_factory=dict)


TRANSFER_DATASETS: dict[str, TransferDataset] = {
    "flowers102": TransferDataset(
        tv_datasets.Flowers102,
        "flowers-102",
        {"train": ("train",), "val": ("val",), "trainval": ("train", "val"), "test": ("test",)},
    ),
    "oxford_iiit_pet": TransferDataset(
        tv_datasets.OxfordIIITPet,
        "oxford-iiit-pet",
        {"trainval": ("trainval",), "test": ("test",)},
        {"target_types": "category"},
    ),
    "stanford_cars": TransferDataset(
        tv_datasets.StanfordCars, "stanford_cars", {"train": ("train",), "test": ("test",)}
    ),
    "fgvc_aircraft": TransferDataset(
        tv_datasets.FGVCAircraft,
        "fgvc-aircraft-2013b",
        {"train": ("train",), "val": ("val",), "trainval": ("trainval",), "test": ("test",)},
        {"annotation_level": "variant"},
    ),
}
"""The paper's transfer datasets by name (also accepted with timm's "torch/" prefix).
The usual protocol trains on "trainval" ("train" for Stanford Cars) and tests on "test"."""


class TransformedDataset(Dataset):
    """(image, label) pairs of another dataset with a settable ``transform`` on the images.

    timm's ``create_loader`` sets ``dataset.transform``; some torchvision datasets ignore that
    attribute after construction (they apply ``transforms`` built in ``__init__``), so the
    transfer datasets are read without transforms and wrapped in this class.

    Args:
        dataset: yields (PIL image, int label).
        classes: the class names; ``len(classes)`` is the number of classes.
        transform: applied to each image.
    """

    def __init__(
        self, dataset: Dataset, classes: list[str], transform: Callable | None = None
    ) -> None:
        self.dataset = dataset
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _canonical_split(split: str, available: tuple[str, ...] | list[str]) -> str:
    """Map timm's split synonyms ("training", "validation", ...) onto the available names."""
    if split in available:
        return split
    synonyms = (
        TRAIN_SPLITS if split in TRAIN_SPLITS else EVAL_SPLITS if split in EVAL_SPLITS else ()
    )
    for name in synonyms:
        if name in available:
            return name
    if split in EVAL_SPLITS and "test" in available:
        return "test"
    raise ValueError(
        f"split: {split!r} is not a split of this dataset; expected one of {', '.join(available)}"
    )


def create_transfer_dataset(
    name: str, root: str | os.PathLike, split: str, *, download: bool = False
) -> TransformedDataset:
    """One of the paper's transfer datasets, read by its torchvision class from ``root``.

    Args:
        name: a key of ``TRANSFER_DATASETS`` ("flowers102", "oxford_iiit_pet",
            "stanford_cars", "fgvc_aircraft").
        root: the directory that contains the dataset's folder (e.g. ``root/flowers-102``).
        split: a split of the dataset ("trainval", "test", ...; "train"/"validation"
            synonyms map onto the dataset's own names, "validation" onto "test" when the
            dataset has no validation split).
        download: let torchvision download the data (off: the data comes from disk).

    Returns:
        A ``TransformedDataset`` of (PIL image, label) with the dataset's class names.
    """
    spec = TRANSFER_DATASETS[name]
    split = _canonical_split(split, tuple(spec.splits))
    parts = []
    for part in spec.splits[split]:
        try:
            parts.append(spec.cls(root, split=part, download=download, **spec.kwargs))
        except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
            raise ValueError(
                f"data_dir: no {name} data under {os.path.join(root, spec.folder)} ({error}); put the dataset "
                f"there in torchvision's {spec.cls.__name__} layout, or pass the directory that contains "
                f"{spec.folder!r}"
            ) from error
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return TransformedDataset(dataset, parts[0].classes)


def _split_folder(root: str, split: str) -> str:
    """The sub-folder of an image-folder root that holds ``split`` (timm's synonyms allowed).

    A root without any split folder is itself the training data; any other split must exist
    (a root with split folders is never read as one class per split).
    """
    synonyms = (
        TRAIN_SPLITS if split in TRAIN_SPLITS else EVAL_SPLITS if split in EVAL_SPLITS else ()
    )
    candidates = [split] + [name for name in synonyms if name != split]
    for candidate in candidates:
        path = os.path.join(root, candidate)
        if os.path.isdir(path):
            return path
    found = sorted(entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry)))
    split_folders = [name for name in found if name in TRAIN_SPLITS + EVAL_SPLITS + ("test",)]
    if split in TRAIN_SPLITS and not split_folders:
        return root
    raise ValueError(
        f"split: no folder for split {split!r} in {root} (looked for {', '.join(candidates)}; found "
        f"{', '.join(found) or 'no folders'}); pass the folder's name as the split"
    )


def create_image_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    *,
    is_training: bool = False,
    download: bool = False,
    image_size: int = 32,
    synthetic_samples: int = 2048,
    synthetic_classes: int = 8,
    seed: int = 0,
    **timm_kwargs: Any,
) -> Dataset:
    """Build one split of a dataset for training or evaluation.

    Args:
        name: "" or "folder" for an image folder (``root/<split>/<class>/*.jpg``); "synthetic"
            for the built-in ``SyntheticObjects``; a transfer dataset name (see
            ``TRANSFER_DATASETS``, "torch/" prefix allowed); anything else goes to timm's
            ``create_dataset`` ("torch/cifar10", "hfds/...", ...).
        root: data directory (unused for "synthetic").
        split: split name, e.g. "train", "validation", "test", "trainval".
        is_training, download, seed, **timm_kwargs: passed to timm's ``create_dataset``
            (``download`` also to torchvision for the transfer datasets).
        image_size: side of the synthetic images.
        synthetic_samples: size of the synthetic training split (evaluation splits get a quarter).
        synthetic_classes: number of synthetic classes (2 to 8).

    Returns:
        A dataset of (PIL image, int label) with a settable ``transform``.
    """
    if name == "synthetic":
        synthetic_split = _canonical_split(split, ("train", "val", "test"))
        samples = (
            synthetic_samples if synthetic_split == "train" else max(synthetic_samples // 4, 1)
        )
        return SyntheticObjects(
            samples,
            image_size=image_size,
            num_classes=synthetic_classes,
            seed=seed,
            split=synthetic_split,
        )
    transfer = name.lower().removeprefix("torch/")
    if transfer in TRANSFER_DATASETS:
        if root is None:
            raise ValueError(
                f"data_dir: {name} needs the directory that contains {TRANSFER_DATASETS[transfer].folder!r}"
            )
        return create_transfer_dataset(transfer, root, split, download=download)
    if root is not None and not os.path.isdir(root) and not download:
        raise ValueError(f"data_dir: {root!r} is not a directory")
    if name in ("", "folder"):
        if root is None:
            raise ValueError("data_dir: an image folder dataset needs --data-dir")
        return create_dataset(
            "", root=_split_folder(os.fspath(root), split), split=split, search_split=False, **timm_kwargs
        )
    return create_dataset(
        name,
        root=root,
        split=split,
        is_training=is_training,
        download=download,
        seed=seed,
        **timm_kwargs,
    )


def count_classes(dataset: Dataset) -> int | None:
    """Number of classes a dataset declares (``classes``, or a timm reader's class map), or None."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    class_to_idx = getattr(getattr(dataset, "reader", None), "class_to_idx", None)
    if class_to_idx:
        return len(class_to_idx)
    return None


def check_num_classes(num_classes: int, source: str) -> None:
    """A classifier needs at least 2 classes; raise ValueError naming ``source`` otherwise."""
    if num_classes < 2:
        raise ValueError(f"dataset: {source} has {num_classes} class(es); training or searching a mixer needs at least 2")
