"""The model card (README.md) of a searched mixer: data, teacher, hyper-parameters, curve."""
from __future__ import annotations

from typing import Any


OPTIMIZERS = {"momentum": "SGD with momentum", "sgd": "SGD with Nesterov momentum", "adamw": "AdamW", "adam": "Adam"}


def search_card(config: Any, state: dict, data_config: dict, notes: str | None = None, weights_sha256: str | None = None) -> str:
    """Markdown body of a searched mixer's README.md.

    Args:
        config: the ``SearchConfig`` of the run.
        state: the run's state (``epoch``, ``history`` of per-epoch records, ``teacher_top1``).
        data_config: the teacher's data config (mean, std, input_size).
        notes: extra markdown appended (e.g. an evaluation with another classifier).
        weights_sha256: SHA-256 of the model.safetensors the card describes (None: not named).
    """
    history = state["history"]
    names = list(history[-1]["held_out_ce"]) if history else []
    columns = [("held_out_calibrated_ce", "objective", "{:.4f}"), ("held_out_ce", "plain CE", "{:.4f}"), ("held_out_top2", "top-2", "{:.2%}")]

    def cells(record: dict, key: str, fmt: str) -> str:
        return " | ".join(fmt.format(record[key][n]) if key in record else "-" for n in names)

    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    rows = "\n".join(
        f"| {r['epoch']} | {number(r['train_loss'], '{:.4f}')} | "
        + " | ".join(cells(r, key, fmt) for key, _, fmt in columns)
        + f" | {r.get('teacher_temperature', float('nan')):.2f} | {r.get('held_out_area_gap', float('nan')):.4f}"
        + f" | {r['temperature']:.3f} | {r['mean_shift']:.3f}"
        + f" | {r['mean_linear_change']:.3f} | {number(r['images_per_second'], '{:.0f}')} |"
        for r in history
    )
    head = (
        "| epoch | train loss | "
        + " | ".join(f"{title} {n}" for _, title, _ in columns for n in names)
        + " | teacher T | share gap | tau | mean shift | mean A-I | images/s |"
    )
    rule = "|" + "---|" * (3 * len(names) + 8)
    data = config.dataset or "ImageFolder"
    name = config.output.rstrip("/").split("/")[-1]
    return f"""# TransformMix mixer: {name}

A mixer learned with `python -m tmix_aug.search` (TransformMix, arXiv 2403.12429): a spatial
transformer and a mask network that read saliency maps (class activation maps) and mix batches
of images. It reads only saliency, so it can serve other datasets than the one it was learned on.

```python
import tmix_aug as tm
num_classes = 10  # the classes of YOUR task: the mixer reads only saliency, not classes
mixer = tm.TransformMix.from_pretrained("{config.push_to_hub or name}", num_classes=num_classes, saliency="spectral")  # or saliency=model (CAMs)
x, y = mixer(x, y)
```

## Search
- Data: {data} at `{config.data_dir}` (train split `{config.train_split}`, held-out split `{config.val_split}`, {config.val_samples} held-out images at most).
- Teacher: `{config.teacher}`{f' with create_model arguments `{config.teacher_kwargs}`' if getattr(config, 'teacher_kwargs', None) else ''} from `{config.teacher_checkpoint}`, frozen; top-1 on the held-out images: {state.get('teacher_top1', float('nan')):.2f}%.
- Input: {tuple(data_config.get('input_size') or ())}, mean {data_config.get('mean')}, std {data_config.get('std')}.
- Objective: the teacher's soft-label cross-entropy on mixed images against the lambda-mixed labels{', with the teacher at the temperature that fits each batch best (calibrated; it does not reward blurring)' if getattr(config, 'calibrated', False) else ''}.
- Optimiser: {OPTIMIZERS.get(getattr(config, 'opt', 'momentum'), config.opt)}, lr {config.lr}{f', momentum {config.momentum}' if getattr(config, 'opt', 'momentum') in ('momentum', 'sgd') else ''}, weight decay {config.weight_decay}, batch {config.batch_size}, constant learning rate; {state['epoch']} of {config.epochs} epochs run{'' if config.max_batches is None else f', at most {config.max_batches} batches per epoch'}.
- Mixing: K = {config.k}, alpha = {config.alpha}, mode `{config.mode}`, {'balanced masks (each input covers its lambda share of the image)' if config.balance else 'unbalanced masks (the paper)'}, working resolution S = {config.size}, transforms bounded by |t| <= {config.max_translation} and |A - I| <= {config.max_linear} per entry, starting temperature tau = {getattr(config, 'init_temperature', 0.3)}, seed {config.seed}.
- These weights: epoch {state.get('best_epoch', '-')} (0 is the unsearched start){f'; model.safetensors SHA-256 `{weights_sha256}`' if weights_sha256 else ''}. The output keeps the epoch with the lowest held-out objective among those whose held-out top-2 is at least the best baseline's and the unsearched start's (the objective can also fall by making an input harder to recognise; the others count only if no epoch passes); `checkpoint/` holds the latest epoch, for `--resume`.

## Search curve
On held-out images mixed by each method at the same partners and lambdas, the teacher's
soft-label cross-entropy at its best temperature for that method's images ("objective"; lower:
the mixed image keeps more of what the labels say), the same at temperature 1 ("plain CE", the
paper's objective, which also rewards making the teacher unsure) and how often the teacher's
top-2 are exactly the two classes mixed ("top-2"); "teacher T" is the best temperature for the
learned mixer's images; "share gap" is the mean over mixed images of sum_k (share of the image
shown from input k - lambda_k)^2 (0 for Mixup and CutMix).

{head}
{rule}
{rows}
{transforms_section(history, state.get('best_epoch'))}
{notes or ''}"""


def transforms_section(history: list[dict], kept_epoch: Any) -> str:
    """What the spatial transformer of the kept epoch does to the held-out images (markdown)."""
    kept = next((r for r in history if r.get("epoch") == kept_epoch and "transforms" in r), None)
    if kept is None:
        return ""
    t = kept["transforms"]
    return f"""
## What the transforms do (epoch {kept_epoch}, held-out images)
Each input's centre moves by {t['shift_p50']:.1%} of the image side (median; 90th percentile
{t['shift_p90']:.1%}); its content is scaled by {t['scale_p50']:.2f} (10th-90th percentile
{t['scale_p10']:.2f}-{t['scale_p90']:.2f}) and turned by {t['rotation_p50']:.1f} degrees (90th
percentile {t['rotation_p90']:.1f}). The inputs' saliency centroids end farther apart in
{t['moved_apart']:.0%} of the mixed images and closer together in {t['moved_together']:.0%}
(a change of more than 2% of the image side).
"""
