"""tmix-train takes timm train.py command lines: every flag, -c config files, args.yaml, timm's Mixup and loss."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from tmix_aug import train
from tmix_aug.train.batch_mixer import build_mixer, TimmMixup
from tmix_aug.train.data import build_datasets
from tmix_aug.train.flag_checks import check_args, NOT_SUPPORTED
from tmix_aug.train.flags import parse_args
from tmix_aug.train.losses import build_train_loss
from tmix_aug.baselines import NoMix

FLAGS_FILE = Path(__file__).parent / "data" / "timm_train_flags.txt"
TIMM_FLAGS = [
    line.split("\t") for line in FLAGS_FILE.read_text().splitlines() if line and not line.startswith("#")
]
# Defaults that differ from timm's on purpose (README, "Train with a mixer").
OWN_DEFAULTS = {"--workers", "--device"}
BASE = ["--dataset", "synthetic", "--model", "cifar_resnet20", "-b", "8"]


def parse(argv):
    args, _ = parse_args([str(a) for a in argv])
    return args


def test_the_fixture_lists_timm_train_flags():
    names = [flag for flag, _, _ in TIMM_FLAGS]
    assert len(names) == len(set(names)) > 170
    for flag in ("--mixup", "--cutmix", "--mixup-off-epoch", "--grad-accum-steps", "--torchcompile", "--config"):
        assert flag in names


PARSER = train.build_parser()


@pytest.mark.parametrize("flag, example, default", TIMM_FLAGS, ids=[f[0] for f in TIMM_FLAGS])
def test_every_timm_flag_is_accepted_with_timm_default(flag, example, default):
    action = next(a for a in PARSER._actions if flag in a.option_strings)
    if flag not in OWN_DEFAULTS:
        assert action.default == eval(default), f"{flag}: default {action.default!r}, timm's {default}"
    if flag == "--config":
        return  # reads a file: test_config_file_sets_defaults_and_the_command_line_wins
    args = parse(BASE + [flag, *example.split()])
    try:
        check_args(args)
    except ValueError as error:  # a flag tmix-train refuses says which one and why
        message = str(error)
        assert message.startswith(flag) or message.startswith("--"), message
        assert "unrecognized" not in message
        dest = action.dest
        if dest in NOT_SUPPORTED:
            assert f"not supported by tmix-train: {NOT_SUPPORTED[dest]}" in message


def test_unsupported_flags_say_why_and_defaults_pass():
    check_args(parse(BASE))
    assert set(NOT_SUPPORTED) == {"naflex_loader"}  # the rest is implemented
    with pytest.raises(ValueError, match="--naflex-loader: not supported by tmix-train: NaFlex batches are dicts of patch sequences"):
        check_args(parse(BASE + ["--naflex-loader"]))
    check_args(parse(BASE + ["--grad-accum-steps", "1", "--wandb-project", "p"]))  # timm's defaults, inert


# The fixture's example value of each flag tmix-train implements beyond the basic loop passes the
# checks alone (test_train_timm_extras.py tests what each does); those that need a partner say so.
ALONE_OK = ["--torchscript", "--model-dtype bfloat16", "--model-ema-force-cpu", "--recovery-interval 3", "--save-images",
            "--tta 3", "--log-wandb", "--train-img-sizes 8 16", "--train-batches-per-epoch 3", "--aug-splits 3",
            "--kd-model-name x"]
NEEDS_PARTNER = {"--jsd-loss": "--jsd-loss: compares the AugMix splits", "--split-bn": "--split-bn: BatchNorm per split needs"}


@pytest.mark.parametrize("flag", ALONE_OK)
def test_implemented_timm_flags_pass_the_checks(flag):
    check_args(parse(BASE + flag.split()))


@pytest.mark.parametrize("flag", list(NEEDS_PARTNER))
def test_timm_flags_needing_a_partner_say_which(flag):
    with pytest.raises(ValueError, match=NEEDS_PARTNER[flag]):
        check_args(parse(BASE + [flag]))
    check_args(parse(BASE + [flag, "--aug-splits", "3"]))


def test_workers_default_fits_the_machine():
    assert parse(BASE).workers == min(4, os.cpu_count() or 1)


def test_config_file_sets_defaults_and_the_command_line_wins(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"mixup": 0.8, "cutmix": 1.0, "mixup_off_epoch": 3, "smoothing": 0.2, "batch_size": 16, "sched": "step"}))
    args = parse(["-c", config] + BASE)  # BASE sets -b 8
    assert (args.mixup, args.cutmix, args.mixer_off_epoch, args.smoothing, args.sched) == (0.8, 1.0, 3, 0.2, "step")
    assert args.batch_size == 8
    for content, words in (
        ({"mixupp": 1}, "unknown key 'mixupp'"),
        ({"epochs": "ten"}, "epochs expected a number, got 'ten'"),
        ({"amp_dtype": "float64"}, "amp_dtype expected one of"),
        ([1, 2], "must hold a mapping"),
    ):
        config.write_text(yaml.safe_dump(content))
        with pytest.raises(SystemExit):
            parse(["-c", config])
    with pytest.raises(SystemExit):
        parse(["--config", tmp_path / "missing.yaml"])


def test_config_errors_name_file_and_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("mixupp: 1\n")
    with pytest.raises(SystemExit):
        parse(["-c", config])
    assert f"{config}: unknown key 'mixupp'" in capsys.readouterr().err


def test_timm_mixup_flags_give_timm_mixup_exactly():
    args = parse(BASE + ["--mixup", "0.8", "--cutmix", "1.0", "--mixup-prob", "0.7", "--mixup-switch-prob", "0.3",
                         "--mixup-mode", "elem", "--smoothing", "0.1"])  # fmt: skip
    check_args(args)
    args.rank = 0
    mixer = build_mixer(args, 10, torch.nn.Identity(), torch.device("cpu"))
    assert isinstance(mixer, TimmMixup)
    # what timm's train.py builds for these flags
    reference = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=0.7, switch_prob=0.3, mode="elem",
                      label_smoothing=0.1, num_classes=10)  # fmt: skip
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
    for seed in range(3):
        np.random.seed(seed), random.seed(seed)
        expected_images, expected_targets = reference(x.clone(), y)
        np.random.seed(seed), random.seed(seed)
        out = mixer.mix(x.clone(), y)
        assert torch.equal(out.images, expected_images) and torch.equal(out.targets, expected_targets)
    assert not torch.equal(out.images, x)


def test_loss_is_timms_choice():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    args = parse(BASE + ["--smoothing", "0.1"])
    targets = NoMix(5, label_smoothing=0.1).mix(torch.rand(6, 3, 4, 4), labels).targets
    loss = build_train_loss(args)
    assert isinstance(loss, SoftTargetCrossEntropy)
    assert torch.allclose(loss(logits, targets), LabelSmoothingCrossEntropy(0.1)(logits, labels))
    bce = build_train_loss(parse(BASE + ["--bce-loss", "--bce-pos-weight", "2"]))
    assert isinstance(bce, BinaryCrossEntropy)
    reference = BinaryCrossEntropy(smoothing=0.1, pos_weight=2.0)
    assert torch.allclose(bce(logits, targets), reference(logits, labels))


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--mixup", "0.8", "--mixer", "cutmix"], "--mixer: --mixer cutmix replaces timm's --mixup/--cutmix"),
        (["--cutmix", "1", "--transmix"], "--transmix: needs the masks of a --mixer"),
        (["--mixup", "0.8", "-b", "7"], "--batch-size: timm's Mixup pairs each batch"),
        (["--mixup-mode", "elem"], "--mixup-mode: configures timm's --mixup/--cutmix, which are off"),
        (["--mixer", "transformmix", "--mixer-mode", "bogus"], "--mixer-mode: without --mixer-path"),
        (["--lr", "nan"], "--lr: expected a finite number >= 0"),
        (["--mixer-alpha", "inf"], "--mixer-alpha: expected a finite number >= 0"),
        (["--class-map", "map.txt"], "--class-map: used by image folders and timm datasets"),
    ],
)
def test_mixer_and_timm_mixup_combinations(extra, words):
    with pytest.raises(ValueError) as info:
        check_args(parse(BASE + extra))
    assert words in str(info.value)


def test_transformmix_alone_picks_the_bundled_mixer_for_the_image_size(caplog):
    args = parse(BASE + ["--mixer", "transformmix", "--img-size", "16"])
    check_args(args)
    args.rank = 0
    with caplog.at_level("INFO", logger="tmix_aug.train"):
        mixer = build_mixer(args, 4, torch.nn.Identity(), torch.device("cpu"))
    assert args.mixer_path == "cifar10-resnet20-s16" and mixer.k == 2 and mixer.size == 16
    assert "using the bundled mixer 'cifar10-resnet20-s16' (made for 32 px images; these are 16 px)" in caplog.text


def test_a_runtime_error_is_not_a_usage_error(monkeypatch):
    def failing_setup(args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("tmix_aug.train.runner.setup", failing_setup)
    with pytest.raises(RuntimeError, match="out of memory"):
        train.train_from_args(BASE + ["--epochs", "1"])


def test_timm_command_line_runs_and_writes_args_yaml(tmp_path):
    argv = BASE + ["--synthetic-samples", "32", "--synthetic-classes", "4", "--img-size", "16", "-j", "0",
                   "--warmup-epochs", "0", "--lr", "0.05", "--no-progress", "--epochs", "2", "--mixup", "0.8",
                   "--cutmix", "1.0", "--mixup-off-epoch", "1", "--gp", "avg", "--layer-decay", "0.9",
                   "--lr-cycle-mul", "1.0", "--bce-loss", "--head-init-bias", "0", "--opt-kwargs", "nesterov=True",
                   "--output", str(tmp_path), "--experiment", "timm"]  # fmt: skip
    summary = train.train_from_args(argv)
    assert [row["epoch"] for row in summary["epochs"]] == [0, 1]
    run = tmp_path / "timm"
    saved = yaml.safe_load((run / "args.yaml").read_text())
    assert (saved["mixup"], saved["cutmix"], saved["mixer_off_epoch"], saved["gp"]) == (0.8, 1.0, 1, "avg")
    again, _ = parse_args(["-c", str(run / "args.yaml")])  # a run's args.yaml is a config file
    assert vars(again) == {**vars(parse(argv)), "config": str(run / "args.yaml")}
    assert not (run / "mix.png").exists()  # timm's Mixup reports no masks to draw


def test_dataset_flags_reach_timm_for_an_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "validation"):
        for name in ("apple", "banana"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    (tmp_path / "classes.txt").write_text("banana\napple\n")
    args = parse(["--data-dir", tmp_path, "--class-map", tmp_path / "classes.txt", "--input-img-mode", "L"])
    check_args(args)
    train_set, eval_set, num_classes = build_datasets(args)
    assert num_classes == 2
    for dataset in (train_set, eval_set):
        assert dataset.reader.class_to_idx == {"banana": 0, "apple": 1}  # the map's order, not the folders'
        assert dataset[0][0].mode == "L" and dataset[0][1] == 1
