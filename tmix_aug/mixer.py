"""TransformMix: move each input with a learned affine transform, then blend with learned masks."""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hub
from .mixing import BatchMixer, MixedImages, UsesSaliency, balanced_softmax, blend, identity_thetas, keep_unmixed
from .nets import PADDING_MODES, LocalizationNet, MaskNet
from .sampling import MixDraw, device_generator

MODES = ("transformmix", "stn-only", "mpn-only", "saliency-softmax")
"""What decides the masks and whether inputs move (the paper's ablation rows):

- ``transformmix``: spatial transformer + mask network (the full method);
- ``stn-only``: spatial transformer; masks = softmax over the warped saliency;
- ``mpn-only``: mask network on the unmoved saliency;
- ``saliency-softmax``: masks = softmax over the saliency; nothing learned but the temperature.
"""


def warp(x: Tensor, thetas: Tensor) -> Tensor:
    """Apply one affine transform per input, all in one ``grid_sample`` call.

    Pixels that come from outside the image are 0 (ours; for normalised images 0 is the mean
    colour).

    Args:
        x: (N, K, C, H, W) the inputs of each mixed image.
        thetas: (N, K, 2, 3) ``affine_grid`` transforms (output -> input coordinates).

    Returns:
        (N, K, C, H, W) warped inputs, in the dtype of ``thetas``.
    """
    n, k, c, h, w = x.shape
    flat = x.reshape(n * k, c, h, w).to(thetas.dtype)
    grid = F.affine_grid(thetas.reshape(n * k, 2, 3), [n * k, c, h, w], align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view(n, k, c, h, w)


class TransformMix(UsesSaliency, BatchMixer):
    """TransformMix (Cheung & Yeung, arXiv 2403.12429) as a batch augmentation layer.

    For each sample: pick K - 1 partners and Dirichlet(alpha) label weights lambda; compute
    each input's saliency at S x S; the localisation net predicts one affine transform per
    input from the saliency, lambda and noise; the mask net predicts per-pixel softmax masks
    from the warped saliency and lambda; the mixed image is ``sum_k mask_k * warp_k(x_k)``
    and its target ``sum_k lambda_k * y_k``.

    Mask logits are ``(s + g) / tau + log(lambda)`` (ours): s is the (warped) saliency, g the
    mask net's correction (0 in the modes without it) and tau the learned temperature. With
    the zero-initialised last layers, an unsearched mixer is the paper's "softmax over
    saliency" ablation, which already beats Mixup, and the search starts there.

    Balanced masks (``balance=True``, ours): the softmax over the inputs gets one offset per
    sample and input so that input k covers exactly the share lambda_k of the image (at S x S),
    as in Mixup and CutMix; the networks decide where each input shows and how sharp the
    boundaries are, not how much of it. Why: without it the search learns to shrink the
    input with the smaller lambda below its label weight (on CIFAR-10, from 1.2x to 0.8x of
    it), which lowers the teacher's loss but makes that input harder to recognise for every
    classifier. ``balance=False`` gives the paper's unconstrained masks.

    The mixer starts in eval mode: as an augmentation no gradient flows into its networks
    and it builds no autograd graph. ``mixer.train()`` (the search does it) lets gradients
    reach both networks.

    Args:
        num_classes: number of classes of the targets.
        saliency: "spectral" (teacher-free), a classifier ``nn.Module`` (class activation
            maps; the model is used, not owned: it is not a submodule and is not saved), or a
            callable ``(images (N,C,H,W), soft targets (N,num_classes)) -> maps (N,h,w)``.
        k: inputs per mixed image (architecture: fixed by the weights).
        alpha: Dirichlet concentration of lambda.
        label_smoothing: smoothing of each input's target before mixing.
        prob: probability that a sample is mixed; the rest keep image and target.
        mode: one of ``MODES`` (architecture).
        balance: balanced masks (architecture; see above).
        size: working resolution S of both networks (architecture).
        stn_channels, stn_hidden, max_translation, max_linear: see ``LocalizationNet``.
        mpn_channels, mpn_layers, mpn_kernel: see ``MaskNet``.
        mpn_padding: ``MaskNet``'s padding; "replicate" (default) keeps constant saliency's
            masks constant; "zeros" is what mixers of config format 1 and 2 were searched with.
        init_temperature: starting value of the learned temperature tau.
        check_inputs: see ``BatchMixer``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        saliency: Any = "spectral",
        k: int = 2,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        prob: float = 1.0,
        mode: str = "transformmix",
        balance: bool = True,
        size: int = 32,
        stn_channels: Sequence[int] = (16, 32),
        stn_hidden: int = 64,
        max_translation: float = 0.5,
        max_linear: float = 0.5,
        mpn_channels: int = 32,
        mpn_layers: int = 3,
        mpn_kernel: int = 3,
        mpn_padding: str = "replicate",
        init_temperature: float = 0.3,
        check_inputs: bool | None = None,
    ) -> None:
        super().__init__(
            num_classes, k=k, alpha=alpha, label_smoothing=label_smoothing, prob=prob, check_inputs=check_inputs
        )
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if not isinstance(balance, bool):
            raise ValueError(f"balance: expected True or False, got {balance!r}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size: expected an int >= 8 (the working resolution S), got {size!r}")
        if len(stn_channels) != 2:
            raise ValueError(f"stn_channels: expected two channel counts, got {stn_channels!r}")
        if mpn_kernel % 2 != 1:
            raise ValueError(f"mpn_kernel: expected an odd kernel size, got {mpn_kernel!r}")
        if mpn_padding not in PADDING_MODES:
            raise ValueError(f"mpn_padding: expected one of {PADDING_MODES}, got {mpn_padding!r}")
        if not init_temperature > 0:
            raise ValueError(f"init_temperature: expected a number > 0, got {init_temperature!r}")
        self.mode = mode
        self.balance = balance
        self.size = size
        self.architecture = {
            "k": k,
            "mode": mode,
            "balance": balance,
            "size": size,
            "stn_channels": [int(c) for c in stn_channels],
            "stn_hidden": stn_hidden,
            "max_translation": float(max_translation),
            "max_linear": float(max_linear),
            "mpn_channels": mpn_channels,
            "mpn_layers": mpn_layers,
            "mpn_kernel": mpn_kernel,
            "mpn_padding": mpn_padding,
            "init_temperature": float(init_temperature),
        }
        self.stn = (
            LocalizationNet(
                2 * k + 1,
                k,
                channels=stn_channels,
                hidden=stn_hidden,
                max_translation=max_translation,
                max_linear=max_linear,
            )
            if mode in ("transformmix", "stn-only")
            else None
        )
        self.mpn = (
            MaskNet(2 * k, k, channels=mpn_channels, layers=mpn_layers, kernel=mpn_kernel, padding=mpn_padding)
            if mode in ("transformmix", "mpn-only")
            else None
        )
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.saliency = saliency
        self.train(False)

    @property
    def temperature(self) -> Tensor:
        """The learned mask temperature tau (a 0-d tensor)."""
        return self.log_temperature.exp()

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Move and mask the inputs of each sample (see ``BatchMixer.mix_images``)."""
        learn = self.training and torch.is_grad_enabled()
        with (nullcontext() if learn else torch.no_grad()), torch.autocast(x.device.type, enabled=False):
            return self._mix_images(x, labels, draw)

    def _mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        n, k, s = x.shape[0], self.k, self.size
        saliency = self.saliency_maps(x, labels)[draw.index]
        lam_planes = draw.lam[:, :, None, None].expand(n, k, s, s)
        if self.stn is not None:
            noise = torch.randn(n, 1, s, s, device=x.device, generator=device_generator(draw.seed, x.device))
            thetas = self.stn(torch.cat([saliency, lam_planes, noise], dim=1))
            thetas = torch.where(draw.mixed[:, None, None, None], thetas, identity_thetas(n, k, x.device))
            scores = warp(saliency.unsqueeze(2), thetas).squeeze(2)
            inputs = warp(x[draw.index], thetas)
        else:
            thetas = identity_thetas(n, k, x.device)
            scores = saliency
            inputs = x[draw.index].float()
        if self.mpn is not None:
            scores = scores + self.mpn(torch.cat([scores, lam_planes], dim=1))
        logits = scores / self.temperature + draw.lam.clamp_min(1e-12).log()[:, :, None, None]
        masks = balanced_softmax(logits, draw.lam) if self.balance else logits.softmax(dim=1)
        masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
        masks = keep_unmixed(masks, draw.mixed)
        # Unmixed samples are their own image exactly (a warp by the identity is not bit-exact).
        images = torch.where(draw.mixed[:, None, None, None], blend(inputs, masks), x.float()).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            images = images.contiguous(memory_format=torch.channels_last)
        return MixedImages(images=images, masks=masks, thetas=thetas, saliency=saliency)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}, balance={self.balance}, size={self.size}"

    # Weights: config.json (architecture) + model.safetensors (+ README.md), see hub.py.

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        **runtime_options: Any,
    ) -> "TransformMix":
        """Load a mixer: a name bundled with the package, a local directory, or a Hub repo id.

        Args:
            name_or_path: e.g. "cifar10-resnet20", "runs/my-mixer", "user/my-mixer".
            revision, cache_dir, token: passed to huggingface_hub for Hub repo ids
                (``HF_HUB_OFFLINE=1`` is honoured).
            **runtime_options: constructor arguments that are not architecture
                (num_classes is required; saliency, alpha, label_smoothing, prob, check_inputs).

        Returns:
            The mixer in eval mode with gradients off for its parameters.
        """
        directory = hub.resolve(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        architecture = hub.read_config(directory, allowed=hub.ARCHITECTURE_FIELDS)
        clash = sorted(set(runtime_options) & set(architecture))
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: fixed by the weights in {directory} "
                f"({', '.join(f'{key}={architecture[key]!r}' for key in clash)}); do not pass it to from_pretrained"
            )
        if "num_classes" not in runtime_options:
            raise TypeError("from_pretrained: num_classes is required (the mixer is independent of the classes)")
        mixer = cls(**architecture, **runtime_options)
        hub.load_weights(mixer, directory)
        mixer.requires_grad_(False)
        return mixer.eval()

    def save_pretrained(self, directory: str | os.PathLike, *, model_card: str | None = None) -> None:
        """Write ``config.json`` (architecture), ``model.safetensors`` and ``README.md`` to ``directory``.

        Args:
            directory: created if missing; files are written to temporary names, then renamed.
            model_card: markdown body of README.md; a generic card when None.
        """
        hub.save(self, directory, self.architecture, model_card=model_card)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload TransformMix mixer",
        model_card: str | None = None,
    ) -> str:
        """Save to a temporary directory and upload it to the Hub repo ``repo_id``.

        Returns:
            The URL of the commit.
        """
        return hub.push(self, repo_id, private=private, token=token, commit_message=commit_message, model_card=model_card)

