"""Weights: save/load round trip, bundled/local/Hub resolution (offline), config and file errors."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import blob_batch

from tmix_aug import TransformMix, hub


def searched(seed=0, **kwargs):
    torch.manual_seed(seed)
    mixer = TransformMix(5, size=16, **kwargs)
    for parameter in mixer.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return mixer


def mix(mixer, seed=0):
    x, y = blob_batch()
    return mixer.mix(x, y, generator=torch.Generator().manual_seed(seed))


def test_save_then_load_is_bit_identical(tmp_path):
    mixer = searched(k=3, mode="transformmix")
    mixer.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["k"] == 3 and config["size"] == 16 and "num_classes" not in config and "alpha" not in config
    loaded = TransformMix.from_pretrained(tmp_path / "m", num_classes=5)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    a, b = mix(mixer), mix(loaded)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.thetas, b.thetas)
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tmix_aug") and "| k | 3 |" in card


def test_runtime_options_are_arguments_not_weights(tmp_path):
    searched().save_pretrained(tmp_path)
    loaded = TransformMix.from_pretrained(tmp_path, num_classes=7, alpha=0.5, label_smoothing=0.1, prob=0.5)
    assert (loaded.num_classes, loaded.alpha, loaded.label_smoothing, loaded.prob) == (7, 0.5, 0.1, 0.5)
    with pytest.raises(ValueError, match="k: fixed by the weights"):
        TransformMix.from_pretrained(tmp_path, num_classes=5, k=3)
    with pytest.raises(TypeError, match="num_classes is required"):
        TransformMix.from_pretrained(tmp_path)


def test_no_temporary_files_left_behind(tmp_path):
    searched().save_pretrained(tmp_path)
    searched(1).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def edit_config(directory: Path, change):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.update(dropout=0.1), "unknown fields ['dropout']"),
        (lambda c: c.pop("size"), "missing fields ['size']"),
        (lambda c: c.update(format="something-else"), "expected format 'tmix_aug.transformmix'"),
        (lambda c: c.update(mpn_channels=16), "weights do not match the architecture"),
    ],
)
def test_bad_config_is_named(tmp_path, change, words):
    searched().save_pretrained(tmp_path)
    edit_config(tmp_path, change)
    with pytest.raises(ValueError) as info:
        TransformMix.from_pretrained(tmp_path, num_classes=5)
    message = str(info.value)
    assert words in message
    assert "config.json" in message or "model.safetensors" in message


def test_format_version_1_loads_with_its_unbalanced_masks(tmp_path):
    """Version 1 predates balanced masks: its weights keep doing what they were searched to do."""
    mixer = searched(balance=False)
    mixer.save_pretrained(tmp_path)
    edit_config(tmp_path, lambda c: (c.pop("balance"), c.update(format_version=1)))
    loaded = TransformMix.from_pretrained(tmp_path, num_classes=5)
    assert loaded.balance is False
    assert torch.equal(mix(loaded).images, mix(mixer).images)
    edit_config(tmp_path, lambda c: c.update(format_version=7))
    with pytest.raises(ValueError, match="expected format 'tmix_aug.transformmix' version 3"):
        TransformMix.from_pretrained(tmp_path, num_classes=5)


def test_truncated_weights_are_named(tmp_path):
    searched().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        TransformMix.from_pretrained(tmp_path, num_classes=5)


def test_directory_without_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        TransformMix.from_pretrained(tmp_path, num_classes=5)


def test_bundled_name_wins_and_works_from_any_directory(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    searched(3).save_pretrained(bundled / "tiny-test")
    monkeypatch.setattr(hub, "BUNDLED_DIR", bundled)
    monkeypatch.chdir(tmp_path)
    assert hub.bundled_names() == ["tiny-test"]
    assert hub.resolve("tiny-test") == bundled / "tiny-test"
    loaded = TransformMix.from_pretrained("tiny-test", num_classes=5)
    assert torch.equal(mix(loaded).images, mix(searched(3)).images)


def write_hub_cache(cache: Path, repo_id: str, source: Path, commit: str = "a" * 40) -> None:
    """The on-disk layout of the huggingface_hub cache for one model repo snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


def test_hub_repo_id_loads_offline_from_the_cache(tmp_path):
    searched(5).save_pretrained(tmp_path / "src")
    write_hub_cache(tmp_path / "cache", "someone/tiny-mixer", tmp_path / "src")
    expected = mix(searched(5)).images
    torch.save(expected, tmp_path / "expected.pt")
    done = run_offline(
        f"""
        import torch, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import blob_batch
        import tmix_aug as tm
        mixer = tm.TransformMix.from_pretrained("someone/tiny-mixer", num_classes=5)
        x, y = blob_batch()
        out = mixer.mix(x, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images, torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True))
        print("loaded", mixer.k)
        """,
        tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr
    assert "loaded 2" in done.stdout


def test_a_miss_lists_every_place_tried(tmp_path):
    done = run_offline(
        """
        import tmix_aug as tm
        try:
            tm.TransformMix.from_pretrained("someone/not-cached", num_classes=5)
        except FileNotFoundError as error:
            print(error)
        """,
        tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr
    for words in ("bundled name", "local directory", "Hugging Face Hub repo 'someone/not-cached'", "HF_HUB_OFFLINE"):
        assert words in done.stdout


def test_push_to_hub_uploads_the_saved_directory(monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            config = json.loads((Path(folder_path) / "config.json").read_text())
            uploaded["k"] = config["k"]

            class Info:
                commit_url = f"https://hub.example/{repo_id}/commit/1"

            return Info()

    monkeypatch.setattr(hub.huggingface_hub, "HfApi", FakeApi)
    url = searched().push_to_hub("someone/mixer", private=True, token="t")
    assert url.endswith("someone/mixer/commit/1")
    assert uploaded == {
        "token": "t",
        "repo": ("someone/mixer", True, True),
        "files": ["README.md", "config.json", "model.safetensors"],
        "k": 2,
    }
