"""The mixer registry, in timm's style: mixers register under a name and are built by it.

``@register_mixer("cutmix")`` on a ``BatchMixer`` subclass adds it; ``list_mixers()`` gives
the names (``tmix-train --mixer`` offers exactly these) and ``create_mixer(name, ...)`` builds
one. Mixers with weights (a ``from_pretrained`` class method) also load them by ``path``.
Importing ``tmix_aug`` registers the bundled mixers.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, TypeVar

from .mixing import BatchMixer

MixerClass = TypeVar("MixerClass", bound=type)

_MIXERS: dict[str, type[BatchMixer]] = {}


def register_mixer(name: str) -> Callable[[MixerClass], MixerClass]:
    """Class decorator: make a ``BatchMixer`` subclass available to ``create_mixer`` as ``name``.

    Args:
        name: the command-line name, e.g. "cutmix"; must not be taken by another class.

    Returns:
        The decorator, which returns the class unchanged.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def register(cls: MixerClass) -> MixerClass:
        if not (isinstance(cls, type) and issubclass(cls, BatchMixer)):
            raise TypeError(f"register_mixer({name!r}): expected a BatchMixer subclass, got {cls!r}")
        if _MIXERS.get(name, cls) is not cls:
            raise ValueError(f"name: {name!r} is already registered to {_MIXERS[name].__name__}")
        _MIXERS[name] = cls
        return cls

    return register


def list_mixers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered mixers matching a shell-style ``pattern``."""
    return sorted(name for name in _MIXERS if fnmatch.fnmatch(name, pattern))


def mixer_class(name: str) -> type[BatchMixer]:
    """The class registered as ``name``; ValueError listing the names when there is none."""
    if name not in _MIXERS:
        raise ValueError(f"name: unknown mixer {name!r}; expected one of {', '.join(list_mixers())}")
    return _MIXERS[name]


def create_mixer(name: str, num_classes: int, *, path: str | None = None, **kwargs: Any) -> BatchMixer:
    """Build a registered mixer by name.

    Args:
        name: one of ``list_mixers()``, e.g. "none", "mixup", "cutmix", "mixup-cutmix",
            "resizemix", "saliencymix", "transformmix".
        num_classes: number of classes of the targets.
        path: weights for a mixer that has them (``from_pretrained``): a bundled name, a local
            directory or a Hub repo id; None builds it from its arguments (for
            "transformmix", an unsearched mixer with identity transforms).
        **kwargs: keyword arguments of the mixer's class (k, alpha, label_smoothing, prob,
            saliency, mode, ...).

    Returns:
        The mixer, an ``nn.Module`` (move it with ``.to(device)``).
    """
    cls = mixer_class(name)
    if path is None:
        return cls(num_classes, **kwargs)
    if not hasattr(cls, "from_pretrained"):
        with_weights = [n for n in list_mixers() if hasattr(_MIXERS[n], "from_pretrained")]
        raise ValueError(
            f"path: only the {', '.join(repr(n) for n in with_weights)} mixer loads weights, "
            f"got path={path!r} for {name!r}"
        )
    return cls.from_pretrained(path, num_classes=num_classes, **kwargs)
