"""Fault injection on tiny runs of both CLIs: a process killed (SIGKILL) at a checkpoint write, or
a write failing as on a full disk, resumes to final weights bit-identical to an uninterrupted run's.

Kill points come from ``TMIX_FAULT_AT_WRITE=kill:N`` (tmix_aug/atomic.py): the N-th file write of
the process kills it after the temporary file is written and before the rename. Each chain kills
a run, resumes it and kills the resumed process at another point, then lets it finish. The killed
runs are forked children of the test process (a real SIGKILL without paying for a fresh Python
with torch on every run); the reference and the final resume run in the test process.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import multiprocessing
from pathlib import Path

import pytest
import safetensors.torch
from safetensors import safe_open
import timm
import torch
from timm.models import load_checkpoint
from timm.utils import load_checkpoint_metadata

import tmix_aug  # noqa: F401  (registers cifar_resnet20 with timm)
from tmix_aug import atomic, train
from tmix_aug.search import __main__ as search_cli
from tmix_aug.search.checkpoint import SearchCheckpoint
from test_search import write_image_folder

# One search epoch writes 11 files: the checkpoint unit (weights, kept weights, optimizer, state,
# manifest), metrics.jsonl, then the output (model.safetensors, config.json, README.md, mixes.png,
# README.md with the weights' hash). The unsearched start (epoch 0) is the first 11.
SEARCH_WRITES_PER_EPOCH = 11


def _child(main, argv: list[str], fault: str) -> None:
    os.environ[atomic.FAULT_ENV] = fault
    atomic.reset_write_count()
    main(argv)


def run_killed(main, argv: list, fault: str) -> None:
    """Run ``main(argv)`` in a forked child with ``fault`` injected; it must die of SIGKILL."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(main, [str(a) for a in argv], fault))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, (fault, child.exitcode)


def run_in_process(main, argv: list, fault: str | None, monkeypatch) -> None:
    """Run ``main(argv)`` here, ``fault`` (e.g. "enospc:4") injected when given."""
    atomic.reset_write_count()
    if fault:
        monkeypatch.setenv(atomic.FAULT_ENV, fault)
    try:
        main([str(a) for a in argv])
    finally:
        monkeypatch.delenv(atomic.FAULT_ENV, raising=False)


@pytest.fixture(scope="module")
def search_data(tmp_path_factory):
    """An image folder of 4 classes (16 px) and an untrained cifar_resnet20 teacher."""
    root = tmp_path_factory.mktemp("search-data")
    write_image_folder(root)
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet20", num_classes=4)
    safetensors.torch.save_file(teacher.state_dict(), root / "teacher.safetensors")
    return root


def search_argv(data: Path, output: Path, workers: int) -> list:
    return [
        "--data-dir", data, "--teacher", "cifar_resnet20", "--teacher-checkpoint", data / "teacher.safetensors",
        "--output", output, "--epochs", 3, "--batch-size", 8, "--max-batches", 2, "--val-samples", 8,
        "--size", 16, "--lr", 0.05, "--no-calibrated", "--workers", workers,
    ]  # fmt: skip


