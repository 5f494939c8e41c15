"""The result of one mix, shared by TransformMix and every baseline."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class MixResult:
    """Everything a mixer decided for one batch.

    Shapes, for a batch of N images (C, H, W), K inputs per mixed image and a
    working resolution S:

    - ``images`` (N, C, H, W): the mixed images, in the input dtype.
    - ``targets`` (N, num_classes) float32: mixed soft targets, rows sum to 1;
      ``targets == sum_k lam[:, k] * labels[index[:, k]]``.
    - ``masks`` (N, K, H, W) float32: who shows where; sums to 1 over K at every pixel.
    - ``thetas`` (N, K, 2, 3) float32: the affine transform applied to each input
      (``affine_grid`` convention, output -> input coordinates); identity when not moved.
    - ``lam`` (N, K) float32: label weight of each input, rows sum to 1.
    - ``index`` (N, K) int64: which batch element fills slot k; slot 0 is the sample itself.
    - ``saliency`` (N, K, S, S) float32 in [0, 1]: each input's saliency before the warp
      (empty (N, K, 0, 0) for methods that use none).
    - ``labels`` (N, num_classes) float32: each sample's own (smoothed) target before mixing.
    """

    images: Tensor
    targets: Tensor
    masks: Tensor
    thetas: Tensor
    lam: Tensor
    index: Tensor
    saliency: Tensor
    labels: Tensor

    @property
    def k(self) -> int:
        """Number of inputs per mixed image."""
        return self.index.shape[1]
