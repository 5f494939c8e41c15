"""Fine-tune an ImageNet-pre-trained ResNet-50 on a fine-grained dataset with TransformMix,
the paper's transfer setting (Flowers-102, Oxford-IIIT Pets, Stanford Cars, FGVC-Aircraft).

Recipe from the paper: 100 epochs, SGD lr 0.001, batch 64, the mixer searched on another
dataset, CAMs from the model being fine-tuned. Where the paper is silent (ours): cosine
schedule without warm-up, momentum 0.9, weight decay 1e-4, no label smoothing, 224 px crops.

Weights and data come from your disk: nothing is downloaded.

    # torchvision's IMAGENET1K_V1 ResNet-50 file (resnet50-0676ba61.pth) or timm's
    # resnet50.tv_in1k model.safetensors; the dataset in torchvision's layout under ROOT
    python examples/transfer_finetune.py --dataset flowers102 --data-root ROOT \\
        --weights resnet50-0676ba61.pth --mixer-path cifar10-resnet20 --output runs/transfer
    # the baseline without mixing
    python examples/transfer_finetune.py --dataset flowers102 --data-root ROOT \\
        --weights resnet50-0676ba61.pth --mixer none --output runs/transfer

Any other tmix-train flag is passed through (e.g. ``--epochs 10 --img-size 64 --model
cifar_resnet20`` for a small run, ``--dataset folder`` with ``--train-split``/``--val-split``
for an image folder). Multi-GPU: ``torchrun --nproc_per_node=N examples/transfer_finetune.py ...``.
"""

from __future__ import annotations

import argparse
import sys

from tmix_aug.train import train_from_args

# The usual fine-grained protocol: train on all labelled training data, test on "test".
TRAIN_SPLITS = {
    "flowers102": "trainval",
    "oxford_iiit_pet": "trainval",
    "stanford_cars": "train",
    "fgvc_aircraft": "trainval",
}


def transfer_argv(argv: list[str] | None = None) -> list[str]:
    """The tmix-train command line of the paper's transfer recipe for the given arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, choices=sorted(TRAIN_SPLITS) + ["folder"])
    parser.add_argument(
        "--data-root",
        required=True,
        help="directory holding the dataset's folder (or the image folder)",
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="ImageNet weights file of --model (torchvision IMAGENET1K_V1 .pth or timm .safetensors)",
    )
    parser.add_argument(
        "--model", default="resnet50", help="timm model the weights belong to (default: resnet50)"
    )
    parser.add_argument(
        "--mixer", default="transformmix", help="tmix-train --mixer (default: transformmix)"
    )
    parser.add_argument(
        "--mixer-path", default=None, help="searched mixer: bundled name, directory or Hub id"
    )
    args, rest = parser.parse_known_args(argv)
    command = [
        "--dataset",
        "" if args.dataset == "folder" else args.dataset,
        "--data-dir",
        args.data_root,
        "--model",
        args.model,
        "--pretrained-path",
        args.weights,
        "--mixer",
        args.mixer,
        "--epochs",
        "100",
        "--lr",
        "0.001",
        "-b",
        "64",
        "--opt",
        "sgd",
        "--momentum",
        "0.9",
        "--weight-decay",
        "1e-4",
        "--sched",
        "cosine",
        "--warmup-epochs",
        "0",
        "--smoothing",
        "0",
        "--img-size",
        "224",
    ]
    if args.dataset != "folder":
        command += ["--train-split", TRAIN_SPLITS[args.dataset], "--val-split", "test"]
    if args.mixer_path is not None:
        command += ["--mixer-path", args.mixer_path]
    if args.mixer in ("transformmix", "saliencymix"):
        command += ["--saliency", "self"]
    return command + rest  # later flags win: the caller's overrides come last


def main(argv: list[str] | None = None) -> dict:
    """Run the fine-tuning; returns tmix-train's summary."""
    return train_from_args(transfer_argv(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
