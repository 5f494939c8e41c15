"""Speed of making mixed batches, as ratios to timm's Mixup in the same run.

    python benchmarks/speed.py [--repeats 7] [--device cpu] [--output benchmarks/results/speed.md] [--tables ...]

Figures (issue 2, item 7; issue 14):
1. Mixing time per batch against timm's ``Mixup`` on the same batch (32x32 batch 128 and
   224x224 batch 64): TransformMix with the saliency given (the mixing itself; also with
   unbalanced masks, to show what balancing costs), with the teacher-free spectral saliency,
   and with CAMs from a ResNet-50 (the model being trained).
2. What "saliency from the network being trained" adds to a ResNet-50 224x224 training step.
3. A CIFAR ResNet-20 training step at 32x32 batch 128 (the small-network case): the step
   without mixing, with TransformMix on cached teacher saliency (maps given, as
   ``tmix_aug.saliency_cache`` provides them), with CAMs of the model itself, and the mixing
   alone; the issue's shares are computed from the medians of that one run.
4. ``--tables self-refresh`` (not in the default set): the same ResNet-20 step with self-saliency
   from a CAM pass per step, or from stored maps refreshed every N epochs (``--saliency-refresh``),
   the refresh pass amortised over N epochs, and what the stored map adds in the loader workers.

Each figure is the median of ``--repeats`` timings; methods are timed in interleaved order so
that load from other processes hits all of them alike.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import timm
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from tmix_aug import TransformMix
from tmix_aug.atomic import write_atomic
from tmix_aug.functional import affine_grid
from tmix_aug.saliency import ClassActivationMap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(functions: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds after one warm-up call each."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            sync(device)
            start = time.perf_counter()
            function()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def as_rows(times: dict[str, float], baseline: str) -> list[tuple[str, float, float]]:
    """(name, seconds, ratio to the baseline's seconds) for each timed method."""
    return [(name, seconds, seconds / times[baseline]) for name, seconds in times.items()]


def mixing_table(size: int, batch: int, repeats: int, device: torch.device, resnet: torch.nn.Module) -> list[tuple[str, float]]:
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=1000)
    cached = torch.rand(batch, 7, 7, device=device)
    given = TransformMix(1000, saliency=lambda images, targets: cached).to(device)
    unbalanced = TransformMix(1000, saliency=lambda images, targets: cached, balance=False).to(device)
    spectral = TransformMix(1000, saliency="spectral").to(device)
    # At 32 px a ResNet-50's maps are 1x1 cells: accepted knowingly (min_map_size=1), as measured before.
    cam = TransformMix(1000, saliency=ClassActivationMap(resnet, min_map_size=1)).to(device)
    thetas = torch.eye(2, 3, device=device).expand(2, batch, 2, 3) + 0.01 * torch.randn(2, batch, 2, 3, device=device)
    partners = torch.randperm(batch, device=device)

    def two_warps(images: torch.Tensor) -> list[torch.Tensor]:
        inputs = (images, images.index_select(0, partners))
        return [torch.nn.functional.grid_sample(inp, affine_grid(theta, size, size), align_corners=False)
                for inp, theta in zip(inputs, thetas)]
    with torch.no_grad():
        times = median_times(
            {
                "timm Mixup": lambda: timm_mixup(x.clone(), y),
                "TransformMix, saliency given (the mixing itself)": lambda: given(x, y),
                "the same, unbalanced masks (balance=False)": lambda: unbalanced(x, y),
                "TransformMix, spectral saliency": lambda: spectral(x, y),
                "TransformMix, CAM of a ResNet-50": lambda: cam(x, y),
                "the two warps alone (one grid_sample per input: the floor of an exact path)": lambda: two_warps(x),
            },
            repeats,
            device,
        )
    return as_rows(times, "timm Mixup")


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A function ``step(mix)``: mix the batch, then one SGD step of ``model`` on soft targets."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = SoftTargetCrossEntropy()

    def step(mix) -> None:
        images, targets = mix(x, y)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_step_table(batch: int, repeats: int, device: torch.device, resnet: torch.nn.Module) -> list[tuple[str, float, float]]:
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=1000)
    mixer = TransformMix(1000, saliency=resnet).to(device)
    step = training_step(resnet, x, y)

    resnet.train()
    times = median_times(
        {
            "ResNet-50 step with timm Mixup": lambda: step(lambda a, b: timm_mixup(a.clone(), b)),
            "ResNet-50 step with TransformMix (CAM from the model itself)": lambda: step(mixer),
        },
        repeats,
        device,
    )
    return as_rows(times, "ResNet-50 step with timm Mixup")


