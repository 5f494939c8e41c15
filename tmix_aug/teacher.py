"""The frozen teacher classifier shared by the search and tmix-train's ``--saliency teacher``."""
from __future__ import annotations

import os
from typing import Any

import timm
import torch
from torch import nn

from . import models as _models  # noqa: F401  registers the small-image classifiers with timm


def load_teacher(
    name: str,
    checkpoint: str | os.PathLike | None,
    *,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm classifier in eval mode with frozen weights from ``checkpoint``.

    Args:
        name: a timm model name (the small-image models of ``tmix_aug.models`` included).
        checkpoint: safetensors, or a state dict read with ``weights_only=True`` (never unpickled);
            None keeps the model's fresh initialisation.
        num_classes: outputs of the classifier (default: the model's own).
        device: where the teacher runs.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"pad_type": "same"}``), as timm's
            ``--model-kwargs`` gives them.

    Returns:
        The teacher, on ``device``, eval mode, ``requires_grad`` off.
    """
    if checkpoint and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"teacher checkpoint: {os.fspath(checkpoint)!r} is not a file")
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as error:  # timm's "Unknown model"
        raise ValueError(f"teacher: {name!r}: {error}") from None
    except TypeError as error:  # a keyword the model's constructor does not take
        raise ValueError(f"teacher kwargs: {name} does not accept {sorted(model_kwargs or {})} ({error})") from None
    if checkpoint:
        try:
            timm.models.load_checkpoint(model, os.fspath(checkpoint))
        except Exception as error:  # safetensors, torch.load and load_state_dict raise their own types
            raise ValueError(
                f"teacher checkpoint: {os.fspath(checkpoint)!r} cannot be loaded into {name}"
                f"{'' if num_classes is None else f' with {num_classes} classes'}"
                f"{f' and {model_kwargs}' if model_kwargs else ''} "
                f"({type(error).__name__}: {str(error)[:300]})"
            ) from None
    return model.to(device).eval().requires_grad_(False)
