"""The batch mixer the flags ask for: timm's own Mixup, a tmix_aug mixer with its saliency source, or NoMix."""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace
from typing import Any

import torch
from timm.data import Mixup, resolve_data_config
from torch import nn

from ..hub import bundled_image_size, choose_bundled
from ..mixing import BatchMixer
from ..registry import create_mixer
from ..saliency import ClassActivationMap
from ..teacher import load_teacher
from .flags import SALIENCY_MIXERS, timm_mixup_active

_logger = logging.getLogger("tmix_aug.train")


class TimmMixup(nn.Module):
    """timm's own ``Mixup`` (``--mixup/--cutmix/...``) behind the loop's ``mix`` call.

    It draws from numpy's and Python's global random streams, as in timm (tmix-train seeds
    them per epoch, so resume stays exact); the ``generator`` argument is not used. timm's
    Mixup reports no masks, so ``--transmix`` and ``mix.png`` need a ``--mixer``.
    """

    def __init__(self, mixup: Mixup) -> None:
        super().__init__()
        self.mixup = mixup

    def mix(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> SimpleNamespace:
        """x (N,C,H,W), y (N,) int -> ``images`` (N,C,H,W) and ``targets`` (N,num_classes), rows summing to 1."""
        images, targets = self.mixup(x, y)
        return SimpleNamespace(images=images, targets=targets)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixup(x, y)


def timm_mixup_kwargs(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The arguments timm's train.py gives ``timm.data.Mixup`` for these flags."""
    return dict(
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
        cutmix_minmax=args.cutmix_minmax,
        prob=args.mixer_prob,
        switch_prob=args.mixer_switch_prob,
        mode=args.mixup_mode,
        label_smoothing=args.smoothing,
        num_classes=num_classes,
    )


def build_mixer(
    args: argparse.Namespace, num_classes: int, model: nn.Module, device: torch.device
) -> nn.Module:
    """The mixer the flags ask for, on ``device``, in eval mode: timm's Mixup, a tmix_aug mixer or NoMix."""
    if timm_mixup_active(args):
        return TimmMixup(Mixup(**timm_mixup_kwargs(args, num_classes))).to(device).eval()
    kwargs: dict[str, Any] = {"label_smoothing": args.smoothing}
    if args.mixer != "none":
        kwargs.update(alpha=args.mixer_alpha, prob=args.mixer_prob)
        if args.mixer_k is not None:
            kwargs["k"] = args.mixer_k
    if args.mixer == "mixup-cutmix":
        kwargs["switch_prob"] = args.mixer_switch_prob
    if args.mixer == "transformmix" and args.mixer_mode is not None:
        kwargs["mode"] = args.mixer_mode
    if args.mixer == "transformmix" and args.mixer_path is None and args.mixer_mode is None:
        image_size = resolve_data_config(vars(args), model=model, verbose=False)["input_size"][-1]
        args.mixer_path = choose_bundled(image_size)
        if args.rank == 0:
            _logger.info(
                f"tmix-train: --mixer transformmix without --mixer-path: using the bundled mixer {args.mixer_path!r} "
                f"(made for {bundled_image_size(args.mixer_path)} px images; these are {image_size} px)"
            )
    if args.mixer in SALIENCY_MIXERS:
        kwargs["saliency"] = build_saliency(args, model, device)
    mixer = create_mixer(args.mixer, num_classes, path=args.mixer_path, **kwargs)
    return mixer.to(device).eval()


def build_saliency(args: argparse.Namespace, model: nn.Module, device: torch.device) -> Any:
    """The saliency source of --saliency: the model itself, a frozen teacher, or "spectral"."""
    if args.saliency == "spectral" or args.saliency is None:
        return "spectral"
    if args.saliency == "self":
        source = model  # CAMs in eval mode without gradients; BatchNorm statistics stay untouched
    else:
        source = load_teacher(
            args.teacher,
            args.teacher_checkpoint,
            num_classes=args.teacher_num_classes,
            device=device,
            model_kwargs=args.teacher_kwargs,
        )
    if args.saliency_input_size is None:
        return source
    return ClassActivationMap(source, input_size=args.saliency_input_size)


def probe_mixer(
    args: argparse.Namespace, mixer: BatchMixer, input_size: tuple, num_classes: int, device: torch.device
) -> None:
    """Reject, before the first step, a k larger than the batch and a saliency model without maps."""
    k = getattr(mixer, "k", None)
    if k is None or args.mixer == "none":
        return
    if k > args.batch_size:
        raise ValueError(f"--mixer-k: {k} inputs per mixed image need a batch of at least {k}, got -b {args.batch_size}")
    if args.mixer not in SALIENCY_MIXERS:
        return
    images = torch.zeros(k, *input_size, device=device)
    labels = torch.arange(k, device=device) % num_classes
    try:
        with torch.no_grad():
            mixer.mix(images, labels, generator=torch.Generator().manual_seed(0))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
        source = {"self": args.model, "teacher": args.teacher}.get(args.saliency or "", "spectral")
        raise ValueError(
            f"--saliency {args.saliency or 'spectral'}: {source} cannot give the saliency maps --mixer {args.mixer} "
            f"reads ({type(error).__name__}: {error})"
        ) from None
