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


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls and the uploaded files."""

    calls: dict = {}

    def __init__(self, token=None):
        FakeApi.calls = {"token": token}

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeApi.calls["repo"] = (repo_id, private, exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message, revision=None, create_pr=None):
        folder = Path(folder_path)
        FakeApi.calls.update(
            files=sorted(p.name for p in folder.iterdir()),
            k=json.loads((folder / "config.json").read_text())["k"],
            card=(folder / "README.md").read_text(),
            revision=revision,
            create_pr=create_pr,
        )

        class Info:
            commit_url = f"https://hub.example/{repo_id}/commit/1"

        return Info()


def test_push_to_hub_uploads_the_saved_directory(monkeypatch):
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", FakeApi)
    url = searched().push_to_hub("someone/mixer", private=True, token="t", branch="dev", create_pr=True)
    assert url.endswith("someone/mixer/commit/1")
    calls = FakeApi.calls
    assert calls["token"] == "t" and calls["repo"] == ("someone/mixer", True, True)
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"] and calls["k"] == 2
    assert (calls["revision"], calls["create_pr"]) == ("dev", True)
    assert "from_pretrained('someone/mixer'" in calls["card"]


def test_save_pretrained_can_push(tmp_path, monkeypatch):
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "calls", {})
    assert searched().save_pretrained(tmp_path / "m") is None and FakeApi.calls == {}  # no push by default
    url = searched().save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="someone/pushed", token="t")
    assert url == "https://hub.example/someone/pushed/commit/1"
    assert FakeApi.calls["repo"] == ("someone/pushed", None, True) and FakeApi.calls["token"] == "t"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_hub_download_options_reach_huggingface_hub(tmp_path, monkeypatch):
    searched().save_pretrained(tmp_path / "snap")
    seen = {}

    def fake_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setattr(hub.huggingface_hub, "snapshot_download", fake_download)
    options = dict(revision="v1", cache_dir=str(tmp_path), token="t", force_download=True, local_files_only=True)
    TransformMix.from_pretrained("someone/mixer", num_classes=5, **options)
    assert seen["repo_id"] == "someone/mixer" and {key: seen[key] for key in options} == options
    with pytest.raises(TypeError, match="proxies: huggingface_hub .* HTTPS_PROXY"):
        TransformMix.from_pretrained("someone/mixer", num_classes=5, proxies={"https": "http://proxy:1"})
    monkeypatch.setattr(hub.huggingface_hub, "snapshot_download", lambda repo_id, proxies=None, **kw: seen.update(proxies=proxies) or str(tmp_path / "snap"))
    TransformMix.from_pretrained("someone/mixer", num_classes=5, proxies={"https": "http://proxy:1"})
    assert seen["proxies"] == {"https": "http://proxy:1"}


def test_model_card_is_hub_metadata_without_placeholders(tmp_path):
    from huggingface_hub import ModelCard

    searched().save_pretrained(tmp_path / "my-mixer", card_data={"datasets": ["cifar10"], "base_model": "timm/resnet18.a1_in1k"})
    card = ModelCard.load(tmp_path / "my-mixer" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "tmix_aug"
    assert data["datasets"] == ["cifar10"] and data["base_model"] == "timm/resnet18.a1_in1k"
    assert "data-augmentation" in data["tags"]
    assert "from_pretrained('my-mixer'" in card.text and "| k | 2 |" in card.text
    for name in hub.bundled_names():
        text = (hub.BUNDLED_DIR / name / "README.md").read_text()
        assert ModelCard.load(hub.BUNDLED_DIR / name / "README.md").data.license == "apache-2.0"
        for placeholder in ("THIS_REPO", "NUM_CLASSES"):
            assert placeholder not in text + card.text


def rewrite_weights(directory: Path, change, keep_metadata=True):
    import safetensors.torch
    from safetensors import safe_open

    path = directory / "model.safetensors"
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
    state = safetensors.torch.load_file(path)
    change(state)
    safetensors.torch.save_file(state, path, metadata=metadata if keep_metadata else {"format": "pt"})


@pytest.mark.parametrize(
    "change, keep_metadata, words",
    [
        (lambda s: s["stn.head.bias"].__setitem__(0, float("nan")), False, "tensor 'stn.head.bias' holds NaN or infinite"),
        (lambda s: s.update({"mpn.head.bias": s["mpn.head.bias"].long()}), False, "tensor 'mpn.head.bias' has dtype torch.int64, expected torch.float32"),
        (lambda s: s["mpn.head.weight"].view(-1).view(torch.int32).__ixor__(1 << 3), True, "differ from the checksum"),
    ],
    ids=["nan", "int64", "bit-flip"],
)
def test_bad_weights_are_refused_naming_file_and_tensor(tmp_path, change, keep_metadata, words):
    searched().save_pretrained(tmp_path)
    rewrite_weights(tmp_path, change, keep_metadata)
    with pytest.raises(ValueError, match="model.safetensors") as info:
        TransformMix.from_pretrained(tmp_path, num_classes=5)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("max_linear", float("nan"), "field 'max_linear' expected a finite number, got nan"),
        ("init_temperature", float("inf"), "field 'init_temperature' expected a finite number"),
        ("mpn_kernel", "3", "field 'mpn_kernel' expected an integer, got '3'"),
        ("k", True, "field 'k' expected an integer, got True"),
        ("balance", 1, "field 'balance' expected true or false"),
        ("stn_channels", [16, "32"], "field 'stn_channels' expected a list of integers"),
        ("mode", 3, "field 'mode' expected a string"),
    ],
)
def test_bad_config_values_name_the_field_and_file(tmp_path, field, value, words):
    searched().save_pretrained(tmp_path)
    edit_config(tmp_path, lambda c: c.update({field: value}))  # json writes NaN / Infinity literals
    with pytest.raises(ValueError, match="config.json") as info:
        TransformMix.from_pretrained(tmp_path, num_classes=5)
    assert words in str(info.value)


def test_bundled_mixer_chosen_by_image_size(tmp_path, monkeypatch):
    for name, image_size in (("small", 32), ("large", 64)):
        searched().save_pretrained(tmp_path / name, card_data={"image_size": image_size})
    searched().save_pretrained(tmp_path / "unlabelled")  # no metadata: its working resolution, 16
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path)
    assert [hub.bundled_image_size(n) for n in ("small", "large", "unlabelled")] == [32, 64, 16]
    assert [hub.choose_bundled(size) for size in (8, 20, 32, 40, 50, 224)] == [
        "unlabelled", "unlabelled", "small", "small", "large", "large"
    ]


def test_bundled_mixer_for_the_same_image_size_prefers_the_smaller_working_size(tmp_path, monkeypatch):
    # "a" comes first by name, "b" runs its networks at S = 8 instead of 16: b costs less, so b is chosen
    searched().save_pretrained(tmp_path / "a", card_data={"image_size": 32})
    TransformMix(5, size=8).save_pretrained(tmp_path / "b", card_data={"image_size": 32})
    TransformMix(5, size=8).save_pretrained(tmp_path / "c", card_data={"image_size": 32})
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path)
    assert [hub.bundled_working_size(n) for n in "abc"] == [16, 8, 8]
    assert hub.choose_bundled(32) == "b"  # b and c tie on both: the first name
