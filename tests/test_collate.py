"""TransformMixCollate: stacking and mixing, uint8 batches, worker switch-off, random streams."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tmix_aug import TransformMix, TransformMixCollate


class Blobs(Dataset):
    """A bright square per image; the label is the image's index modulo 4."""

    def __init__(self, n=16, size=16, uint8=False):
        self.n, self.size, self.uint8 = n, size, uint8

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.full((3, self.size, self.size), 0.1)
        image[:, i % 8 : i % 8 + 6, (3 * i) % 8 : (3 * i) % 8 + 6] = 0.9
        if self.uint8:
            return (image * 255).byte().numpy(), i % 4
        return image, i % 4


def is_one_hot(targets):
    return bool(((targets == 0) | (targets == 1)).all())


def test_collate_stacks_and_mixes_float_samples():
    collate = TransformMixCollate(TransformMix(4), seed=0)
    images, targets = collate([Blobs()[i] for i in range(6)])
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.float32
    assert targets.shape == (6, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert not is_one_hot(targets)


def test_uint8_samples_come_back_as_uint8():
    collate = TransformMixCollate(TransformMix(4), seed=0)
    images, targets = collate([Blobs(uint8=True)[i] for i in range(6)])
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 16, 16)
    originals = torch.stack([torch.from_numpy(Blobs(uint8=True)[i][0]) for i in range(6)])
    assert not torch.equal(images, originals)
    assert int(images.min()) >= int(originals.min()) and int(images.max()) <= int(originals.max())


def test_disabled_collate_returns_the_batch_with_one_hot_targets():
    collate = TransformMixCollate(TransformMix(4, label_smoothing=0.2), seed=0)
    collate.enabled = False
    samples = [Blobs()[i] for i in range(4)]
    images, targets = collate(samples)
    assert torch.equal(images, torch.stack([s[0] for s in samples]))
    torch.testing.assert_close(targets, F.one_hot(torch.arange(4) % 4, 4).float() * 0.8 + 0.05)


def epoch_batches(loader, collate, epoch):
    collate.set_epoch(epoch)
    return [(images.clone(), targets.clone()) for images, targets in loader]


def make_loader(collate, workers=2, persistent=True):
    return DataLoader(
        Blobs(n=16), batch_size=4, collate_fn=collate, num_workers=workers, persistent_workers=persistent and workers > 0
    )


def test_switch_off_reaches_persistent_workers():
    collate = TransformMixCollate(TransformMix(4), seed=0)
    loader = make_loader(collate)
    first = epoch_batches(loader, collate, 0)
    assert not all(is_one_hot(t) for _, t in first)
    collate.enabled = False  # set in the main process while the workers live on
    second = epoch_batches(loader, collate, 1)
    assert all(is_one_hot(t) for _, t in second)
    plain = [Blobs(n=16)[i][0] for i in range(16)]
    assert torch.equal(torch.cat([b for b, _ in second]), torch.stack(plain))
    collate.enabled = True
    assert not all(is_one_hot(t) for _, t in epoch_batches(loader, collate, 2))


def test_off_epoch_reaches_persistent_workers():
    collate = TransformMixCollate(TransformMix(4), seed=0, off_epoch=1)
    loader = make_loader(collate)
    assert not all(is_one_hot(t) for _, t in epoch_batches(loader, collate, 0))
    assert all(is_one_hot(t) for _, t in epoch_batches(loader, collate, 1))


def run(seed, workers, persistent, epochs=2):
    torch.manual_seed(seed)
    collate = TransformMixCollate(TransformMix(4))
    loader = make_loader(collate, workers, persistent)
    return [epoch_batches(loader, collate, epoch) for epoch in range(epochs)]


@pytest.mark.parametrize("workers, persistent", [(0, False), (2, True), (2, False)])
def test_one_seed_reproduces_the_run_and_streams_differ(workers, persistent):
    a, b, c = run(0, workers, persistent), run(0, workers, persistent), run(1, workers, persistent)
    flat = lambda run_: torch.cat([t for epoch in run_ for _, t in epoch])  # noqa: E731
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    epoch0, epoch1 = (torch.cat([t for _, t in epoch]) for epoch in a)
    assert not torch.equal(epoch0, epoch1)  # a new stream each epoch
    lams = [t.max(1).values for _, t in a[0]]  # batches of different workers draw differently
    assert len({tuple(np.round(lam.numpy(), 6)) for lam in lams}) == len(lams)