def small_network_table(repeats: int, device: torch.device, extra_mixers: Sequence[str] = ()) -> list[tuple[str, float, float]]:
    """A CIFAR ResNet-20 training step at 32x32 batch 128 and what TransformMix adds to it (issue 14).

    ``extra_mixers`` (directories or bundled names, e.g. a mixer searched at S = 16) add, each in
    the same interleaved run, a step with it on cached teacher saliency, the mixing alone and its
    two networks alone (see ``extra_rows``).
    """
    import tmix_aug.models  # noqa: F401  (registers cifar_resnet20 with timm)

    torch.manual_seed(0)
    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    cached = torch.rand(128, 8, 8, device=device)  # stored teacher CAMs (ResNet-20: 8x8 at 32 px)
    model = timm.create_model("cifar_resnet20", num_classes=10).to(device)
    given = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, saliency=lambda images, targets: cached,
                                         check_inputs=False).to(device)
    half = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, prob=0.5, check_inputs=False,
                                        saliency=lambda images, targets: cached[: images.shape[0]]).to(device)
    own = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, saliency=model, check_inputs=False).to(device)
    own_16 = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, check_inputs=False,
                                          saliency=ClassActivationMap(model, input_size=16)).to(device)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    step = training_step(model, x, y)

    def networks(mixer: TransformMix) -> Callable[[], None]:
        stn_planes = torch.rand(128, 5, mixer.size, mixer.size, device=device).contiguous(memory_format=torch.channels_last)
        mpn_planes = torch.rand(128, 4, mixer.size, mixer.size, device=device).contiguous(memory_format=torch.channels_last)

        def run() -> None:
            with torch.no_grad():
                mixer.stn(stn_planes), mixer.mpn(mpn_planes)

        return run

    extra = {}
    for path in extra_mixers:
        mixer = TransformMix.from_pretrained(path, num_classes=10, saliency=lambda images, targets: cached, check_inputs=False).to(device)
        step_name, alone_name, networks_name = extra_rows(path, mixer.size)
        extra |= {step_name: lambda mixer=mixer: step(mixer), alone_name: lambda mixer=mixer: mixer(x, y), networks_name: networks(mixer)}

    model.train()
    times = median_times(
        {
            "ResNet-20 step, no mixing": lambda: step(lambda a, b: (a, one_hot)),
            "ResNet-20 step, TransformMix with cached teacher saliency": lambda: step(given),
            "ResNet-20 step, TransformMix with CAM from the model itself": lambda: step(own),
            "ResNet-20 step, TransformMix with CAM from the model itself, 16 px CAM pass": lambda: step(own_16),
            "TransformMix alone, cached saliency (the mixing itself)": lambda: given(x, y),
            "TransformMix alone, cached saliency, prob 0.5": lambda: half(x, y),
            "its two networks alone (STN and mask net at S = 32: the floor at this size)": networks(given),
            "CAM pass of the model itself alone (eval forward, no grad)": lambda: own.saliency(x, one_hot),
            "the same CAM pass at 16 px": lambda: own_16.saliency(x, one_hot),
            **extra,
        },
        repeats,
        device,
    )
    return as_rows(times, "ResNet-20 step, no mixing")


