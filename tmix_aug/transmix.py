"""TransMix (Chen et al., CVPR 2022): label weights from a ViT's class-token attention.

The attention is read from the training forward itself through hooks, so the model is
not patched and runs no extra pass.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention, maybe_add_mask, resolve_self_attn_mask
from timm.utils import unwrap_model
from torch import Tensor, nn

from .checks import check_probability
from .functional import mix_labels
from .result import MixResult


def _last_attention(model: nn.Module) -> tuple[nn.Module, Attention]:
    """The model to hook (unwrapped from DDP / torch.compile) and its last block's attention; raise if unsupported."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a timm vision transformer (nn.Module), got {type(model).__name__}")
    model = unwrap_model(model)
    name = type(model).__name__
    for attr in ("blocks", "patch_embed", "num_prefix_tokens"):
        if not hasattr(model, attr):
            raise TypeError(
                f"model: expected a timm VisionTransformer-like model with .blocks, .patch_embed, "
                f".num_prefix_tokens and .cls_token, but {name} has no .{attr}"
            )
    if getattr(model, "cls_token", None) is None:
        raise ValueError(
            f"model: {name} has no class token (e.g. created with class_token=False, like the "
            "'*_gap' models); TransMix weighs labels by the class token's attention to the patches"
        )
    if len(model.blocks) == 0:
        raise ValueError(f"model: {name} has no transformer blocks")
    attn = getattr(model.blocks[-1], "attn", None)
    if not isinstance(attn, Attention):
        raise TypeError(
            f"model: expected the last block's .attn to be timm.layers.Attention, got "
            f"{type(attn).__name__}; other attention layers (rope, relative position bias) are not supported"
        )
    return model, attn


def _check_tokens(attention: Tensor, grid: tuple[int, int]) -> None:
    """Raise unless the (N, P) captured attention has one weight per cell of the patch grid."""
    if attention.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"TransMixLabels: the last block saw {attention.shape[1]} patch tokens, not the "
            f"{grid[0]}x{grid[1]} patch grid; token dropping (patch_drop_rate) is not supported"
        )


