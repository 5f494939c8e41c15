"""Train the Tiny-ImageNet judge: a classifier that is neither the teacher nor its architecture (resumable).

``preact_resnet18_w16.tinyimagenet_64`` (tmix_aug.models: quarter-width pre-activation
ResNet-18, 0.7M parameters, 64 px, the teacher's mean = std = 0.5 normalisation) from random
initialisation on the train split (random crop with 4 px reflect padding, flip), with
``common.train_steps`` (SGD, Nesterov momentum, warm-up then cosine over ``--steps``). Every
``--eval-every`` steps, and at the end, its top-1 on the judge's 8,000 val images (the val
images the search does not hold out, common.val_split_indices) is appended to ``--results``.
Rerunning the same command continues from ``--work``. The final weights go to ``--output``
(fp32 safetensors; ``timm.create_model(MODEL, num_classes=200, checkpoint_path=OUTPUT)``
after ``import tmix_aug``); the latest weights are always in WORK/model.safetensors.

    nohup nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/train_judge.py > LOG 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import safetensors.torch
import timm
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import StepSchedule, append_result, folder, hits, run_facts, top1, train_steps, val_split_indices  # noqa: E402

from tmix_aug.atomic import write_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="preact_resnet18_w16.tinyimagenet_64")
    parser.add_argument("--steps", type=int, default=2343, help="default: 3 epochs of 128")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(Path.home() / ".cache/tmix/classifiers/work-judge-tinyimagenet"))
    parser.add_argument("--output", default=str(Path.home() / ".cache/tmix/classifiers/tinyimagenet_preact_resnet18_w16.safetensors"))
    parser.add_argument("--max-eval-images", type=int, default=None, help="quick checks only: cap every evaluation")
    parser.add_argument("--results", default="benchmarks/results/tinyimagenet_judge.jsonl")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work, results = Path(args.work), Path(args.results)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train, val = folder("train", train=True), folder("val")
    judged = Subset(val, val_split_indices(val)[1][: args.max_eval_images])
    model = timm.create_model(args.model, num_classes=len(train.classes)).to(device)
    facts = {"script": "benchmarks/tinyimagenet/train_judge.py", "args": vars(args), **run_facts()}

    def evaluate(state: dict) -> None:
        if state["step"] % args.eval_every and state["step"] != args.steps:
            return
        started = time.perf_counter()
        append_result(results, {**facts, "event": "eval", "step": state["step"], "images_seen": state["step"] * args.batch_size,
                                "train_seconds": round(state["seconds"]), "train_loss": state["train_loss"],
                                "val_images": f"the judge's {len(judged)} (val minus the search's 2,000)",
                                "val_top1": top1(hits(model, judged)), "eval_seconds": round(time.perf_counter() - started)})

    schedule = StepSchedule(args.steps, args.batch_size, args.lr, args.warmup, args.weight_decay, args.clip,
                            args.save_every, args.seed, label_smoothing=0.0)
    train_steps(model, train, work, schedule, on_save=evaluate)
    output = Path(args.output)
    if not output.is_file():
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(output, lambda tmp: safetensors.torch.save_file(weights, tmp, metadata={"format": "pt"}))
        print(json.dumps({"event": "saved", "weights": str(output)}), flush=True)


if __name__ == "__main__":
    main()
