"""Shared fixtures: tiny batches and a tiny frozen classifier, made in the test itself."""
import pytest
import torch
from torch import nn

# The suite's tensors are tiny: one thread avoids thread start-up costs and oversubscription.
torch.set_num_threads(1)


def blob_batch(n: int = 6, channels: int = 3, size: int = 24, num_classes: int = 5, seed: int = 0):
    """(N, C, H, W) images with one bright square each at a random place, and int64 labels."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, channels, size, size, generator=generator)
    for i in range(n):
        top, left = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        x[i, :, top : top + 8, left : left + 8] += 2.0
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return x, y


class TinyClassifier(nn.Module):
    """A CAM-able classifier: conv features, global average pool, linear."""

    def __init__(self, channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def batch():
    return blob_batch()


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    model = TinyClassifier()
    model.eval().requires_grad_(False)
    return model


def assert_same_safetensors(got, expected) -> None:
    """Two safetensors files hold the same tensors and metadata (not necessarily the same bytes:
    safetensors writes metadata keys in hash order, which changes from process to process)."""
    from safetensors import safe_open

    with safe_open(got, "pt") as a, safe_open(expected, "pt") as b:
        assert a.metadata() == b.metadata()
        assert sorted(a.keys()) == sorted(b.keys())
        for key in b.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