@pytest.mark.parametrize(
    "batch, error, words",
    [
        ([], ValueError, "batch: expected at least one"),
        ([("not an image", 0)], TypeError, "batch[0][0]: expected an image tensor"),
        ([(torch.rand(16, 16), 0)], ValueError, "batch[0][0]: expected an image of shape (C, H, W)"),
    ],
)
def test_bad_samples_are_named(batch, error, words):
    with pytest.raises(error) as info:
        TransformMixCollate(TransformMix(4), seed=0)(batch)
    assert words in str(info.value)


def test_collate_needs_a_mixer():
    with pytest.raises(TypeError, match="mixer: expected a tmix_aug mixer"):
        TransformMixCollate(lambda x, y: (x, y))


def test_a_fresh_collate_at_epoch_1_does_not_repeat_epoch_0():
    """The epoch keys the stream: a resumed run (a new collate, set_epoch(1)) draws anew."""
    samples = [Blobs()[i] for i in range(8)]

    def first_batch(epoch):
        collate = TransformMixCollate(TransformMix(4), seed=0)
        collate.set_epoch(epoch)
        return collate(samples)[1]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


def test_mixup_enabled_is_timms_name_for_the_switch_and_reaches_workers():
    collate = TransformMixCollate(TransformMix(4), seed=0)
    loader = make_loader(collate)
    assert collate.mixup_enabled and not all(is_one_hot(t) for _, t in epoch_batches(loader, collate, 0))
    collate.mixup_enabled = False
    assert not collate.enabled
    assert all(is_one_hot(t) for _, t in epoch_batches(loader, collate, 1))


def test_integer_labels_of_any_dtype():
    samples = [Blobs()[i] for i in range(4)]
    collate = TransformMixCollate(TransformMix(4), seed=0)
    reference = collate([(image, label) for image, label in samples])
    for dtype in (np.int8, np.int32, np.uint8):
        collate = TransformMixCollate(TransformMix(4), seed=0)
        images, targets = collate([(image, dtype(label)) for image, label in samples])
        assert torch.equal(targets, reference[1]) and torch.equal(images, reference[0])


image = torch.rand(3, 16, 16)


@pytest.mark.parametrize(
    "batch, error, words",
    [
        ([(image, 0), (np.zeros((16, 16, 3), np.uint8), 1)], ValueError, "batch[1][0]: expected an image of shape (C, H, W), got (16, 16, 3), which looks like (H, W, C)"),
        ([(image, 0), ((image * 255).byte(), 1)], ValueError, "batch[1][0]: image dtype torch.uint8 differs from batch[0]'s torch.float32"),
        ([(image, 0), (torch.rand(3, 8, 8), 1)], ValueError, "batch[1][0]: image shape (3, 8, 8) differs"),
        ([(image, 0), (image, 4)], ValueError, "batch[1][1]: expected a class index in [0, 4), got 4"),
        ([(image, 0), (image, -1)], ValueError, "batch[1][1]: expected a class index in [0, 4), got -1"),
        ([(image, 0), (image, 1.5)], TypeError, "batch[1][1]: expected an integer class index, got 1.5"),
        ([(image, 0), (image, "cat")], TypeError, "batch[1][1]: expected a class index or a 1-D soft target, got str"),
        ([(image, 0), (image, torch.ones(3) / 3)], ValueError, "batch[1][1]: expected a float soft target of 4 values"),
        ([(image, 0), (image, torch.ones(4) / 4)], ValueError, "batch[1][1]: label kind soft target differs from batch[0]'s class index"),
        ([(image, torch.ones(4) * 2)], ValueError, "y: soft target rows must sum to 1"),
    ],
)
def test_bad_samples_name_the_sample(batch, error, words):
    for enabled in (True, False):
        collate = TransformMixCollate(TransformMix(4), seed=0)
        collate.enabled = enabled
        with pytest.raises(error) as info:
            collate(batch)
        assert words in str(info.value)
