"""Fine-tune the ImageNet MobileNetV2 into a 200-class Tiny-ImageNet teacher (resumable, CPU-sized).

Starts from the ImageNet weights with the head rows of the 200 wnids (common.py) in
``--model`` (default tf_mobilenetv2_100_up2_os16: 64 px input resized 2x, output stride 16),
trains on the train split (random crop with 4 px reflect padding, flip) with
``common.train_steps``: SGD with Nesterov momentum, linear warm-up over ``--warmup`` steps
then cosine decay, gradient norm clipped at ``--clip``, label smoothing 0.1 (a peak learning
rate of 0.01 diverges within 4 steps of 32 images: the ImageNet head's logits are large;
0.002 does not). State is saved atomically to ``--work`` every ``--save-every`` steps;
rerunning the same command continues from it. Val top-1 is measured before and after on the
search's 2,000 held-out val images (``--full-eval``: after also on all 10,000, which takes
hours on the shared CPU), the "after" from the saved fp16 file, which is what a search loads;
each result is appended as one JSON line to ``--results``. The final weights go to ``--output`` as fp16 safetensors,
the state dict of ``timm.create_model(MODEL, num_classes=200)`` (``import tmix_aug`` registers MODEL).

    nohup nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/finetune_teacher.py > LOG 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    StepSchedule, append_result, folder, hits, run_facts, save_half, teacher_from_imagenet, top1, train_steps, val_split_indices,
)

from tmix_aug.atomic import write_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tf_mobilenetv2_100_up2_os16")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clip", type=float, default=2.0)
    parser.add_argument("--weight-decay", type=float, default=4e-5)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(Path.home() / ".cache/tmix/teachers/work-mobilenetv2-tinyimagenet"))
    parser.add_argument("--output", default=str(Path.home() / ".cache/tmix/teachers/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors"))
    parser.add_argument("--full-eval", action="store_true", help="after training, also score all 10,000 val images")
    parser.add_argument("--max-eval-images", type=int, default=None, help="quick checks only: cap every evaluation")
    parser.add_argument("--results", default="benchmarks/results/tinyimagenet_teacher.jsonl")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work, results = Path(args.work), Path(args.results)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train, val = folder("train", train=True), folder("val")
    search_held_out = val_split_indices(val)[0][: args.max_eval_images]
    if args.max_eval_images is not None:
        val = Subset(val, list(range(0, len(val), max(1, len(val) // args.max_eval_images)))[: args.max_eval_images])
        search_held_out = list(range(len(val)))
    model = teacher_from_imagenet(train.classes, args.model).to(device)
    facts = {"script": "benchmarks/tinyimagenet/finetune_teacher.py", "args": vars(args), **run_facts()}

    if not (work / "state.json").is_file():
        started = time.perf_counter()
        before = top1(hits(model, Subset(val, search_held_out)))
        append_result(results, {**facts, "event": "before", "val_images": "the search's 2,000 held-out (seed-0 permutation[:2000])",
                                "val_top1": before, "eval_seconds": round(time.perf_counter() - started)})
    schedule = StepSchedule(args.steps, args.batch_size, args.lr, args.warmup, args.weight_decay, args.clip, args.save_every, args.seed)
    state = train_steps(model, train, work, schedule)

    if not (work / "after.json").is_file():
        output = Path(args.output)
        save_half(model, output)
        # Score the saved file, as a search loads it.
        saved = timm.create_model(args.model, num_classes=len(train.classes), checkpoint_path=str(output)).to(device)
        started = time.perf_counter()
        hit = hits(saved, val) if args.full_eval else None
        held_out_hit = hit[search_held_out] if hit is not None else hits(saved, Subset(val, search_held_out))
        eval_seconds = round(time.perf_counter() - started)
        # fp16 storage against the fp32 weights it came from, on 200 held-out images.
        x = torch.stack([val[i][0] for i in search_held_out[:200]]).to(device)
        with torch.no_grad():
            fp32, fp16 = model.eval()(x), saved.eval()(x)
        record = {**facts, "event": "after", "steps": args.steps, "train_seconds": round(state["seconds"]),
                  "images_seen": args.steps * args.batch_size,
                  "val_top1_all_10000": top1(hit) if hit is not None else "not measured (--full-eval)",
                  "val_top1_search_held_out_2000": top1(held_out_hit),
                  "fp16_vs_fp32_same_top1_of_200": int((fp32.argmax(-1) == fp16.argmax(-1)).sum()),
                  "fp16_vs_fp32_max_logit_diff": round(float((fp32 - fp16).abs().max()), 4),
                  "eval_seconds": eval_seconds, "weights": str(output)}
        append_result(results, record)
        write_atomic(work / "after.json", lambda tmp: Path(tmp).write_text(json.dumps(record)))


if __name__ == "__main__":
    main()
