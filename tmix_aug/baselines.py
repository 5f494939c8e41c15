"""Baseline mixers (Mixup, CutMix, their timm-style switch, ResizeMix, SaliencyMix) in the
TransformMix API, registered by name (see ``tmix_aug.registry``).

Every mixer here is a ``BatchMixer``: ``x, y = mixer(x, y)`` like timm's ``Mixup`` and
``mixer.mix(x, y)`` returning a ``MixResult`` whose masks and thetas describe the mix
exactly (warp each input with its theta, weight it by its mask, sum over K), so a benchmark
compares like with like. Label weights are per sample; box methods return the weights of
the box actually pasted (clipped at the border, rounded to whole pixels).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_choice, check_int, check_number, check_probability
from .functional import blend, box_masks, box_thetas, centred_boxes, identity_thetas, keep_unmixed, warp
from .mixing import BatchMixer, MixedImages
from .registry import register_mixer
from .saliency import SaliencySource
from .sampling import MixDraw


def _no_saliency(n: int, k: int, device: torch.device) -> Tensor:
    """(N, K, 0, 0) float32: the saliency field of methods that use none."""
    return torch.zeros(n, k, 0, 0, device=device)


def _host_uniform(seed: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 numbers drawn on the host from ``seed``, copied without a sync."""
    values = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return torch.from_numpy(values).to(device, non_blocking=True)


def box_masks_to_masks(box: Tensor, mixed: Tensor) -> Tensor:
    """(N, H, W) bool partner boxes to (N, 2, H, W) float masks; unmixed samples show themselves."""
    inside = box.float()
    return keep_unmixed(torch.stack([1.0 - inside, inside], dim=1), mixed)


def _paste(x: Tensor, draw: MixDraw, box: Tensor, partner: Tensor | None = None) -> MixedImages:
    """Show ``partner`` (default: slot 1's image) inside ``box`` and the sample elsewhere.

    Args:
        x: (N, C, H, W) images.
        draw: the batch's draw (K = 2).
        box: (N, H, W) bool, where the partner shows.
        partner: (N, C, H, W) the partner's pixels as pasted (e.g. resized), or None.

    Returns:
        images, masks (N, 2, H, W), identity thetas, empty saliency and the label weights
        of the pasted area (unmixed samples keep their own image and weights [1, 0]).
    """
    n = x.shape[0]
    masks = box_masks_to_masks(box, draw.mixed)
    if partner is None:
        partner = x[draw.index[:, 1]]
    images = torch.where(masks[:, 1:2] > 0.5, partner, x)
    return MixedImages(
        images=images,
        masks=masks,
        thetas=identity_thetas(n, 2, x.device),
        saliency=_no_saliency(n, 2, x.device),
        lam=masks.mean(dim=(2, 3)),
    )


class _TwoInputMixer(BatchMixer):
    """A mixer that pastes one partner into each sample, so K must be 2."""

    def __init__(self, num_classes: int, *, k: int = 2, **kwargs: Any) -> None:
        if k != 2:
            raise ValueError(
                f"k: {type(self).__name__} mixes exactly 2 inputs per image, got k={k!r}"
            )
        super().__init__(num_classes, k=k, **kwargs)


@register_mixer("none")
class NoMix(BatchMixer):
    """No mixing: every sample keeps its image and its (smoothed) target.

    The "none" row of a benchmark, in the same result type as the mixers (K = 2 slots, the
    second with weight 0), so a training loop need not special-case it.

    Args:
        num_classes: number of classes of the targets.
        label_smoothing: smoothing of the targets.
        check_inputs: see ``BatchMixer``.
    """

    def __init__(
        self, num_classes: int, *, label_smoothing: float = 0.0, check_inputs: bool | None = None
    ) -> None:
        super().__init__(
            num_classes, k=2, label_smoothing=label_smoothing, prob=0.0, check_inputs=check_inputs
        )

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Return ``x`` unchanged with masks [1, 0] (see ``BatchMixer.mix_images``)."""
        n, _, height, width = x.shape
        masks = keep_unmixed(torch.zeros(n, 2, height, width, device=x.device), draw.mixed)
        return MixedImages(
            images=x,
            masks=masks,
            thetas=identity_thetas(n, 2, x.device),
            saliency=_no_saliency(n, 2, x.device),
        )


@register_mixer("mixup")
class Mixup(BatchMixer):
    """Mixup (Zhang et al. 2018), K-way: ``sum_k lam_k * x[index_k]`` with per-sample weights.

    Masks are the constant planes lam_k; thetas are identity. With K = 2, lam ~ Beta(alpha,
    alpha) as in the paper; with K > 2, Dirichlet(alpha).

    Args: as ``BatchMixer`` (num_classes, k, alpha, label_smoothing, prob, check_inputs).
    """

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Blend the K inputs with their label weights (see ``BatchMixer.mix_images``)."""
        n, _, height, width = x.shape
        # Unmixed samples already have lam = [1, 0, ...], so these masks show only themselves.
        masks = draw.lam[:, :, None, None].expand(n, self.k, height, width)
        return MixedImages(
            images=blend(x[draw.index], masks),
            masks=masks,
            thetas=identity_thetas(n, self.k, x.device),
            saliency=_no_saliency(n, self.k, x.device),
        )


