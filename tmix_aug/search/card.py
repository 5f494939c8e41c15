"""The model card (README.md) of a searched mixer: data, teacher, hyper-parameters, curve."""
from __future__ import annotations

from typing import Any


def search_card(config: Any, state: dict, data_config: dict, notes: str | None = None) -> str:
    """Markdown body of a searched mixer's README.md.

    Args:
        config: the ``SearchConfig`` of the run.
        state: the run's state (``epoch``, ``history`` of per-epoch records, ``teacher_top1``).
        data_config: the teacher's data config (mean, std, input_size).
        notes: extra markdown appended (e.g. an evaluation with another classifier).
    """
    history = state["history"]
    names = list(history[-1]["held_out_ce"]) if history else []
    columns = [("held_out_calibrated_ce", "objective", "{:.4f}"), ("held_out_ce", "plain CE", "{:.4f}"), ("held_out_top2", "top-2", "{:.2%}")]

    def cells(record: dict, key: str, fmt: str) -> str:
        return " | ".join(fmt.format(record[key][n]) if key in record else "-" for n in names)

    rows = "\n".join(
        f"| {r['epoch']} | {r['train_loss']:.4f} | "
        + " | ".join(cells(r, key, fmt) for key, _, fmt in columns)
        + f" | {r.get('teacher_temperature', float('nan')):.2f} | {r['temperature']:.3f} | {r['mean_shift']:.3f}"
        + f" | {r['mean_linear_change']:.3f} | {r['images_per_second']:.0f} |"
        for r in history
    )
    head = (
        "| epoch | train loss | "
        + " | ".join(f"{title} {n}" for _, title, _ in columns for n in names)
        + " | teacher T | tau | mean shift | mean A-I | images/s |"
    )
    rule = "|" + "---|" * (3 * len(names) + 7)
    data = config.dataset or "ImageFolder"
    return f"""# TransformMix mixer: {config.output.rstrip('/').split('/')[-1]}

A mixer learned with `python -m tmix_aug.search` (TransformMix, arXiv 2403.12429): a spatial
transformer and a mask network that read saliency maps (class activation maps) and mix batches
of images. It reads only saliency, so it can serve other datasets than the one it was learned on.

```python
import tmix_aug as tm
mixer = tm.TransformMix.from_pretrained("NAME_OR_PATH", num_classes=NUM_CLASSES, saliency=model_or_"spectral")
x, y = mixer(x, y)
```

## Search
- Data: {data} at `{config.data_dir}` (train split `{config.train_split}`, held-out split `{config.val_split}`, {config.val_samples} held-out images at most).
- Teacher: `{config.teacher}` from `{config.teacher_checkpoint}`, frozen; top-1 on the held-out images: {state.get('teacher_top1', float('nan')):.2f}%.
- Input: {tuple(data_config.get('input_size') or ())}, mean {data_config.get('mean')}, std {data_config.get('std')}.
- Objective: the teacher's soft-label cross-entropy on mixed images against the lambda-mixed labels{', with the teacher at the temperature that fits each batch best (calibrated; it does not reward blurring)' if getattr(config, 'calibrated', False) else ''}.
- Optimiser: SGD, lr {config.lr}, momentum {config.momentum}, weight decay {config.weight_decay}, batch {config.batch_size}, constant learning rate; {state['epoch']} of {config.epochs} epochs run{'' if config.max_batches is None else f', at most {config.max_batches} batches per epoch'}.
- Mixing: K = {config.k}, alpha = {config.alpha}, mode `{config.mode}`, working resolution S = {config.size}, transforms bounded by |t| <= {config.max_translation} and |A - I| <= {config.max_linear} per entry, seed {config.seed}.
- These weights: epoch {state.get('best_epoch', '-')}, the lowest held-out objective of the run (the output keeps the best epoch; `checkpoint/` the latest, for `--resume`).

## Search curve
On held-out images mixed by each method at the same partners and lambdas, the teacher's
soft-label cross-entropy at its best temperature for that method's images ("objective"; lower:
the mixed image keeps more of what the labels say), the same at temperature 1 ("plain CE", the
paper's objective, which also rewards making the teacher unsure) and how often the teacher's
top-2 are exactly the two classes mixed ("top-2"); "teacher T" is the best temperature for the
learned mixer's images.

{head}
{rule}
{rows}
{notes or ''}"""
