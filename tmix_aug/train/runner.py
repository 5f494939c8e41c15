"""A tmix-train run from the command line to its summary: the epochs, checkpoints, summary files and wandb."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from timm.utils import distribute_bn, get_outdir, random_seed, setup_default_logging, update_summary

from ..atomic import remove_stale_temporaries, write_atomic
from ..baselines import NoMix
from ..sampling import stream_seed
from .checkpoints import AtomicCheckpointSaver, RecoveryWriter
from .data import set_loader_epoch
from .flags import build_parser, parse_args
from .loop import eval_columns, train_one_epoch, validate
from .run_folder import earlier_run_files, read_history
from .state import setup

_logger = logging.getLogger("tmix_aug.train")


def start_wandb(args: argparse.Namespace, name: str) -> Any:
    """timm's --log-wandb on the primary process: a wandb run, or None when off or when the wandb
    package is missing (then, as timm, a warning and the run goes on; wandb is not a dependency)."""
    if not args.log_wandb:
        return None
    try:
        import wandb
    except ImportError:
        _logger.warning("--log-wandb: the wandb package is not installed, so metrics are not sent to wandb "
                        "(pip install wandb); training goes on, and summary.csv / summary.json hold them")
        return None
    return wandb.init(
        project=args.wandb_project,
        name=name,
        config=vars(args),
        tags=args.wandb_tags,
        resume="must" if args.wandb_resume_id else None,
        id=args.wandb_resume_id or None,
    )


def run(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    """Train from ``state`` (see ``setup``); return the summary written to ``summary.json``."""
    device, model, mixer = state["device"], state["model"], state["mixer"]
    primary = args.rank == 0
    output_dir = state["output_dir"]
    saver = wandb_run = None
    history: list[dict[str, Any]] = []
    if primary:
        if args.overwrite and not args.resume:
            for path in earlier_run_files(output_dir, args):
                os.remove(path)
        get_outdir(output_dir)
        remove_stale_temporaries(output_dir)  # left by a process killed while writing
        args_text = state.get("args_text") or yaml.safe_dump(vars(args), default_flow_style=False)
        write_atomic(os.path.join(output_dir, "args.yaml"), lambda tmp: Path(tmp).write_text(args_text))
        saver = AtomicCheckpointSaver(
            model=model,
            optimizer=state["optimizer"],
            args=args,
            model_ema=state["model_ema"],
            amp_scaler=state["scaler"],
            checkpoint_dir=output_dir,
            recovery_dir=output_dir,
            decreasing=args.eval_metric == "loss",
            max_history=args.checkpoint_hist,
            saliency_refresh=state.get("saliency_refresh"),
        )
        if args.resume:
            saver.load_state_dict_from_checkpoint(args.resume)
        wandb_run = start_wandb(args, os.path.basename(output_dir))
        # summary.csv is the record of finished epochs: rows past the checkpoint are dropped.
        history = read_history(os.path.join(output_dir, "summary.csv"), state["start_epoch"])
        _logger.info(
            f"tmix-train: {args.model} on {args.dataset or 'image folder'} ({state['train_size']} train / "
            f"{state['eval_size']} eval images, {state['num_classes']} classes), mixer {args.mixer}"
            f"{' ' + args.mixer_path if args.mixer_path else ''}, {args.world_size} process(es) on {device}, "
            f"lr {args.lr:.4g}; writing {output_dir}"
        )
    summary_path = os.path.join(output_dir, "summary.json")
    no_mix = NoMix(state["num_classes"], label_smoothing=args.smoothing).to(device)
    mean, std = state["data_config"]["mean"], state["data_config"]["std"]

    def save_grid(x: torch.Tensor, y: torch.Tensor) -> None:
        from ..viz import save_mix_grid  # pictures only at the start of a run

        # A separate mix of the first images, so the picture leaves the training stream alone.
        x, y = x[:8], y[:8]
        with torch.no_grad():
            result = mixer.mix(x, y, generator=torch.Generator().manual_seed(args.seed))
        path = os.path.join(output_dir, args.mix_grid)
        save_mix_grid(
            path, result, x, mean=mean, std=std, num_samples=8, scale=max(1, 96 // x.shape[-1])
        )
        _logger.info(f"wrote {path}")

    best: dict[str, Any] = {}
    # timm's --model-ema-force-cpu: the average is kept on the CPU and not evaluated
    ema_evaluated = state["model_ema"] is not None and not args.model_ema_force_cpu
    metric_key = f"ema_{args.eval_metric}" if ema_evaluated else args.eval_metric
    recovery = RecoveryWriter(args, saver) if args.recovery_interval else None
    refresh = state.get("saliency_refresh")
    for epoch in range(state["start_epoch"], state["num_epochs"]):
        if refresh is not None:  # before the epoch's seeding: the pass's loader draws from the global stream
            refresh.update(epoch, mid_epoch=epoch == state["start_epoch"] and state.get("recovery") is not None)
        random_seed(stream_seed(args.seed, epoch, 0, bits=31), args.rank)
        set_loader_epoch(state["train_loader"], epoch)
        mixing = args.mixer_off_epoch <= 0 or epoch < args.mixer_off_epoch
        first_mix = (
            save_grid
            if primary
            and args.mix_grid
            and mixing
            and args.mixer != "none"
            and epoch == state["start_epoch"]
            else None
        )
        train_metrics = train_one_epoch(
            epoch,
            state["train_model"],
            state["train_loader"],
            state["optimizer"],
            mixer if mixing else no_mix,
            args,
            device,
            scheduler=state["scheduler"],
            scaler=state["scaler"],
            model_ema=state["model_ema"],
            transmix=state["transmix"] if mixing else None,
            on_first_mix=first_mix,
            images_dir=output_dir if primary and args.save_images else None,
            recovery=recovery,
            resume_at=state.get("recovery") if epoch == state["start_epoch"] else None,
            batch_size_reference=state.get("batch_size_reference"),
            distill=state.get("distill"),
        )
        if args.distributed and args.dist_bn:
            distribute_bn(model, args.world_size, args.dist_bn == "reduce")
        # timm's --val-interval: evaluate every N epochs and at the last one. The other epochs
        # keep the eval columns empty (None) and save last.pth.tar unranked, so resume stays exact.
        evaluating = (epoch + 1) % args.val_interval == 0 or epoch + 1 == state["num_epochs"]
        eval_metrics: dict[str, Any] = dict.fromkeys(eval_columns(ema_evaluated))
        if evaluating:
            eval_metrics = validate(model, state["eval_loader"], args, device)
            if ema_evaluated:
                ema_metrics = validate(
                    state["model_ema"].module, state["eval_loader"], args, device, desc="eval ema"
                )
                eval_metrics.update({f"ema_{key}": value for key, value in ema_metrics.items()})
        lr = state["optimizer"].param_groups[0]["lr"]
        if state["scheduler"] is not None:
            state["scheduler"].step(epoch + 1, eval_metrics[args.eval_metric])
        if not primary:
            continue
        update_summary(
            epoch,
            train_metrics,
            {key: "" if value is None else value for key, value in eval_metrics.items()},
            os.path.join(output_dir, "summary.csv"),
            lr=lr,
        )
        best_metric, best_epoch = saver.save_checkpoint(epoch, metric=eval_metrics[metric_key])
        row = {
            "epoch": epoch,
            "lr": lr,
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"eval_{k}": v for k, v in eval_metrics.items()},
        }
        history.append(row)
        if wandb_run is not None:
            wandb_run.log({key: value for key, value in row.items() if value is not None})
        best = {"epoch": best_epoch, args.eval_metric: best_metric}
        summary = json.dumps(
            {
                "model": args.model,
                "dataset": args.dataset or args.data_dir,
                "mixer": args.mixer,
                "mixer_path": args.mixer_path,
                "saliency": args.saliency,
                "num_classes": state["num_classes"],
                "world_size": args.world_size,
                "best": best,
                "last": row,
                "epochs": history,
                "args": vars(args),
            },
            indent=2,
            default=str,
        )
        write_atomic(summary_path, lambda tmp, text=summary: Path(tmp).write_text(text))
        evaluated = (
            f"eval top-1 {eval_metrics['top1']:.2f}% top-5 {eval_metrics['top5']:.2f}%"
            if evaluating
            else f"no eval (--val-interval {args.val_interval})"
        )
        _logger.info(
            f"epoch {epoch}: train loss {train_metrics['loss']:.4f}, {evaluated}, "
            f"{train_metrics['images_per_sec']:.0f} images/s, "
            f"mixer {100 * train_metrics['mixer_share']:.1f}% of step time"
        )
    if wandb_run is not None:
        wandb_run.finish()
    if refresh is not None:
        refresh.close()
    if primary and history and history[-1]["eval_top1"] is not None:
        _logger.info(
            f"best {metric_key} {best.get(args.eval_metric)} at epoch {best.get('epoch')}; "
            f"last top-1 {history[-1]['eval_top1']:.2f}%; checkpoints and summary in {output_dir}"
        )
    return {"best": best, "epochs": history, "output_dir": output_dir}


def train_from_args(argv: list[str] | None = None) -> dict[str, Any]:
    """Run tmix-train with these command-line arguments; return the run's summary
    (best metric, per-epoch rows, output folder). Bad input exits with status 2 and a message."""
    args, args_text = parse_args(argv)
    try:
        state = setup(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad input; a RuntimeError is a failure
        if dist.is_initialized():
            dist.destroy_process_group()
        build_parser().error(str(error))
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    state["args_text"] = args_text
    try:
        return run(args, state)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``tmix-train``): timm's console logging, then the run."""
    setup_default_logging()
    train_from_args(sys.argv[1:] if argv is None else argv)