def assert_same_safetensors(got: Path, expected: Path) -> None:
    with safe_open(got, "pt") as a, safe_open(expected, "pt") as b:
        assert a.metadata() == b.metadata()
        assert sorted(a.keys()) == sorted(b.keys())
        for key in b.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def assert_same_search_result(reference: Path, resumed: Path) -> None:
    expected = SearchCheckpoint(reference).load()
    got = SearchCheckpoint(resumed).load()
    assert got.state["epoch"] == expected.state["epoch"] == 3
    for key, value in expected.mixer.items():
        assert torch.equal(got.mixer[key], value), key
    # Same tensors and metadata; not the same bytes: safetensors writes metadata keys in hash order.
    assert_same_safetensors(resumed / "model.safetensors", reference / "model.safetensors")
    assert [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    card = (resumed / "README.md").read_text()
    assert f"SHA-256 `{atomic.sha256_file(resumed / 'model.safetensors')}`" in card
    assert f"These weights: epoch {expected.state['best_epoch']} " in card
    assert not [p.name for p in (resumed / "checkpoint").iterdir() if p.name != "epoch-3"]  # no partial unit left


# (kill point of the fresh run, then of each resumed process); counts restart in each process.
SEARCH_CHAINS = {
    0: [
        SEARCH_WRITES_PER_EPOCH + 3,  # inside epoch 1's unit: it is never renamed into place
        SEARCH_WRITES_PER_EPOCH - 3,  # epoch 1 again: unit committed, output weights new, card old
        SEARCH_WRITES_PER_EPOCH + 6,  # epoch 3: unit committed, before metrics.jsonl and the output
        1 + 3,  # the final publication, after metrics.jsonl and the weights
    ],
    2: [SEARCH_WRITES_PER_EPOCH + 5, SEARCH_WRITES_PER_EPOCH + 9],
}


@pytest.mark.parametrize("workers", [0, 2])
def test_search_killed_at_checkpoint_writes_resumes_bit_identically(tmp_path, search_data, workers, monkeypatch):
    run_in_process(search_cli.main, search_argv(search_data, tmp_path / "reference", workers), None, monkeypatch)
    run = tmp_path / "run"
    for i, write in enumerate(SEARCH_CHAINS[workers]):
        run_killed(search_cli.main, search_argv(search_data, run, workers) + (["--resume"] if i else []), f"kill:{write}")
    run_in_process(search_cli.main, search_argv(search_data, run, workers) + ["--resume"], None, monkeypatch)
    assert_same_search_result(tmp_path / "reference", run)


def test_search_stopped_before_its_first_checkpoint_cannot_resume_and_says_so(tmp_path, search_data, monkeypatch, capsys):
    run = tmp_path / "run"
    run_killed(search_cli.main, search_argv(search_data, run, 0), "kill:3")
    with pytest.raises(SystemExit):
        run_in_process(search_cli.main, search_argv(search_data, run, 0) + ["--resume"], None, monkeypatch)
    err = capsys.readouterr().err
    assert f"resume: no complete checkpoint in {run / 'checkpoint'} (found .epoch-0." in err and "overwrite" in err


def test_search_on_a_full_disk_keeps_the_last_unit_and_resumes_bit_identically(tmp_path, search_data, monkeypatch):
    run_in_process(search_cli.main, search_argv(search_data, tmp_path / "reference", 0), None, monkeypatch)
    run = tmp_path / "run"
    # Fresh: epoch 1's optimizer state fails; resumed from epoch 0: epoch 3's manifest fails.
    for write, resume, unit in ((13, [], "epoch-0"), (2 * SEARCH_WRITES_PER_EPOCH + 5, ["--resume"], "epoch-2")):
        with pytest.raises(OSError) as failure:
            run_in_process(search_cli.main, search_argv(search_data, run, 0) + resume, f"enospc:{write}", monkeypatch)
        assert failure.value.errno == errno.ENOSPC
        assert [p.name for p in (run / "checkpoint").iterdir()] == [unit]
        assert not [p for p in run.rglob("*.tmp")]  # a failed write leaves no temporary file
    run_in_process(search_cli.main, search_argv(search_data, run, 0) + ["--resume"], None, monkeypatch)
    assert_same_search_result(tmp_path / "reference", run)


TRAIN = [
    "--dataset", "synthetic", "--synthetic-samples", 32, "--synthetic-classes", 4, "--model", "cifar_resnet20",
    "--img-size", 16, "-b", 8, "--warmup-epochs", 0, "--lr", 0.05, "--no-progress", "--epochs", 3,
    "--mixer", "cutmix", "--scale", 0.5, 1,
]  # fmt: skip
# tmix-train writes per epoch: the checkpoint, then summary.json; mix.png first, at the first step.


def train_argv(output: Path, name: str, workers: int) -> list:
    return TRAIN + ["-j", workers, "--output", output, "--experiment", name]


def train_weights(path: Path) -> dict:
    model = timm.create_model("cifar_resnet20", num_classes=4)
    load_checkpoint(model, str(path))
    return model.state_dict()


def assert_same_training(reference: Path, resumed: Path) -> None:
    expected, got = train_weights(reference / "last.pth.tar"), train_weights(resumed / "last.pth.tar")
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    epochs = [row["epoch"] for row in json.loads((resumed / "summary.json").read_text())["epochs"]]
    assert epochs == [0, 1, 2]
    rows = [list(csv.DictReader(open(path / "summary.csv"))) for path in (reference, resumed)]
    for key in ("epoch", "lr", "train_loss", "eval_loss", "eval_top1"):  # not the timings
        assert [row[key] for row in rows[1]] == [row[key] for row in rows[0]], key


@pytest.mark.parametrize("workers", [0, 2])
def test_train_killed_at_checkpoint_writes_resumes_bit_identically(tmp_path, workers, monkeypatch):
    run_in_process(train.train_from_args, train_argv(tmp_path, "reference", workers), None, monkeypatch)
    run = tmp_path / "run"
    # Fresh run: mix.png 1, epoch 0: checkpoint 2, summary 3, epoch 1: checkpoint 4 (killed before
    # its rename). Resumed at epoch 1: mix.png 1, checkpoint 2, summary 3 (killed: summary.json old).
    for i, write in enumerate((4, 3)):
        argv = train_argv(tmp_path, "run", workers) + (["--resume", run / "last.pth.tar"] if i else [])
        run_killed(train.train_from_args, argv, f"kill:{write}")
    run_in_process(train.train_from_args, train_argv(tmp_path, "run", workers) + ["--resume", run / "last.pth.tar"], None, monkeypatch)
    assert_same_training(tmp_path / "reference", run)
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".tar") == sorted(
        p.name for p in (tmp_path / "reference").iterdir() if p.suffix == ".tar"
    )  # no temporary file left either


def test_train_on_a_full_disk_keeps_the_last_checkpoint_and_resumes_bit_identically(tmp_path, monkeypatch):
    run_in_process(train.train_from_args, train_argv(tmp_path, "reference", 0), None, monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(OSError) as failure:
        run_in_process(train.train_from_args, train_argv(tmp_path, "run", 0), "enospc:4", monkeypatch)  # epoch 1's checkpoint
    assert failure.value.errno == errno.ENOSPC
    assert load_checkpoint_metadata(str(run / "last.pth.tar"))["epoch"] == 0
    assert not list(run.glob(".*.tmp")) and not (run / "tmp.pth.tar").exists()
    run_in_process(train.train_from_args, train_argv(tmp_path, "run", 0) + ["--resume", run / "last.pth.tar"], None, monkeypatch)
    assert_same_training(tmp_path / "reference", run)
