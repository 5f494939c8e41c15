"""Cached saliency: stored once, keyed to source and data, and moved with its image by the augmentation."""
import os
import random

import pytest
import timm.data
import torch
import torch.nn.functional as F
from conftest import TinyClassifier
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from tmix_aug import TransformMix
from tmix_aug.saliency import ClassActivationMap, resize_and_normalize
from tmix_aug.saliency_cache import SaliencyCache, dataset_fingerprint, source_fingerprint
from tmix_aug.saliency_transforms import JointTransform, SaliencyDataset, SaliencyMap


def smooth_images(n=12, size=32, seed=0):
    """(N, 3, size, size) smooth images in [0, 1] (upsampled noise), so resampling errors stay small."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def gray(images, targets=None):
    """A saliency that commutes with every crop, resize and flip: the grey level of each pixel."""
    return images.mean(1)


class Counting:
    def __init__(self, fn):
        self.fn, self.images = fn, 0

    def __call__(self, images, targets):
        self.images += images.shape[0]
        return self.fn(images, targets)


class PILDataset(Dataset):
    """(PIL image, label) items, as image folders and timm datasets give them."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        array = (self.images[i].permute(1, 2, 0) * 255).round().byte().numpy()
        return Image.fromarray(array), int(self.labels[i])


def normalised(maps, size):
    return resize_and_normalize(torch.stack(maps).float(), size)


def augmented_pairs(dataset, source, count, seed=0):
    """For each item: the augmented stored map and the source's map of the augmented image."""
    stored, fresh = [], []
    for i in range(count):
        torch.manual_seed(seed + i)
        random.seed(seed + i)  # timm's crop draws from Python's generator
        image, saliency_map, label = dataset[i]
        image = torch.as_tensor(image).float()
        stored.append(saliency_map)
        fresh.append(source(image[None], F.one_hot(torch.tensor([label]), 5).float())[0])
    return stored, fresh


def test_stored_maps_follow_a_v2_crop_resize_and_flip():
    """Geometry: the augmented stored map equals the map of the augmented image (tolerance 0.02 after min-max)."""
    images = smooth_images()
    data = TensorDataset(images, torch.randint(0, 5, (12,)))
    cache = SaliencyCache.build(data, gray, num_classes=5, map_size=32, source_key="gray")
    transform = v2.Compose([v2.RandomResizedCrop(24, scale=(0.3, 1.0)), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                            v2.ColorJitter(brightness=0.0), v2.Normalize([0.0] * 3, [1.0] * 3)])
    dataset = SaliencyDataset(data, cache, transform)
    stored, fresh = augmented_pairs(dataset, gray, 12)
    assert all(m.shape == (24, 24) and m.dtype == torch.float32 for m in stored)
    difference = (normalised(stored, 24) - normalised(fresh, 24)).abs()
    assert difference.max() < 0.02
    # and the geometry matters: the unaugmented map does not match
    plain = [F.interpolate(cache[i][None, None], size=(24, 24), mode="bilinear")[0, 0] for i in range(12)]
    assert (normalised(plain, 24) - normalised(fresh, 24)).abs().mean() > 0.1


def test_saliency_map_is_resampled_bilinearly_and_skips_photometric_steps():
    ramp = torch.linspace(0, 1, 8).expand(8, 8)
    out = v2.Resize(16)(SaliencyMap(ramp))
    assert isinstance(out, SaliencyMap) and out.shape == (1, 16, 16)
    assert len(torch.unique(out[0, 0])) == 16  # bilinear: no repeated (nearest-neighbour) values
    jittered = v2.ColorJitter(brightness=0.9, contrast=0.9)(SaliencyMap(ramp))
    assert torch.equal(jittered[0], ramp)
    with pytest.raises(ValueError, match="SaliencyMap: expected a \\(H, W\\) or \\(1, H, W\\) map"):
        SaliencyMap(torch.rand(2, 4, 4))


