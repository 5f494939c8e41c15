"""Random draws of a mix: partners, label weights and who is mixed, reproducible from a generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class MixDraw:
    """The random decisions for one batch of N samples with K inputs each.

    - ``index`` (N, K) int64: batch element of each slot; slot 0 is the sample itself and
      the K slots of a mixed sample are K distinct elements.
    - ``lam`` (N, K) float32: Dirichlet(alpha) weights; [1, 0, ...] for unmixed samples.
    - ``mixed`` (N,) bool: which samples are mixed (drawn with probability ``prob``).
    - ``seed``: an integer drawn from the same stream, for further draws (noise).
    """

    index: Tensor
    lam: Tensor
    mixed: Tensor
    seed: int


def check_generator(generator: torch.Generator | None) -> None:
    """Raise TypeError unless ``generator`` is None or a CPU ``torch.Generator``."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise TypeError(
            "generator: expected a CPU torch.Generator (the few random numbers of a mix are drawn "
            f"on the host and copied to the batch's device), got one on {generator.device}"
        )


def stream_seed(*keys: int, bits: int = 63) -> int:
    """A seed for one random stream, derived from integer keys (e.g. base seed, rank, epoch, batch).

    Uses numpy's ``SeedSequence``, so nearby keys give unrelated streams: every (seed, rank,
    worker, epoch, batch) draws its own numbers, and the same keys always repeat them, which
    is what makes a resumed run mix as an uninterrupted one.

    Args:
        *keys: non-negative integers, most significant first.
        bits: size of the seed, at most 64 (63 fits ``torch.Generator.manual_seed`` and numpy;
            use 32 for seeders that take 32 bits, such as ``np.random.seed``).

    Returns:
        An int in [0, 2**bits).
    """
    if not keys or any(isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0 for key in keys):
        raise ValueError(f"keys: expected one or more non-negative ints, got {keys!r}")
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits: expected an int from 1 to 64, got {bits!r}")
    state = np.random.SeedSequence([int(key) for key in keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(64 - bits))


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One 63-bit integer from ``generator``, or from torch's global CPU stream when None."""
    check_generator(generator)
    return int(torch.randint(0, 2**63 - 1, (), generator=generator))


def draw_mix(
    n: int,
    k: int,
    alpha: float,
    prob: float,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> MixDraw:
    """Draw partners, Dirichlet(alpha * 1_K) weights and the mixed/unmixed split for N samples.

    Partners (ours): one random permutation p of the batch; the sample at p[j] takes
    p[j + 1], ..., p[j + K - 1] (cyclically) as partners, so the K inputs of a sample are
    distinct and every element is used equally often in every slot. A batch of one is
    returned unmixed.

    Args:
        n: batch size N.
        k: inputs per mixed image K >= 2, at most N when N > 1.
        alpha: Dirichlet concentration > 0 (Beta(alpha, alpha) when K = 2).
        prob: probability in [0, 1] that a sample is mixed.
        device: where the returned tensors live (copied without a host-device sync).
        generator: CPU generator for reproducibility; torch's global stream when None.

    Returns:
        A ``MixDraw`` with (N, K) ``index`` and ``lam`` and (N,) ``mixed`` on ``device``.
    """
    if n > 1 and k > n:
        raise ValueError(f"k: {k} inputs per mixed image need a batch of at least {k}, got a batch of {n}")
    seed = draw_seed(generator)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    index = np.empty((n, k), dtype=np.int64)
    for slot in range(k):
        index[perm, slot] = np.roll(perm, -slot)
    lam = rng.dirichlet(np.full(k, alpha), size=n).astype(np.float32)
    mixed = (rng.random(n) < prob) if n > 1 else np.zeros(n, dtype=bool)
    lam[~mixed] = np.eye(k, dtype=np.float32)[0]
    return MixDraw(
        index=torch.from_numpy(index).to(device, non_blocking=True),
        lam=torch.from_numpy(lam).to(device, non_blocking=True),
        mixed=torch.from_numpy(mixed).to(device, non_blocking=True),
        seed=int(rng.integers(0, 2**63 - 1)),
    )


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``, for draws made on the device itself."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
