"""Stateless tensor operations of mixing: warps, masks, blends, boxes and label arithmetic.

The mixer classes (``TransformMix`` and the baselines), the pictures in ``viz`` and the
search all build on these, as torchvision's v2 transforms build on
``transforms.v2.functional``. Shapes: N samples, K inputs per mixed image, C channels,
H x W images, S x S the mixers' working resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BALANCE_STEPS = 30
"""Scaling steps of ``balanced_softmax``: the largest share error after them, on CIFAR-10 CAMs,
is below 1e-6 at tau >= 0.3, about 5e-4 at tau = 0.1 and 5e-3 at tau = 0.05 (sharper masks
converge more slowly). A fixed count keeps the step free of host synchronisation."""


def identity_thetas(n: int, k: int, device: torch.device | str) -> Tensor:
    """(N, K, 2, 3) float32 identity affine transforms (``affine_grid`` convention)."""
    eye = torch.eye(2, 3, device=device)
    return eye.expand(n, k, 2, 3).clone()


def affine_grid(thetas: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(thetas, (B, C, height, width), align_corners=False)`` without its batched matmul.

    The grid is affine in the pixel coordinates, so each of its two planes is a broadcast sum
    of a column term and a row term: one pass over the output instead of a (B, H*W, 3) x (3, 2)
    product (20x faster on a CPU at 224 px, where the matmul cost more than the ``grid_sample``
    reading the grid). The planes are computed whole and returned as a strided (B, H, W, 2) view,
    which ``grid_sample`` reads as it is.

    Args:
        thetas: (B, 2, 3) affine transforms (output -> input coordinates).

    Returns:
        (B, height, width, 2) sampling grid, (x, y) in [-1, 1] at pixel centres.
    """
    xs = (torch.arange(width, device=thetas.device, dtype=thetas.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=thetas.device, dtype=thetas.dtype) * 2 + 1) / height - 1
    columns = thetas[:, :, 0, None] * xs  # (B, 2, W)
    rows = thetas[:, :, 1, None] * ys + thetas[:, :, 2, None]  # (B, 2, H)
    return (columns[:, :, None, :] + rows[:, :, :, None]).permute(0, 2, 3, 1)


def warp(x: Tensor, thetas: Tensor) -> Tensor:
    """Apply one affine transform per input, all in one ``grid_sample`` call.

    Bilinear, ``align_corners=False``; pixels that come from outside the image are 0 (ours;
    for normalised images 0 is the mean colour).

    Args:
        x: (N, K, C, H, W) the inputs of each mixed image.
        thetas: (N, K, 2, 3) ``affine_grid`` transforms (output -> input coordinates).

    Returns:
        (N, K, C, H, W) warped inputs, in the dtype of ``thetas``.
    """
    n, k, c, h, w = x.shape
    flat = x.reshape(n * k, c, h, w).to(thetas.dtype)
    grid = affine_grid(thetas.reshape(n * k, 2, 3), h, w)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view(n, k, c, h, w)


def blend_from_batch(
    x: Tensor, index: Tensor, masks: Tensor, thetas: Tensor | None = None, *, first_is_own: bool = False
) -> Tensor:
    """``sum_k masks[:, k] * warp(x[index[:, k]], thetas[:, k])`` slot by slot (no warp without ``thetas``).

    Same result as ``blend(warp(x[index], thetas), masks)`` (or ``blend(x[index], masks)``)
    without the (M, K, C, H, W) copy of the inputs: slot k reads its images straight from the
    batch, and for K = 2 the blend is one fused ``lerp``.

    Args:
        x: (N, C, H, W) the batch.
        index: (M, K) int64 batch element of each slot of the M mixed images.
        masks: (M, K, H, W) weights summing to 1 over K.
        thetas: (M, K, 2, 3) transforms (output -> input coordinates), or None: no warp.
        first_is_own: the caller guarantees ``index[:, 0] == arange(N)`` (every sample mixed),
            so slot 0 reads ``x`` itself without a gather.

    Returns:
        (M, C, H, W) mixed images, in the dtype of ``masks``.
    """
    height, width = x.shape[-2:]
    dtype = masks.dtype
    out = None
    for slot in range(index.shape[1]):  # K is 2 or 3: one pass per slot, each over the batch
        inputs = (x if slot == 0 and first_is_own else x.index_select(0, index[:, slot])).to(dtype)
        if thetas is None:
            moved = inputs
        else:
            grid = affine_grid(thetas[:, slot].to(dtype), height, width)
            moved = F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if index.shape[1] == 2:
            if out is None:
                out = moved
            else:  # masks[:, 1] = 1 - masks[:, 0]: x1 + m0 * (x0 - x1)
                out = torch.lerp(moved, out, masks[:, :1])
        elif out is None:
            out = moved * masks[:, :1]
        else:  # out of place: the search differentiates through it
            out = torch.addcmul(out, moved, masks[:, slot : slot + 1])
    return out