def test_stored_maps_follow_timms_training_transform():
    """timm's pipeline (PIL crop with random interpolation, flip, to tensor): tolerance 0.06 after min-max.

    PIL resamples the uint8 image and the float map alike; the 8-bit rounding of the image
    is the main difference.
    """
    images = smooth_images()
    labels = torch.randint(0, 5, (12,))
    pil = PILDataset(images, labels)
    cache = SaliencyCache.build(pil, gray, num_classes=5, transform=v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]),
                                map_size=32, source_key="gray", dataset_key="pil-12")
    transform = timm.data.create_transform(24, is_training=True, scale=(0.3, 1.0), hflip=0.5, vflip=0.5, color_jitter=0.4,
                                           interpolation="random", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    dataset = SaliencyDataset(pil, cache, transform)
    assert isinstance(dataset.transform, JointTransform)
    # colour jitter changes the grey level: compare against the same pipeline without it
    plain = SaliencyDataset(pil, cache, timm.data.create_transform(
        24, is_training=True, scale=(0.3, 1.0), hflip=0.5, vflip=0.5, color_jitter=0.0, interpolation="random",
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    stored, fresh = augmented_pairs(plain, gray, 12)
    assert (normalised(stored, 24) - normalised(fresh, 24)).abs().max() < 0.06
    jittered, _ = augmented_pairs(dataset, gray, 12)
    for a, b in zip(jittered, stored):  # jitter draws its own numbers after the geometry: same maps
        assert torch.equal(a, b)


def test_joint_transform_refuses_what_it_does_not_know():
    auto = timm.data.create_transform(24, is_training=True, auto_augment="rand-m9-mstd0.5")
    with pytest.raises(ValueError, match="transform: does RandAugment move pixels"):
        JointTransform(auto)
    rand_augment = type(auto.transforms[2])
    JointTransform(auto, image_only=(rand_augment,))


def test_cam_cache_follows_translations_and_flips():
    """A CAM is equivariant to shifts and flips except where the padding enters its receptive field.

    Stated tolerance after min-max: mean error < 0.05 and 90% of pixels within 0.1 (a few
    near-flat maps differ more once normalised).
    """
    torch.manual_seed(0)
    teacher = TinyClassifier().eval()
    cam = ClassActivationMap(teacher, class_source="label")
    images = smooth_images(n=10)
    data = TensorDataset(images, torch.randint(0, 5, (10,)))
    cache = SaliencyCache.build(data, cam, num_classes=5, map_size=32)
    dataset = SaliencyDataset(data, cache, v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]))
    stored, fresh = augmented_pairs(dataset, cam, 10)
    difference = (normalised(stored, 32) - normalised(fresh, 32)).abs()
    assert difference.mean() < 0.05 and difference.quantile(0.9) < 0.1
    plain = [cache[i] for i in range(10)]  # without following the augmentation
    assert (normalised(plain, 32) - normalised(fresh, 32)).abs().mean() > 2 * difference.mean()


def test_build_stores_once_and_recomputes_when_teacher_or_data_change(tmp_path):
    images = smooth_images(n=6)
    data = TensorDataset(images, torch.randint(0, 5, (6,)))
    torch.manual_seed(0)
    teacher = TinyClassifier().eval()
    source = Counting(ClassActivationMap(teacher))
    key = source_fingerprint(teacher)
    first = SaliencyCache.build(data, source, num_classes=5, directory=tmp_path, map_size=8, source_key=key)
    again = SaliencyCache.build(data, source, num_classes=5, directory=tmp_path, map_size=8, source_key=key)
    assert source.images == 6 and first.path == again.path
    assert torch.equal(torch.stack([first[i] for i in range(6)]), torch.stack([again[i] for i in range(6)]))
    memory = SaliencyCache.build(data, ClassActivationMap(teacher), num_classes=5, map_size=8)
    assert torch.equal(torch.stack([memory[i] for i in range(6)]), torch.stack([first[i] for i in range(6)]))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    with torch.no_grad():
        teacher.fc.weight.add_(1.0)
    assert source_fingerprint(teacher) != key
    SaliencyCache.build(data, source, num_classes=5, directory=tmp_path, map_size=8, source_key=source_fingerprint(teacher))
    assert source.images == 12
    other = TensorDataset(images.flip(0), data.tensors[1])
    assert dataset_fingerprint(other) != dataset_fingerprint(data)
    SaliencyCache.build(other, source, num_classes=5, directory=tmp_path, map_size=8, source_key=key)
    assert source.images == 18 and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_a_damaged_file_is_recomputed(tmp_path):
    data = TensorDataset(smooth_images(n=4), torch.randint(0, 5, (4,)))
    source = Counting(gray)
    cache = SaliencyCache.build(data, source, num_classes=5, directory=tmp_path, map_size=8, source_key="g")
    cache.path.write_bytes(b"not a safetensors file")
    rebuilt = SaliencyCache.build(data, source, num_classes=5, directory=tmp_path, map_size=8, source_key="g")
    assert source.images == 8 and rebuilt[3].shape == (8, 8)


def test_what_cannot_be_fingerprinted_asks_for_a_key():
    data = TensorDataset(smooth_images(n=2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="pass source_key="):
        SaliencyCache.build(data, gray, num_classes=5)
    with pytest.raises(TypeError, match="pass dataset_key="):
        SaliencyCache.build(PILDataset(smooth_images(n=2), [0, 1]), gray, num_classes=5, source_key="g")
    cache = SaliencyCache.build(data, gray, num_classes=5, map_size=8, source_key="g")
    with pytest.raises(ValueError, match="cache: has 2 maps for a dataset of 3 items"):
        SaliencyDataset(TensorDataset(torch.rand(3, 3, 8, 8), torch.zeros(3)), cache)
    with pytest.raises(IndexError, match="index: 2 is out of range"):
        cache[2]


def test_loader_workers_read_the_file_and_the_mixer_takes_the_maps(tmp_path):
    images = smooth_images(n=8)
    data = TensorDataset(images, torch.randint(0, 5, (8,)))
    cache = SaliencyCache.build(data, gray, num_classes=5, directory=tmp_path, map_size=16, source_key="g")
    dataset = SaliencyDataset(data, cache, v2.Compose([v2.RandomResizedCrop(24), v2.RandomHorizontalFlip()]))
    loader = DataLoader(dataset, batch_size=4, num_workers=1)
    mixer = TransformMix(5, saliency="spectral")
    for x, maps, y in loader:
        assert x.shape == (4, 3, 24, 24) and maps.shape == (4, 24, 24)
        out = mixer.mix(x, y, saliency=maps)
        assert out.images.shape == x.shape and out.saliency.shape == (4, 2, 32, 32)


def _rank_builds(rank, directory, world):
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world)
    data = TensorDataset(smooth_images(n=7), torch.zeros(7, dtype=torch.long))
    on_disk, in_memory = Counting(gray), Counting(gray)
    disk = SaliencyCache.build(data, on_disk, num_classes=5, directory=f"{directory}/cache", map_size=8, source_key="g")
    memory = SaliencyCache.build(data, in_memory, num_classes=5, map_size=8, source_key="g")
    save_file({"disk": torch.stack([disk[i] for i in range(7)]), "memory": memory.maps.float(),
               "counts": torch.tensor([on_disk.images, in_memory.images])}, f"{directory}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_under_torch_distributed_rank_0_writes_and_memory_caches_are_sharded(tmp_path):
    from safetensors.torch import load_file

    torch.multiprocessing.start_processes(_rank_builds, args=(str(tmp_path), 2), nprocs=2, start_method="fork")
    alone = SaliencyCache.build(TensorDataset(smooth_images(n=7), torch.zeros(7, dtype=torch.long)), gray,
                                num_classes=5, map_size=8, source_key="g")
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    assert ranks[0]["counts"].tolist() == [7, 4] and ranks[1]["counts"].tolist() == [0, 3]
    for result in ranks:
        assert torch.equal(result["disk"], alone.maps.float()) and torch.equal(result["memory"], alone.maps.float())
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_the_same_weights_with_another_padding_get_another_fingerprint():
    import timm

    torch.manual_seed(0)
    symmetric = timm.create_model("mobilenetv2_050", num_classes=3).eval()
    same = timm.create_model("mobilenetv2_050", num_classes=3, pad_type="same").eval()
    same.load_state_dict(symmetric.state_dict())
    assert source_fingerprint(symmetric) != source_fingerprint(same)
    rebuilt = timm.create_model("mobilenetv2_050", num_classes=3).eval()
    rebuilt.load_state_dict(symmetric.state_dict())
    assert source_fingerprint(rebuilt) == source_fingerprint(symmetric)
