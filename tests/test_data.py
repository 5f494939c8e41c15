"""Dataset helpers on tiny fakes written in each dataset's on-disk format."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image
from timm.data import create_loader
from torchvision import datasets as tv_datasets
from torchvision.transforms import ToTensor

from tmix_aug.data import TRANSFER_DATASETS, count_classes, create_image_dataset
from tmix_aug.synthetic import SyntheticObjects

SIZE = 12


def write_image(path: str, value: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), (value, 255 - value, 7)).save(path)


def fake_flowers(root: str, monkeypatch) -> dict[str, list[int]]:
    """flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}; returns labels per split."""
    base = os.path.join(root, "flowers-102")
    labels = [1, 2, 3, 1, 2, 3, 1, 2]  # 1-based, as in the official file
    for i in range(1, len(labels) + 1):
        write_image(os.path.join(base, "jpg", f"image_{i:05d}.jpg"), 20 * i)
    sio.savemat(os.path.join(base, "imagelabels.mat"), {"labels": np.array(labels)})
    sio.savemat(
        os.path.join(base, "setid.mat"),
        {"trnid": np.array([1, 2, 3]), "valid": np.array([4, 5]), "tstid": np.array([6, 7, 8])},
    )
    # The fakes cannot match the official files' checksums; everything else is the real format.
    for key, (filename, _) in list(tv_datasets.Flowers102._file_dict.items()):
        monkeypatch.setitem(tv_datasets.Flowers102._file_dict, key, (filename, None))
    return {"train": [0, 1, 2], "val": [0, 1], "test": [2, 0, 1]}


def fake_pets(root: str) -> dict[str, list[int]]:
    """oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}."""
    base = os.path.join(root, "oxford-iiit-pet")
    os.makedirs(os.path.join(base, "annotations"))
    rows = {
        "trainval": [("Abyssinian_1", 1, 1, 1), ("beagle_1", 2, 2, 1), ("Abyssinian_2", 1, 1, 1)],
        "test": [("beagle_2", 2, 2, 1), ("Abyssinian_3", 1, 1, 1)],
    }
    for split, entries in rows.items():
        with open(os.path.join(base, "annotations", f"{split}.txt"), "w") as file:
            for image_id, label, species, breed in entries:
                file.write(f"{image_id} {label} {species} {breed}\n")
                write_image(os.path.join(base, "images", f"{image_id}.jpg"), 40 * label)
    return {"trainval": [0, 1, 0], "test": [1, 0]}


def fake_cars(root: str) -> dict[str, list[int]]:
    """stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/,
    cars_test_annos_withlabels.mat, cars_test/}."""
    base = os.path.join(root, "stanford_cars")
    os.makedirs(os.path.join(base, "devkit"))
    sio.savemat(
        os.path.join(base, "devkit", "cars_meta.mat"),
        {"class_names": np.array(["AM General", "Acura", "BMW"], dtype=object)},
    )
    annotations = {
        ("devkit/cars_train_annos.mat", "cars_train"): [
            ("00001.jpg", 1),
            ("00002.jpg", 3),
            ("00003.jpg", 2),
        ],
        ("cars_test_annos_withlabels.mat", "cars_test"): [("00001.jpg", 2), ("00002.jpg", 1)],
    }
    for (mat, folder), entries in annotations.items():
        records = np.array(entries, dtype=[("fname", "O"), ("class", "O")])
        sio.savemat(os.path.join(base, mat), {"annotations": records})
        for fname, label in entries:
            write_image(os.path.join(base, folder, fname), 50 * label)
    return {"train": [0, 2, 1], "test": [1, 0]}


def fake_aircraft(root: str) -> dict[str, list[int]]:
    """fgvc-aircraft-2013b/data/{variants.txt, images_variant_<split>.txt, images/*.jpg}."""
    data = os.path.join(root, "fgvc-aircraft-2013b", "data")
    os.makedirs(data)
    with open(os.path.join(data, "variants.txt"), "w") as file:
        file.write("707-320\n727-200\nA300B4\n")
    splits = {
        "train": [("1000001", "707-320"), ("1000002", "A300B4")],
        "val": [("1000003", "727-200")],
        "test": [("1000004", "A300B4"), ("1000005", "707-320")],
    }
    splits["trainval"] = splits["train"] + splits["val"]
    names = ["707-320", "727-200", "A300B4"]
    for split, entries in splits.items():
        with open(os.path.join(data, f"images_variant_{split}.txt"), "w") as file:
            for image, variant in entries:
                file.write(f"{image} {variant}\n")
                write_image(os.path.join(data, "images", f"{image}.jpg"), 30 * names.index(variant))
    return {split: [names.index(v) for _, v in entries] for split, entries in splits.items()}


def labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def test_flowers102(tmp_path, monkeypatch):
    expected = fake_flowers(str(tmp_path), monkeypatch)
    for split, labels in expected.items():
        dataset = create_image_dataset("flowers102", str(tmp_path), split)
        assert labels_of(dataset) == labels
        assert count_classes(dataset) == 102
    trainval = create_image_dataset("torch/flowers102", str(tmp_path), "trainval")
    assert labels_of(trainval) == expected["train"] + expected["val"]
    assert (
        labels_of(create_image_dataset("flowers102", str(tmp_path), "validation"))
        == expected["val"]
    )


def test_oxford_pets(tmp_path):
    expected = fake_pets(str(tmp_path))
    for split, labels in expected.items():
        dataset = create_image_dataset("oxford_iiit_pet", str(tmp_path), split)
        assert labels_of(dataset) == labels and count_classes(dataset) == 2
    # No validation split: evaluation uses the test split.
    assert (
        labels_of(create_image_dataset("oxford_iiit_pet", str(tmp_path), "validation"))
        == expected["test"]
    )
    with pytest.raises(
        ValueError,
        match="split: 'train' is not a split of this dataset; expected one of trainval, test",
    ):
        create_image_dataset("oxford_iiit_pet", str(tmp_path), "train")


def test_stanford_cars(tmp_path):
    expected = fake_cars(str(tmp_path))
    for split, labels in expected.items():
        dataset = create_image_dataset("stanford_cars", str(tmp_path), split)
        assert labels_of(dataset) == labels and count_classes(dataset) == 3


def test_fgvc_aircraft(tmp_path):
    expected = fake_aircraft(str(tmp_path))
    for split, labels in expected.items():
        dataset = create_image_dataset("fgvc_aircraft", str(tmp_path), split)
        assert labels_of(dataset) == labels and count_classes(dataset) == 3


def test_transfer_datasets_take_timm_loader_transforms(tmp_path):
    # OxfordIIITPet ignores a transform set after construction; the wrapper must not.
    fake_pets(str(tmp_path))
    dataset = create_image_dataset("oxford_iiit_pet", str(tmp_path), "trainval")
    loader = create_loader(
        dataset, input_size=(3, 8, 8), batch_size=3, use_prefetcher=False, num_workers=0
    )
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize("name", sorted(TRANSFER_DATASETS))
def test_missing_transfer_data_says_where_it_looked(tmp_path, name):
    folder = TRANSFER_DATASETS[name].folder
    with pytest.raises(ValueError, match=f"data_dir: no {name} data under .*{folder}"):
        create_image_dataset(name, str(tmp_path), "test")


def test_image_folder(tmp_path):
    for split in ("train", "validation"):
        for label, cls in enumerate(["cat", "dog", "eel"]):
            for i in range(2):
                write_image(str(tmp_path / split / cls / f"{i}.png"), 60 * label + i)
    train = create_image_dataset("", str(tmp_path), "train")
    assert len(train) == 6 and count_classes(train) == 3
    assert sorted(labels_of(train)) == [0, 0, 1, 1, 2, 2]
    val = create_image_dataset("folder", str(tmp_path), "val")  # finds "validation"
    assert len(val) == 6
    train.transform = ToTensor()
    assert train[0][0].shape == (3, SIZE, SIZE)
    with pytest.raises(
        ValueError, match="split: no folder for split 'test' .* found train, validation"
    ):
        create_image_dataset("", str(tmp_path), "test")
    with pytest.raises(ValueError, match="data_dir: .* is not a directory"):
        create_image_dataset("", str(tmp_path / "missing"), "train")
    # A root without split folders is the training data itself.
    flat = create_image_dataset("", str(tmp_path / "train"), "train")
    assert len(flat) == 6


def test_synthetic():
    train = create_image_dataset(
        "synthetic", None, "train", image_size=16, synthetic_samples=40, synthetic_classes=4
    )
    val = create_image_dataset(
        "synthetic", None, "validation", image_size=16, synthetic_samples=40, synthetic_classes=4
    )
    assert isinstance(train, SyntheticObjects) and len(train) == 40 and len(val) == 10
    assert count_classes(train) == 4 and val.split == "val"
    train.transform = ToTensor()
    image, label = train[5]
    assert image.shape == (3, 16, 16) and label == 1
    assert not torch.equal(train[0][0], ToTensor()(val[0][0]))
