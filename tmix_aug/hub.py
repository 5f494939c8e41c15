"""Finding, reading and writing mixer weights: bundled names, local directories, the Hub.

A mixer directory holds ``config.json`` (the architecture only), ``model.safetensors`` and a
``README.md`` model card, the layout huggingface_hub's model mixins use.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
from pathlib import Path
import re
from typing import Any, Iterable

import huggingface_hub
import safetensors
import safetensors.torch
import torch
from huggingface_hub import ModelCard, ModelCardData
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
# Field -> accepted JSON types; ints are accepted where floats are, never bools where numbers are.
FIELD_TYPES = {
    "k": int, "mode": str, "balance": bool, "size": int, "stn_channels": list, "stn_hidden": int,
    "max_translation": float, "max_linear": float, "mpn_channels": int, "mpn_layers": int,
    "mpn_kernel": int, "mpn_padding": str, "init_temperature": float,
}  # fmt: skip
CHECKSUM_KEY = "tmix_aug.sha256"
PACKAGE_DIR = Path(__file__).resolve().parent
# Bundled mixers live in the repository's top-level pretrained/; the wheel maps them into the package.
BUNDLED_DIR = PACKAGE_DIR / "pretrained" if (PACKAGE_DIR / "pretrained").is_dir() else PACKAGE_DIR.parent / "pretrained"
LICENSE = "apache-2.0"
TAGS = ["data-augmentation", "transformmix", "image-classification"]


def bundled_names() -> list[str]:
    """Names of the bundled mixers (``pretrained/NAME``; ``tmix_aug/pretrained/NAME`` in the wheel)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def resolve(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    proxies: dict | None = None,
) -> Path:
    """The local directory of a mixer, trying in order a bundled name, a local directory, a Hub repo id.

    ``revision``, ``cache_dir``, ``token``, ``force_download``, ``local_files_only`` and ``proxies``
    are huggingface_hub's download options (``HF_HUB_OFFLINE=1`` is honoured).

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

    download = dict(revision=revision, cache_dir=cache_dir, token=token, force_download=force_download,
                    local_files_only=local_files_only)  # fmt: skip
    if proxies is not None:
        if "proxies" not in inspect.signature(huggingface_hub.snapshot_download).parameters:
            raise TypeError(
                f"proxies: huggingface_hub {huggingface_hub.__version__} takes proxies from the HTTP_PROXY / "
                "HTTPS_PROXY environment variables, not as an argument"
            )
        download["proxies"] = proxies
    try:
        validate_repo_id(name)
        directory = huggingface_hub.snapshot_download(
            name, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME], library_name="tmix_aug", **download
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
    for key, value in fields.items():
        check_field(path, key, value)
    return fields


def check_field(path: Path, key: str, value: object) -> None:
    """Raise ValueError naming ``path`` and ``key`` unless ``value`` has the field's JSON type and is finite."""
    expected = FIELD_TYPES.get(key)
    if expected is None:
        return
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif expected is list:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        kind = "a list of integers"
    else:
        ok = isinstance(value, expected)
        kind = {bool: "true or false", str: "a string"}[expected]
    if not ok:
        raise ValueError(f"{path}: field {key!r} expected {kind}, got {value!r}")


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_weights(module: nn.Module, directory: str | os.PathLike) -> None:
    """Load ``model.safetensors`` into ``module`` strictly, with errors that name the file and the tensor.

    Checks: the names and shapes the architecture expects, its dtypes, finite values, and the
    checksum ``save`` records in the file's metadata (files without one skip that check).
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a mixer directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        state = safetensors.torch.load_file(path, device="cpu")
        with safetensors.safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
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
    for key in sorted(state):
        if state[key].dtype != expected[key].dtype:
            raise ValueError(f"{path}: tensor {key!r} has dtype {state[key].dtype}, expected {expected[key].dtype}")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values")
    recorded = metadata.get(CHECKSUM_KEY)
    if recorded is not None and recorded != weights_checksum(state):
        raise ValueError(
            f"{path}: the weights differ from the checksum recorded when they were saved (corrupted file); "
            "delete it and fetch it again"
        )
    module.load_state_dict(state)


def card_usage(name: str) -> str:
    """The model card's example: load the mixer saved under ``name`` (a Hub repo id or a directory)."""
    return (
        "```python\nimport tmix_aug as tm\n"
        f"mixer = tm.TransformMix.from_pretrained({name!r}, num_classes=10, saliency=\"spectral\")  "
        "# num_classes: your data's\nx, y = mixer(x, y)  # x (N, C, H, W), y (N,) int64\n```\n"
    )


