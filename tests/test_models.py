"""The small-image classifiers registered with timm (tmix_aug.models)."""
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import tmix_aug.models  # noqa: F401  (registers the models)
from tmix_aug.models import CifarResNet, OptionAShortcut, PreActResNet

# name -> (num_features, feature-map reduction)
MODELS = {
    "cifar_resnet20": (64, 4),
    "cifar_resnet32": (64, 4),
    "cifar_resnet44": (64, 4),
    "cifar_resnet56": (64, 4),
    "preact_resnet18": (512, 8),
    "preact_resnet18_w16": (128, 8),
}


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model


def test_all_models_are_registered_with_timm():
    assert set(timm.list_models("cifar_resnet*")) == {"cifar_resnet20", "cifar_resnet32", "cifar_resnet44",
                                                      "cifar_resnet56"}
    assert timm.list_models("preact_resnet*") == ["preact_resnet18", "preact_resnet18_w16"]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [32, 48])
def test_shapes_and_forward_equals_head_of_features(name, size):
    num_features, reduction = MODELS[name]
    torch.manual_seed(0)
    model = _randomise_bn(timm.create_model(name, num_classes=7)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert features.shape == (2, num_features, size // reduction, size // reduction)
        assert logits.shape == (2, 7)
        assert pooled.shape == (2, num_features)
        torch.testing.assert_close(logits, model.forward_head(features))
        # The head is a global average pool followed by the linear layer (what CAM relies on).
        torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
        torch.testing.assert_close(logits, model.get_classifier()(features.mean(dim=(2, 3))))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_timm_interface_and_pretrained_cfg(name):
    model = timm.create_model(name)
    assert model.num_classes == 10
    assert model.num_features == MODELS[name][0]
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.get_classifier() is model.linear
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.485, 0.456, 0.406)
    assert cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["classifier"] == "linear"
    assert cfg["first_conv"] == "conv1"


@pytest.mark.parametrize("name", ["cifar_resnet20", "preact_resnet18"])
def test_reset_classifier(name):
    model = timm.create_model(name, num_classes=10).double().eval()
    model.reset_classifier(3)
    assert model.num_classes == 3
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 3 and head.weight.dtype == torch.float64
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["cifar_resnet20", "preact_resnet18"])
def test_safetensors_checkpoint_through_create_model(name, tmp_path):
    torch.manual_seed(1)
    source = _randomise_bn(timm.create_model(name, num_classes=5), seed=1).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = timm.create_model(name, num_classes=5, checkpoint_path=str(path)).eval()
    fresh = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
        assert not torch.allclose(fresh(x), source(x))


def test_cifar_resnet20_loads_the_teacher_layout_strictly(tmp_path):
    """The shared teacher file has plain keys and no ``num_batches_tracked`` buffers."""
    model = timm.create_model("cifar_resnet20", num_classes=10)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == 97
    assert state["conv1.weight"].shape == (16, 3, 3, 3)
    assert state["layer1.0.conv1.weight"].shape == (16, 16, 3, 3)
    assert state["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert state["layer3.2.conv2.weight"].shape == (64, 64, 3, 3)
    assert state["layer3.2.bn2.running_var"].shape == (64,)
    assert state["linear.weight"].shape == (10, 64)
    assert not any("shortcut" in k for k in state)  # option A has no parameters
    path = tmp_path / "teacher_like.safetensors"
    save_file({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}, str(path))
    loaded = timm.create_model("cifar_resnet20", num_classes=10, checkpoint_path=str(path))
    assert sum(p.numel() for p in loaded.parameters()) == 269_722


def test_option_a_shortcut_known_output():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = OptionAShortcut(2, 6, stride=2)(x)
    expected = torch.zeros(1, 6, 2, 2)
    expected[0, 2] = torch.tensor([[0.0, 2.0], [8.0, 10.0]])
    expected[0, 3] = torch.tensor([[16.0, 18.0], [24.0, 26.0]])
    assert torch.equal(out, expected)
    # An odd number of new channels puts the extra one after.
    odd = OptionAShortcut(2, 5, stride=1)(x)
    assert odd.shape == (1, 5, 4, 4)
    assert torch.equal(odd[:, 1:3], x)
    assert odd[:, 0].abs().sum() == 0 and odd[:, 3:].abs().sum() == 0


def test_option_a_shortcut_inside_the_downsampling_block():
    model = timm.create_model("cifar_resnet20")
    block = model.layer2[0]
    assert isinstance(block.shortcut, OptionAShortcut)
    assert (block.shortcut.in_chs, block.shortcut.out_chs, block.shortcut.stride) == (16, 32, 2)
    assert isinstance(model.layer2[1].shortcut, nn.Identity)


def test_features_only():
    model = timm.create_model("cifar_resnet20", features_only=True).eval()
    reference = timm.create_model("cifar_resnet20").eval()
    reference.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model(x)
        assert [m.shape[1:] for m in maps] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
        torch.testing.assert_close(maps[-1], reference.forward_features(x))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="out_chs"):
        OptionAShortcut(8, 4)
    with pytest.raises(ValueError, match="stride"):
        OptionAShortcut(4, 8, stride=0)
    with pytest.raises(ValueError, match="blocks_per_stage"):
        CifarResNet(blocks_per_stage=0)
    with pytest.raises(ValueError, match="widths"):
        CifarResNet(widths=(16, 32))
    with pytest.raises(ValueError, match="blocks_per_stage"):
        PreActResNet(blocks_per_stage=(2, 2), widths=(64, 128, 256))


def test_tinyimagenet_judge_config_is_64px_with_the_teachers_normalisation():
    model = timm.create_model("preact_resnet18_w16.tinyimagenet_64")
    config = timm.data.resolve_data_config(model=model)
    assert model.num_classes == 200
    assert config["input_size"] == (3, 64, 64) and config["mean"] == config["std"] == (0.5, 0.5, 0.5)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 128, 8, 8)