@register_mixer("cutmix")
class CutMix(_TwoInputMixer):
    """CutMix (Yun et al. 2019): paste a box of the partner, of area share lam_1, at a random
    centre; boxes are clipped at the border and the label weights follow the pasted area.

    Args: as ``BatchMixer``; ``k`` must be 2.
    """

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Paste one random box per sample (see ``BatchMixer.mix_images``)."""
        size = (x.shape[2], x.shape[3])
        return _paste(x, draw, random_boxes(draw.lam[:, 1], size, draw.seed))


def random_boxes(area: Tensor, size: tuple[int, int], seed: int) -> Tensor:
    """CutMix boxes at uniform random centres (drawn on the host from ``seed``).

    Args:
        area: (N,) float share of the image each unclipped box covers.
        size: (H, W) of the images.
        seed: seed of the centres.

    Returns:
        (N, H, W) bool, True inside each (clipped) box.
    """
    u = _host_uniform(seed, (area.shape[0], 2), area.device)
    centre_y = (u[:, 0] * size[0]).long()
    centre_x = (u[:, 1] * size[1]).long()
    return box_masks(*centred_boxes(area, centre_y, centre_x, size), size)


@register_mixer("mixup-cutmix")
class MixupCutMix(_TwoInputMixer):
    """timm's Mixup/CutMix switch: each batch (``mode="batch"``) or each sample
    (``mode="elem"``) is mixed with CutMix with probability ``switch_prob``, else with Mixup.

    Args:
        num_classes, alpha, label_smoothing, prob, check_inputs: as ``BatchMixer`` (one
            alpha for both methods).
        switch_prob: probability of CutMix rather than Mixup.
        mode: "batch" (one choice for the whole batch, timm's default) or "elem".
        k: must be 2.
    """

    def __init__(
        self, num_classes: int, *, switch_prob: float = 0.5, mode: str = "batch", **kwargs: Any
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.switch_prob = check_probability("switch_prob", switch_prob)
        check_choice("mode", mode, ("batch", "elem"))
        self.mode = mode

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Choose CutMix or Mixup, then mix (see ``BatchMixer.mix_images``)."""
        n, _, height, width = x.shape
        rng = np.random.default_rng(draw.seed)
        coins = rng.random(n if self.mode == "elem" else 1) < self.switch_prob
        use_cutmix = torch.from_numpy(np.broadcast_to(coins, (n,)).copy()).to(
            x.device, non_blocking=True
        )
        box = random_boxes(draw.lam[:, 1], (height, width), int(rng.integers(0, 2**63 - 1)))
        cut = box_masks_to_masks(box, draw.mixed)
        flat = draw.lam[:, :, None, None].expand(n, 2, height, width)
        masks = torch.where(use_cutmix[:, None, None, None], cut, flat)
        lam = torch.where(use_cutmix[:, None], cut.mean(dim=(2, 3)), draw.lam)
        return MixedImages(
            images=blend(x[draw.index], masks),
            masks=masks,
            thetas=identity_thetas(n, 2, x.device),
            saliency=_no_saliency(n, 2, x.device),
            lam=lam,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, switch_prob={self.switch_prob}, mode={self.mode!r}"


@register_mixer("resizemix")
class ResizeMix(_TwoInputMixer):
    """ResizeMix (Qin et al. 2020): shrink the whole partner image into a box at a random
    place; label weights are the box's area share.

    The partner's theta maps it into its box (``affine_grid`` convention), so warping it with
    ``grid_sample`` (bilinear, zeros padding, ``align_corners=False``) gives exactly the
    pasted pixels, which equal ``F.interpolate`` (bilinear) of the partner to the box size.

    Args:
        num_classes, label_smoothing, prob, check_inputs: as ``BatchMixer``.
        scale: (low, high): the box side is a share of the image side drawn uniformly in
            this range, the paper's (0.1, 0.8) by default; None draws the box area share as
            lam_1 ~ Beta(alpha, alpha) instead, like CutMix.
        alpha: used only when ``scale`` is None.
        k: must be 2.
    """

    def __init__(
        self, num_classes: int, *, scale: tuple[float, float] | None = (0.1, 0.8), **kwargs: Any
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if scale is not None:
            if not isinstance(scale, (tuple, list)) or len(scale) != 2:
                raise ValueError(f"scale: expected (low, high) with 0 < low <= high <= 1, or None, got {scale!r}")
            low = check_number("scale[0]", scale[0], low=0.0, high=1.0, low_open=True)
            high = check_number("scale[1]", scale[1], low=low, high=1.0)
            scale = (low, high)
        self.scale = scale

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Resize each partner into a random box of its sample (see ``BatchMixer.mix_images``)."""
        n, _, height, width = x.shape
        u = _host_uniform(draw.seed, (n, 3), x.device)
        if self.scale is None:
            side = draw.lam[:, 1].sqrt()
        else:
            side = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 2]
        box_h = (height * side).floor().long().clamp(1, height)
        box_w = (width * side).floor().long().clamp(1, width)
        top = (u[:, 0] * (height - box_h + 1)).long()
        left = (u[:, 1] * (width - box_w + 1)).long()
        box = box_masks(top, top + box_h, left, left + box_w, (height, width))
        theta = box_thetas(top, left, box_h, box_w, (height, width))
        thetas = identity_thetas(n, 2, x.device)
        thetas[:, 1] = torch.where(draw.mixed[:, None, None], theta, thetas[:, 1])
        resized = warp(x[draw.index[:, 1:]], thetas[:, 1:])[:, 0]
        parts = _paste(x, draw, box, resized.to(x.dtype))
        parts.thetas = thetas
        return parts

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


@register_mixer("saliencymix")
class SaliencyMix(_TwoInputMixer):
    """SaliencyMix (Uddin et al. 2021): paste a box of the partner centred on the partner's
    most salient point, at the same place in the sample; box area share lam_1 as in CutMix,
    clipped at the border, label weights from the pasted area.

    Args:
        num_classes, alpha, label_smoothing, prob, check_inputs: as ``BatchMixer``.
        saliency: "spectral" (spectral residual, the paper's choice; no weights), a
            classifier ``nn.Module`` (class activation maps), or a callable
            ``(images (N, C, H, W), soft targets (N, num_classes)) -> maps (N, h, w)``.
        size: resolution S of the saliency maps the peak is found on (returned as the
            result's ``saliency``, (N, 2, S, S) in [0, 1]).
        k: must be 2.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        saliency: str | nn.Module | Callable = "spectral",
        size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.size = check_int("size", size, 1)
        self.saliency = SaliencySource(saliency, size)  # a plain holder: the model in it is not owned

    def mix_images(self, x: Tensor, labels: Tensor, draw: MixDraw) -> MixedImages:
        """Paste a box around each partner's saliency peak (see ``BatchMixer.mix_images``)."""
        height, width = x.shape[2], x.shape[3]
        saliency = self.saliency(x, labels)[draw.index]
        peak = saliency[:, 1].flatten(1).argmax(dim=1)
        centre_y = ((peak // self.size).float() + 0.5) * height / self.size
        centre_x = ((peak % self.size).float() + 0.5) * width / self.size
        size = (height, width)
        box = box_masks(
            *centred_boxes(draw.lam[:, 1], centre_y.long(), centre_x.long(), size), size
        )
        parts = _paste(x, draw, box)
        parts.saliency = saliency
        return parts

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, size={self.size}"
