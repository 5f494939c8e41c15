"""--saliency-cache in tmix-train and tmix-search: maps computed once, reused, carried to the mixer."""
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

import tmix_aug.saliency_cache as saliency_cache
from tmix_aug.train.batch_mixer import build_saliency
from tmix_aug.saliency import SaliencySource
from tmix_aug.saliency_loader import build_cache, clean_view, joint_augmentation
from tmix_aug.search import SearchConfig, search
from test_train import FAST, SYNTHETIC, read_csv, run_main, write_image_folder


def save_teacher(path, shift=0.0, num_classes=10):
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet20", num_classes=num_classes)
    with torch.no_grad():
        teacher.get_classifier().weight.add_(shift)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return path


def cached_args(tmp_path, teacher, cache, experiment):
    return (
        SYNTHETIC + FAST
        + ["--epochs", 1, "--mixer", "transformmix", "--mixer-mode", "saliency-softmax", "--mix-grid", ""]
        + ["--saliency", "teacher", "--teacher", "cifar_resnet20", "--teacher-checkpoint", teacher]
        + ["--saliency-cache", cache, "--output", tmp_path / "out", "--experiment", experiment]
    )  # fmt: skip


@pytest.fixture
def recorded(monkeypatch):
    """Counts map computations of the cache and, per mixer call, whether maps were given."""
    record = {"computed": 0, "given": 0, "live": 0}
    compute = saliency_cache.compute_maps
    call = SaliencySource.__call__

    def counting_compute(*args, **kwargs):
        record["computed"] += 1
        return compute(*args, **kwargs)

    def counting_call(self, x, labels, given=None):
        record["given" if given is not None else "live"] += 1
        return call(self, x, labels, given)

    monkeypatch.setattr(saliency_cache, "compute_maps", counting_compute)
    monkeypatch.setattr(SaliencySource, "__call__", counting_call)
    return record


def test_train_mixes_with_the_cached_maps_and_reuses_the_file(tmp_path, recorded):
    teacher = save_teacher(tmp_path / "teacher.safetensors")
    run_main(cached_args(tmp_path, teacher, tmp_path / "cache", "first"))
    rows = read_csv(tmp_path / "out" / "first" / "summary.csv")
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    # 32 images of batch 8: 4 steps, each mixed with stored maps; the teacher ran once, for the probe mix.
    assert recorded == {"computed": 1, "given": 4, "live": 1}
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1
    stored = saliency_cache.read_metadata(files[0])
    assert stored["count"] == "32" and stored["map_size"] == "32"

    run_main(cached_args(tmp_path, teacher, tmp_path / "cache", "second"))
    assert recorded["computed"] == 1 and list((tmp_path / "cache").glob("*.safetensors")) == files  # reused

    changed = save_teacher(tmp_path / "changed.safetensors", shift=0.5)
    run_main(cached_args(tmp_path, changed, tmp_path / "cache", "third"))
    assert recorded["computed"] == 2 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # rebuilt


def test_train_with_the_cache_in_memory(tmp_path, recorded):
    run_main(cached_args(tmp_path, save_teacher(tmp_path / "teacher.safetensors"), "memory", "run"))
    assert recorded == {"computed": 1, "given": 4, "live": 1}
    assert not (tmp_path / "memory").exists()


MISUSE = [
    (["--saliency", "self"], "--saliency-cache: the model being trained (--saliency self) changes its maps as it learns; add "
     "--saliency-refresh N"),
    (["--saliency", "spectral"], "--saliency-cache: stores the maps of a fixed teacher (--saliency teacher) or, with "
     "--saliency-refresh, of the model being trained (--saliency self); got --saliency spectral"),
    (["--saliency", "teacher", "--teacher", "cifar_resnet20", "--aa", "rand-m9-mstd0.5"],
     "--saliency-cache: the training augmentation has a step the stored maps cannot follow"),
    (["--saliency", "teacher", "--teacher", "cifar_resnet20", "--train-batches-per-epoch", "2"],
     "--saliency-cache: its loader is a plain DataLoader of one image size and one pass per epoch; "
     "timm's scheduled loader (--train-batches-per-epoch) cannot carry the stored maps"),
]


@pytest.mark.parametrize("extra, message", MISUSE, ids=["self", "spectral", "auto-augment", "scheduled-loader"])
def test_train_refuses_misuse_naming_the_flag(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        run_main(
            SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "transformmix", "--mixer-mode", "saliency-softmax"]
            + extra + ["--saliency-cache", "memory", "--output", tmp_path / "out", "--experiment", "run"]
        )  # fmt: skip
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


