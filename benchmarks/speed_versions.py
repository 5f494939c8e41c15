"""Before and after in one process: an older copy of tmix_aug timed interleaved with this one.

    git archive <old-commit> tmix_aug | tar -x -C /tmp/old   # then:
    OMP_NUM_THREADS=1 python benchmarks/speed_versions.py --before /tmp/old/tmix_aug --repeats 9

The older package is imported under another name, so both mixers (the bundled
``cifar10-resnet20`` weights, cached saliency given) are timed in the same rounds as the
training steps they are compared with: on a shared machine only ratios from one run mean
anything. Figures (issue 14): mixing and its share of a CIFAR ResNet-20 step at 32x32 batch
128, self-saliency (CAMs of the model being trained) as a share of that step, ``prob`` 0.5
against 1, and mixing at 224x224 batch 64 against timm's Mixup, for both bundled mixers, without
and with the input checks that are on by default on a CPU (``check_inputs=None``).
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path

import timm
import torch
from timm.data import Mixup

import tmix_aug
import tmix_aug.models  # noqa: F401  (registers cifar_resnet20 with timm)
from speed import median_times, training_step
from tmix_aug.atomic import write_atomic


# The bundled mixers timed at 224 px: the default for images of 46 px and up, then the CIFAR one;
# each without and with the input checks that are on by default on a CPU.
BIG_MIXERS = ("tinyimagenet-mobilenetv2", "cifar10-resnet20")
CHECKS = {"": False, ", default input checks": None}


def import_copy(path: Path, name: str = "tmix_before"):
    """Import the package directory ``path`` under the module name ``name``."""
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="directory of the older tmix_aug package")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--output", default="benchmarks/results/speed_versions.md")
    args = parser.parse_args()
    old = import_copy(args.before.resolve())
    torch.manual_seed(0)
    x = torch.randn(128, 3, 32, 32)
    y = torch.randint(0, 10, (128,))
    cached = torch.rand(128, 8, 8)
    model = timm.create_model("cifar_resnet20", num_classes=10)
    step = training_step(model.train(), x, y)
    one_hot = torch.nn.functional.one_hot(y, 10).float()

    def mixers(package, prob=1.0, saliency=None):
        return package.TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, prob=prob, check_inputs=False,
                                                    saliency=saliency or (lambda images, targets: cached[: images.shape[0]]))

    before, after = mixers(old), mixers(tmix_aug)
    before_half, after_half = mixers(old, 0.5), mixers(tmix_aug, 0.5)
    before_own, after_own = mixers(old, saliency=model), mixers(tmix_aug, saliency=model)
    small = median_times(
        {
            "ResNet-20 step, no mixing": lambda: step(lambda a, b: (a, one_hot)),
            "before: step with TransformMix, cached saliency": lambda: step(before),
            "after: step with TransformMix, cached saliency": lambda: step(lambda a, b: after(a, b, saliency=cached)),
            "before: step with TransformMix, CAM of the model itself": lambda: step(before_own),
            "after: step with TransformMix, CAM of the model itself": lambda: step(after_own),
            "before: mixing alone": lambda: before(x, y),
            "after: mixing alone": lambda: after(x, y, saliency=cached),
            "before: mixing alone, prob 0.5": lambda: before_half(x, y),
            "after: mixing alone, prob 0.5": lambda: after_half(x, y, saliency=cached),
        },
        args.repeats,
        torch.device("cpu"),
    )
    big_x = torch.randn(64, 3, 224, 224)
    big_y = torch.randint(0, 10, (64,))
    big_maps = torch.rand(64, 7, 7)
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=10)

    def big_mixer(package, name, **kwargs):
        return package.TransformMix.from_pretrained(name, num_classes=10, saliency=lambda images, targets: big_maps, **kwargs)

    timed = {"timm Mixup": lambda: timm_mixup(big_x.clone(), big_y)}
    for version, package in (("before", old), ("after", tmix_aug)):
        for name in BIG_MIXERS:
            for label, check_inputs in CHECKS.items():
                mixer = big_mixer(package, name, check_inputs=check_inputs)
                timed[f"{version}: {name}, saliency given{label}"] = lambda m=mixer: m(big_x, big_y)
    big = median_times(timed, args.repeats, torch.device("cpu"))
    plain = small["ResNet-20 step, no mixing"]
    lines = [
        "# Speed before and after (issue 14), one run", "", __doc__.split("\n\n", 2)[2].strip(), "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/speed_versions.py --before {args.before} --repeats {args.repeats}`; "
        f"machine: {platform.machine()} 2-core CPU, shared with other jobs, {torch.get_num_threads()} thread, torch "
        f"{torch.__version__}; median of {args.repeats} interleaved repeats.", "",
        "| timed (32x32, batch 128 unless said) | median ms | ratio to the ResNet-20 step without mixing |", "|---|---|---|",
    ]
    lines += [f"| {name} | {seconds * 1000:.1f} | {seconds / plain:.2f}x |" for name, seconds in small.items()]
    lines += ["", "| timed (224x224, batch 64) | median ms | ratio to timm Mixup |", "|---|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.1f} | {seconds / big['timm Mixup']:.2f}x |" for name, seconds in big.items()]
    lines += ["", "| figure | before | after | goal |", "|---|---|---|---|"]
    share = {v: small[f"{v}: mixing alone"] / small[f"{v}: step with TransformMix, cached saliency"] for v in ("before", "after")}
    alone = {v: small[f"{v}: mixing alone"] / plain for v in ("before", "after")}
    own = {v: (small[f"{v}: step with TransformMix, CAM of the model itself"] - plain)
           / small[f"{v}: step with TransformMix, CAM of the model itself"] for v in ("before", "after")}
    half = {v: small[f"{v}: mixing alone, prob 0.5"] / small[f"{v}: mixing alone"] for v in ("before", "after")}
    rows = [
        ("mixer share of a ResNet-20 step, cached teacher saliency (mixing alone / step with it)", share, "{:.0%}", "<= 10%"),
        ("mixing alone / ResNet-20 step without mixing", alone, "{:.0%}", "<= 10%"),
        ("self-saliency share ((step with CAMs of the model itself - step without mixing) / step with them)", own, "{:.0%}", "<= 20%"),
        ("mixing at prob 0.5 / mixing at prob 1", half, "{:.0%}", "about 50%"),
    ]
    rows += [
        (f"224x224 batch 64: mixing / timm Mixup, `{name}`{label}",
         {v: big[f"{v}: {name}, saliency given{label}"] / big["timm Mixup"] for v in ("before", "after")}, "{:.1f}x", "<= 3x")
        for name in BIG_MIXERS for label in CHECKS
    ]
    lines += [f"| {name} | {fmt.format(v['before'])} | {fmt.format(v['after'])} | {goal} |" for name, v, fmt, goal in rows]
    text = "\n".join(lines) + "\n"
    write_atomic(args.output, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
