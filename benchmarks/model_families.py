"""Which model families work as CAM sources (ClassActivationMap) and with TransMixLabels.

Builds a tiny, randomly initialised member of each family and tries both; prints a markdown
table. ``python benchmarks/model_families.py`` (CPU, about a minute); the README's table is its output.
"""
from __future__ import annotations

import timm
import torch
import torchvision

import tmix_aug as tm
from tmix_aug import models as _models  # noqa: F401  registers cifar_resnet20 with timm

IMAGE = 64
FAMILIES = {
    "timm ResNet (resnet18)": lambda: timm.create_model("resnet18", num_classes=5),
    "timm EfficientNet (efficientnet_b0)": lambda: timm.create_model("efficientnet_b0", num_classes=5),
    "timm RegNet (regnetx_002)": lambda: timm.create_model("regnetx_002", num_classes=5),
    "timm ConvNeXt (convnext_atto)": lambda: timm.create_model("convnext_atto", num_classes=5),
    "timm DenseNet (densenet121)": lambda: timm.create_model("densenet121", num_classes=5),
    "timm MobileNetV3 (mobilenetv3_small_050)": lambda: timm.create_model("mobilenetv3_small_050", num_classes=5),
    "tmix_aug CIFAR ResNet (cifar_resnet20)": lambda: timm.create_model("cifar_resnet20", num_classes=5),
    "tmix_aug PreActResNet-18 (preact_resnet18)": lambda: timm.create_model("preact_resnet18", num_classes=5),
    "torchvision ResNet (resnet18)": lambda: torchvision.models.resnet18(num_classes=5),
    "timm ViT (vit_tiny_patch16_224)": lambda: timm.create_model(
        "vit_tiny_patch16_224", num_classes=5, img_size=IMAGE, depth=2
    ),
    "timm DeiT distilled (deit_tiny_distilled_patch16_224)": lambda: timm.create_model(
        "deit_tiny_distilled_patch16_224", num_classes=5, img_size=IMAGE, depth=2
    ),
    "timm ViT with registers (vit_small_patch14_reg4_dinov2)": lambda: timm.create_model(
        "vit_small_patch14_reg4_dinov2", num_classes=5, img_size=70, depth=2
    ),
    "timm Swin (swin_tiny_patch4_window7_224)": lambda: timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=5, img_size=IMAGE, depths=(1, 1, 1, 1), window_size=2
    ),
}


def try_cam(model: torch.nn.Module, size: int) -> str:
    try:
        maps = tm.ClassActivationMap(model)(torch.rand(2, 3, size, size), torch.eye(5)[:2])
        return f"yes ({tuple(maps.shape[1:])} map)"
    except (ValueError, TypeError) as error:
        return "no: " + str(error).split(";")[0][:70]


def try_transmix(model: torch.nn.Module, size: int) -> str:
    try:
        mixer = tm.TransformMix.from_pretrained("cifar10-resnet20", num_classes=5, saliency="spectral")
        with tm.TransMixLabels(model) as labels:
            out = mixer.mix(torch.rand(4, 3, size, size), torch.arange(4))
            model.train()
            model(out.images)
            targets = labels.relabel(out)
        assert torch.allclose(targets.sum(1), torch.ones(4))
        return "yes"
    except (ValueError, TypeError) as error:
        return "no: " + str(error).split(";")[0][:70]


def main() -> None:
    torch.manual_seed(0)
    print("| family | CAM source | TransMixLabels |\n|---|---|---|")
    for name, build in FAMILIES.items():
        size = 70 if "reg4" in name else IMAGE
        model = build().eval()
        print(f"| {name} | {try_cam(model, size)} | {try_transmix(model, size)} |", flush=True)


if __name__ == "__main__":
    main()