def blend(x: Tensor, masks: Tensor) -> Tensor:
    """Per-pixel blend of K inputs.

    Args:
        x: (N, K, C, H, W) the inputs of each mixed image.
        masks: (N, K, H, W) weights summing to 1 over K.

    Returns:
        (N, C, H, W) ``sum_k masks[:, k] * x[:, k]`` in the dtype of ``x``.
    """
    masks = masks.to(x.dtype).unsqueeze(2)
    out = x[:, 0] * masks[:, 0]
    for slot in range(1, x.shape[1]):  # K is small; a fused multiply-add beats einsum here
        out = out.addcmul_(x[:, slot], masks[:, slot])
    return out


def balanced_softmax(logits: Tensor, lam: Tensor, steps: int = BALANCE_STEPS) -> Tensor:
    """Softmax masks over K inputs in which input k covers the share lambda_k of the image.

    Finds one offset per sample and input, ``b`` (N, K), such that the masks
    ``softmax_k(logits + b)`` average to ``lam`` over the pixels, by Sinkhorn's scaling
    iterations in log space (``b_k += log lam_k - log share_k``). The offsets do not change
    which input wins a pixel relative to another pixel, only how much area each one gets, so
    the masks keep their learned shape while the mixed image shows each input exactly as much
    as its label weight says, as Mixup and CutMix do. Differentiable through every step.

    Args:
        logits: (N, K, S, S) mask logits.
        lam: (N, K) label weights, rows summing to 1.
        steps: scaling iterations (see ``BALANCE_STEPS``).

    Returns:
        (N, K, S, S) masks summing to 1 over K, with ``masks.mean((-2, -1)) ~= lam``.
    """
    if logits.shape[1] == 2:
        return _balanced_sigmoid(logits, lam, steps)
    log_lam = lam.to(logits.dtype).clamp_min(1e-12).log()[:, :, None, None]
    offsets = torch.zeros_like(log_lam)
    for _ in range(steps):
        shares = (logits + offsets).softmax(dim=1).mean(dim=(-2, -1), keepdim=True)
        offsets = offsets + log_lam - shares.clamp_min(1e-12).log()
    return (logits + offsets).softmax(dim=1)


def _balanced_sigmoid(logits: Tensor, lam: Tensor, steps: int) -> Tensor:
    """``balanced_softmax`` for K = 2, the same iterations on one offset difference.

    With two inputs the softmax is a sigmoid of the logit difference and only the difference
    of the offsets matters, so each step is one sigmoid over (N, S, S) instead of a softmax
    over (N, 2, S, S): about 2.5x faster on CPU (measured at N = 128, S = 32).
    """
    difference = logits[:, 0] - logits[:, 1]
    share = lam[:, 0].to(logits.dtype).clamp(1e-12, 1 - 1e-7)[:, None, None]
    target = share.log() - (1 - share).log()
    offset = torch.zeros_like(target)
    for _ in range(steps):
        current = torch.sigmoid(difference + offset).mean(dim=(-2, -1), keepdim=True)
        offset = offset + target - (current.clamp_min(1e-12).log() - (1 - current).clamp_min(1e-12).log())
    first = torch.sigmoid(difference + offset)
    return torch.stack([first, 1 - first], dim=1)


