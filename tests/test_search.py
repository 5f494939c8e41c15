"""The search stage: it learns, writes a loadable mixer, resumes exactly, runs under torchrun."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from torchvision.transforms import v2

import tmix_aug  # noqa: F401  (registers cifar_resnet20 with timm)
from tmix_aug import TransformMix
from tmix_aug.search import SearchConfig, SearchObjective, search
from tmix_aug.atomic import sha256_file
from tmix_aug.search.checkpoint import SearchCheckpoint
from tmix_aug.search.selection import kept_record
from tmix_aug.synthetic import SyntheticObjects

from conftest import assert_same_safetensors

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def fitted_teacher(steps: int = 30):
    """A cifar_resnet20 fitted to synthetic shapes: the calibrated objective needs a teacher
    that knows something (an untrained one is best at infinite temperature, with no gradient)."""
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet20", num_classes=4)
    data = SyntheticObjects(64, image_size=16, num_classes=4, transform=TO_TENSOR)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(teacher(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher.eval().requires_grad_(False)


def tiny_run(output, epochs, resume=False, **options):
    teacher = fitted_teacher()
    train = SyntheticObjects(48, image_size=16, num_classes=4, transform=TO_TENSOR)
    val = SyntheticObjects(16, image_size=16, num_classes=4, split="val", transform=TO_TENSOR)
    config = SearchConfig(
        output=str(output), epochs=epochs, batch_size=16, workers=0, val_samples=16, lr=0.01, resume=resume, **options
    )
    return search(config, train_dataset=train, val_dataset=val, teacher=teacher, mean=MEAN, std=STD)


@pytest.mark.parametrize("calibrated", [True, False])
def test_a_search_step_lowers_the_teacher_objective(calibrated):
    teacher = fitted_teacher()
    data = SyntheticObjects(16, image_size=16, num_classes=4, split="val", transform=TO_TENSOR)
    x = torch.stack([data[i][0] for i in range(16)])
    y = torch.tensor([data[i][1] for i in range(16)])
    torch.manual_seed(0)  # the mixer's random start
    mixer = TransformMix(4, saliency=teacher, size=16)
    objective = SearchObjective(mixer, teacher, calibrated=calibrated).train()
    assert mixer.training and not teacher.training
    optimizer = torch.optim.SGD(mixer.parameters(), lr=0.01)  # at 0.05 the plain CE overshoots from some starts
    losses = []
    for _ in range(8):
        loss, _ = objective(x, y, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not any(p.requires_grad for p in teacher.parameters())


def test_search_writes_a_loadable_mixer_with_its_curve(tmp_path):
    learned = tiny_run(tmp_path / "run", epochs=2)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]  # 0: the unsearched start
    assert records[0]["train_loss"] is None and records[1]["train_loss"] > 0
    for key in ("held_out_ce", "held_out_calibrated_ce", "held_out_top2"):
        assert set(records[-1][key]) == {"transformmix", "mixup", "cutmix"}, key
    for name, plain in records[-1]["held_out_ce"].items():  # temperature 1 is one of the candidates
        assert records[-1]["held_out_calibrated_ce"][name] <= plain + 1e-4, name
    assert records[-1]["teacher_temperature"] > 0
    assert (run / "mixes.png").stat().st_size > 0
    card = (run / "README.md").read_text()
    assert 'from_pretrained("run",' in card  # the card shows how to load this very mixer
    assert "| 0 | - |" in card and "| 2 |" in card and "objective transformmix" in card and "lr 0.01" in card and "calibrated" in card
    loaded = TransformMix.from_pretrained(run, num_classes=4)
    for key, value in learned.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key
    unit = SearchCheckpoint(run).load()
    latest = unit.mixer
    assert latest["mpn.head.weight"].abs().sum() > 0  # the search learned something
    # The output is the epoch that ranks first, not simply the last one.
    kept = kept_record(records, calibrated=True)["epoch"]
    assert unit.state["best_epoch"] == kept and unit.state["epoch"] == 2
    for key, value in unit.kept.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert f"model.safetensors SHA-256 `{sha256_file(run / 'model.safetensors')}`" in card
    if kept == 0:
        assert learned.mpn.head.weight.abs().sum() == 0  # the unsearched start
    elif kept == 2:
        assert torch.equal(learned.mpn.head.weight, latest["mpn.head.weight"])
    else:
        assert not torch.equal(learned.mpn.head.weight, latest["mpn.head.weight"])


def test_resume_continues_exactly(tmp_path):
    straight = tiny_run(tmp_path / "a", epochs=2)
    tiny_run(tmp_path / "b", epochs=1)
    resumed = tiny_run(tmp_path / "b", epochs=2, resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    history = [json.loads(line)["epoch"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert history == [0, 1, 2]


def test_resuming_a_finished_run_rewrites_its_card_with_notes(tmp_path):
    """How an evaluation made after the search gets into the model card."""
    tiny_run(tmp_path / "run", epochs=1)
    shutil.copy(tmp_path / "run" / "model.safetensors", tmp_path / "before.safetensors")
    notes = tmp_path / "notes.md"
    notes.write_text("## Evaluation\nJudged by a classifier of our own.\n")
    tiny_run(tmp_path / "run", epochs=1, resume=True, card_notes=str(notes))
    card = (tmp_path / "run" / "README.md").read_text()
    assert card.count("Judged by a classifier of our own.") == 1 and "| 1 |" in card
    assert "## What the transforms do (epoch" in card
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["transforms"]["shift_p90"] == 0 and records[0]["transforms"]["scale_p50"] == 1  # unsearched
    assert_same_safetensors(tmp_path / "run" / "model.safetensors", tmp_path / "before.safetensors")  # no epoch run again
    history = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history == [0, 1]


def write_image_folder(root: Path, classes: int = 4, per_class: int = 8, size: int = 16):
    dataset = SyntheticObjects(classes * per_class, image_size=size, num_classes=classes)
    for split in ("train", "validation"):
        for i in range(len(dataset)):
            image, label = dataset[i]
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i}.png")


def test_cli_under_torchrun_with_two_cpu_processes(tmp_path):
    write_image_folder(tmp_path / "data")
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet20", num_classes=4)
    safetensors.torch.save_file(teacher.state_dict(), tmp_path / "teacher.safetensors")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "tmix_aug.search",
        "--data-dir", str(tmp_path / "data"), "--teacher", "cifar_resnet20",
        "--teacher-checkpoint", str(tmp_path / "teacher.safetensors"), "--output", str(tmp_path / "out"),
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--val-samples", "8", "--max-batches", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]  # rank 0 alone writes
    assert records[1]["images_per_second"] > 0
    TransformMix.from_pretrained(tmp_path / "out", num_classes=4)


def epoch_record(objective, top2, cutmix_top2=0.2):
    return {
        "held_out_calibrated_ce": {"transformmix": objective, "mixup": 1.3, "cutmix": 1.5},
        "held_out_ce": {"transformmix": objective + 2, "mixup": 3.1, "cutmix": 3.5},
        "held_out_top2": {"transformmix": top2, "mixup": 0.1, "cutmix": cutmix_top2},
    }


def test_the_kept_epoch_reads_both_classes_as_often_as_the_start_and_the_baselines():
    start = epoch_record(1.30, 0.25)
    hides_minor, better, worse_but_recognisable = epoch_record(1.20, 0.21), epoch_record(1.25, 0.26), epoch_record(1.35, 0.30)
    assert kept_record([start, hides_minor, better, worse_but_recognisable], calibrated=True) is better
    # Beating the baselines (0.2) is not enough: an epoch must also read both classes as the start did.
    assert kept_record([start, hides_minor], calibrated=True) is start
    # A start below the baselines: the baselines set the bar.
    weak_start = epoch_record(1.30, 0.15)
    assert kept_record([weak_start, epoch_record(1.25, 0.18), epoch_record(1.28, 0.21)], calibrated=True)["held_out_top2"]["transformmix"] == 0.21
    # When no epoch passes, the lowest objective wins.
    failing = [epoch_record(1.3, 0.1), epoch_record(1.2, 0.1)]
    assert kept_record(failing, calibrated=True) is failing[1]
    # Uncalibrated runs rank by the plain cross-entropy.
    plain = [epoch_record(1.3, 0.3), epoch_record(1.2, 0.3)]
    plain[1]["held_out_ce"]["transformmix"] = 9.0
    assert kept_record(plain, calibrated=False) is plain[0]


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="lr: expected a number > 0"):
        SearchConfig(lr=0).check()
    with pytest.raises(ValueError, match="mode: expected one of"):
        SearchConfig(mode="x").check()
    with pytest.raises(ValueError, match="opt: expected a timm optimizer name"):
        SearchConfig(opt="nope").check()


def test_teacher_kwargs_reach_the_teachers_create_model(tmp_path):
    from tmix_aug.search.__main__ import main, parser

    assert parser().parse_args(["--teacher-kwargs", "pad_type=same"]).teacher_kwargs == {"pad_type": "same"}
    assert parser().parse_args([]).teacher_kwargs == {}
    write_image_folder(tmp_path / "data")
    narrow = timm.create_model("cifar_resnet20", num_classes=4, widths=(8, 16, 32))
    safetensors.torch.save_file(narrow.state_dict(), tmp_path / "narrow.safetensors")
    command = ["--data-dir", str(tmp_path / "data"), "--teacher", "cifar_resnet20", "--teacher-checkpoint", str(tmp_path / "narrow.safetensors")]
    command += ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--val-samples", "8", "--max-batches", "1"]
    main(command + ["--teacher-kwargs", "widths=(8, 16, 32)", "--output", str(tmp_path / "narrow")])
    state = json.loads((tmp_path / "narrow" / "checkpoint" / "epoch-1" / "state.json").read_text())
    assert state["config"]["teacher_kwargs"] == {"widths": [8, 16, 32]}
    assert "widths" in (tmp_path / "narrow" / "README.md").read_text()
    with pytest.raises(SystemExit):  # the default widths do not fit the checkpoint
        main(command + ["--output", str(tmp_path / "default")])