def extra_rows(path: str, size: int) -> tuple[str, str, str]:
    """Row names of one more mixer in the small-step table: its step, its mixing alone, its two networks alone."""
    return (
        f"ResNet-20 step, TransformMix `{path}` (S = {size}) with cached teacher saliency",
        f"TransformMix `{path}` (S = {size}) alone, cached saliency",
        f"its two networks alone (S = {size})",
    )


def small_network_shares(rows: list[tuple[str, float, float]], extra_mixers: Sequence[tuple[str, int]] = ()) -> str:
    """The issue's figures as shares of a step, from one run's medians.

    Two readings: from the parts (the mixing, the CAM pass and the plain step, each timed on
    its own: steadier on a shared machine) and from the differences of whole steps (the same
    quantity, but the difference of two large, noisy medians).
    """
    t = {name: seconds for name, seconds, _ in rows}
    plain = t["ResNet-20 step, no mixing"]
    mixing = t["TransformMix alone, cached saliency (the mixing itself)"]
    cam, cam_16 = t["CAM pass of the model itself alone (eval forward, no grad)"], t["the same CAM pass at 16 px"]
    with_cache = t["ResNet-20 step, TransformMix with cached teacher saliency"]
    with_self = t["ResNet-20 step, TransformMix with CAM from the model itself"]
    with_self_16 = t["ResNet-20 step, TransformMix with CAM from the model itself, 16 px CAM pass"]
    lines = [
        "| figure (ResNet-20, 32x32, batch 128) | from the parts | from whole steps | goal |",
        "|---|---|---|---|",
        f"| mixer share of the step, cached teacher saliency | {mixing / (plain + mixing):.0%} | {(with_cache - plain) / with_cache:.0%} | <= 10% |",
        f"| mixing alone / a ResNet-20 step without mixing | {mixing / plain:.0%} | | <= 10% |",
        f"| self-saliency share (mixing and the CAM pass of the model itself, of the step with them) | {(mixing + cam) / (plain + mixing + cam):.0%} | {(with_self - plain) / with_self:.0%} | <= 20% |",
        f"| the same, CAM pass at 16 px (opt-in: `--saliency-input-size 16`) | {(mixing + cam_16) / (plain + mixing + cam_16):.0%} | {(with_self_16 - plain) / with_self_16:.0%} | <= 20% |",
        f"| the two networks alone / a ResNet-20 step without mixing | {t['its two networks alone (STN and mask net at S = 32: the floor at this size)'] / plain:.0%} | | |",
        f"| mixing at prob 0.5 / mixing at prob 1 | {t['TransformMix alone, cached saliency, prob 0.5'] / mixing:.0%} | | about 50% |",
    ]
    for path, size in extra_mixers:
        step_name, alone_name, networks_name = extra_rows(path, size)
        lines += [
            f"| `{path}` (S = {size}): mixer share of the step, cached teacher saliency | {t[alone_name] / (plain + t[alone_name]):.0%} "
            f"| {(t[step_name] - plain) / t[step_name]:.0%} | <= 10% |",
            f"| `{path}` (S = {size}): its two networks alone / a ResNet-20 step without mixing | {t[networks_name] / plain:.0%} | | |",
            f"| `{path}` (S = {size}): self-saliency share (its mixing and the CAM pass of the model itself) "
            f"| {(t[alone_name] + cam) / (plain + t[alone_name] + cam):.0%} | | <= 20% |",
            f"| `{path}` (S = {size}): the same, CAM pass at 16 px "
            f"| {(t[alone_name] + cam_16) / (plain + t[alone_name] + cam_16):.0%} | | <= 20% |",
        ]
    return "\n".join(lines) + "\n"


REFRESH_EVERY = (1, 2, 4)