def render_model_card(body: str | None, architecture: dict, *, name: str, card_data: dict | None = None) -> ModelCard:
    """The README.md model card: Hub metadata (huggingface_hub's ModelCardData), ``body``, the architecture.

    Args:
        body: markdown; a generic description with a loading example for ``name`` when None.
        name: how a user loads this mixer (the Hub repo id, or the directory name).
        card_data: extra metadata, e.g. ``datasets=["cifar10"]``, ``base_model=...``, ``image_size=32``
            (the image size the mixer was searched for; ``tmix-train`` picks bundled mixers by it).
    """
    data = ModelCardData(library_name="tmix_aug", license=LICENSE, tags=list(TAGS), **(card_data or {}))
    if body is None:
        body = (
            "# TransformMix mixer\n\nA learned mixing strategy for tmix_aug (TransformMix, arXiv 2403.12429): "
            "a spatial transformer and a mask network that read saliency maps and mix batches of images.\n\n"
            + card_usage(name)
        )
    arch = "\n".join(f"| {key} | {value} |" for key, value in architecture.items())
    text = f"{body.rstrip()}\n\n## Architecture (config.json)\n\n| field | value |\n|---|---|\n{arch}\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def save(
    module: nn.Module,
    directory: str | os.PathLike,
    architecture: dict,
    *,
    model_card: str | None = None,
    card_data: dict | None = None,
    name: str | None = None,
) -> None:
    """Write a mixer directory: config.json, model.safetensors (with a checksum), README.md, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **architecture}
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    metadata = {"format": "pt", CHECKSUM_KEY: weights_checksum(state)}
    write_atomic(directory / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(state, tmp, metadata=metadata))
    write_atomic(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    write_card(directory, architecture, model_card, card_data=card_data, name=name)


def write_card(
    directory: str | os.PathLike,
    architecture: dict,
    model_card: str | None = None,
    *,
    card_data: dict | None = None,
    name: str | None = None,
) -> None:
    """Write (or rewrite) the README.md model card of a mixer directory, atomically."""
    card = render_model_card(model_card, architecture, name=name or Path(directory).resolve().name, card_data=card_data)
    write_atomic(Path(directory) / CARD_NAME, lambda tmp: Path(tmp).write_text(str(card)))


def bundled_image_size(name: str) -> int:
    """The image size a bundled mixer was searched for: its card's ``image_size`` metadata, else the
    "Input: (C, H, W)" line the search writes into the card, else the working resolution in config.json."""
    directory = BUNDLED_DIR / name
    card = ModelCard.load(directory / CARD_NAME) if (directory / CARD_NAME).is_file() else None
    if card is not None and isinstance(card.data.to_dict().get("image_size"), int):
        return card.data.to_dict()["image_size"]
    found = re.search(r"Input: \(\d+, (\d+), (\d+)\)", card.text) if card is not None else None
    if found:
        return int(found.group(2))
    return bundled_working_size(name)


def bundled_working_size(name: str) -> int:
    """The working resolution S of a bundled mixer's networks (``size`` in its config.json)."""
    return int(json.loads((BUNDLED_DIR / name / CONFIG_NAME).read_text())["size"])


