"""tmix-train: timm train.py flags beyond the basic loop (issue 13's last refused flags).

--model-dtype, --torchscript, --aug-splits/--jsd-loss/--split-bn, --model-ema-force-cpu,
--recovery-interval (exact mid-epoch resume), --save-images, --tta, --log-wandb,
--train-img-sizes, --train-batches-per-epoch, --kd-model-name (logit distillation); and the
reason --naflex-loader is still refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import types

import pytest
import timm
import torch
from PIL import Image
from timm.loss import JsdCrossEntropy
from timm.models import load_checkpoint, load_state_dict
from timm.utils import load_checkpoint_metadata

from tmix_aug import train
from tmix_aug.baselines import NoMix
from tmix_aug.train import runner
from tmix_aug.train.flag_checks import check_args, NOT_SUPPORTED
from tmix_aug.train.loop import validate, variable_loss_scale
from tmix_aug.train.losses import build_train_loss
from tmix_aug.train.state import setup

FAST = ["--model", "cifar_resnet20", "--img-size", "16", "-b", "8", "-j", "0", "--warmup-epochs", "0"]
FAST += ["--lr", "0.05", "--no-progress", "--log-interval", "1", "--mix-grid", ""]
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-samples", "32", "--synthetic-classes", "4"]


def run_main(argv):
    return train.train_from_args([str(a) for a in argv])


def parse(argv):
    return train.build_parser().parse_args([str(a) for a in argv])


def read_csv(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def read_checkpoint(path):
    """A tmix-train checkpoint, read as timm reads one (weights_only, with argparse's Namespace allowed)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def refused(argv, capsys) -> str:
    """The usage error of a command line that must stop before the first step."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("prefetcher", [[], ["--no-prefetcher"]], ids=["prefetcher", "no-prefetcher"])
def test_model_dtype_bfloat16_trains_bf16_weights_with_a_mixer(tmp_path, prefetcher):
    common = SYNTHETIC + FAST + prefetcher + ["--epochs", 1, "--output", tmp_path]
    common += ["--mixer", "transformmix", "--mixer-mode", "saliency-softmax", "--saliency", "self"]
    run_main(common + ["--model-dtype", "bfloat16", "--experiment", "bf16"])
    weights = load_state_dict(str(tmp_path / "bf16" / "last.pth.tar"))
    floats = [v for v in weights.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.bfloat16 for v in floats)
    row = read_csv(tmp_path / "bf16" / "summary.csv")[0]
    assert 0 < float(row["train_loss"]) < 10 and 0 < float(row["eval_loss"]) < 10  # finite
    # The default stays float32.
    run_main(common + ["--experiment", "fp32"])
    weights = load_state_dict(str(tmp_path / "fp32" / "last.pth.tar"))
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_model_dtype_refusals(capsys, tmp_path):
    base = SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path]
    assert "--model-dtype: AMP (--amp) casts inside autocast and needs float32 weights" in refused(
        base + ["--model-dtype", "bfloat16", "--amp"], capsys
    )
    assert "--model-dtype: expected one of float32, float16, bfloat16, got 'int8'" in refused(
        base + ["--model-dtype", "int8"], capsys
    )
    check_args(parse(SYNTHETIC + ["--model-dtype", "float32", "--amp"]))  # timm allows float32 with AMP


def test_torchscript_trains_a_scripted_model_and_refuses_what_needs_hooks(tmp_path, capsys):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path, "--mixer", "cutmix"]
    args = parse(common + ["--torchscript", "--experiment", "scripted", "--model-ema"])
    state = setup(args)
    assert isinstance(state["model"], torch.jit.ScriptModule)
    runner.run(args, state)
    model = timm.create_model("cifar_resnet20", num_classes=4)
    load_checkpoint(model, str(tmp_path / "scripted" / "last.pth.tar"))  # a plain timm checkpoint
    assert float(read_csv(tmp_path / "scripted" / "summary.csv")[0]["train_loss"]) > 0
    # Teacher and spectral saliency need no hooks on the trained model.
    run_main(common + ["--torchscript", "--mixer", "saliencymix", "--saliency", "spectral", "--experiment", "spectral"])

    message = refused(common + ["--torchscript", "--mixer", "transformmix", "--saliency", "self"], capsys)
    assert "--torchscript: --saliency self reads the model's features through forward hooks" in message
    message = refused(common + ["--torchscript", "--transmix"], capsys)
    assert "--torchscript: --transmix reads the model's features through forward hooks" in message
    message = refused(common + ["--torchscript", "--mixer", "transformmix", "--saliency", "self", "--transmix"], capsys)
    assert "--torchscript: --saliency self and --transmix read the model's features" in message
    assert "--torchscript: timm cannot script a model with SyncBatchNorm" in refused(
        common + ["--torchscript", "--sync-bn"], capsys
    )


def test_aug_splits_jsd_loss_and_split_bn_train_with_mixer_none(tmp_path, capsys):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path]
    args = parse(common + ["--aug-splits", "3", "--jsd-loss", "--split-bn", "--experiment", "augmix"])
    state = setup(args)
    x, y = next(iter(state["train_loader"]))
    assert x.shape[0] == 3 * 8 and torch.equal(y[:8], y[8:16]) and torch.equal(y[:8], y[16:])  # clean, then 2 AugMix copies
    assert not torch.equal(x[:8], x[8:16])
    assert any(type(m).__name__ == "SplitBatchNorm2d" for m in state["model"].modules())
    # The loss is timm's JsdCrossEntropy on the labels, fed through the loop's unmixed soft targets.
    loss = build_train_loss(args)
    logits = torch.randn(24, 4)
    targets = NoMix(4, label_smoothing=args.smoothing).mix(x[:24], y).targets
    expected = JsdCrossEntropy(num_splits=3, smoothing=args.smoothing)(logits, y)
    torch.testing.assert_close(loss(logits, targets), expected)
    runner.run(args, state)
    assert float(read_csv(tmp_path / "augmix" / "summary.csv")[0]["train_loss"]) > 0

    message = refused(common + ["--aug-splits", "2", "--mixer", "cutmix"], capsys)
    assert "--aug-splits: each batch holds the clean image and 1 AugMix copy of it in separate rows; --mixer cutmix " \
        "would mix rows across those copies" in message
    assert "timm --mixup/--cutmix would mix rows across those copies" in refused(
        common + ["--aug-splits", "3", "--mixup", "0.8"], capsys
    )
    assert "--jsd-loss: compares the AugMix splits of each image; give --aug-splits N" in refused(
        common + ["--jsd-loss"], capsys
    )
    assert "--split-bn: BatchNorm per split needs --aug-splits N (N >= 2) or --resplit" in refused(
        common + ["--split-bn"], capsys
    )
    assert "--aug-splits: expected 0 (off) or >= 2 splits, got 1" in refused(common + ["--aug-splits", "1"], capsys)
    assert "--aug-splits: the splits are stacked into one batch by timm's prefetcher collate" in refused(
        common + ["--aug-splits", "2", "--no-prefetcher"], capsys
    )


def test_model_ema_force_cpu_keeps_the_average_on_the_cpu_unevaluated(tmp_path):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path, "--mixer", "cutmix", "--model-ema"]
    args = parse(common + ["--model-ema-force-cpu", "--experiment", "cpu"])
    state = setup(args)
    assert state["model_ema"].device == torch.device("cpu")
    runner.run(args, state)
    row = read_csv(tmp_path / "cpu" / "summary.csv")[0]
    assert "ema_top1" not in row and "eval_ema_top1" not in row and float(row["eval_top1"]) >= 0  # timm skips its eval
    checkpoint = read_checkpoint(tmp_path / "cpu" / "last.pth.tar")
    assert "state_dict_ema" in checkpoint
    # Without the flag the average follows the model's device and is evaluated.
    args = parse(common + ["--experiment", "device"])
    state = setup(args)
    assert state["model_ema"].device is None
    runner.run(args, state)
    assert "eval_ema_top1" in read_csv(tmp_path / "device" / "summary.csv")[0]


def _weights(path):
    return load_state_dict(str(path))


# Every kind of random draw a step and a loader make: dropout in the step, random erasing in the
# prefetcher and -j 0 transforms (all from the main process's streams), the mixer's generator or
# timm's Mixup (numpy's and Python's streams); timm's EMA and a per-update schedule.
RECOVERY = SYNTHETIC + FAST + ["--epochs", 2, "--drop", "0.2", "--reprob", "0.5", "--model-ema"]
RECOVERY += ["--opt", "adamw", "--lr", "0.002", "--sched-on-updates"]
TRANSFORMMIX = ["--mixer", "transformmix", "--mixer-mode", "saliency-softmax"]
TIMM_MIXUP = ["--mixup", "0.8", "--cutmix", "1.0"]


@pytest.mark.parametrize(
    "variant",
    [TRANSFORMMIX, TRANSFORMMIX + ["--no-prefetcher"], TIMM_MIXUP, TIMM_MIXUP + ["-j", "2"]],
    ids=["transformmix", "transformmix-no-prefetcher", "timm-mixup", "timm-mixup-2-workers"],
)
def test_recovery_interval_writes_recovery_points_and_resumes_mid_epoch_exactly(tmp_path, variant):
    common = RECOVERY + variant + ["--recovery-interval", 2, "--output", tmp_path]
    run_main(common + ["--experiment", "straight"])
    straight = tmp_path / "straight"
    # 4 batches per epoch, a recovery point after updates 1 and 3 (0-based); timm keeps the last two.
    assert sorted(p.name for p in straight.glob("recovery-*")) == ["recovery-1-1.pth.tar", "recovery-1-3.pth.tar"]
    point = read_checkpoint(straight / "recovery-1-1.pth.tar")
    assert (point["epoch"], point["recovery"]["step"], point["recovery"]["update"]) == (1, 1, 1)
    assert len(point["recovery"]["ranks"]) == 1

    # The same run stopped during epoch 0 (it wrote recovery-0-1 and -0-3), then resumed from recovery-0-1.
    args = parse(common + ["--experiment", "stopped"])
    state = setup(args)
    state["num_epochs"] = 1
    runner.run(args, state)
    stopped = tmp_path / "stopped"
    run_main(common + ["--experiment", "stopped", "--resume", stopped / "recovery-0-1.pth.tar"])
    a, b = _weights(straight / "last.pth.tar"), _weights(stopped / "last.pth.tar")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    rows_a, rows_b = read_csv(straight / "summary.csv"), read_csv(stopped / "summary.csv")
    assert [r["epoch"] for r in rows_b] == ["0", "1"]
    for key in ("lr", "train_loss", "eval_loss", "eval_top1", "eval_ema_loss"):  # the same floats, to the last digit
        assert [r[key] for r in rows_b] == [r[key] for r in rows_a], key

    # Resuming from the point in epoch 1 ends in the same place too.
    run_main(common + ["--experiment", "late", "--resume", straight / "recovery-1-1.pth.tar"])
    c = _weights(tmp_path / "late" / "last.pth.tar")
    for name in a:
        torch.testing.assert_close(c[name], a[name], rtol=0, atol=0, msg=name)
    assert read_csv(tmp_path / "late" / "summary.csv")[-1]["train_loss"] == rows_a[-1]["train_loss"]


def test_recovery_resume_without_the_streams_would_differ(tmp_path, monkeypatch):
    # The check above can fail: skipping the trained batches without putting the streams back changes the run.
    common = RECOVERY + TIMM_MIXUP + ["--recovery-interval", 2, "--output", tmp_path]
    run_main(common + ["--experiment", "straight"])
    monkeypatch.setattr("tmix_aug.train.loop.restore_streams", lambda state, device: None)
    run_main(common + ["--experiment", "late", "--resume", tmp_path / "straight" / "recovery-1-1.pth.tar"])
    a, c = _weights(tmp_path / "straight" / "last.pth.tar"), _weights(tmp_path / "late" / "last.pth.tar")
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_recovery_point_of_another_process_count_is_refused(tmp_path, capsys):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--recovery-interval", 1, "--output", tmp_path]
    run_main(common + ["--experiment", "run"])
    path = tmp_path / "run" / "recovery-0-3.pth.tar"
    checkpoint = read_checkpoint(path)
    checkpoint["recovery"]["ranks"] *= 2
    torch.save(checkpoint, path)
    message = refused(common + ["--experiment", "run", "--resume", path], capsys)
    assert "is a recovery point of 2 process(es); resume it with the same number (got 1)" in message
    message = refused(common + ["--experiment", "run", "--resume", tmp_path / "run" / "recovery-0-2.pth.tar", "--start-epoch", "1"], capsys)
    assert "--start-epoch: " in message and "is a recovery point inside epoch 0, which it continues" in message


def test_train_batches_per_epoch_gives_exactly_n_steps(tmp_path):
    # adamw counts its steps per parameter: 2 epochs of N batches make 2N steps (32 images / 8 = 4 batches otherwise).
    common = SYNTHETIC + FAST + ["--epochs", 2, "--opt", "adamw", "--mixer", "cutmix", "--output", tmp_path]
    for batches, accumulate, steps in ((3, 1, 6), (6, 1, 12), (3, 2, 4)):
        name = f"n{batches}a{accumulate}"
        args = parse(common + ["--train-batches-per-epoch", batches, "--grad-accum-steps", accumulate, "--experiment", name])
        state = setup(args)
        assert len(state["train_loader"]) == batches
        runner.run(args, state)
        optimizer = read_checkpoint(tmp_path / name / "last.pth.tar")["optimizer"]
        assert {int(s["step"]) for s in optimizer["state"].values()} == {steps}, name


def test_train_img_sizes_mix_batches_of_each_size(tmp_path):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "transformmix", "--mixer-mode", "saliency-softmax"]
    common += ["--train-img-sizes", 16, 24, "--train-batch-sizes", 8, 4, "--output", tmp_path]
    args = parse(common + ["--experiment", "sizes", "--variable-batch-loss-scale", "linear"])
    state = setup(args)
    shapes = {(x.shape[0], x.shape[-1]) for x, _ in state["train_loader"]}
    assert shapes == {(8, 16), (4, 24)}
    assert state["batch_size_reference"] == pytest.approx(6.0)  # uniform over the two choices
    runner.run(args, state)
    assert float(read_csv(tmp_path / "sizes" / "summary.csv")[0]["train_loss"]) > 0
    # Without --lr, timm scales --lr-base by the schedule's average batch.
    args = parse([a for a in common if a not in ("--lr", "0.05")] + ["--experiment", "lr", "--lr-base", "0.256"])
    args.lr = None
    setup(args)
    assert args.lr == pytest.approx(0.256 * 6.0 / 256)
    scale = variable_loss_scale(parse(common + ["--variable-batch-loss-scale", "sqrt"]), 6.0)
    assert scale(4) == pytest.approx((4 / 6) ** 0.5)
    assert variable_loss_scale(parse(common), 6.0) is None  # timm's default: none


def test_save_images_writes_the_mixed_batches(tmp_path):
    run_main(SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--save-images", "--output", tmp_path, "--experiment", "run"])
    pictures = sorted(p.name for p in (tmp_path / "run").glob("train-batch-*.jpg"))
    assert pictures == [f"train-batch-{i}.jpg" for i in range(4)]  # --log-interval 1: every update
    with Image.open(tmp_path / "run" / "train-batch-0.jpg") as picture:
        assert picture.size == (8 * 16, 16)  # torchvision's grid: 8 images of 16 px in a row
    # --overwrite removes them with the rest of the run
    run_main(SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--output", tmp_path, "--experiment", "run", "--overwrite"])
    assert not list((tmp_path / "run").glob("train-batch-*.jpg"))


def test_tta_averages_each_group_of_copies():
    args = parse(["--tta", "2", "--no-prefetcher", "--no-progress"])
    args.distributed, args.rank = False, 0
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images = torch.randn(8, 3, 2, 2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 1, 1])
    metrics = validate(model, [(images[:4], labels[:4]), (images[4:], labels[4:])], args, torch.device("cpu"))
    with torch.no_grad():
        averaged = model(images).view(4, 2, 3).mean(dim=1)
    expected = torch.nn.functional.cross_entropy(averaged, labels[::2])
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["top1"] == pytest.approx(100 * (averaged.argmax(1) == labels[::2]).float().mean().item())
    args.tta = 0
    plain = validate(model, [(images, labels)], args, torch.device("cpu"))
    assert plain["loss"] != pytest.approx(metrics["loss"])


def test_tta_runs_and_refuses_groups_that_do_not_fit(tmp_path, capsys):
    common = SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--output", tmp_path]
    run_main(common + ["--tta", 2, "--experiment", "tta"])  # 8 evaluation images in batches of 8
    assert float(read_csv(tmp_path / "tta" / "summary.csv")[0]["eval_loss"]) > 0
    message = refused(common + ["--tta", 3], capsys)
    assert "--tta: the evaluation batch (8) and the evaluation set (8 images) must be multiples of 3" in message


def test_log_wandb_without_wandb_warns_and_trains(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with caplog.at_level(logging.WARNING, logger="tmix_aug.train"):
        run_main(SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--log-wandb", "--output", tmp_path, "--experiment", "run"])
    assert "--log-wandb: the wandb package is not installed" in caplog.text
    assert len(read_csv(tmp_path / "run" / "summary.csv")) == 1


def test_log_wandb_logs_each_epoch_when_installed(tmp_path, monkeypatch, capsys):
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, row):
            calls["log"].append(row)

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    common = SYNTHETIC + FAST + ["--epochs", 2, "--mixer", "cutmix", "--output", tmp_path]
    run_main(common + ["--log-wandb", "--wandb-project", "p", "--wandb-tags", "a", "b", "--experiment", "run"])
    (init_kwargs,) = calls["init"]
    assert (init_kwargs["project"], init_kwargs["name"], init_kwargs["tags"]) == ("p", "run", ["a", "b"])
    assert init_kwargs["config"]["mixer"] == "cutmix" and init_kwargs["resume"] is None
    assert [row["epoch"] for row in calls["log"]] == [0, 1] and calls["finish"] == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert calls["log"][1]["eval_top1"] == summary["epochs"][1]["eval_top1"]
    assert "--wandb-resume-id: continues the wandb run of a resumed training; give --resume too" in refused(
        common + ["--log-wandb", "--wandb-resume-id", "x", "--experiment", "other"], capsys
    )


def test_naflex_loader_is_refused_with_the_reason(capsys, tmp_path):
    message = refused(SYNTHETIC + FAST + ["--epochs", 1, "--output", tmp_path, "--naflex-loader"], capsys)
    assert f"--naflex-loader: not supported by tmix-train: {NOT_SUPPORTED['naflex_loader']}" in message
    assert "NaFlex batches are dicts of patch sequences of varying length, not (N, C, H, W) images" in message
    assert set(NOT_SUPPORTED) == {"naflex_loader"}


def test_recovery_resume_under_ddp_continues_every_process_exactly(tmp_path):
    # Two CPU processes: the recovery point holds both processes' streams; resuming from it ends where the straight run ends.
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tmix_aug.train"]
    command += [str(a) for a in RECOVERY + TRANSFORMMIX] + ["--synthetic-samples", "64", "--device", "cpu"]
    command += ["--recovery-interval", "2", "--output", str(tmp_path)]
    for extra in (["--experiment", "straight"], ["--experiment", "late", "--resume", str(tmp_path / "straight" / "recovery-1-1.pth.tar")]):
        done = subprocess.run(command + extra, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    point = read_checkpoint(tmp_path / "straight" / "recovery-1-1.pth.tar")["recovery"]
    assert len(point["ranks"]) == 2 and not torch.equal(point["ranks"][0]["generator"], point["ranks"][1]["generator"])
    a, c = _weights(tmp_path / "straight" / "last.pth.tar"), _weights(tmp_path / "late" / "last.pth.tar")
    for name in a:
        torch.testing.assert_close(c[name], a[name], rtol=0, atol=0, msg=name)
    rows = [read_csv(tmp_path / name / "summary.csv")[-1] for name in ("straight", "late")]
    assert rows[0]["train_loss"] == rows[1]["train_loss"] and rows[0]["eval_top1"] == rows[1]["eval_top1"]


def test_kd_model_name_adds_timms_logit_distillation_on_the_mixed_batch(tmp_path, monkeypatch, capsys):
    # timm's teacher comes with pretrained weights from the Hub; here a fixed random one stands in (no downloads).
    def teacher(args, num_classes, in_chans):
        torch.manual_seed(123)
        return timm.create_model("cifar_resnet20", num_classes=num_classes, in_chans=in_chans)

    monkeypatch.setattr("tmix_aug.train.model.kd_teacher_model", teacher)
    common = SYNTHETIC + FAST + ["--epochs", 1, "--mixer", "cutmix", "--output", tmp_path]
    kd = ["--kd-model-name", "cifar_resnet20", "--kd-temperature", "2", "--task-loss-weight", "0.25"]
    args = parse(common + kd + ["--experiment", "kd"])
    state = setup(args)
    distill = state["distill"]
    assert (distill.task_loss_weight, distill.distill_loss_weight, distill.temperature) == (0.25, 0.75, 2.0)
    # The loss of a mixed batch: timm's weighting of this loop's loss and the KL to the teacher at temperature 2.
    x = torch.randn(8, 3, 16, 16)
    result = state["mixer"].mix(x, torch.arange(8) % 4, generator=torch.Generator().manual_seed(0))
    student, frozen = state["model"].eval(), distill.teacher.model
    with torch.no_grad():
        got = distill(result.images, result.targets)["loss"]
        logits, teacher_logits = student(result.images), frozen(result.images)  # same mean and std: no renormalising
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(logits / 2, -1), torch.log_softmax(teacher_logits / 2, -1), reduction="batchmean", log_target=True
        )
        expected = 0.25 * build_train_loss(args)(logits, result.targets) + 0.75 * 4 * kl
    torch.testing.assert_close(got, expected)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    runner.run(args, state)
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())  # the teacher is frozen
    kd_loss = float(read_csv(tmp_path / "kd" / "summary.csv")[0]["train_loss"])
    run_main(common + ["--experiment", "plain"])
    assert kd_loss != float(read_csv(tmp_path / "plain" / "summary.csv")[0]["train_loss"])

    assert "--kd-distill-type: feature distillation adds trainable projection layers" in refused(
        common + kd + ["--kd-distill-type", "feature"], capsys
    )
    assert "--kd-model-name: not with --transmix: TransMix relabels the targets" in refused(common + kd + ["--transmix"], capsys)
