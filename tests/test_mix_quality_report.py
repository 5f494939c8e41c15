"""benchmarks/mix_quality.py's paired table: every method against the first mixer, image by image."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mix_quality.py"


@pytest.fixture(scope="module")
def mix_quality():
    spec = importlib.util.spec_from_file_location("mix_quality_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(losses, both):
    return {"cross_entropy_per_image": torch.tensor(losses), "top2_both_per_pair": torch.tensor(both)}


def test_paired_table_pools_the_draws_and_marks_only_leads_beyond_twice_the_error(mix_quality):
    rows = [
        {"mine": draw([1.0, 2.0], [True, False]), "worse": draw([1.5, 2.4], [False, False]), "noisy": draw([0.0, 3.1], [True, True])},
        {"mine": draw([1.0, 1.0], [True, True]), "worse": draw([1.6, 1.5], [False, True]), "noisy": draw([2.0, 0.5], [False, True])},
    ]
    lines = mix_quality.paired_table(rows, ["mine", "worse", "noisy"])
    assert "(4 mixed images, 4 of two different classes, pooled over the draws)" in lines[1]
    worse, noisy = lines[-2].split(" | "), lines[-1].split(" | ")
    # worse - mine: cross-entropy +0.5, +0.4, +0.6, +0.5 -> mean +0.5, std 0.0816, error 0.0408: a lead
    assert worse[1] == "+0.5000 ± 0.0408" and worse[2] == "yes"
    # top-2: -1, 0, -1, 0 -> mean -50 points, error 28.87: not beyond twice the error
    assert worse[3] == "-50.00 ± 28.87" and worse[4].startswith("no")
    assert noisy[2] == "no"


def test_same_batch_saliency_runs_the_source_once_per_batch(mix_quality):
    calls = []

    def source(images, targets):
        calls.append(images.shape[0])
        return images.mean(1) + targets.argmax(1)[:, None, None]

    shared = mix_quality.SameBatchSaliency(source)
    images, targets = torch.rand(3, 3, 4, 4), torch.eye(3)
    first = shared(images, targets)
    assert shared(images.clone(), targets.clone()) is first and calls == [3]
    other = shared(images[:2], targets[:2])
    assert calls == [3, 2] and torch.equal(other, source(images[:2], targets[:2]))
    shared(images[:2], targets[[1, 0]])  # other targets pick other CAM classes: computed anew
    assert calls == [3, 2, 2, 2]
