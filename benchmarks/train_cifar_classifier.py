"""Train or fine-tune a small-image classifier on an ImageFolder dataset (resumable).

Used to fine-tune the shared CIFAR-10 ResNet-20 teacher on the JPEG copy of CIFAR-10 and to
train held-out evaluation classifiers. Expects ``DATA_DIR/train/<class>/*`` and
``DATA_DIR/test/<class>/*``. Each epoch writes ``WORKDIR/last.safetensors`` (model weights),
``WORKDIR/last_state.pt`` (optimizer, scheduler, epoch, RNG; loaded with
``weights_only=True``) and a row of ``WORKDIR/log.csv``; ``--resume`` continues from them.
At the end the weights go to ``--output`` (a plain state dict that
``timm.create_model(MODEL, checkpoint_path=OUTPUT)`` loads) and ``WORKDIR/summary.json``.

Example::

    python benchmarks/train_cifar_classifier.py --data-dir ~/.cache/tmix/cifar10 \\
        --model preact_resnet18_w16 --epochs 4 --lr 0.1 --workdir runs/pr18w16 \\
        --output ~/.cache/tmix/classifiers/cifar10_preact_resnet18_w16_jpeg.safetensors

Results and the exact commands used: benchmarks/results/classifiers.md.
"""
import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm import create_model
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

import tmix_aug.models  # noqa: F401  (registers the CIFAR models with timm)

LOG_FIELDS = ["epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "epoch_seconds", "total_seconds"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding train/ and test/ ImageFolders")
    p.add_argument("--model", default="cifar_resnet20", help="timm model name")
    p.add_argument("--init-checkpoint", type=Path, default=None, help="weights to start from (.safetensors)")
    p.add_argument("--workdir", type=Path, required=True, help="checkpoints, log.csv and summary.json")
    p.add_argument("--output", type=Path, required=True, help="final weights (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/last.* if present")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--opt", default="sgd", help="timm optimizer name")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--sched", default="cosine", help="timm scheduler name")
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--warmup-lr", type=float, default=1e-3)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--eval-before", action="store_true", help="measure test top-1 before training (epoch 0)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (on a busy shared CPU one thread wastes far less time waiting)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only this many images of each split (smoke tests)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.output.suffix != ".safetensors":
        p.error(f"--output must end in .safetensors, got {args.output}")
    return args


def make_loaders(args, mean, std):
    """Train loader (random crop 32 pad 4, horizontal flip) and test loader over ImageFolders."""
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *normalize])
    train_set = datasets.ImageFolder(args.data_dir / "train", transform=train_tf)
    test_set = datasets.ImageFolder(args.data_dir / "test", transform=transforms.Compose(normalize))
    if train_set.classes != test_set.classes:
        raise ValueError(f"train and test classes differ: {train_set.classes} vs {test_set.classes}")
    if args.limit:
        g = torch.Generator().manual_seed(args.seed)
        train_set = Subset(train_set, torch.randperm(len(train_set), generator=g)[: args.limit].tolist())
        test_set = Subset(test_set, torch.randperm(len(test_set), generator=g)[: args.limit].tolist())
    common = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=args.workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=True, **common)
    test_loader = DataLoader(test_set, shuffle=False, **common)
    num_classes = len(test_set.dataset.classes if args.limit else test_set.classes)
    return train_loader, test_loader, num_classes


@torch.no_grad()
def evaluate(model, loader, device):
    """Mean cross-entropy and top-1 accuracy (%) of ``model`` over ``loader``."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.numel()
    return loss_sum / seen, 100.0 * correct / seen


def train_one_epoch(model, loader, optimizer, scheduler, epoch, device, label_smoothing):
    """One pass over ``loader``; returns mean loss and top-1 (%) on the augmented images."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    num_updates = epoch * len(loader)
    for step, (x, y) in enumerate(loader, start=1):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        num_updates += 1
        scheduler.step_update(num_updates)
        loss_sum += loss.item() * y.numel()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.numel()
        if step % 100 == 0:
            print(f"  epoch {epoch + 1} step {step}/{len(loader)}: loss {loss_sum / seen:.4f}", flush=True)
    return loss_sum / seen, 100.0 * correct / seen


