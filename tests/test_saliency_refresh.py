"""--saliency-refresh: the model's own maps, recomputed every N epochs and carried through the augmentation in between."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import TinyClassifier
from test_saliency_cache import augmented_pairs, normalised, smooth_images
from test_saliency_loader import recorded  # noqa: F401  (fixture: counts map computations and mixer calls)
from test_train import FAST, SYNTHETIC, read_csv, run_main, write_image_folder
from test_train_timm_extras import _weights, parse
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

import tmix_aug.saliency_cache as saliency_cache
from tmix_aug.saliency import ClassActivationMap
from tmix_aug.saliency_cache import SaliencyCache
from tmix_aug.saliency_refresh import RefreshedSaliency
from tmix_aug.saliency_transforms import SaliencyDataset
from tmix_aug.train import runner
from tmix_aug.train.flag_checks import check_args
from tmix_aug.train.state import setup

SELF = ["--mixer", "transformmix", "--mixer-mode", "saliency-softmax", "--mix-grid", "", "--saliency", "self"]


def tiny_data(n=6):
    return TensorDataset(smooth_images(n=n), torch.randint(0, 5, (n,)))


def maps_of(refreshed):
    return torch.stack([refreshed[i] for i in range(len(refreshed))])


def test_maps_are_the_models_cams_at_each_refresh_and_stale_in_between():
    torch.manual_seed(0)
    model, data = TinyClassifier().train(), tiny_data()
    refreshed = RefreshedSaliency(data, model, num_classes=5, every=2, map_size=16, batch_size=4)
    with pytest.raises(RuntimeError, match="call update\\(epoch\\)"):
        refreshed[0]
    computed = []
    for epoch in range(5):
        computed.append(refreshed.update(epoch))
        expected = SaliencyCache.build(data, ClassActivationMap(model), num_classes=5, map_size=16, source_key="now").maps
        if epoch % 2 == 0:  # just refreshed: the CAMs of the current weights, as SaliencyCache computes them
            assert torch.equal(maps_of(refreshed), expected.float()) and refreshed.epoch == epoch
        else:  # the weights moved on, the maps did not
            assert torch.equal(maps_of(refreshed), fresh) and not torch.equal(maps_of(refreshed), expected.float())
        fresh = maps_of(refreshed)
        with torch.no_grad():  # a training epoch changes the weights
            model.features[0].weight.add_(0.3 * torch.randn_like(model.features[0].weight))
    assert computed == [True, False, True, False, True] and refreshed.passes == 3
    assert model.training and all(p.requires_grad for p in model.parameters())  # the training model is left alone

    # Resumed between refreshes from the state: the same maps, from the stored weights, not the current ones.
    resumed = RefreshedSaliency(data, model, num_classes=5, every=2, map_size=16, batch_size=4)
    resumed.load_state_dict(refreshed.state_dict())
    assert resumed.update(5) and torch.equal(maps_of(resumed), maps_of(refreshed))
    unstored = RefreshedSaliency(data, model, num_classes=5, every=2, map_size=16, batch_size=4)
    unstored.update(5)  # warns: computed from the current weights
    assert not torch.equal(maps_of(unstored), maps_of(refreshed))


def test_a_directory_holds_only_the_latest_refresh(tmp_path):
    torch.manual_seed(0)
    model, data = TinyClassifier(), tiny_data()
    refreshed = RefreshedSaliency(data, model, num_classes=5, every=1, map_size=8, directory=tmp_path, dataset_key="tiny")
    refreshed.update(0)
    first = list(tmp_path.glob("*.safetensors"))
    with torch.no_grad():
        model.fc.weight.mul_(-1)
    refreshed.update(1)
    second = list(tmp_path.glob("*.safetensors"))
    assert len(first) == len(second) == 1 and first != second  # keyed to the weights, the old file replaced
    expected = SaliencyCache.build(data, ClassActivationMap(model), num_classes=5, map_size=8, source_key="now").maps
    assert torch.equal(maps_of(refreshed), expected.float())
    refreshed.close()
    assert not list(tmp_path.iterdir())


def test_stored_then_augmented_maps_follow_the_image():
    """The teacher cache's CAM tolerance: mean error < 0.05, 90% of pixels within 0.1 after min-max."""
    torch.manual_seed(0)
    model, data = TinyClassifier(), TensorDataset(smooth_images(n=10), torch.randint(0, 5, (10,)))
    cam = ClassActivationMap(model, class_source="label")
    refreshed = RefreshedSaliency(data, cam, num_classes=5, every=3, map_size=32)
    refreshed.update(0)
    dataset = SaliencyDataset(data, refreshed, v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]))
    stored, fresh = augmented_pairs(dataset, cam, 10)
    difference = (normalised(stored, 32) - normalised(fresh, 32)).abs()
    assert difference.mean() < 0.05 and difference.quantile(0.9) < 0.1


