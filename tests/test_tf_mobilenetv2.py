"""tf_mobilenetv2_100*: timm's MobileNetV2 with TF "same" padding, and its 64 px variant with 8x8 maps."""
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.data import resolve_data_config

import tmix_aug.models  # noqa: F401  (registers the models)
from tmix_aug.models import UpsizedEfficientNet
from tmix_aug.saliency import ClassActivationMap


def randomised_state(seed: int = 0) -> dict:
    """A state dict of timm's mobilenetv2_100 (same padding) with random BatchNorm statistics."""
    torch.manual_seed(seed)
    reference = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=7)
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return reference.eval(), reference.state_dict()


def test_same_network_as_timm_mobilenetv2_with_same_padding(tmp_path):
    reference, state = randomised_state()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    model = timm.create_model("tf_mobilenetv2_100", num_classes=7, checkpoint_path=str(tmp_path / "w.safetensors")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert resolve_data_config(model=model)["mean"] == (0.5, 0.5, 0.5)


def test_64px_variant_upsizes_its_input_and_gives_8x8_maps():
    reference, state = randomised_state(1)
    model = timm.create_model("tf_mobilenetv2_100_up2_os16", num_classes=7).eval()
    assert isinstance(model, UpsizedEfficientNet)
    model.load_state_dict(state)
    dilated = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=7, output_stride=16).eval()
    dilated.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = dilated.forward_features(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    assert feats.shape == (2, 1280, 8, 8)
    assert torch.equal(feats, expected)
    config = resolve_data_config(model=model)
    assert config["input_size"] == (3, 64, 64) and config["std"] == (0.5, 0.5, 0.5)
    maps = ClassActivationMap(model, input_size=None)(x)
    assert maps.shape == (2, 8, 8)


def test_bad_input_scale_is_named():
    with pytest.raises(ValueError, match="input_scale: expected a number > 0"):
        timm.create_model("tf_mobilenetv2_100_up2_os16", input_scale=0)