def self_refresh_table(repeats: int, device: torch.device) -> list[tuple[str, float, float]]:
    """Self-saliency by refreshed maps (``--saliency-refresh N``) against a CAM pass per step, ResNet-20 at 32x32 batch 128.

    The refresh pass is timed on one batch of 128 clean images through ``SaliencyCache.build``
    (the path ``RefreshedSaliency`` takes: eval forward without gradients, maps resized to S and
    stored as float16); over an epoch it runs once per batch every N epochs, so it adds its
    time / N to each step. The loader rows time what the map adds in the loader workers: timm's
    training transform of 128 PIL images alone, and with their stored maps (``SaliencyDataset``).
    """
    import tmix_aug.models  # noqa: F401  (registers cifar_resnet20 with timm)
    from PIL import Image
    from timm.data import create_transform
    from torch.utils.data import TensorDataset

    from tmix_aug.saliency_cache import SaliencyCache
    from tmix_aug.saliency_loader import joint_augmentation
    from tmix_aug.saliency_transforms import SaliencyDataset

    torch.manual_seed(0)
    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    model = timm.create_model("cifar_resnet20", num_classes=10).to(device)
    own = TransformMix.from_pretrained("cifar10-resnet20", num_classes=10, saliency=model, check_inputs=False).to(device)
    stored = torch.rand(128, 32, 32, device=device)  # maps as the loader delivers them (S x S, augmented)
    clean = TensorDataset(x.cpu(), y.cpu())

    def refresh_pass(input_size: int | None) -> Callable[[], None]:
        cam = ClassActivationMap(model, input_size=input_size) if input_size else ClassActivationMap(model)
        return lambda: SaliencyCache.build(clean, cam, num_classes=10, map_size=own.saliency.size, batch_size=128,
                                           device=device, source_key="timed", dataset_key="timed")

    pictures = [Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy()) for _ in range(128)]
    transform = create_transform((3, 32, 32), is_training=True)
    with_maps = SaliencyDataset([(picture, 0) for picture in pictures],
                                SaliencyCache(torch.rand(128, 32, 32).half()), joint_augmentation(transform))
    step = training_step(model, x, y)
    model.train()
    times = median_times(
        {
            "ResNet-20 step, no mixing": lambda: step(lambda a, b: (a, one_hot)),
            "ResNet-20 step, TransformMix with a CAM pass of the model itself per step": lambda: step(own),
            "ResNet-20 step, TransformMix on stored maps (between refreshes)": lambda: step(lambda a, b: own(a, b, saliency=stored)),
            "TransformMix alone, stored maps (the mixing itself)": lambda: own(x, y, saliency=stored),
            "CAM pass of the model itself alone, per step (eval forward, no grad)": lambda: own.saliency(x, one_hot),
            "refresh pass, one batch of 128 clean images (SaliencyCache.build)": refresh_pass(None),
            "the same refresh pass at 16 px (--saliency-input-size 16)": refresh_pass(16),
            "loader workers: timm's training transform of 128 images": lambda: [transform(picture) for picture in pictures],
            "loader workers: the same with their stored maps (SaliencyDataset)": lambda: [with_maps[i] for i in range(128)],
        },
        repeats,
        device,
    )
    return as_rows(times, "ResNet-20 step, no mixing")