def choose_bundled(image_size: int) -> str:
    """The bundled mixer made for the image size nearest ``image_size`` (by ratio). Of mixers made
    for the same size, the one with the smallest working size S, which costs least; then the first name.
    """
    names = bundled_names()
    if not names:
        raise FileNotFoundError("--mixer-path: no mixer is bundled with this install; pass a directory or a Hub repo id")
    return min(
        names, key=lambda name: (abs(math.log(bundled_image_size(name) / image_size)), bundled_working_size(name), name)
    )


class HubMixin:
    """Weights the way huggingface_hub's ``ModelHubMixin`` handles them, for mixers.

    The same calls and keywords as ``PyTorchModelHubMixin`` (``from_pretrained`` with revision,
    cache_dir, token, force_download, local_files_only, proxies; ``save_pretrained`` with
    ``push_to_hub``/``repo_id``; ``push_to_hub``), but ``from_pretrained`` also resolves names
    bundled with the package, checks ``config.json`` strictly (format version, exact fields,
    types) and keeps runtime options (num_classes, saliency, ...) out of the saved config.
    The class provides ``architecture`` (the config fields) and takes them as constructor keywords.
    """

    architecture: dict

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        proxies: dict | None = None,
        **runtime_options: Any,
    ):
        """Load a mixer: a name bundled with the package, a local directory, or a Hub repo id.

        Args:
            name_or_path: e.g. "cifar10-resnet20", "runs/my-mixer", "user/my-mixer".
            revision, cache_dir, token, force_download, local_files_only, proxies: huggingface_hub's
                download options, for Hub repo ids (``HF_HUB_OFFLINE=1`` is honoured).
            **runtime_options: constructor arguments that are not architecture
                (num_classes is required; saliency, alpha, label_smoothing, prob, check_inputs).

        Returns:
            The mixer in eval mode with gradients off for its parameters.
        """
        directory = resolve(
            name_or_path, revision=revision, cache_dir=cache_dir, token=token, force_download=force_download,
            local_files_only=local_files_only, proxies=proxies,
        )  # fmt: skip
        architecture = read_config(directory, allowed=ARCHITECTURE_FIELDS)
        clash = sorted(set(runtime_options) & set(architecture))
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: fixed by the weights in {directory} "
                f"({', '.join(f'{key}={architecture[key]!r}' for key in clash)}); do not pass it to from_pretrained"
            )
        if "num_classes" not in runtime_options:
            raise TypeError("from_pretrained: num_classes is required (the mixer is independent of the classes)")
        mixer = cls(**architecture, **runtime_options)
        load_weights(mixer, directory)
        mixer.requires_grad_(False)
        return mixer.eval()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        model_card: str | None = None,
        card_data: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``config.json`` (architecture), ``model.safetensors`` and ``README.md`` to ``save_directory``.

        Args:
            save_directory: created if missing; files are written to temporary names, then renamed.
            model_card: markdown body of README.md; a generic card when None.
            card_data: extra card metadata (datasets, base_model, image_size, ...).
            repo_id, push_to_hub: also upload to this Hub repo (default: the directory's name),
                with ``push_to_hub``'s keywords (private, token, branch, create_pr, commit_message).

        Returns:
            The commit URL when pushed, else None.
        """
        name = repo_id if push_to_hub and repo_id else None
        save(self, save_directory, self.architecture, model_card=model_card, card_data=card_data, name=name)
        if not push_to_hub:
            return None
        return self.push_to_hub(
            repo_id or Path(save_directory).resolve().name, model_card=model_card, card_data=card_data, **push_to_hub_kwargs
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload TransformMix mixer",
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        model_card: str | None = None,
        card_data: dict | None = None,
    ) -> str:
        """Upload config.json, model.safetensors and README.md to the Hub repo ``repo_id`` in one commit.

        Returns:
            The URL of the commit.
        """
        validate_repo_id(repo_id)
        api = huggingface_hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as directory:
            save(self, directory, self.architecture, model_card=model_card, card_data=card_data, name=repo_id)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=directory, commit_message=commit_message, revision=branch,
                create_pr=create_pr,
            )  # fmt: skip
        return info.commit_url