class TransMixLabels:
    """Attention-weighted targets for mixed batches on a timm vision transformer (TransMix).

    Attaching registers forward hooks on the model's last attention block. During every
    forward they record the class-token -> token attention of that block, averaged over
    the heads. The weights are recomputed inside the hook from the block's own q/k
    projection output (with its ``q_norm``, ``k_norm`` and ``scale``), for the class-token
    query only, because timm's fused attention never materialises them. The hooks only read:
    logits and gradients are unchanged.

    The prefix tokens (class, distillation and register tokens) are dropped from the
    attention and the patch weights renormalised to sum to 1 (ours). Since the masks sum to
    1 over the inputs, lambda equals the original TransMix's (raw patch weights, lambda
    renormalised over the inputs); only ``attention`` differs.

    ``relabel(result)`` then gives each input k of a mixed image the weight
    ``lambda_k = sum_p A_p * M_k(p)``: A is the attention over the patches, M_k input k's
    mask sampled at the patch grid, lambda renormalised over k. Each captured forward is
    used by one ``relabel`` (or ``lambdas``) call, so run the model on ``result.images``
    first, then relabel.

    Supported: timm ``VisionTransformer`` and subclasses whose blocks use
    ``timm.layers.Attention`` (ViT, DeiT including distilled, DeiT-3, register tokens,
    ``qk_norm``, ``dynamic_img_size``), also wrapped in ``DistributedDataParallel``.
    With gradient checkpointing, the recomputation in the backward captures again
    (the same attention, for the same batch).

    Args:
        model: the vision transformer being trained.
        area_weight: in [0, 1]; the final ``lambda = (1 - area_weight) * attention lambda +
            area_weight * result.lam``. The original TransMix averages the two: 0.5.

    Example::

        labels = TransMixLabels(vit)
        out = mixer.mix(x, y)
        logits = vit(out.images)
        loss = SoftTargetCrossEntropy()(logits, labels.relabel(out))
    """

    def __init__(self, model: nn.Module, *, area_weight: float = 0.0) -> None:
        self.area_weight = check_probability("area_weight", area_weight)
        vit, attn = _last_attention(model)
        self._attn = attn
        self._num_prefix_tokens = int(vit.num_prefix_tokens)
        self._grid: tuple[int, int] | None = None
        self._mask: tuple[Tensor | None, bool] = (None, False)
        self._attention: Tensor | None = None
        self._attention_grid: tuple[int, int] | None = None
        self._handles = [
            vit.patch_embed.register_forward_pre_hook(self._record_grid),
            attn.register_forward_pre_hook(self._record_mask, with_kwargs=True),
            attn.qkv.register_forward_hook(self._capture),
        ]

    @property
    def attached(self) -> bool:
        """Whether the hooks are attached (False after ``remove``)."""
        return bool(self._handles)

    @property
    def attention(self) -> Tensor | None:
        """(N, gh, gw) float32 class-token attention over the patch grid of the last forward,
        summing to 1 per image; None when none was captured since the last ``relabel``."""
        if self._attention is None:
            return None
        _check_tokens(self._attention, self._attention_grid)
        return self._attention.reshape(-1, *self._attention_grid)

    def _record_grid(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        size = tuple(args[0].shape[-2:])
        if hasattr(module, "dynamic_feat_size"):
            self._grid = tuple(module.dynamic_feat_size(size))
        else:
            self._grid = tuple(module.grid_size)

    def _record_mask(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        attn_mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        is_causal = kwargs.get("is_causal", args[2] if len(args) > 2 else False)
        self._mask = (attn_mask, bool(is_causal))

    @torch.no_grad()
    def _capture(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        attn = self._attn
        n, tokens, _ = output.shape
        qkv = output.detach().reshape(n, tokens, 3, attn.num_heads, attn.head_dim)
        q = attn.q_norm(qkv[:, :1, 0].transpose(1, 2))  # (N, heads, 1, head_dim): class token only
        k = attn.k_norm(qkv[:, :, 1].transpose(1, 2))  # (N, heads, tokens, head_dim)
        attn_mask, is_causal = self._mask
        # Weights in float32 also under autocast, which would run the matmul in half precision.
        with torch.autocast(device_type=output.device.type, enabled=False):
            scores = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # (N, heads, 1, tokens)
            bias = resolve_self_attn_mask(tokens, scores, attn_mask, is_causal)
            if bias is not None:
                scores = maybe_add_mask(scores, bias[..., :1, :])
            weights = scores.softmax(dim=-1).mean(dim=1)[:, 0]  # (N, tokens)
        patches = weights[:, self._num_prefix_tokens :]
        self._attention = patches / patches.sum(dim=-1, keepdim=True)
        self._attention_grid = self._grid
        self._mask = (None, False)

    def lambdas(self, result: MixResult) -> Tensor:
        """Attention-weighted label weights of a mix; uses up the captured forward.

        Args:
            result: the mix whose ``images`` the model has just been run on; masks (N, K, H, W).

        Returns:
            (N, K) float32 weights of each input, rows sum to 1, on the masks' device.
        """
        if not isinstance(result, MixResult):
            raise TypeError(f"result: expected a MixResult (from mixer.mix), got {type(result).__name__}")
        if not self._handles:
            raise RuntimeError("TransMixLabels: the hooks were removed; create a new TransMixLabels(model)")
        if self._attention is None:
            raise RuntimeError(
                "TransMixLabels: no forward of the model was captured since the last relabel; "
                "run model(result.images) before labels.relabel(result)"
            )
        attention, grid = self._attention, self._attention_grid
        self._attention = None
        _check_tokens(attention, grid)
        masks = result.masks
        if masks.ndim != 4:
            raise ValueError(f"result.masks: expected shape (N, K, H, W), got {tuple(masks.shape)}")
        if attention.shape[0] != masks.shape[0]:
            raise ValueError(
                f"result: the captured forward had a batch of {attention.shape[0]} images but the mix has "
                f"{masks.shape[0]}; run the model on result.images right before relabel"
            )
        # Nearest sampling at each patch's centre, "nearest-exact" (ours); TransMix's "nearest" takes
        # each patch's top-left pixel, which shifts box edges by up to a patch.
        cells = F.interpolate(masks.float(), size=grid, mode="nearest-exact").flatten(2)  # (N, K, gh*gw)
        lam = torch.einsum("nkp,np->nk", cells, attention.to(cells.device))
        lam = lam / lam.sum(dim=1, keepdim=True)
        if self.area_weight:
            lam = (1.0 - self.area_weight) * lam + self.area_weight * result.lam.float()
        return lam

    def relabel(self, result: MixResult) -> Tensor:
        """Targets of a mix re-weighted by the class-token attention; uses up the captured forward.

        Args:
            result: the mix whose ``images`` the model has just been run on.

        Returns:
            (N, num_classes) float32 ``sum_k lambda_k * result.labels[result.index[:, k]]`` with the
            lambdas of ``lambdas(result)``; label smoothing is kept, rows sum to 1.
        """
        lam = self.lambdas(result)
        return mix_labels(result.labels, lam, result.index)

    def remove(self) -> None:
        """Detach the hooks and drop any captured attention. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._attention = None

    def __enter__(self) -> TransMixLabels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"TransMixLabels(area_weight={self.area_weight}, attached={self.attached})"
