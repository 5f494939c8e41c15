"""The bundled mixers: each loads by name, mixes a batch at its own working size, and the default is the nearest."""
import pytest
import torch

from tmix_aug import TransformMix, hub


@pytest.mark.parametrize(
    "name, size, image_size, mode",
    [
        ("cifar10-resnet20", 32, 32, "transformmix"),
        ("cifar10-resnet20-s16", 16, 32, "transformmix"),
        # searched with both networks at S = 64; shipped without the transformer (it stayed at the
        # identity) and at S = 32, which mixes as well (its card)
        ("tinyimagenet-mobilenetv2", 32, 64, "mpn-only"),
    ],
)
def test_bundled_mixer_loads_by_name_and_mixes_a_batch(name, size, image_size, mode):
    assert name in hub.bundled_names()
    assert hub.bundled_image_size(name) == image_size  # the size of the images it was searched on
    mixer = TransformMix.from_pretrained(name, num_classes=10, saliency="spectral")
    assert (mixer.size, mixer.k, mixer.mode) == (size, 2, mode)
    x = torch.rand(6, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    out = mixer.mix(x, y, generator=torch.Generator().manual_seed(1))
    assert out.images.shape == x.shape and torch.isfinite(out.images).all()
    assert torch.allclose(out.targets.sum(1), torch.ones(6))
    assert out.saliency.shape == (6, 2, size, size)  # the networks read maps at the mixer's own S
    assert torch.allclose(out.masks.sum(1), torch.ones(6, image_size, image_size), atol=1e-5)
    # balanced masks: each input covers its label share of the mixed image
    assert torch.allclose(out.masks.mean((2, 3)), out.lam, atol=0.02)


@pytest.mark.parametrize(
    "image_size, expected",
    [(16, "cifar10-resnet20-s16"), (32, "cifar10-resnet20-s16"), (44, "cifar10-resnet20-s16"),
     (46, "tinyimagenet-mobilenetv2"),
     (64, "tinyimagenet-mobilenetv2"), (224, "tinyimagenet-mobilenetv2")],
)
def test_default_is_the_bundled_mixer_nearest_the_image_size(image_size, expected):
    # tmix-train without --mixer-path takes the bundled mixer nearest the image size (by ratio: 32 and
    # 64 px meet at 45.25); of the two made for 32 px images, the one whose networks run at S = 16
    # (half the cost of cifar10-resnet20's S = 32, and it mixes as well: its card).
    assert hub.choose_bundled(image_size) == expected
