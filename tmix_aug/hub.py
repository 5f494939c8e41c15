"""Finding, reading and writing mixer weights: bundled names, local directories, the Hub.

A mixer directory holds ``config.json`` (the architecture only), ``model.safetensors`` and a
``README.md`` model card, the layout huggingface_hub's model mixins use.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import huggingface_hub
import safetensors.torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn

from .atomic import write_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT = "tmix_aug.transformmix"
FORMAT_VERSION = 3
ARCHITECTURE_FIELDS = (
    "k",
    "mode",
    "balance",
    "size",
    "stn_channels",
    "stn_hidden",
    "max_translation",
    "max_linear",
    "mpn_channels",
    "mpn_layers",
    "mpn_kernel",
    "mpn_padding",
    "init_temperature",
)
# Fields an older format version lacks, with the values that reproduce what its weights did.
# Version 3 added mpn_padding: versions 1 and 2 were searched with the mask net's zero padding.
OLDER_VERSIONS = {1: {"balance": False, "mpn_padding": "zeros"}, 2: {"mpn_padding": "zeros"}}
BUNDLED_DIR = Path(__file__).resolve().parent / "pretrained"


def bundled_names() -> list[str]:
    """Names of the mixers shipped inside the package (``tmix_aug/pretrained/NAME``)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def resolve(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """The local directory of a mixer, trying in order a bundled name, a local directory, a Hub repo id.

    Raises:
        FileNotFoundError: nothing matched; the message lists each place tried and why it failed.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise TypeError(f"name_or_path: expected a bundled name, a directory or a Hub repo id, got {name_or_path!r}")
    name = str(name_or_path)
    bundled = BUNDLED_DIR / name
    if "/" not in name and (bundled / CONFIG_NAME).is_file():
        return bundled
    tried = [f"bundled name: not one of {bundled_names() or 'the (no) bundled mixers'}"]

    local = Path(name).expanduser()
    if local.is_dir():
        if (local / CONFIG_NAME).is_file():
            return local
        raise FileNotFoundError(
            f"name_or_path: the directory {local} has no {CONFIG_NAME}; a mixer directory holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} as written by save_pretrained"
        )
    tried.append(f"local directory: {local} does not exist")

    try:
        validate_repo_id(name)
        directory = huggingface_hub.snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            library_name="tmix_aug",
        )
    except HFValidationError:
        tried.append("Hugging Face Hub: not a valid repo id")
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        tried.append(f"Hugging Face Hub repo {name!r} (revision {revision or 'main'}): {type(error).__name__}: {reason}")
    else:
        if (Path(directory) / CONFIG_NAME).is_file():
            return Path(directory)
        tried.append(f"Hugging Face Hub repo {name!r}: the snapshot has no {CONFIG_NAME}")
    raise FileNotFoundError(
        f"name_or_path: no mixer found for {name!r}. Tried, in order:\n"
        + "".join(f"  {i}. {line}\n" for i, line in enumerate(tried, 1))
        + "Pass a bundled name, a directory written by save_pretrained, or a Hub repo id "
        "(offline, with HF_HUB_OFFLINE=1, it must already be in the cache)."
    )


def read_config(directory: str | os.PathLike, *, allowed: Iterable[str]) -> dict:
    """Read and check ``config.json``: the format tag and exactly the ``allowed`` fields.

    Returns:
        The architecture fields.
    """
    path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if config.get("format") != FORMAT or version not in (FORMAT_VERSION, *OLDER_VERSIONS):
        raise ValueError(
            f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION} (or {sorted(OLDER_VERSIONS)}), "
            f"got format {config.get('format')!r} version {version!r}"
        )
    fields = {key: value for key, value in config.items() if key not in ("format", "format_version")}
    fields = {**OLDER_VERSIONS.get(version, {}), **fields}
    allowed = set(allowed)
    unknown = sorted(set(fields) - allowed)
    missing = sorted(allowed - set(fields))
    if unknown or missing:
        raise ValueError(
            f"{path}: "
            + "; ".join(
                part
                for part in (
                    f"unknown fields {unknown}" if unknown else "",
                    f"missing fields {missing}" if missing else "",
                )
                if part
            )
            + f" (expected exactly {sorted(allowed)})"
        )
    return fields


def load_weights(module: nn.Module, directory: str | os.PathLike) -> None:
    """Load ``model.safetensors`` into ``module`` strictly, with errors that say what is wrong."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a mixer directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        state = safetensors.torch.load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own error type for corrupt files
        raise ValueError(
            f"{path}: not a readable safetensors file ({error}); it may be truncated: delete it and fetch it again"
        ) from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(state) & set(expected) if state[key].shape != expected[key].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: weights do not match the architecture in {CONFIG_NAME}: "
            f"missing {missing}, unexpected {unexpected}, wrong shape {wrong}"
        )
    module.load_state_dict(state)


DEFAULT_CARD = """# TransformMix mixer

A learned mixing strategy for tmix_aug (TransformMix, arXiv 2403.12429):
a spatial transformer and a mask network that read saliency maps and mix batches of images.

```python
import tmix_aug as tm
mixer = tm.TransformMix.from_pretrained("THIS_REPO", num_classes=NUM_CLASSES, saliency="spectral")
x, y = mixer(x, y)
```
"""


def render_model_card(body: str | None, architecture: dict) -> str:
    """README.md text: Hub metadata, then ``body`` (or a generic card) and the architecture."""
    header = "---\nlibrary_name: tmix_aug\ntags:\n- data-augmentation\n- transformmix\n- image-classification\n---\n"
    arch = "\n".join(f"| {key} | {value} |" for key, value in architecture.items())
    return f"{header}{body or DEFAULT_CARD}\n\n## Architecture (config.json)\n\n| field | value |\n|---|---|\n{arch}\n"


def save(module: nn.Module, directory: str | os.PathLike, architecture: dict, *, model_card: str | None = None) -> None:
    """Write a mixer directory: config.json, model.safetensors, README.md (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **architecture}
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    write_atomic(directory / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(state, tmp, metadata={"format": "pt"}))
    write_atomic(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    write_card(directory, architecture, model_card)


def write_card(directory: str | os.PathLike, architecture: dict, model_card: str | None = None) -> None:
    """Write (or rewrite) the README.md model card of a mixer directory, atomically."""
    text = render_model_card(model_card, architecture)
    write_atomic(Path(directory) / CARD_NAME, lambda tmp: Path(tmp).write_text(text))


def push(
    module: nn.Module,
    repo_id: str,
    *,
    private: bool | None,
    token: str | None,
    commit_message: str,
    model_card: str | None,
) -> str:
    """Save ``module`` (it must have ``save_pretrained``) and upload the directory to ``repo_id``.

    Returns:
        The URL of the commit.
    """
    validate_repo_id(repo_id)
    api = huggingface_hub.HfApi(token=token)
    with tempfile.TemporaryDirectory() as directory:
        module.save_pretrained(directory, model_card=model_card)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=directory, commit_message=commit_message)
    return info.commit_url
