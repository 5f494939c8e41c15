"""The accuracy-study harness (benchmarks/accuracy.py): one tiny synthetic cell end to end,
resume planning, and the aggregate maths."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def acc():
    spec = importlib.util.spec_from_file_location("accuracy_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    module.register(
        module.Protocol(
            name="tiny",
            description="synthetic, 2 epochs",
            dataset="synthetic",
            train_split="train",
            monitor_split="val",
            test_split="val",
            train_args=(
                "--model", "cifar_resnet20", "--img-size", "16", "--epochs", "2", "--warmup-epochs", "0",
                "--lr", "0.05", "-b", "16", "--synthetic-samples", "32", "--synthetic-classes", "4",
                "--smoothing", "0", "-j", "0", "--no-progress", "--checkpoint-hist", "1", "--mix-grid", "",
            ),
            teacher_args=("--saliency", "spectral"),
            mixer="cifar10-resnet20",
        )
    )
    yield module
    del module.PROTOCOLS["tiny"]
    sys.modules.pop(spec.name, None)


def test_cell_runs_records_and_is_skipped_on_rerun(acc, tmp_path):
    results = tmp_path / "accuracy.jsonl"
    cell = acc.Cell("tiny", "mixup", 0)
    assert acc.plan(cell, tmp_path, results) == "start"
    record = acc.run_cell(cell, tmp_path, results, log=lambda message: None)

    lines = results.read_text().splitlines()
    assert len(lines) == 1
    stored = json.loads(lines[0])
    assert stored == json.loads(json.dumps(record, sort_keys=True))
    assert (stored["protocol"], stored["method"], stored["seed"]) == ("tiny", "mixup", 0)
    assert stored["command"].startswith("tmix-train ") and "--mixer mixup" in stored["command"]
    assert "--seed 0" in stored["command"]
    assert stored["epochs"] == 2 and stored["curves"]["epoch"] == [0, 1]
    assert len(stored["curves"]["monitor_top1"]) == 2 and len(stored["curves"]["train_loss"]) == 2
    assert stored["test_images"] == 8 and stored["train_images"] == 32  # a quarter of 32 for eval
    for key in ("test_top1", "test_top5", "train_clean_top1", "monitor_best_top1"):
        assert 0.0 <= stored[key] <= 100.0
    assert stored["test_top5"] >= stored["test_top1"]
    assert stored["monitor_best_top1"] == max(stored["curves"]["monitor_top1"])
    assert stored["final_train_loss"] == stored["curves"]["train_loss"][-1]
    assert stored["wall_s"] > 0 and stored["cpu_s"] > 0 and stored["sittings"] == 1
    assert stored["untimed_sittings"] == 0
    assert stored["cam_map_hw"] is None  # Mixup reads no saliency
    assert {"torch", "timm", "tmix_aug", "python"} <= set(stored["versions"])

    # a rerun does nothing: no new line, no training
    assert acc.plan(cell, tmp_path, results) == "skip"
    assert acc.run_cell(cell, tmp_path, results) is None
    assert len(results.read_text().splitlines()) == 1


def test_a_sitting_killed_before_it_was_timed_is_counted_as_untimed(acc, tmp_path):
    results = tmp_path / "accuracy.jsonl"
    cell = acc.Cell("tiny", "none", 2)
    folder = cell.folder(tmp_path)
    # an earlier sitting killed outright (only its marker), and one timed by an older harness (no marker)
    acc.append_record(folder / "sittings.jsonl", {"action": "start", "began": "2026-01-01 00:00:00 UTC"})
    acc.append_record(folder / "sittings.jsonl", {"action": "resume", "wall_s": 5.0, "cpu_s": 4.0, "returncode": None})
    record = acc.run_cell(cell, tmp_path, results, log=lambda message: None)
    assert record["untimed_sittings"] == 1 and record["sittings"] == 2
    assert record["wall_s"] > 5.0 and record["cpu_s"] > 4.0
    table = acc.write_markdown([record], tmp_path / "accuracy.md")
    assert "| >= " in table


def test_plan_resumes_records_and_refuses_changed_flags(acc, tmp_path):
    results = tmp_path / "accuracy.jsonl"
    cell = acc.Cell("tiny", "none", 1)
    folder = cell.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps({"spec": acc.spec_hash(cell)}))
    (folder / "last.pth.tar").write_bytes(b"")
    summary = {"epochs": [{"epoch": 0}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert acc.plan(cell, tmp_path, results) == "resume"
    summary["epochs"].append({"epoch": 1})  # the protocol has 2 epochs: trained, not scored
    (folder / "summary.json").write_text(json.dumps(summary))
    assert acc.plan(cell, tmp_path, results) == "record"

    (folder / "cell.json").write_text(json.dumps({"spec": "other"}))
    with pytest.raises(ValueError, match="other flags"):
        acc.plan(cell, tmp_path, results)
    acc.append_record(results, {"protocol": "tiny", "method": "none", "seed": 1, "spec": "older"})
    with pytest.raises(ValueError, match="recorded with other flags"):
        acc.plan(cell, tmp_path, results)


def _record(method, seed, top1, train_top1=99.0):
    return {
        "protocol": "tiny", "method": method, "seed": seed, "test_top1": top1, "test_top5": top1 + 10,
        "monitor_best_top1": top1 + 1, "train_clean_top1": train_top1, "final_train_loss": 0.5,
        "cpu_s": 60.0, "command": "tmix-train ...", "curves": {"monitor_top1": [1.0, top1], "train_loss": [2.0, 1.0]},
    }


def test_aggregate_mean_and_sample_std(acc):
    records = [_record("mixup", s, v) for s, v in enumerate((50.0, 52.0, 57.0))]
    stats = acc.aggregate(records)[("tiny", "mixup")]
    assert stats["n"] == 3 and stats["seeds"] == [0, 1, 2]
    mean, std = stats["test_top1"]
    assert mean == pytest.approx(53.0)
    assert std == pytest.approx(math.sqrt((9 + 1 + 16) / 2))  # n - 1 in the denominator
    assert stats["gap"][0] == pytest.approx(99.0 - 53.0)
    assert acc.mean_std([4.0]) == (4.0, None)
    with pytest.raises(ValueError, match="seed recorded twice"):
        acc.aggregate(records + [_record("mixup", 0, 1.0)])


def test_verdict_needs_best_baseline_plus_its_std_and_a_lead_beyond_the_spread(acc):
    records = [_record("mixup", s, v) for s, v in enumerate((50.0, 52.0, 54.0))]  # 52 ± 2
    records += [_record("cutmix", s, v) for s, v in enumerate((40.0, 41.0, 42.0))]  # 41 ± 1
    records += [_record("transformmix-self", s, v) for s, v in enumerate((51.0, 52.0, 53.0))]  # 52 ± 1
    records += [_record("saliency-softmax-teacher", s, v) for s, v in enumerate((53.0, 54.0, 55.0))]  # 54 ± 1
    records += [_record("transformmix-teacher", s, v) for s, v in enumerate((55.0, 55.5, 56.0))]  # 55.5 ± 0.5
    stats = acc.aggregate(records)
    assert acc.verdict(stats, "tiny", "transformmix-self") == "misses (needs 54.00); lead +0.00 vs spread 2.00: no claim"
    # on the bar exactly, but a lead of 2 is not beyond Mixup's spread of 2
    assert acc.verdict(stats, "tiny", "saliency-softmax-teacher") == (
        "meets (needs 54.00); lead +2.00 vs spread 2.00: no claim"
    )
    assert acc.verdict(stats, "tiny", "transformmix-teacher").endswith("lead +3.50 vs spread 2.00: better beyond the spread")
    # no verdict until the method and both baselines have 3 seeds
    two_seeds_of_ours = [r for r in records if not (r["method"] == "transformmix-teacher" and r["seed"] == 2)]
    assert acc.verdict(acc.aggregate(two_seeds_of_ours), "tiny", "transformmix-teacher") is None
    two_seeds_of_cutmix = [r for r in records if not (r["method"] == "cutmix" and r["seed"] == 2)]
    assert acc.verdict(acc.aggregate(two_seeds_of_cutmix), "tiny", "transformmix-teacher") is None


def test_balanced_pick_is_seeded_and_balanced(acc):
    files = {c: [f"/d/{c}/{i:04d}.jpg" for i in range(20)] for c in ("a", "b")}
    pick = acc._balanced_pick(files, 5, seed=3)
    assert {c: len(v) for c, v in pick.items()} == {"a": 5, "b": 5}
    assert pick == acc._balanced_pick(files, 5, seed=3)
    assert pick != acc._balanced_pick(files, 5, seed=4)
    with pytest.raises(ValueError, match="per_class"):
        acc._balanced_pick(files, 21, seed=0)


def test_markdown_rewrites_only_the_tables(acc, tmp_path):
    page = tmp_path / "accuracy.md"
    page.write_text(f"# Results\n\nprose before\n\n{acc.TABLES_BEGIN}\nold table\n{acc.TABLES_END}\n\nprose after\n")
    records = [_record(m, s, v) for m in ("none", "mixup") for s, v in enumerate((50.0, 54.0))]
    acc.write_markdown(records, page)
    text = page.read_text()
    assert text.startswith("# Results\n\nprose before\n\n") and text.endswith("\n\nprose after\n")
    assert "old table" not in text
    assert "| Mixup | 2 (0, 1) | 52.00 ± 2.83 |" in text  # sample std of 50 and 54
    assert "| no mixing | 2 (0, 1) |" in text
    page.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        acc.write_markdown(records, page)
