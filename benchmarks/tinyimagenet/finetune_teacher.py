"""Fine-tune the ImageNet MobileNetV2 into a 200-class Tiny-ImageNet teacher (resumable, CPU-sized).

Starts from the ImageNet weights with the head rows of the 200 wnids (common.py) in
``--model`` (default tf_mobilenetv2_100_up2_os16: 64 px input resized 2x, output stride 16),
trains on the train split (random crop with 4 px reflect padding, flip), SGD with Nesterov
momentum, linear warm-up over ``--warmup`` steps then cosine decay, gradient norm clipped at
``--clip``, label smoothing 0.1 (a peak learning rate of 0.01 diverges within 4 steps of 32
images: the ImageNet head's logits are large; 0.002 does not). Every
``--save-every`` steps the state (weights, optimizer, step) is written atomically to
``--work``; rerunning the same command continues from it and reproduces the uninterrupted
run's batches. Val top-1 is measured before on the search's 2,000 held-out val images (too
slow on all 10,000 here) and after on all 10,000 (and on those 2,000), from the saved fp16
file, which is what a search loads; each result is appended as one JSON line to
``--results``. The final weights go to ``--output`` as fp16 safetensors, the state dict of
``timm.create_model(MODEL, num_classes=200)`` (``import tmix_aug`` registers MODEL).

    nohup nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/tinyimagenet/finetune_teacher.py > LOG 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import folder, teacher_from_imagenet, val_split_indices  # noqa: E402

from tmix_aug.atomic import write_atomic  # noqa: E402


def hits(model: torch.nn.Module, dataset, batch_size: int = 100) -> torch.Tensor:
    """(len(dataset),) bool: whether the model's top-1 class is the label."""
    model.eval()
    out = []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=0):
            out.append(model(x).argmax(-1) == y)
    return torch.cat(out)


def top1(hit: torch.Tensor) -> float:
    return round(100.0 * float(hit.float().mean()), 2)


def append(path: Path, record: dict) -> None:
    record = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def batch_indices(epoch_size: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The sample indices of global step ``step``: epochs are seeded permutations, cut into batches."""
    per_epoch = epoch_size // batch_size
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(epoch_size)
    return order[within * batch_size : (within + 1) * batch_size].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tf_mobilenetv2_100_up2_os16")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clip", type=float, default=2.0)
    parser.add_argument("--weight-decay", type=float, default=4e-5)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(Path.home() / ".cache/tmix/teachers/work-mobilenetv2-tinyimagenet"))
    parser.add_argument("--output", default=str(Path.home() / ".cache/tmix/teachers/tf_mobilenetv2_100_up2_os16_tinyimagenet.safetensors"))
    parser.add_argument("--max-eval-images", type=int, default=None, help="quick checks only: cap every evaluation")
    parser.add_argument("--results", default="benchmarks/results/tinyimagenet_teacher.jsonl")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work, results = Path(args.work), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)

    train, val = folder("train", train=True), folder("val")
    search_held_out = val_split_indices()[0][: args.max_eval_images]
    if args.max_eval_images is not None:
        val = Subset(val, list(range(0, len(val), max(1, len(val) // args.max_eval_images)))[: args.max_eval_images])
        search_held_out = list(range(len(val)))
    model = teacher_from_imagenet(train.classes, args.model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, momentum=0.9, nesterov=True,
    )
    common = {"script": "benchmarks/tinyimagenet/finetune_teacher.py", "args": vars(args),
              "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
              "machine": "2-core CPU, shared, 1 thread"}

    state_file = work / "state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        model.load_state_dict(safetensors.torch.load_file(work / "model.safetensors"))
        optimizer.load_state_dict(torch.load(work / "optimizer.pt", map_location="cpu", weights_only=True))
        print(f"resumed at step {state['step']}", flush=True)
    else:
        started = time.perf_counter()
        before = top1(hits(model, Subset(val, search_held_out)))
        state = {"step": 0, "seconds": 0.0, "loss_sum": 0.0, "loss_steps": 0}
        append(results, {**common, "event": "before", "val_images": "the search's 2,000 held-out (seed-0 permutation[:2000])",
                         "val_top1": before, "eval_seconds": round(time.perf_counter() - started)})

    def save() -> None:
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        write_atomic(work / "model.safetensors", lambda tmp: safetensors.torch.save_file(weights, tmp))
        write_atomic(work / "optimizer.pt", lambda tmp: torch.save(optimizer.state_dict(), tmp))
        write_atomic(state_file, lambda tmp: Path(tmp).write_text(json.dumps(state)))  # last: names the step

    model.train()
    while state["step"] < args.steps:
        started = time.perf_counter()
        step = state["step"]
        indices = batch_indices(len(train), args.batch_size, step, args.seed)
        x, y = next(iter(DataLoader(Subset(train, indices), batch_size=len(indices), num_workers=0)))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min((step + 1) / args.warmup, 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        state["step"] = step + 1
        state["seconds"] += time.perf_counter() - started
        state["loss_sum"] += loss.item()
        state["loss_steps"] += 1
        if state["step"] % args.save_every == 0 or state["step"] == args.steps:
            mean_loss = state["loss_sum"] / state["loss_steps"]
            state["loss_sum"], state["loss_steps"] = 0.0, 0
            save()
            print(json.dumps({"step": state["step"], "train_loss": round(mean_loss, 4), "train_seconds": round(state["seconds"]),
                              "time_utc": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)
            model.train()

    if not state.get("evaluated"):
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        write_atomic(output, lambda tmp: safetensors.torch.save_file(half, tmp, metadata={"format": "pt"}))
        # Score the saved file, as a search loads it.
        saved = timm.create_model(args.model, num_classes=len(train.classes), checkpoint_path=str(output))
        started = time.perf_counter()
        hit = hits(saved, val)
        fp32_held_out = hits(model, Subset(val, search_held_out))
        state["evaluated"] = True
        save()
        append(results, {**common, "event": "after", "steps": args.steps, "train_seconds": round(state["seconds"]),
                         "images_seen": args.steps * args.batch_size, "val_images": len(val), "val_top1": top1(hit),
                         "val_top1_search_held_out_2000": top1(hit[search_held_out]),
                         "fp32_val_top1_search_held_out_2000": top1(fp32_held_out),
                         "eval_seconds": round(time.perf_counter() - started), "weights": str(output)})


if __name__ == "__main__":
    main()
