"""Train an image classifier with a batch mixer, timm style (``tmix-train``).

Built on timm's public API: datasets and loaders (with the prefetcher), models, optimizers,
schedulers, EMA, checkpoints and distributed set-up. Every flag of timm's train.py is accepted
with its name, meaning and default (only --naflex-loader, and combinations that cannot work,
stop the run with the reason), ``-c
FILE`` reads a YAML config as timm does, and ``--mixup/--cutmix`` run timm's own Mixup; the
mixer flags are ours. The mixer runs on the device inside the loop, after the batch arrives and
before autocast, so it works with timm's prefetcher.

    tmix-train --dataset synthetic --model cifar_resnet20 --epochs 4 --warmup-epochs 0 --lr 0.1 \\
        -b 64 -j 2 --scale 0.35 1 --mixer transformmix --mixer-path cifar10-resnet20 --mixer-prob 0.5
    torchrun --nproc_per_node=8 -m tmix_aug.train --data-dir DIR --model resnet50 --mixer cutmix ...

Each epoch appends train loss, eval top-1/top-5, images/s and the mixer's share of the step
time to ``summary.csv`` and rewrites ``summary.json``; ``last.pth.tar`` and
``model_best.pth.tar`` are timm checkpoints; ``args.yaml`` holds the flags; ``mix.png`` shows
the first mixed batch. With --recovery-interval N, ``recovery-EPOCH-UPDATE.pth.tar`` every N
updates resumes inside its epoch, exactly (``tmix_aug.recovery``).
"""

from .flags import build_parser
from .runner import main, train_from_args

__all__ = ["build_parser", "main", "train_from_args"]