class Unkeyable(Dataset):
    """Items the cache cannot key: no file list, no arrays, not the synthetic set."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), 0


def test_data_that_cannot_be_keyed_is_refused_naming_the_flag():
    teacher = timm.create_model("cifar_resnet20", num_classes=4).eval()
    with pytest.raises(ValueError, match="--saliency-cache: cannot key stored maps to this data"):
        build_cache(Unkeyable(), teacher, where="memory", num_classes=4, transform=clean_view((3, 8, 8), (0.5,) * 3, (0.2,) * 3),
                    map_size=8, batch_size=2, workers=0, device=torch.device("cpu"))  # fmt: skip


def test_timm_training_pipeline_is_followed_by_the_map():
    transform = timm.data.create_transform(16, is_training=True, color_jitter=0.4, color_jitter_prob=0.5, re_prob=0.5)
    joint = joint_augmentation(transform)  # RandomApply(ColorJitter) and timm's RandomErasing: image only
    assert len(joint.steps) == len(transform.transforms)


def test_train_under_torchrun_rank_0_writes_the_cache(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data)
    teacher = save_teacher(tmp_path / "teacher.safetensors")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tmix_aug.train",
        "--data-dir", str(data), *map(str, FAST), "-b", "4", "--epochs", "1", "--mixer", "transformmix",
        "--mixer-mode", "saliency-softmax", "--saliency", "teacher", "--teacher", "cifar_resnet20",
        "--teacher-checkpoint", str(teacher), "--saliency-cache", str(tmp_path / "cache"),
        "--output", str(tmp_path / "out"), "--experiment", "ddp", "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1 and saliency_cache.read_metadata(files[0])["count"] == "16"
    summary = json.loads((tmp_path / "out" / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["epochs"]) == 1


def test_search_mixes_with_the_cached_maps(tmp_path, recorded):
    write_image_folder(tmp_path / "data", classes=2, per_class=8)
    teacher = save_teacher(tmp_path / "teacher.safetensors", num_classes=2)
    config = dict(
        data_dir=str(tmp_path / "data"), teacher="cifar_resnet20", teacher_checkpoint=str(teacher), epochs=1,
        batch_size=4, workers=0, val_samples=4, max_batches=2, saliency_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    search(SearchConfig(output=str(tmp_path / "out"), **config))
    assert recorded["computed"] == 1 and recorded["given"] == 2  # two search steps, both on stored maps
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    search(SearchConfig(output=str(tmp_path / "again"), **config))
    assert recorded["computed"] == 1 and recorded["given"] == 4  # the file is reused


def test_search_refuses_a_cache_for_datasets_passed_in(tmp_path):
    from test_search import tiny_run

    with pytest.raises(ValueError, match="saliency_cache: needs the data read by the search"):
        tiny_run(tmp_path / "run", epochs=1, saliency_cache="memory")


def test_saliency_input_size_sets_the_cam_pass(tmp_path, capsys):
    from types import SimpleNamespace

    from tmix_aug.saliency import ClassActivationMap

    model = timm.create_model("cifar_resnet20", num_classes=4)
    args = SimpleNamespace(saliency="self", saliency_input_size=16)
    source = build_saliency(args, model, torch.device("cpu"))
    assert isinstance(source, ClassActivationMap) and source.model is model and source.input_size == 16
    maps = source(torch.randn(2, 3, 32, 32), torch.eye(4)[:2])
    assert maps.shape == (2, 4, 4)  # ResNet-20 downsamples 4x: a 16 px pass gives 4x4 maps
    assert build_saliency(SimpleNamespace(saliency="self", saliency_input_size=None), model, "cpu") is model
    with pytest.raises(SystemExit):
        run_main(SYNTHETIC + FAST + ["--mixer", "transformmix", "--mixer-mode", "saliency-softmax", "--saliency-input-size", 16,
                                     "--output", tmp_path / "out"])  # fmt: skip
    assert "--saliency-input-size: sets the CAM pass of --saliency self or teacher" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["flowers102", "oxford_iiit_pet", "stanford_cars", "fgvc_aircraft"])
def test_the_transfer_datasets_can_be_keyed(tmp_path, monkeypatch, dataset):
    from test_data import fake_aircraft, fake_cars, fake_flowers, fake_pets

    from tmix_aug.data import TRANSFER_DATASETS, create_transfer_dataset
    from tmix_aug.saliency_cache import dataset_fingerprint, file_samples

    writers = {"flowers102": lambda root: fake_flowers(root, monkeypatch), "oxford_iiit_pet": fake_pets,
               "stanford_cars": fake_cars, "fgvc_aircraft": fake_aircraft}  # fmt: skip
    writers[dataset](str(tmp_path))
    split = "trainval" if "trainval" in TRANSFER_DATASETS[dataset].splits else "train"
    data = create_transfer_dataset(dataset, tmp_path, split)
    samples = file_samples(data)
    assert len(samples) == len(data) and all(os.path.isfile(path) for path, _ in samples)
    assert [int(label) for _, label in samples] == [data[i][1] for i in range(len(data))]
    before = dataset_fingerprint(data)
    assert dataset_fingerprint(create_transfer_dataset(dataset, tmp_path, split)) == before
    path = samples[-1][0]
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # the file was replaced
    assert dataset_fingerprint(data) != before


def test_search_under_torchrun_rank_0_writes_the_cache(tmp_path):
    write_image_folder(tmp_path / "data", classes=2, per_class=8)
    teacher = save_teacher(tmp_path / "teacher.safetensors", num_classes=2)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tmix_aug.search",
        "--data-dir", str(tmp_path / "data"), "--teacher", "cifar_resnet20", "--teacher-checkpoint", str(teacher),
        "--output", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4", "--workers", "0", "--val-samples", "4",
        "--max-batches", "1", "--saliency-cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1 and saliency_cache.read_metadata(files[0])["count"] == "16"
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and records[1]["images_per_second"] > 0


def test_device_batches_cast_only_the_images_to_the_model_dtype():
    from torch.utils.data import DataLoader, TensorDataset

    from tmix_aug.saliency_loader import DeviceBatches

    data = TensorDataset(torch.rand(4, 3, 8, 8), torch.rand(4, 8, 8), torch.arange(4))
    x, maps, y = next(iter(DeviceBatches(DataLoader(data, batch_size=4), torch.device("cpu"), torch.bfloat16)))
    assert x.dtype == torch.bfloat16 and maps.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, data.tensors[0].to(torch.bfloat16))
    x, _, _ = next(iter(DeviceBatches(DataLoader(data, batch_size=4), torch.device("cpu"))))
    assert x.dtype == torch.float32
