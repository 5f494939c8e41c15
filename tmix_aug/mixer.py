"""TransformMix: move each input with a learned affine transform, then blend with learned masks."""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hub
from .checks import check_bool, check_choice, check_int, check_positive
from .functional import balanced_softmax, blend_from_batch, identity_thetas, warp
from .mixing import BatchMixer, MixedImages
from .nets import PADDING_MODES, LocalizationNet, MaskNet
from .registry import register_mixer
from .saliency import SaliencySource
from .sampling import MixDraw, device_generator

MODES = ("transformmix", "stn-only", "mpn-only", "saliency-softmax")
"""What decides the masks and whether inputs move (the paper's ablation rows):

- ``transformmix``: spatial transformer + mask network (the full method);
- ``stn-only``: spatial transformer; masks = softmax over the warped saliency;
- ``mpn-only``: mask network on the unmoved saliency;
- ``saliency-softmax``: masks = softmax over the saliency; nothing learned but the temperature.
"""


@register_mixer("transformmix")
class TransformMix(BatchMixer, hub.HubMixin):
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
        check_choice("mode", mode, MODES)
        check_bool("balance", balance)
        check_int("size", size, 8)
        if len(stn_channels) != 2:
            raise ValueError(f"stn_channels: expected two channel counts, got {stn_channels!r}")
        for name, value in (("stn_channels", stn_channels[0]), ("stn_channels", stn_channels[1]),
                            ("stn_hidden", stn_hidden), ("mpn_channels", mpn_channels), ("mpn_kernel", mpn_kernel)):
            check_int(name, value, 1)
        check_int("mpn_layers", mpn_layers, 0)
        if mpn_kernel % 2 != 1:
            raise ValueError(f"mpn_kernel: expected an odd kernel size, got {mpn_kernel!r}")
        check_choice("mpn_padding", mpn_padding, PADDING_MODES)
        for name, value in (("max_translation", max_translation), ("max_linear", max_linear),
                            ("init_temperature", init_temperature)):
            check_positive(name, value)
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
        self.saliency = SaliencySource(saliency, size)  # a plain holder: the model in it is not owned
        self.train(False)

    @property
    def temperature(self) -> Tensor:
        """The learned mask temperature tau (a 0-d tensor)."""
        return self.log_temperature.exp()

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw, saliency: Tensor | None = None) -> MixedImages:
        """Move and mask the inputs of each sample (see ``BatchMixer.mix_images``).

        Only the mixed samples cost anything: the saliency pass runs on the images they read
        and both networks and the warps on them alone (``draw.rows``, ``draw.inputs``); the
        others keep their image, an identity transform, a one-hot mask and all-zero saliency.
        """
        learn = self.training and torch.is_grad_enabled()
        with (nullcontext() if learn else torch.no_grad()), torch.autocast(x.device.type, enabled=False):
            return self._mix_images(x, labels, draw, saliency)

    def _mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw, given: Tensor | None) -> MixedImages:
        n, k, s = x.shape[0], self.k, self.size
        index, lam = draw.index, draw.lam
        if draw.rows is not None:
            if draw.rows.numel() == 0:
                return self._unmixed(x)
            index, lam = index[draw.rows], lam[draw.rows]
        if draw.inputs is None:
            saliency = self.saliency(x, labels, given)[index]
        else:
            subset = None if given is None else given[draw.inputs]
            saliency = self.saliency(x[draw.inputs], labels[draw.inputs], subset)[draw.slots]
        m = index.shape[0]
        lam_planes = lam[:, :, None, None].expand(m, k, s, s)
        if self.stn is not None:
            noise = torch.randn(n, 1, s, s, device=x.device, generator=device_generator(draw.seed, x.device))
            if draw.rows is not None:
                noise = noise[draw.rows]  # the same noise as when every sample is mixed
            planes = torch.cat([saliency, lam_planes, noise], dim=1)
            # channels-last: 1.3-1.7x faster convolutions on CPU (measured), the fast layout on CUDA
            thetas = self.stn(planes.contiguous(memory_format=torch.channels_last))
            scores = warp(saliency.unsqueeze(2), thetas).squeeze(2)
        else:
            thetas = identity_thetas(m, k, x.device)
            scores = saliency
        if self.mpn is not None:
            planes = torch.cat([scores, lam_planes], dim=1).contiguous(memory_format=torch.channels_last)
            scores = scores + self.mpn(planes)
        logits = scores / self.temperature + lam.clamp_min(1e-12).log()[:, :, None, None]
        masks = balanced_softmax(logits, lam) if self.balance else logits.softmax(dim=1)
        masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False).contiguous()
        moved = thetas if self.stn is not None else None  # without a transformer nothing is warped
        images = blend_from_batch(x, index, masks, moved, first_is_own=draw.rows is None)
        if draw.rows is not None:
            unmixed = self._unmixed(x)
            return MixedImages(
                images=unmixed.images.index_copy(0, draw.rows, images.to(x.dtype)),
                masks=unmixed.masks.index_copy(0, draw.rows, masks),
                thetas=unmixed.thetas.index_copy(0, draw.rows, thetas),
                saliency=unmixed.saliency.index_copy(0, draw.rows, saliency),
            )
        images = images.to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            images = images.contiguous(memory_format=torch.channels_last)
        return MixedImages(images=images, masks=masks, thetas=thetas, saliency=saliency)

    def _unmixed(self, x: Tensor) -> MixedImages:
        """Every sample its own image: one-hot masks, identity transforms, zero saliency."""
        n, k, s = x.shape[0], self.k, self.size
        masks = x.new_zeros((n, k, *x.shape[-2:]), dtype=torch.float32)
        masks[:, 0] = 1.0
        saliency = x.new_zeros((n, k, s, s), dtype=torch.float32)
        return MixedImages(images=x.clone(), masks=masks, thetas=identity_thetas(n, k, x.device), saliency=saliency)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}, balance={self.balance}, size={self.size}"
