"""Where the mixing time goes: torch.profiler tables of ``TransformMix.mix`` with the saliency given.

    OMP_NUM_THREADS=1 python benchmarks/profile_mixer.py --tag before

Writes ``benchmarks/results/profile_mixer_<tag>.txt``: for 32x32 batch 128 and 224x224 batch 64,
the operators sorted by their own CPU time over ``--repeats`` calls of the bundled mixer.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from tmix_aug import TransformMix
from tmix_aug.atomic import write_atomic


def profile_case(size: int, batch: int, repeats: int) -> str:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    maps = torch.rand(batch, 8, 8)
    mixer = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, check_inputs=False,
                                         saliency=lambda images, targets: maps[: images.shape[0]])
    generator = torch.Generator().manual_seed(0)
    mixer.mix(x, y, generator=generator)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            mixer.mix(x, y, generator=generator)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return f"## {size}x{size}, batch {batch}, {repeats} calls\n\n{table}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    header = (f"# Profile of TransformMix.mix ({args.tag})\n\nMachine: {platform.machine()}, 2-core CPU, shared; "
              f"{torch.get_num_threads()} thread(s), torch {torch.__version__}.\n\n")
    text = header + profile_case(32, 128, args.repeats) + profile_case(224, 64, args.repeats)
    output = Path(f"benchmarks/results/profile_mixer_{args.tag}.txt")
    write_atomic(output, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
