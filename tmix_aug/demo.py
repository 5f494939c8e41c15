"""Mix a batch of built-in synthetic images with a mixer and write the picture (``tmix-demo``)."""
from __future__ import annotations

import argparse

import torch

from .mixer import TransformMix
from .synthetic import SyntheticObjects
from .viz import save_mix_grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mixer", default="cifar10-resnet20", help="bundled name, directory or Hub repo id")
    parser.add_argument("--saliency", default="spectral", help="saliency source for the mixer (default: spectral)")
    parser.add_argument("--output", default="mix.png", help="PNG file to write")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=6, help="mixed samples shown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dataset = SyntheticObjects(args.batch_size, image_size=args.image_size, split="val", seed=args.seed)
    x = torch.stack([dataset.render(i)[0] for i in range(len(dataset))])
    y = torch.tensor([dataset.render(i)[1] for i in range(len(dataset))])
    mixer = TransformMix.from_pretrained(args.mixer, num_classes=dataset.num_classes, saliency=args.saliency)
    result = mixer.mix(x, y, generator=torch.Generator().manual_seed(args.seed))
    path = save_mix_grid(args.output, result, x, num_samples=args.rows, scale=max(1, 96 // args.image_size))
    shift = result.thetas[..., 2].norm(dim=-1).mean().item()
    print(f"mixer {args.mixer!r} ({mixer.mode}, K={mixer.k}, S={mixer.size}, tau={mixer.temperature.item():.3f})")
    print(f"mixed {len(x)} images of {tuple(x.shape[1:])}: mean shift {shift:.3f} (normalised units)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