def save_weights(model, path: Path) -> None:
    """Write the model's state dict as safetensors via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def save_state(path: Path, **state) -> None:
    """torch.save ``state`` (tensors, numbers, dicts only) via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def append_log(path: Path, row: dict) -> None:
    """Append one row to the CSV log, writing the header when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    args.workdir.mkdir(parents=True, exist_ok=True)
    last_weights, last_state = args.workdir / "last.safetensors", args.workdir / "last_state.pt"
    log_path = args.workdir / "log.csv"

    model = create_model(args.model, num_classes=10)
    cfg = model.pretrained_cfg
    train_loader, test_loader, num_classes = make_loaders(args, cfg["mean"], cfg["std"])
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    if args.init_checkpoint is not None:
        model.load_state_dict(load_file(str(args.init_checkpoint)))
    model.to(device)
    optimizer = create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        num_epochs=args.epochs,
        min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr,
        step_on_epochs=False,
        updates_per_epoch=len(train_loader),
    )

    start_epoch, total_seconds = 0, 0.0
    if args.resume and last_state.exists():
        model.load_state_dict(load_file(str(last_weights), device=str(device)))
        state = torch.load(last_state, map_location=device, weights_only=True)
        if state["num_epochs"] != args.epochs:
            raise ValueError(f"--epochs {args.epochs} differs from the resumed run's {state['num_epochs']}; "
                             "the schedule depends on it, so resume with the same value")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, total_seconds = state["epoch"], state["total_seconds"]
        print(f"resumed after epoch {start_epoch} ({total_seconds:.0f} s so far)", flush=True)
    elif log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log

    if args.eval_before and start_epoch == 0:
        test_loss, test_top1 = evaluate(model, test_loader, device)
        append_log(log_path, dict(epoch=0, lr="", train_loss="", train_top1="", test_loss=f"{test_loss:.4f}",
                                  test_top1=f"{test_top1:.2f}", epoch_seconds="", total_seconds=0))
        print(f"epoch 0 (before training): test top-1 {test_top1:.2f}%", flush=True)

    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        train_loss, train_top1 = train_one_epoch(
            model, train_loader, optimizer, scheduler, epoch, device, args.label_smoothing
        )
        scheduler.step(epoch + 1)
        test_loss, test_top1 = evaluate(model, test_loader, device)
        epoch_seconds = time.perf_counter() - t0
        total_seconds += epoch_seconds
        save_weights(model, last_weights)
        save_state(last_state, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                   rng=torch.get_rng_state(), epoch=epoch + 1, num_epochs=args.epochs, total_seconds=total_seconds)
        lr = optimizer.param_groups[0]["lr"]
        append_log(log_path, dict(epoch=epoch + 1, lr=f"{lr:.5f}", train_loss=f"{train_loss:.4f}",
                                  train_top1=f"{train_top1:.2f}", test_loss=f"{test_loss:.4f}",
                                  test_top1=f"{test_top1:.2f}", epoch_seconds=f"{epoch_seconds:.0f}",
                                  total_seconds=f"{total_seconds:.0f}"))
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f} top-1 {train_top1:.2f}% | "
              f"test top-1 {test_top1:.2f}% | {epoch_seconds:.0f} s", flush=True)

    model.load_state_dict(load_file(str(last_weights), device=str(device)))
    test_loss, test_top1 = evaluate(model, test_loader, device)
    save_weights(model, args.output)
    summary = dict(model=args.model, output=str(args.output), epochs=args.epochs, test_top1=round(test_top1, 2),
                   test_loss=round(test_loss, 4), train_seconds=round(total_seconds), args=vars(args))
    tmp = args.workdir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, args.workdir / "summary.json")
    print(f"final test top-1 {test_top1:.2f}% -> {args.output}", flush=True)
    return summary


if __name__ == "__main__":
    main()
