"""The search's record of how the spatial transformer moves the inputs."""
from __future__ import annotations

import math

import pytest
import torch

from tmix_aug.functional import warp
from tmix_aug.search.records import transform_statistics

S = 32


def two_spots() -> torch.Tensor:
    """(4, 2, S, S) saliency: input 0 peaks left of centre, input 1 right of it."""
    saliency = torch.zeros(4, 2, S, S)
    saliency[:, 0, 15:17, 7:9] = 1
    saliency[:, 1, 15:17, 23:25] = 1
    return saliency


def identity(n: int = 4, k: int = 2) -> torch.Tensor:
    return torch.eye(2, 3).expand(n, k, 2, 3).clone()


def centroid_x(maps: torch.Tensor) -> torch.Tensor:
    coords = (torch.arange(S) * 2 + 1) / S - 1
    return (maps.sum(-2) * coords).sum(-1) / maps.sum((-2, -1))


def test_identity_moves_nothing():
    stats = transform_statistics(identity(), two_spots())
    assert stats["shift_p90"] == 0 and stats["rotation_p90"] == 0
    assert stats["scale_p10"] == stats["scale_p90"] == 1
    assert stats["moved_apart"] == stats["moved_together"] == 0


@pytest.mark.parametrize("sign, apart", [(1, True), (-1, False)])
def test_shifts_are_read_in_the_direction_the_warp_moves_the_content(sign, apart):
    thetas = identity()
    thetas[:, 0, 0, 2] = sign * 0.25
    thetas[:, 1, 0, 2] = -sign * 0.25
    saliency = two_spots()
    warped = warp(saliency.unsqueeze(2), thetas).squeeze(2)
    gap_before = centroid_x(saliency[:, 1]) - centroid_x(saliency[:, 0])
    gap_after = centroid_x(warped[:, 1]) - centroid_x(warped[:, 0])
    assert bool((gap_after > gap_before).all()) == apart  # what the warp really does
    stats = transform_statistics(thetas, saliency)
    assert stats["moved_apart"] == (1.0 if apart else 0.0)
    assert stats["moved_together"] == (0.0 if apart else 1.0)
    assert stats["shift_p50"] == pytest.approx(0.125)  # 0.25 of the [-1, 1] span is 1/8 of the side


def test_scale_and_rotation_of_the_content():
    angle = math.radians(30)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    thetas = identity()
    thetas[..., :2] = 0.5 * rotation  # each output pixel reads half as far out: content twice as large
    stats = transform_statistics(thetas, two_spots())
    assert stats["scale_p50"] == pytest.approx(2.0)
    assert stats["rotation_p50"] == pytest.approx(30.0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="thetas"):
        transform_statistics(torch.zeros(4, 2, 3, 3), two_spots())
    with pytest.raises(ValueError, match="saliency"):
        transform_statistics(identity(k=3), two_spots())