def self_refresh_shares(rows: list[tuple[str, float, float]]) -> str:
    """Self-saliency shares of the ResNet-20 step: per-step CAM, and refreshed maps every N epochs (refresh amortised)."""
    t = {name: seconds for name, seconds, _ in rows}
    plain, mixing = t["ResNet-20 step, no mixing"], t["TransformMix alone, stored maps (the mixing itself)"]
    per_step = t["ResNet-20 step, TransformMix with a CAM pass of the model itself per step"]
    on_stored = t["ResNet-20 step, TransformMix on stored maps (between refreshes)"]
    cam = t["CAM pass of the model itself alone, per step (eval forward, no grad)"]
    loader = t["loader workers: the same with their stored maps (SaliencyDataset)"] / t["loader workers: timm's training transform of 128 images"]

    def row(label: str, added: float) -> str:
        return (f"| {label} | {(mixing + added) / (plain + mixing + added):.0%} | {(on_stored + added - plain) / (on_stored + added):.0%} "
                "| <= 20% |")

    lines = [
        "| self-saliency share of a ResNet-20 step (32x32, batch 128) | from the parts | from whole steps | goal |",
        "|---|---|---|---|",
        f"| a CAM pass per step (today's default) | {(mixing + cam) / (plain + mixing + cam):.0%} | {(per_step - plain) / per_step:.0%} | <= 20% |",
    ]
    for size, name in ((32, "refresh pass, one batch of 128 clean images (SaliencyCache.build)"),
                       (16, "the same refresh pass at 16 px (--saliency-input-size 16)")):
        for every in REFRESH_EVERY if size == 32 else REFRESH_EVERY[:2]:
            label = f"`--saliency-refresh {every}`" + (" `--saliency-input-size 16`" if size == 16 else "")
            lines.append(row(label + " (refresh pass / N added to each step)", t[name] / every))
    lines.append(f"| between refreshes, stored maps only (N large) | {mixing / (plain + mixing):.0%} | {(on_stored - plain) / on_stored:.0%} | |")
    lines.append(f"| loader work per image with the map / without (in the workers, beside the step) | {loader:.2f}x | | |")
    return "\n".join(lines) + "\n"


def markdown(title: str, rows: list[tuple[str, float, float]], baseline: str) -> str:
    lines = [f"### {title}", "", f"| method | median ms | ratio to {baseline} |", "|---|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.1f} | {ratio:.2f}x |" for name, seconds, ratio in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--step-batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="benchmarks/results/speed.md")
    parser.add_argument(
        "--tables", nargs="+", default=["small-step", "mixing-32", "mixing-224", "resnet50-step"],
        choices=["small-step", "mixing-32", "mixing-224", "resnet50-step", "self-refresh"], help="which tables to measure",
    )
    parser.add_argument(
        "--small-step-mixer", nargs="*", default=[],
        help="more mixers (directories or bundled names) timed in the small-step table beside the bundled one",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", num_classes=1000).to(device)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = "# Speed\n\n" + __doc__.split("\n\n", 1)[1] + "\n"
    sections = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}, "
        f"torch {torch.__version__}, timm {timm.__version__}; median of {args.repeats} interleaved repeats.\n"
    ]
    def small_step() -> str:
        rows = small_network_table(args.repeats, device, args.small_step_mixer)
        sizes = [(path, TransformMix.from_pretrained(path, num_classes=10).size) for path in args.small_step_mixer]
        return markdown("A CIFAR ResNet-20 training step, 32x32, batch 128", rows, "the step without mixing") + "\n" + small_network_shares(rows, sizes)

    def self_refresh() -> str:
        rows = self_refresh_table(args.repeats, device)
        title = "Self-saliency with maps refreshed every N epochs (--saliency-refresh), ResNet-20, 32x32, batch 128"
        return markdown(title, rows, "the step without mixing") + "\n" + self_refresh_shares(rows)

    tables = {
        "small-step": small_step,
        "self-refresh": self_refresh,
        "mixing-32": lambda: markdown("Mixing one batch: 32x32, batch 128", mixing_table(32, 128, args.repeats, device, resnet.eval()), "timm Mixup"),
        "mixing-224": lambda: markdown("Mixing one batch: 224x224, batch 64", mixing_table(224, 64, args.repeats, device, resnet.eval()), "timm Mixup"),
        "resnet50-step": lambda: markdown(
            f"A ResNet-50 training step, 224x224, batch {args.step_batch}",
            training_step_table(args.step_batch, max(3, args.repeats // 2), device, resnet),
            "the step with timm Mixup",
        ),
    }
    tables = [tables[name] for name in args.tables]
    for table in tables:  # written as they come, so a stopped run keeps what it measured
        sections.append(table())
        print(sections[-1], flush=True)
        write_atomic(output, lambda tmp: Path(tmp).write_text(header + "\n".join(sections)))


if __name__ == "__main__":
    main()
