"""No silent wrong run: each bad input or broken file stops both CLIs with a message naming it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from timm.utils import load_checkpoint_metadata

import tmix_aug  # noqa: F401  (registers cifar_resnet20 with timm)
from tmix_aug import train
from tmix_aug.search import __main__ as search_cli
from tmix_aug.search.checkpoint import SearchCheckpoint

FAST = ["--model", "cifar_resnet20", "--img-size", 16, "-b", 8, "-j", 0, "--warmup-epochs", 0, "--lr", 0.05, "--no-progress"]
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-samples", 32, "--synthetic-classes", 4]


def image_folder(root: Path, classes: int = 4, per_class: int = 6, splits=("train", "validation")) -> Path:
    for split in splits:
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (16, 16), (60 * label + 20, 30 * i, 100)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = image_folder(tmp_path_factory.mktemp("data"))
    torch.manual_seed(0)
    safetensors.torch.save_file(timm.create_model("cifar_resnet20", num_classes=4).state_dict(), root / "teacher.safetensors")
    return root


def search_args(folder: Path, output: Path, *extra) -> list[str]:
    argv = [
        "--data-dir", folder, "--teacher-checkpoint", folder / "teacher.safetensors", "--output", output,
        "--epochs", 1, "--batch-size", 8, "--max-batches", 1, "--val-samples", 8, "--size", 16, "--workers", 0,
        "--no-calibrated", *extra,
    ]  # fmt: skip
    return [str(a) for a in argv]


def search_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        search_cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


SEARCH_BAD_INPUT = [
    (["--batch-size", "1000"], "batch_size: 1000 per process is more than the 24 training images"),
    (["--val-split", "nope"], "split: no folder for split 'nope' in {data} (looked for nope; found train, validation)"),
    (["--resume"], "resume: no complete checkpoint in {out}/checkpoint"),
    (["--k", "9"], "k: 9 inputs per mixed image needs a batch of at least 9"),
    (["--lr", "nan"], "lr: expected a finite number, got nan"),
    (["--alpha", "inf"], "alpha: expected a finite number, got inf"),
    (["--teacher", "vit_tiny_patch16_224"], "teacher checkpoint: '{data}/teacher.safetensors' cannot be loaded into vit_tiny_patch16_224"),
]


@pytest.mark.parametrize("extra, message", SEARCH_BAD_INPUT, ids=[m[:30] for _, m in SEARCH_BAD_INPUT])
def test_search_bad_input_stops_before_any_write(tmp_path, folder, capsys, extra, message):
    output = tmp_path / "out"
    err = search_error(search_args(folder, output, *extra), capsys)
    assert message.format(data=folder, out=output) in err, err
    assert not output.exists()


def test_search_data_errors_name_the_directory(tmp_path, capsys):
    one_class = image_folder(tmp_path / "one", classes=1)
    safetensors.torch.save_file(timm.create_model("cifar_resnet20", num_classes=1).state_dict(), one_class / "t.safetensors")
    argv = search_args(one_class, tmp_path / "out")
    argv[argv.index("--teacher-checkpoint") + 1] = str(one_class / "t.safetensors")
    assert f"dataset: {one_class} (train) has 1 class(es)" in search_error(argv, capsys)
    # Split folders are never read as classes: a root with only validation/ has no training split.
    only_validation = image_folder(tmp_path / "val-only", splits=("validation",))
    argv = search_args(only_validation, tmp_path / "out")
    argv[argv.index("--teacher-checkpoint") + 1] = str(one_class / "t.safetensors")
    assert f"split: no folder for split 'train' in {only_validation}" in search_error(argv, capsys)
    argv = search_args(tmp_path / "missing", tmp_path / "out")
    assert f"data_dir: '{tmp_path / 'missing'}' is not a directory" in search_error(argv, capsys)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, folder):
    output = tmp_path_factory.mktemp("search") / "run"
    search_cli.main(search_args(folder, output))
    return output


def test_search_refuses_an_earlier_run_a_changed_resume_and_a_torn_checkpoint(tmp_path, folder, finished_search, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_search, run)
    err = search_error(search_args(folder, run), capsys)
    assert f"output: {run} exists and is not empty; pass resume" in err
    err = search_error(search_args(folder, run, "--resume", "--k", "3", "--mode", "saliency-softmax", "--opt", "adamw"), capsys)
    assert "started with other settings (opt: 'momentum' -> 'adamw'; k: 2 -> 3; mode: 'transformmix' -> 'saliency-softmax')" in err
    unit = SearchCheckpoint(run).latest()
    weights = unit / "mixer.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as a crash on a careless writer would
    err = search_error(search_args(folder, run, "--resume"), capsys)
    assert f"{weights}: torn or changed checkpoint" in err
    (unit / "manifest.json").write_text("{")
    assert f"{unit / 'manifest.json'}: not a checkpoint manifest (JSONDecodeError" in search_error(search_args(folder, run, "--resume"), capsys)


def test_search_overwrite_replaces_only_the_runs_own_files(tmp_path, folder, finished_search):
    run = tmp_path / "run"
    shutil.copytree(finished_search, run)
    (run / "checkpoint" / "epoch-7").mkdir()  # a stale unit of a longer run
    (run / "notes.txt").write_text("mine")
    search_cli.main(search_args(folder, run, "--overwrite"))
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch-1"]
    assert (run / "notes.txt").read_text() == "mine"


def test_search_stops_at_a_non_finite_loss_keeping_the_last_good_checkpoint(tmp_path, folder, capsys):
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"search: non-finite loss \((nan|inf|-inf)\) at epoch 1, step \d; .* good checkpoint \(.*epoch-0\)"):
        search_cli.main(search_args(folder, run, "--lr", "1e38", "--max-batches", "3", "--opt", "sgd"))
    assert SearchCheckpoint(run).load().state["epoch"] == 0


def train_error(argv: list, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train.train_from_args([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


TRAIN_BAD_INPUT = [
    (["--lr", "nan"], "--lr: expected a finite number >= 0, got nan"),
    (["--mixer", "mixup", "--mixer-alpha", "inf"], "--mixer-alpha: expected a finite number >= 0, got inf"),
    (["--mixer", "mixup", "--mixer-k", "9"], "--mixer-k: 9 inputs per mixed image need a batch of at least 9, got -b 8"),
    (
        ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=16", "patch_size=8", "depth=1"]
        + ["--mixer", "saliencymix", "--saliency", "self"],
        "--saliency self: vit_tiny_patch16_224 cannot give the saliency maps --mixer saliencymix reads",
    ),
]


@pytest.mark.parametrize("extra, message", TRAIN_BAD_INPUT, ids=[m[:30] for _, m in TRAIN_BAD_INPUT])
def test_train_bad_input_stops_before_the_first_step(tmp_path, capsys, extra, message):
    err = train_error(SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path, "--experiment", "run"] + extra, capsys)
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_train_refuses_one_class(tmp_path, capsys):
    data = image_folder(tmp_path / "data", classes=1)
    err = train_error(["--data-dir", data] + FAST + ["--epochs", 1, "--output", tmp_path, "--experiment", "run"], capsys)
    assert f"dataset: {data} (train) has 1 class(es)" in err


@pytest.fixture(scope="module")
def finished_training(tmp_path_factory):
    output = tmp_path_factory.mktemp("train")
    train.train_from_args([str(a) for a in SYNTHETIC + FAST + ["--epochs", 2, "--mixer", "cutmix", "--output", output, "--experiment", "run"]])
    return output / "run"


def test_train_refuses_an_earlier_run_and_broken_or_changed_checkpoints(tmp_path, finished_training, capsys):
    common = SYNTHETIC + FAST + ["--epochs", 2, "--mixer", "cutmix", "--output", tmp_path, "--experiment", "run"]
    run = tmp_path / "run"
    shutil.copytree(finished_training, run)
    assert f"--experiment: {run} holds an earlier run" in train_error(common, capsys)
    last = run / "last.pth.tar"
    err = train_error(common + ["--resume", last, "--opt", "adamw", "--mixer-k", "2"], capsys)
    assert "written with other settings (--opt 'sgd' -> 'adamw'; --mixer-k None -> 2)" in err
    for content in (b"", last.read_bytes()[: last.stat().st_size // 2]):
        last.write_bytes(content)
        err = train_error(common + ["--resume", last], capsys)
        assert f"--resume: '{last}' cannot be read" in err and "truncated" in err


def test_train_overwrite_leaves_no_stale_checkpoint(tmp_path, finished_training):
    run = tmp_path / "run"
    shutil.copytree(finished_training, run)
    (run / "checkpoint-7.pth.tar").write_bytes(b"stale")
    (run / "notes.txt").write_text("mine")
    train.train_from_args([str(a) for a in SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path, "--experiment", "run", "--overwrite"]])
    assert sorted(p.name for p in run.glob("*.pth.tar")) == ["checkpoint-0.pth.tar", "last.pth.tar", "model_best.pth.tar"]
    assert len(json.loads((run / "summary.json").read_text())["epochs"]) == 1
    assert (run / "notes.txt").read_text() == "mine"


def test_train_stops_at_a_non_finite_loss_keeping_the_last_good_checkpoint(tmp_path, finished_training, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_training, run)

    class NaNLoss(torch.nn.Module):  # what a diverged model gives
        def forward(self, logits, targets):
            return (logits * float("nan")).sum()

    monkeypatch.setattr("tmix_aug.train.losses.SoftTargetCrossEntropy", NaNLoss)
    argv = SYNTHETIC + FAST + ["--epochs", 3, "--mixer", "cutmix", "--output", tmp_path, "--experiment", "run"]
    with pytest.raises(FloatingPointError, match=r"tmix-train: non-finite loss \(nan\) at epoch 2, step 0"):
        train.train_from_args([str(a) for a in argv + ["--resume", run / "last.pth.tar"]])
    assert load_checkpoint_metadata(str(run / "last.pth.tar"))["epoch"] == 1
    assert [row["epoch"] for row in json.loads((run / "summary.json").read_text())["epochs"]] == [0, 1]