def test_train_refreshes_every_n_epochs_and_never_per_step(tmp_path, recorded):
    run_main(SYNTHETIC + FAST + SELF + ["--epochs", 3, "--saliency-cache", "memory", "--saliency-refresh", 2,
                                        "--output", tmp_path, "--experiment", "run"])  # fmt: skip
    # 32 images of batch 8: 4 steps an epoch, all on stored maps; the CAM passes over the data: epochs 0 and 2.
    assert recorded == {"computed": 2, "given": 12, "live": 1}  # live: the probe mix before the first step
    assert len(read_csv(tmp_path / "run" / "summary.csv")) == 3


MISUSE = [
    (["--saliency", "self", "--saliency-cache", "memory"], "--saliency-cache: the model being trained (--saliency self) changes"),
    (["--saliency", "self", "--saliency-refresh", "2"], "--saliency-refresh: the stored maps ride with their images in the --saliency-cache loader"),
    (["--saliency", "self", "--saliency-cache", "memory", "--saliency-refresh", "0"], "--saliency-refresh: expected a number of epochs >= 1, got 0"),
    (["--saliency", "spectral", "--saliency-cache", "memory", "--saliency-refresh", "2"],
     "--saliency-refresh: recomputes the maps of the model being trained, so it needs --saliency self (got --saliency spectral)"),
    (["--saliency", "teacher", "--teacher", "cifar_resnet20", "--saliency-cache", "memory", "--saliency-refresh", "2"],
     "--saliency-refresh: recomputes the maps of the model being trained, so it needs --saliency self (got --saliency teacher; "
     "a teacher's maps never change"),
]


@pytest.mark.parametrize("extra, message", MISUSE, ids=["no-refresh", "no-cache", "zero", "spectral", "teacher"])
def test_misuse_is_refused_naming_the_flag(extra, message):
    args = parse(SYNTHETIC + FAST + ["--mixer", "transformmix", "--mixer-mode", "saliency-softmax"] + extra)
    with pytest.raises(ValueError) as error:
        check_args(args)
    assert message in str(error.value)


def test_resume_across_a_refresh_and_inside_one_is_exact(tmp_path):
    """N = 2 over 3 epochs (refreshes at 0 and 2), recovery points after updates 1 and 3 of each epoch."""
    common = SYNTHETIC + FAST + SELF + ["--epochs", 3, "--saliency-cache", "memory", "--saliency-refresh", 2]
    common += ["--recovery-interval", 2, "--output", tmp_path]
    run_main(common + ["--experiment", "straight"])
    straight = _weights(tmp_path / "straight" / "last.pth.tar")

    args = parse(common + ["--experiment", "stopped"])  # stopped after epoch 0, resumed at epoch 1: stored maps
    state = setup(args)
    state["num_epochs"] = 1
    runner.run(args, state)
    run_main(common + ["--experiment", "stopped", "--resume", tmp_path / "stopped" / "last.pth.tar"])
    # resumed inside epoch 2, a refresh epoch: its maps come from the weights at the epoch's start
    run_main(common + ["--experiment", "late", "--resume", tmp_path / "straight" / "recovery-2-1.pth.tar"])
    for name in ("stopped", "late"):
        resumed = _weights(tmp_path / name / "last.pth.tar")
        for key, value in straight.items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=f"{name}: {key}")
    rows = [read_csv(tmp_path / name / "summary.csv") for name in ("straight", "stopped")]
    assert [r["train_loss"] for r in rows[1]] == [r["train_loss"] for r in rows[0]]


def test_train_under_torchrun_with_the_maps_in_a_directory(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tmix_aug.train",
        "--data-dir", str(data), *map(str, FAST), "-b", "4", "--epochs", "2", *SELF, "--saliency-cache",
        str(tmp_path / "maps"), "--saliency-refresh", "1", "--output", str(tmp_path / "out"), "--experiment", "ddp",
        "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_csv(tmp_path / "out" / "ddp" / "summary.csv")) == 2
    assert not list((tmp_path / "maps").iterdir())  # each refresh replaced the last file; the end removed it
