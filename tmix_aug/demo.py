"""Mix a batch of images with a mixer and write the picture (``tmix-demo``).

By default the images are the built-in synthetic ones and the saliency is the teacher-free
spectral residual, so it runs anywhere with no data and no weights.
"""
from __future__ import annotations

import argparse

import timm
import torch
from timm.data import resolve_data_config
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from .mixer import TransformMix
from .synthetic import SyntheticObjects
from .viz import save_mix_grid


def load_batch(args: argparse.Namespace, mean, std) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(N, 3, H, W) normalised images, (N,) labels and the number of classes."""
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    if args.images:
        dataset = ImageFolder(args.images, transform=to_tensor)
        picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[: args.batch_size]
        num_classes = len(dataset.classes)
    else:
        dataset = SyntheticObjects(args.batch_size, image_size=args.image_size, split="val", seed=args.seed, transform=to_tensor)
        picks = torch.arange(len(dataset))
        num_classes = dataset.num_classes
    samples = [dataset[int(i)] for i in picks]
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples]), num_classes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixer", default="cifar10-resnet20", help="bundled name, directory or Hub repo id")
    parser.add_argument("--images", default=None, help="an ImageFolder directory (default: built-in synthetic images)")
    parser.add_argument("--saliency", default="spectral", help="'spectral' or a timm model name for CAMs")
    parser.add_argument("--saliency-checkpoint", default=None, help="weights of the CAM model")
    parser.add_argument("--output", default="mix.png", help="PNG file to write")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64, help="size of the synthetic images")
    parser.add_argument("--rows", type=int, default=6, help="mixed samples shown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    saliency: object = args.saliency
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if args.saliency != "spectral":
        model = timm.create_model(args.saliency, checkpoint_path=args.saliency_checkpoint)
        saliency = model.eval()
        config = resolve_data_config(model=model)
        mean, std = config["mean"], config["std"]
    x, y, num_classes = load_batch(args, mean, std)
    mixer = TransformMix.from_pretrained(args.mixer, num_classes=num_classes, saliency=saliency)
    result = mixer.mix(x, y, generator=torch.Generator().manual_seed(args.seed))
    scale = max(1, 96 // x.shape[-1])
    path = save_mix_grid(args.output, result, x, mean=mean, std=std, num_samples=args.rows, scale=scale)
    shift = result.thetas[..., 2].norm(dim=-1).mean().item()
    print(f"mixer {args.mixer!r}: {mixer.mode}, K={mixer.k}, S={mixer.size}, tau={mixer.temperature.item():.3f}")
    print(f"mixed {len(x)} images of {tuple(x.shape[1:])} with {args.saliency} saliency; mean shift {shift:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
