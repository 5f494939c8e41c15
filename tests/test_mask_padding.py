"""Mask net padding: constant saliency gives constant masks; format-2 mixers keep their zero padding."""
import json

import pytest
import torch
import torch.nn.functional as F

from tmix_aug import TransformMix, hub
from tmix_aug.nets import MaskNet


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, as a search could leave them (the head starts at zero)."""
    torch.manual_seed(seed)
    for parameter in net.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    return net


def constant_planes(k: int = 2, size: int = 16, n: int = 3) -> torch.Tensor:
    """(n, 2k, size, size): one constant value per sample and plane (saliency, then lambda)."""
    values = torch.rand(n, 2 * k, 1, 1, generator=torch.Generator().manual_seed(1))
    return values.expand(n, 2 * k, size, size).contiguous()


def spatial_range(maps: torch.Tensor) -> float:
    """Largest max - min over the pixels of any (sample, channel) of (N, C, H, W) maps."""
    flat = maps.detach().flatten(2)
    return float((flat.amax(-1) - flat.amin(-1)).max())


@pytest.mark.parametrize("padding", ["replicate", "reflect"])
def test_constant_planes_give_a_constant_correction(padding):
    net = randomised(MaskNet(4, 2, padding=padding))
    out = net(constant_planes())
    assert out.shape == (3, 2, 16, 16)
    assert spatial_range(out) < 1e-5
    assert out.abs().max() > 0.1  # not constant because it is zero


def test_zero_padding_draws_a_frame_on_constant_planes():
    """The artefact the default removes: the border pixels differ from the interior."""
    out = randomised(MaskNet(4, 2, padding="zeros"))(constant_planes())
    interior = out[..., 3:-3, 3:-3]
    assert spatial_range(interior) < 1e-5
    assert spatial_range(out) > 0.1


def test_constant_saliency_gives_constant_masks_in_the_mixer():
    def flat(images, targets):
        return torch.ones(images.shape[0], 4, 4, device=images.device)

    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.arange(6) % 3
    masks = {}
    for padding in ("replicate", "zeros"):
        mixer = TransformMix(3, saliency=flat, mode="mpn-only", size=16, balance=False, mpn_padding=padding)
        randomised(mixer.mpn)
        masks[padding] = mixer.mix(x, y, generator=torch.Generator().manual_seed(0)).masks
    assert masks["replicate"].shape == (6, 2, 16, 16)
    assert spatial_range(masks["replicate"]) < 1e-5
    assert spatial_range(masks["zeros"]) > 1e-2


def reference_mask_logits(net: MaskNet, planes: torch.Tensor) -> torch.Tensor:
    """What the mask net of format 1 and 2 computed: 3x3 convs with zero padding, ReLU, 1x1 head."""
    x = planes
    for layer in net.body:
        if isinstance(layer, torch.nn.Conv2d):
            x = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=layer.kernel_size[0] // 2))
    return F.conv2d(x, net.head.weight, net.head.bias)


def test_bundled_format_2_mixer_keeps_its_zero_padding_and_its_stripe():
    directory = hub.resolve("cifar10-resnet20")
    assert json.loads((directory / "config.json").read_text())["format_version"] == 2
    mixer = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10)
    assert mixer.architecture["mpn_padding"] == "zeros"
    planes = constant_planes(size=mixer.size)
    correction = mixer.mpn(planes)
    assert torch.equal(correction, reference_mask_logits(mixer.mpn, planes))
    # The searched frame: constant saliency gives a constant correction inside, not at the
    # border, where it moves the mask logits (correction / temperature) by more than 0.5.
    assert spatial_range(correction[..., 3:-3, 3:-3]) < 1e-5
    assert spatial_range(correction / mixer.temperature) > 0.5


def test_new_mixers_save_format_3_with_their_padding(tmp_path):
    mixer = randomised(TransformMix(5, size=16, mpn_padding="reflect"))
    mixer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == 3 and config["mpn_padding"] == "reflect"
    loaded = TransformMix.from_pretrained(tmp_path, num_classes=5)
    assert loaded.mpn.body[0].padding_mode == "reflect"


@pytest.mark.parametrize("make", [lambda: MaskNet(4, 2, padding="circle"), lambda: TransformMix(5, mode="stn-only", mpn_padding="same")])
def test_unknown_padding_is_named(make):
    with pytest.raises(ValueError, match="padding: expected one of"):
        make()
