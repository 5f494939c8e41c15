"""Command line of the search: ``python -m tmix_aug.search`` / ``tmix-search`` (also under torchrun)."""
from __future__ import annotations

import argparse
import dataclasses

from timm.utils import ParseKwargs

from .config import SearchConfig
from .loop import search

HELP = {
    "data_dir": "dataset root: an ImageFolder with train/ and validation/ (or val/) folders",
    "dataset": "timm dataset name ('' for an ImageFolder, e.g. torch/cifar10)",
    "teacher": "timm model name of the frozen teacher (tmix_aug's cifar_resnet20 etc. included)",
    "teacher_kwargs": "extra timm create_model arguments of the teacher, e.g. pad_type=same (as timm's --model-kwargs)",
    "teacher_checkpoint": "teacher weights: .safetensors, or a state dict loaded with weights_only=True",
    "output": "directory of the learned mixer (config.json, model.safetensors, README.md, checkpoint/)",
    "max_batches": "stop each epoch after this many batches (quick runs)",
    "amp": "mixed precision for the teacher (default: on with CUDA)",
    "resume": "continue from output/checkpoint (refused when the checkpoint is missing, torn or from other settings)",
    "overwrite": "replace the run in a non-empty output directory (deletes only the files a search writes)",
    "push_to_hub": "upload the mixer to this Hub repo id at the end",
    "card_notes": "markdown file appended to the model card",
    "val_samples": "held-out images used for the per-epoch comparison and to pick the best epoch",
    "max_translation": "largest shift of a learned transform (normalised units, [-1, 1] spans the image)",
    "max_linear": "largest change of each entry of a transform's 2x2 linear part",
    "init_temperature": "mask temperature tau at the start of the search (lower: sharper mask boundaries)",
    "balance": "balanced masks: each input covers its lambda share of the image (default; --no-balance: the paper's masks)",
    "opt": "timm optimizer name (default momentum: SGD with momentum, the paper's)",
    "calibrated": "score the teacher at its best temperature per batch (default; --no-calibrated: the paper's plain CE)",
}


def parser() -> argparse.ArgumentParser:
    """Flags named after the fields of ``SearchConfig``, with its defaults (the paper's)."""
    result = argparse.ArgumentParser(prog="tmix-search", description="Learn a TransformMix mixer under a frozen teacher.")
    for field in dataclasses.fields(SearchConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "teacher_kwargs":
            result.add_argument(flag, nargs="*", default={}, action=ParseKwargs, help=HELP[field.name])
            continue
        if "bool" in str(field.type):
            result.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=HELP.get(field.name))
            continue
        kind = {int: int, float: float}.get(type(field.default), str)
        if field.name in ("max_batches",):
            kind = int
        result.add_argument(flag, type=kind, default=field.default, help=HELP.get(field.name, f"default: {field.default}"))
    return result


def main(argv: list[str] | None = None) -> None:
    """Run a search; bad input exits with status 2 and a message naming the field or file."""
    command = parser()
    args = command.parse_args(argv)
    try:
        search(SearchConfig(**vars(args)))
    except (ValueError, FileNotFoundError) as error:
        command.error(str(error))


if __name__ == "__main__":
    main()
