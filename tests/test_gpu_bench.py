"""The python part of benchmarks/gpu.sh on a CPU: timing helper and the results file."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_median_ms_calls_warmup_then_interleaved_repeats(bench):
    calls = []
    times = bench.median_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2,
                            device=torch.device("cpu"))
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())


def test_every_figure_is_written_with_the_device_name(bench, tmp_path):
    recorder = bench.Recorder(tmp_path, torch.device("cpu"))
    bench._table(recorder, "Mixing", {"timm Mixup": 2.0, "ours": 5.0}, "timm Mixup", {"size": 32})
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["timm Mixup", "ours"]
    assert [r["ratio"] for r in rows] == [1.0, 2.5]
    assert all(r["device"].startswith("CPU") and r["size"] == 32 and "torch" in r for r in rows)
    text = (tmp_path / "gpu.md").read_text()
    assert "| ours | 5.000 | 2.50x |" in text and rows[0]["device"] in text


def test_cifar_refuses_a_folder_without_splits(bench, tmp_path):
    recorder = bench.Recorder(tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="--data-dir"):
        bench.cifar(recorder, torch.device("cpu"), tmp_path, 1, 10.0, 0, tmp_path, True)