def keep_unmixed(masks: Tensor, mixed: Tensor) -> Tensor:
    """Give the unmixed samples a mask that shows only their own image.

    Args:
        masks: (N, K, H, W) float masks.
        mixed: (N,) bool, which samples are mixed.

    Returns:
        (N, K, H, W): ``masks`` for mixed samples, [1, 0, ...] everywhere for the others.
    """
    own = torch.zeros_like(masks)
    own[:, 0] = 1.0
    return torch.where(mixed[:, None, None, None], masks, own)


def box_masks(top: Tensor, bottom: Tensor, left: Tensor, right: Tensor, size: tuple[int, int]) -> Tensor:
    """Boolean masks of one axis-aligned box per sample, built by comparing coordinate grids.

    Args:
        top, bottom, left, right: (N,) int64 pixel bounds; rows top..bottom-1 and columns
            left..right-1 are inside.
        size: (H, W) of the masks.

    Returns:
        (N, H, W) bool, True inside each sample's box.
    """
    rows = torch.arange(size[0], device=top.device)
    cols = torch.arange(size[1], device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def centred_boxes(
    area: Tensor, centre_y: Tensor, centre_x: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CutMix boxes: sides sqrt(area) of the image's, around a centre, clipped to the image.

    Args:
        area: (N,) float share of the image the unclipped box covers, in [0, 1].
        centre_y, centre_x: (N,) int64 pixel centre of each box.
        size: (H, W) of the images.

    Returns:
        top, bottom, left, right: (N,) int64 clipped bounds (see ``box_masks``).
    """
    height, width = size
    side = area.float().clamp(0, 1).sqrt()
    box_h = (height * side).floor().long()
    box_w = (width * side).floor().long()
    top = centre_y - box_h // 2
    left = centre_x - box_w // 2
    return (
        top.clamp(0, height),
        (top + box_h).clamp(0, height),
        left.clamp(0, width),
        (left + box_w).clamp(0, width),
    )


def box_thetas(top: Tensor, left: Tensor, box_h: Tensor, box_w: Tensor, size: tuple[int, int]) -> Tensor:
    """Affine transforms that shrink a whole image into a box (``affine_grid`` convention).

    ``warp`` with them gives, inside the box, the image resized to the box (bilinear) and 0
    outside it.

    Args:
        top, left: (N,) int64 pixel corner of each box.
        box_h, box_w: (N,) int64 box sides in pixels, >= 1.
        size: (H, W) of the images.

    Returns:
        (N, 2, 3) float32 output -> input transforms mapping the box onto [-1, 1]^2.
    """
    height, width = size
    scale_y = box_h.float() / height
    scale_x = box_w.float() / width
    centre_y = (2 * top + box_h).float() / height - 1
    centre_x = (2 * left + box_w).float() / width - 1
    zero = torch.zeros_like(scale_x)
    return torch.stack(
        [
            torch.stack([1 / scale_x, zero, -centre_x / scale_x], dim=1),
            torch.stack([zero, 1 / scale_y, -centre_y / scale_y], dim=1),
        ],
        dim=1,
    )


def smooth_labels(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Class indices or soft targets to smoothed soft targets, like timm's ``mixup_target``.

    Args:
        y: (N,) class indices of any integer dtype, or (N, num_classes) float soft targets.
        num_classes: number of classes.
        smoothing: label smoothing in [0, 1).

    Returns:
        (N, num_classes) float32, rows sum to 1 when the soft targets did.
    """
    if y.ndim == 1:
        soft = F.one_hot(y.long(), num_classes).float()
    else:
        soft = y.float()
    if smoothing:
        soft = soft * (1.0 - smoothing) + smoothing / num_classes
    return soft


def mix_labels(labels: Tensor, lam: Tensor, index: Tensor) -> Tensor:
    """Mix per-sample targets with per-slot weights.

    Args:
        labels: (N, num_classes) each batch element's own target.
        lam: (N, K) weights, rows sum to 1.
        index: (N, K) int64 batch element of each slot.

    Returns:
        (N, num_classes): ``sum_k lam[:, k] * labels[index[:, k]]``.
    """
    return torch.einsum("nk,nkc->nc", lam, labels[index])
