"""tmix-train: a run's outputs, resume, two CPU processes, bad input stopping before the first step."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from PIL import Image
from timm.models import load_checkpoint

from tmix_aug import train
from tmix_aug.teacher import load_teacher
from tmix_aug.train import runner
from tmix_aug.train.batch_mixer import build_saliency
from tmix_aug.train.flag_checks import check_args
from tmix_aug.train.loop import train_one_epoch, updates_per_epoch
from tmix_aug.train.state import setup

# Tiny runs: 16 px images, a handful of samples, 1-2 epochs, no worker processes.
FAST = [
    "--model",
    "cifar_resnet20",
    "--img-size",
    "16",
    "-b",
    "8",
    "-j",
    "0",
    "--warmup-epochs",
    "0",
    "--lr",
    "0.05",
    "--no-progress",
    "--log-interval",
    "1",
]
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-samples", "32", "--synthetic-classes", "4"]
# A one-block ViT on the same 16 px images, for TransMix.
VIT = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=16", "patch_size=8", "depth=1"]
VIT += ["--img-size", "16", "-b", "8", "-j", "0", "--warmup-epochs", "0", "--no-progress", "--opt", "adamw", "--lr", "1e-3"]


def read_csv(path) -> list[dict[str, str]]:
    with open(path) as file:
        return list(csv.DictReader(file))


def run_main(argv):
    return train.train_from_args([str(a) for a in argv])


def test_run_writes_metrics_checkpoints_and_picture(tmp_path):
    summary = run_main(
        SYNTHETIC
        + FAST
        + ["--epochs", 2, "--mixer", "cutmix", "--output", tmp_path, "--experiment", "run"]
    )
    run = tmp_path / "run"
    for name in ("summary.csv", "summary.json", "last.pth.tar", "model_best.pth.tar", "mix.png"):
        assert (run / name).is_file(), name
    rows = read_csv(run / "summary.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert float(row["train_loss"]) > 0
        assert 0 <= float(row["eval_top1"]) <= float(row["eval_top5"]) <= 100
        assert float(row["train_images_per_sec"]) > 0
        assert 0 < float(row["train_mixer_share"]) < 1
    data = json.loads((run / "summary.json").read_text())
    assert data["mixer"] == "cutmix" and data["num_classes"] == 4 and data["world_size"] == 1
    assert [e["epoch"] for e in data["epochs"]] == [0, 1]
    assert data["best"]["top1"] == max(e["eval_top1"] for e in data["epochs"])
    assert summary["best"] == data["best"]
    # Cosine schedule over 2 epochs from lr 0.05: the second epoch runs at half the rate.
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.025])
    with Image.open(run / "mix.png") as picture:
        assert picture.width > picture.height > 0


def _weights(path):
    model = timm.create_model("cifar_resnet20", num_classes=4)
    load_checkpoint(model, str(path))
    return model.state_dict()


def test_resume_continues_schedule_and_mixer_stream(tmp_path):
    common = (
        SYNTHETIC
        + FAST
        + [
            "--epochs",
            2,
            "--mixer",
            "transformmix",
            "--mixer-mode",
            "saliency-softmax",
            "--output",
            tmp_path,
        ]
    )
    run_main(common + ["--experiment", "straight"])

    # The same run interrupted after its first epoch, then resumed.
    args = train.build_parser().parse_args([str(a) for a in common + ["--experiment", "resumed"]])
    state = setup(args)
    state["num_epochs"] = 1
    runner.run(args, state)
    assert [r["epoch"] for r in read_csv(tmp_path / "resumed" / "summary.csv")] == ["0"]
    run_main(
        common + ["--experiment", "resumed", "--resume", tmp_path / "resumed" / "last.pth.tar"]
    )

    straight = read_csv(tmp_path / "straight" / "summary.csv")
    resumed = read_csv(tmp_path / "resumed" / "summary.csv")
    assert [r["epoch"] for r in resumed] == ["0", "1"]
    for key in ("lr", "train_loss", "eval_loss", "eval_top1"):
        assert float(resumed[1][key]) == pytest.approx(float(straight[1][key]), rel=1e-5), key
    a, b = _weights(tmp_path / "straight" / "last.pth.tar"), _weights(
        tmp_path / "resumed" / "last.pth.tar"
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert [
        e["epoch"]
        for e in json.loads((tmp_path / "resumed" / "summary.json").read_text())["epochs"]
    ] == [0, 1]


def test_mixer_off_epoch_and_saliency_from_the_model(tmp_path):
    run_main(
        SYNTHETIC
        + FAST
        + [
            "--epochs",
            2,
            "--mixer",
            "saliencymix",
            "--saliency",
            "self",
            "--mixer-off-epoch",
            1,
            "--output",
            tmp_path,
            "--experiment",
            "run",
        ]
    )
    rows = read_csv(tmp_path / "run" / "summary.csv")
    assert float(rows[0]["train_mixer_share"]) > 0
    assert len(rows) == 2


def test_saliency_from_a_teacher_checkpoint(tmp_path):
    from safetensors.torch import save_file

    teacher = timm.create_model("cifar_resnet20", num_classes=10)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp_path / "t.safetensors"))
    run_main(
        SYNTHETIC
        + FAST
        + ["--epochs", 1, "--mixer", "transformmix", "--mixer-mode", "saliency-softmax"]
        + ["--saliency", "teacher", "--teacher", "cifar_resnet20"]
        + ["--teacher-checkpoint", tmp_path / "t.safetensors"]
        + ["--output", tmp_path, "--experiment", "run"]
    )
    data = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert data["saliency"] == "teacher" and len(data["epochs"]) == 1


def test_transmix_on_a_vision_transformer(tmp_path):
    run_main(
        SYNTHETIC + VIT + ["--epochs", 1, "--mixer", "cutmix", "--transmix", "--mix-grid", ""]
        + ["--output", tmp_path, "--experiment", "vit"]
    )
    assert len(read_csv(tmp_path / "vit" / "summary.csv")) == 1
    assert not (tmp_path / "vit" / "mix.png").exists()


BAD_INPUT = [
    (["--mixer", "puzzlemix"], "argument --mixer: invalid choice: 'puzzlemix'"),
    (["--mixer", "transformmix", "--mixer-path", "no/such-mixer-here"], "no/such-mixer-here"),
    (["--mixer", "transformmix", "--mixer-mode", "bogus"], "--mixer-mode: without --mixer-path only saliency-softmax"),
    (["--grad-accum-steps", "0"], "--grad-accum-steps: expected a whole number >= 1, got 0"),
    (["--val-interval", "0"], "--val-interval: expected a whole number >= 1, got 0"),
    (
        ["--mixer", "mixup", "--mixer-path", "x"],
        "--mixer-path: only --mixer transformmix loads weights",
    ),
    (
        ["--mixer", "mixup", "--saliency", "self"],
        "--saliency: used only by --mixer saliencymix or transformmix",
    ),
    (
        ["--mixer", "saliencymix", "--saliency", "teacher"],
        "--teacher: give --teacher MODEL exactly when --saliency teacher",
    ),
    (
        ["--mixer", "saliencymix", "--saliency", "teacher", "--teacher", "mobilenetv3_small_050"],
        "cannot compute class activation maps for MobileNetV3",
    ),
    (["--mixer", "cutmix", "--mixer-k", "3"], "k: CutMix mixes exactly 2 inputs per image"),
    (
        ["--num-classes", "3"],
        "--num-classes: the dataset has 4 classes (labels up to 3) but --num-classes is 3",
    ),
    (["--mixer", "cutmix", "--transmix"], "model: expected a timm VisionTransformer-like model"),
    (["--dataset", "flowers102", "--data-dir", "{tmp}"], "data_dir: no flowers102 data under"),
    (["--dataset", "", "--data-dir", "{tmp}/missing"], "missing' is not a directory"),
    (["-b", "64"], "--batch-size: 64 per process is more than the 32 training images"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUT, ids=[m[:40] for _, m in BAD_INPUT])
def test_bad_input_stops_before_the_first_step(tmp_path, capsys, extra, message):
    extra = [str(a).replace("{tmp}", str(tmp_path)) for a in extra]
    with pytest.raises(SystemExit) as exit_info:
        run_main(
            SYNTHETIC
            + FAST
            + ["--epochs", 1, "--output", tmp_path / "out", "--experiment", "run"]
            + extra
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tmix-train: error:" in err
    assert message in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def write_image_folder(root, classes=2, per_class=8, size=16):
    for split in ("train", "validation"):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = (200 * label + 20, 10 * i, 100)
                Image.new("RGB", (size, size), colour).save(folder / f"{i}.png")


def test_two_cpu_processes_with_torchrun(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tmix_aug.train",
        "--data-dir",
        str(data),
        "--model",
        "cifar_resnet20",
        "--img-size",
        "16",
        "-b",
        "4",
        "-j",
        "0",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--lr",
        "0.05",
        "--mixer",
        "mixup-cutmix",
        "--no-progress",
        "--output",
        str(tmp_path / "out"),
        "--experiment",
        "ddp",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(tmp_path / "out") == ["ddp"]  # rank 0 alone writes
    data_json = json.loads((tmp_path / "out" / "ddp" / "summary.json").read_text())
    assert data_json["world_size"] == 2 and data_json["num_classes"] == 2
    rows = read_csv(tmp_path / "out" / "ddp" / "summary.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    # 16 images over 2 processes of batch 4: 2 steps per process per epoch.
    log = done.stdout + done.stderr  # timm's console logging
    assert log.count("epoch 0:") == 1 and log.count("2 process(es) on cpu") == 1
    assert (tmp_path / "out" / "ddp" / "mix.png").is_file()


def _load_example(name):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "dataset", ["flowers102", "oxford_iiit_pet", "stanford_cars", "fgvc_aircraft"]
)
def test_transfer_example_on_each_dataset_layout(tmp_path, monkeypatch, dataset):
    from safetensors.torch import save_file
    from test_data import fake_aircraft, fake_cars, fake_flowers, fake_pets

    from tmix_aug.mixer import TransformMix

    writers = {
        "flowers102": lambda root: fake_flowers(root, monkeypatch),
        "oxford_iiit_pet": fake_pets,
        "stanford_cars": fake_cars,
        "fgvc_aircraft": fake_aircraft,
    }
    root = tmp_path / "data"
    writers[dataset](str(root))
    # Stand-ins for the user's files: ImageNet-style weights (another head) and a searched mixer.
    source = timm.create_model("cifar_resnet20", num_classes=10)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, str(tmp_path / "weights.safetensors"))
    TransformMix(10, size=8).save_pretrained(tmp_path / "mixer")

    example = _load_example("transfer_finetune")
    argv = [
        "--dataset",
        dataset,
        "--data-root",
        str(root),
        "--weights",
        str(tmp_path / "weights.safetensors"),
        "--mixer-path",
        str(tmp_path / "mixer"),
        # a tiny run: the paper's 100 epochs at 224 px overridden
        "--model",
        "cifar_resnet20",
        "--epochs",
        "1",
        "--img-size",
        "16",
        "-b",
        "2",
        "-j",
        "0",
        "--lr",
        "0",
        "--no-progress",
        "--output",
        str(tmp_path / "out"),
        "--experiment",
        "run",
    ]
    command = example.transfer_argv(argv)
    assert command[command.index("--saliency") + 1] == "self"
    assert command[command.index("--train-split") + 1] == example.TRAIN_SPLITS[dataset]
    summary = example.main(argv)
    assert [e["epoch"] for e in summary["epochs"]] == [0]
    num_classes = json.loads((tmp_path / "out" / "run" / "summary.json").read_text())["num_classes"]
    assert num_classes == {"flowers102": 102, "oxford_iiit_pet": 2}.get(dataset, 3)
    checkpoint = timm.create_model("cifar_resnet20", num_classes=num_classes)
    load_checkpoint(checkpoint, str(tmp_path / "out" / "run" / "last.pth.tar"))
    # The backbone came from the weights file (lr 0 keeps it); the head was made for the dataset.
    torch.testing.assert_close(checkpoint.conv1.weight, weights["conv1.weight"])
    assert checkpoint.linear.out_features != 10


def test_plain_pytorch_loop_example_trains(capsys):
    import runpy

    torch.manual_seed(0)
    runpy.run_path(
        os.path.join(os.path.dirname(__file__), "..", "examples", "plain_pytorch_loop.py"),
        run_name="__main__",
    )
    loss = float(capsys.readouterr().out.strip().split()[-1])
    assert 0 < loss < 10


def record_mixes(monkeypatch):
    """Record, per training epoch, every (images in, MixResult out) of any mixer in the run."""
    from tmix_aug.mixing import BatchMixer

    epochs: list[list] = []
    real_mix, real_epoch = BatchMixer.mix, train_one_epoch

    def mix(self, x, y, generator=None):
        result = real_mix(self, x, y, generator=generator)
        epochs[-1].append((x.clone(), y.clone(), result))
        return result

    def one_epoch(*args, **kwargs):
        epochs.append([])
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(BatchMixer, "mix", mix)
    monkeypatch.setattr("tmix_aug.train.runner.train_one_epoch", one_epoch)
    return epochs


def test_an_epoch_at_or_past_the_mixer_off_epoch_is_unmixed(tmp_path, monkeypatch):
    epochs = record_mixes(monkeypatch)
    run_main(
        SYNTHETIC
        + FAST
        + ["--epochs", 3, "--mixer", "cutmix", "--mixer-off-epoch", 1, "--smoothing", 0]
        + ["--mix-grid", "", "--output", tmp_path, "--experiment", "run"]
    )
    assert len(epochs) == 3 and all(epochs)
    assert any(bool((result.lam[:, 0] < 1).any()) for _, _, result in epochs[0])
    for epoch in epochs[1:]:
        for x, y, result in epoch:
            assert torch.equal(result.images, x)
            assert torch.equal(result.targets, torch.nn.functional.one_hot(y, 4).float())


def test_transmix_relabels_every_step(tmp_path, monkeypatch):
    """With --transmix, the loss of every step is computed on the attention-weighted targets."""
    from timm.loss import SoftTargetCrossEntropy

    from tmix_aug.transmix import TransMixLabels

    relabelled, used = [], []
    real_relabel, real_loss = TransMixLabels.relabel, SoftTargetCrossEntropy.forward

    def relabel(self, result):
        targets = real_relabel(self, result)
        relabelled.append((targets.clone(), result.targets.clone()))
        return targets

    def loss(self, x, target):
        used.append(target.detach().clone())
        return real_loss(self, x, target)

    monkeypatch.setattr(TransMixLabels, "relabel", relabel)
    monkeypatch.setattr(SoftTargetCrossEntropy, "forward", loss)
    run_main(
        SYNTHETIC + VIT + ["--epochs", 2, "--mixer", "cutmix", "--transmix", "--mix-grid", ""]
        + ["--output", tmp_path, "--experiment", "vit"]
    )
    assert len(relabelled) == len(used) == 2 * 4  # 32 images, batch 8, 2 epochs
    for (targets, area_targets), target in zip(relabelled, used):
        assert torch.equal(target, targets)
    assert any(not torch.allclose(t, a) for t, a in relabelled)  # attention is not the area


def _vit_weights(path):
    from timm.models import load_state_dict

    return load_state_dict(str(path))


def test_grad_accum_steps_equal_one_batch_of_their_size(tmp_path):
    # A ViT (LayerNorm, no BatchNorm) without mixing: 2 accumulated batches of 4 make the step of one batch of 8.
    common = SYNTHETIC + VIT[:-4] + ["--opt", "sgd", "--momentum", "0.9", "--lr", "0.1", "--mixer", "none"]
    common += ["--epochs", 1, "--mix-grid", "", "--output", tmp_path]
    run_main(common + ["--experiment", "b8", "-b", 8])
    run_main(common + ["--experiment", "b4x2", "-b", 4, "--grad-accum-steps", 2])
    run_main(common + ["--experiment", "b4", "-b", 4])
    b8, b4x2, b4 = (_vit_weights(tmp_path / name / "last.pth.tar") for name in ("b8", "b4x2", "b4"))
    for name in b8:
        torch.testing.assert_close(b4x2[name], b8[name], rtol=1e-5, atol=1e-6, msg=name)
    # Without accumulation the same data take twice the steps: the comparison above can fail.
    assert any(not torch.allclose(b4[name], b8[name], rtol=1e-4, atol=1e-5) for name in b8)


def test_grad_accum_steps_step_after_each_group_and_after_a_last_short_one():
    from types import SimpleNamespace

    from tmix_aug.baselines import NoMix

    args = train.build_parser().parse_args(["--grad-accum-steps", "2", "--smoothing", "0", "--no-progress"])
    args.rank, args.distributed, args.sched_on_updates = 0, False, True
    torch.manual_seed(0)
    batches = [(torch.randn(3, 2, 2, 2), torch.randint(0, 3, (3,))) for _ in range(5)]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    reference = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    reference.load_state_dict(model.state_dict())
    calls = {"ema": [], "sched": []}
    ema = SimpleNamespace(update=lambda m, step: calls["ema"].append(step))
    scheduler = SimpleNamespace(step_update=lambda num_updates: calls["sched"].append(num_updates))
    metrics = train_one_epoch(
        1, model, batches, torch.optim.SGD(model.parameters(), lr=0.5), NoMix(3), args, torch.device("cpu"),
        scheduler=scheduler, model_ema=ema,
    )
    # By hand: 5 batches in groups of 2, 2 and 1; each loss divided by its group's size.
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    losses = []
    for group in (batches[0:2], batches[2:4], batches[4:5]):
        optimizer.zero_grad()
        for x, y in group:
            loss = torch.nn.functional.cross_entropy(reference(x), y)
            (loss / len(group)).backward()
            losses.append(loss.item())
        optimizer.step()
    for got, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected)
    assert calls == {"ema": [3, 4, 5], "sched": [4, 5, 6]}  # epoch 1 of 3 updates per epoch
    assert metrics["loss"] == pytest.approx(sum(losses) / len(losses))
    assert updates_per_epoch(5, 2) == 3 and updates_per_epoch(4, 2) == 2


def test_val_interval_evaluates_every_n_epochs_and_the_last_and_resumes_exactly(tmp_path):
    common = SYNTHETIC + FAST + ["--epochs", 3, "--val-interval", 2, "--mixer", "cutmix", "--mix-grid", ""]
    common += ["--output", tmp_path]
    run_main(common + ["--experiment", "straight"])
    run = tmp_path / "straight"
    rows = read_csv(run / "summary.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [r["eval_top1"] == "" for r in rows] == [True, False, False]  # epoch 1 (2nd) and the last
    assert all(float(r["train_loss"]) > 0 for r in rows)
    data = json.loads((run / "summary.json").read_text())
    assert [e["eval_top1"] is None for e in data["epochs"]] == [True, False, False]
    assert data["best"]["epoch"] in (1, 2)
    assert data["best"]["top1"] == max(e["eval_top1"] for e in data["epochs"][1:])
    # The epoch without evaluation still wrote its checkpoint; resuming from it ends where the straight run ends.
    assert (run / "checkpoint-0.pth.tar").is_file()
    run_main(common + ["--experiment", "resumed", "--resume", run / "checkpoint-0.pth.tar"])
    resumed = read_csv(tmp_path / "resumed" / "summary.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2"]
    for key in ("lr", "train_loss", "eval_loss", "eval_top1"):
        assert float(resumed[-1][key]) == pytest.approx(float(rows[-1][key]), rel=1e-5), key
    a, b = _weights(run / "last.pth.tar"), _weights(tmp_path / "resumed" / "last.pth.tar")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_grad_accum_steps_under_ddp_equal_one_batch_of_their_size(tmp_path):
    # Two processes: the first batch of each group skips the all-reduce (no_sync); the step must still see both.
    data = tmp_path / "data"
    write_image_folder(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    common += ["tmix_aug.train", "--data-dir", str(data), *[str(a) for a in VIT[:-4]], "--device", "cpu"]
    common += ["--opt", "sgd", "--momentum", "0.9", "--lr", "0.1", "--mixer", "none", "--epochs", "1"]
    common += ["--mix-grid", "", "--output", str(tmp_path / "out")]
    for name, batch in (("b4", ["-b", "4"]), ("b2x2", ["-b", "2", "--grad-accum-steps", "2"])):
        done = subprocess.run(common + ["--experiment", name] + batch, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    b4, b2x2 = (_vit_weights(tmp_path / "out" / name / "last.pth.tar") for name in ("b4", "b2x2"))
    assert b4.keys() == b2x2.keys() and len(b4) > 10
    for name in b4:
        torch.testing.assert_close(b2x2[name], b4[name], rtol=1e-5, atol=1e-6, msg=name)


def test_teacher_kwargs_reach_the_teachers_create_model(tmp_path, capsys):
    from safetensors.torch import save_file
    from timm.layers import Conv2dSame

    narrow = timm.create_model("cifar_resnet20", num_classes=10, widths=(8, 16, 32))
    save_file({k: v.contiguous() for k, v in narrow.state_dict().items()}, str(tmp_path / "narrow.safetensors"))
    teacher = SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "transformmix", "--mixer-mode", "saliency-softmax"]
    teacher += ["--saliency", "teacher", "--teacher", "cifar_resnet20", "--teacher-checkpoint", tmp_path / "narrow.safetensors"]
    teacher += ["--mix-grid", "", "--output", tmp_path]
    run_main(teacher + ["--teacher-kwargs", "widths=(8, 16, 32)", "--experiment", "narrow"])
    data = json.loads((tmp_path / "narrow" / "summary.json").read_text())
    assert data["args"]["teacher_kwargs"] == {"widths": [8, 16, 32]} and len(data["epochs"]) == 1
    # Without them the checkpoint does not fit the default widths, and the run stops before the first step.
    with pytest.raises(SystemExit):
        run_main(teacher + ["--experiment", "default"])
    assert "cannot be loaded into cifar_resnet20" in capsys.readouterr().err

    # The case: timm's MobileNetV2 with TF "same" padding as the teacher.
    args = train.build_parser().parse_args(
        ["--mixer", "saliencymix", "--saliency", "teacher", "--teacher", "mobilenetv2_100", "--teacher-kwargs", "pad_type=same"]
    )
    assert args.teacher_kwargs == {"pad_type": "same"}
    same = build_saliency(args, None, torch.device("cpu"))
    assert isinstance(same.conv_stem, Conv2dSame) and not same.training
    args.teacher_kwargs = {}
    assert not isinstance(build_saliency(args, None, torch.device("cpu")).conv_stem, Conv2dSame)
    with pytest.raises(ValueError, match="--teacher-kwargs: needs --teacher MODEL"):
        check_args(train.build_parser().parse_args(["--dataset", "synthetic", "--teacher-kwargs", "pad_type=same"]))
    with pytest.raises(ValueError, match=r"teacher kwargs: mobilenetv2_100 does not accept \['no_such_argument'\]"):
        load_teacher("mobilenetv2_100", None, model_kwargs={"no_such_argument": 1})
