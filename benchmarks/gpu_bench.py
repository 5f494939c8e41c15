"""GPU figures for the README, each written with the device name (``benchmarks/gpu.sh`` calls this).

    python benchmarks/gpu_bench.py speed --output gpu-results      # mixing time, ResNet-50 steps
    python benchmarks/gpu_bench.py cifar --data-dir DIR --budget-s 300 --output gpu-results
    python benchmarks/gpu_bench.py speed --device cpu --quick --output /tmp/x   # check it on a CPU

``speed``: (1) the time to mix one batch, TransformMix against timm's ``Mixup`` (and CutMix)
on the same batch, 32x32 batch 128 and 224x224 batch 128; (2) a ResNet-50 training step at
224x224 (bfloat16 autocast, channels-last on CUDA) without mixing, with timm Mixup, and with
TransformMix using the CAMs of the ResNet-50 itself. Each figure is the median over repeats
after warm-up calls, timed with CUDA events on CUDA (``time.perf_counter`` around a
synchronisation elsewhere); methods are timed in interleaved rounds.

``cifar``: a short CIFAR-10 comparison through ``tmix-train`` (ResNet-20 from scratch on the
image folder DIR/train, tested on DIR/test), one run per method, as many epochs as
``--epochs``; methods start only while the time budget allows.

Every figure goes to ``OUTPUT/gpu.jsonl`` (one JSON object per figure: device name, torch and
timm versions, the measurement) and a readable ``OUTPUT/gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import tmix_aug
from tmix_aug import TransformMix
from tmix_aug.saliency import ClassActivationMap

MIXER = "cifar10-resnet20"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Recorder:
    """Appends each figure to ``gpu.jsonl`` and ``gpu.md`` in ``folder`` as soon as it is measured."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.md = folder / "gpu.jsonl", folder / "gpu.md"
        self.common = {
            "device": device_name(device),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "tmix_aug": getattr(tmix_aug, "__version__", "unknown"),
            "cuda": torch.version.cuda,
        }

    def figure(self, **fields: Any) -> None:
        record = {**self.common, **fields, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        with open(self.jsonl, "a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    def text(self, text: str) -> None:
        with open(self.md, "a") as file:
            file.write(text + "\n")
        print(text, flush=True)


def median_ms(functions: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds per call of each function: ``warmup`` untimed calls each, then
    ``repeats`` interleaved rounds; CUDA events on CUDA."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(device)
                start.record()
                function()
                end.record()
                torch.cuda.synchronize(device)
                times[name].append(start.elapsed_time(end))
            else:
                begin = time.perf_counter()
                function()
                times[name].append(1000 * (time.perf_counter() - begin))
    return {name: statistics.median(values) for name, values in times.items()}


def _table(recorder: Recorder, title: str, times: dict[str, float], baseline: str, extra: dict[str, Any]) -> None:
    lines = [f"### {title} ({recorder.common['device']})", "", f"| method | median ms | ratio to {baseline} |", "|---|---|---|"]
    for name, ms in times.items():
        lines.append(f"| {name} | {ms:.3f} | {ms / times[baseline]:.2f}x |")
        recorder.figure(benchmark=title, method=name, median_ms=ms, ratio=ms / times[baseline], **extra)
    recorder.text("\n".join(lines) + "\n")


def speed(recorder: Recorder, device: torch.device, quick: bool, repeats: int) -> None:
    """Mixing one batch, then the ResNet-50 steps (see the module docstring)."""
    warmup = 1 if quick else 5
    net_name, classes = ("resnet18", 10) if quick else ("resnet50", 1000)
    torch.manual_seed(0)
    net = timm.create_model(net_name, num_classes=classes).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    sizes = ((32, 8), (64, 8)) if quick else ((32, 128), (224, 128))
    for size, batch in sizes:
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        maps = torch.rand(batch, max(size // 32, 4), max(size // 32, 4), device=device)
        timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=classes)
        timm_cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=classes)
        given = TransformMix.from_pretrained(MIXER, num_classes=classes, saliency=lambda i, t: maps).to(device)
        spectral = TransformMix.from_pretrained(MIXER, num_classes=classes, saliency="spectral").to(device)
        cam = TransformMix.from_pretrained(MIXER, num_classes=classes, saliency=ClassActivationMap(net.eval())).to(device)
        with torch.no_grad():
            times = median_ms(
                {
                    "timm Mixup": lambda: timm_mixup(x.clone(), y),
                    "timm CutMix": lambda: timm_cutmix(x.clone(), y),
                    f"TransformMix {MIXER}, saliency given (the mixing itself)": lambda: given(x, y),
                    f"TransformMix {MIXER}, spectral saliency": lambda: spectral(x, y),
                    f"TransformMix {MIXER}, CAMs of a {net_name}": lambda: cam(x, y),
                },
                repeats,
                warmup,
                device,
            )
        _table(recorder, f"Mixing one batch, {size}x{size}, batch {batch}", times, "timm Mixup",
               {"size": size, "batch": batch})

    size, batch = (64, 8) if quick else (224, 128)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = SoftTargetCrossEntropy()
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=classes)
    mixer = TransformMix.from_pretrained(MIXER, num_classes=classes, saliency=net).to(device)
    one_hot = torch.nn.functional.one_hot(y, classes).float()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step(mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        images, targets = mix(x, y)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = loss_fn(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    net.train()
    times = median_ms(
        {
            f"{net_name} step, no mixing": lambda: step(lambda a, b: (a, one_hot)),
            f"{net_name} step with timm Mixup": lambda: step(lambda a, b: timm_mixup(a.clone(), b)),
            f"{net_name} step with TransformMix {MIXER} (CAMs of the model itself)": lambda: step(mixer),
        },
        max(3, repeats // 2),
        warmup,
        device,
    )
    precision = "bfloat16 autocast, channels-last" if device.type == "cuda" else "float32"
    _table(recorder, f"A {net_name} training step, {size}x{size}, batch {batch}, {precision}", times,
           f"{net_name} step with timm Mixup", {"size": size, "batch": batch, "precision": precision})


CIFAR_METHODS = {
    "none": ["--mixer", "none"],
    "mixup": ["--mixer", "mixup"],
    "cutmix": ["--mixer", "cutmix"],
    "transformmix-self": ["--mixer", "transformmix", "--mixer-path", MIXER, "--saliency", "self"],
}


def cifar(recorder: Recorder, device: torch.device, data_dir: Path, epochs: int, budget_s: float,
          workers: int, output: Path, quick: bool) -> None:
    """One tmix-train run per method while the budget lasts; final and best test top-1 recorded."""
    if not (data_dir / "train").is_dir() or not (data_dir / "test").is_dir():
        raise ValueError(f"--data-dir: expected an image folder with train/ and test/, got {data_dir}")
    started = time.perf_counter()
    lines = [f"### CIFAR-10, ResNet-20 from scratch, {epochs} epochs ({recorder.common['device']})", "",
             "| method | final test top-1 | best test top-1 | seconds |", "|---|---|---|---|"]
    for method, flags in CIFAR_METHODS.items():
        spent = time.perf_counter() - started
        per_run = spent / max(1, len(lines) - 4)
        if spent + per_run > budget_s:
            recorder.text(f"(stopped before {method}: {spent:.0f} s of the {budget_s:.0f} s budget spent)")
            break
        argv = [
            sys.executable, "-m", "tmix_aug.train", "--data-dir", str(data_dir), "--train-split", "train",
            "--val-split", "test", "--model", "cifar_resnet20", "--img-size", "32", "--epochs", str(epochs),
            "--warmup-epochs", "0", "--lr", "0.2", "-b", "16" if quick else "128", "--weight-decay", "5e-4", "--scale", "0.35", "1",
            "--smoothing", "0", "-j", str(workers), "--pin-mem", "--no-progress", "--device", str(device),
            "--seed", "0", "--output", str(output / "cifar"), "--experiment", method, *flags,
        ]
        if quick:
            argv += ["--checkpoint-hist", "1", "--mix-grid", ""]
        begin = time.perf_counter()
        if subprocess.run(argv).returncode != 0:
            recorder.text(f"(tmix-train failed for {method}: see the output above)")
            continue
        seconds = time.perf_counter() - begin
        summary = json.loads((output / "cifar" / method / "summary.json").read_text())
        final, best = summary["last"]["eval_top1"], max(r["eval_top1"] for r in summary["epochs"])
        recorder.figure(benchmark="cifar10 resnet20 scratch", method=method, epochs=epochs, final_top1=final,
                        best_top1=best, seconds=seconds, command="tmix-train " + " ".join(argv[3:]))
        lines.append(f"| {method} | {final:.2f} | {best:.2f} | {seconds:.0f} |")
    recorder.text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("speed", "cifar"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("gpu-results"))
    parser.add_argument("--data-dir", type=Path, help="cifar: CIFAR-10 image folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    recorder = Recorder(args.output, device)
    if args.command == "speed":
        speed(recorder, device, args.quick, 3 if args.quick else args.repeats)
    else:
        if args.data_dir is None:
            parser.error("cifar: --data-dir is required")
        cifar(recorder, device, args.data_dir, args.epochs, args.budget_s, args.workers, args.output, args.quick)


if __name__ == "__main__":
    main()
