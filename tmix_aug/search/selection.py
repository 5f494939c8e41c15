"""Which epoch's mixer a search keeps (ours)."""
from __future__ import annotations


def kept_record(history: list[dict], calibrated: bool) -> dict:
    """The epoch whose mixer the output keeps, from the per-epoch records.

    The lowest held-out objective among the epochs whose mixes the teacher reads as both
    classes (top-2) at least as often as the best baseline's and the unsearched start's (the
    first record, epoch 0); when no epoch passes, the lowest objective of all. Why: the
    objective can also fall by making an input harder to recognise (without balanced masks,
    by shrinking the input with the smaller lambda), and on CIFAR-10 the teacher's top-2 ranks
    mixers as a classifier that took no part in the search does. A searched epoch replaces the
    start only when it is better at the objective and no worse at that.
    """
    start = history[0]["held_out_top2"]["transformmix"]

    def rank(record: dict) -> tuple[bool, float]:
        top2 = record["held_out_top2"]
        floor = max(start, *(value for name, value in top2.items() if name != "transformmix"))
        objective = record["held_out_calibrated_ce" if calibrated else "held_out_ce"]["transformmix"]
        return top2["transformmix"] < floor, objective

    return min(history, key=rank)
