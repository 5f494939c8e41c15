"""Timing phases of a training step without making the host wait for the device every step."""
from __future__ import annotations

import time
from typing import Any

import torch


class PhaseTimer:
    """Sum the time of named phases (e.g. "mix" and "step") over an epoch.

    On CUDA each mark is a recorded ``torch.cuda.Event``: nothing waits until ``totals()``,
    which synchronises once. Elsewhere a mark is the host clock (CPU work is synchronous).

    Usage::

        timer = PhaseTimer(device)
        for x, y in loader:
            arrived = timer.mark(); result = mixer.mix(x, y); mixed = timer.mark()
            ...  # forward, backward, optimizer step
            timer.add("mix", arrived, mixed); timer.add("step", arrived, timer.mark())
        seconds = timer.totals()   # {"mix": ..., "step": ...}

    Args:
        device: the device the work runs on.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._spans: list[tuple[str, Any, Any]] = []

    def mark(self) -> Any:
        """A point in the work queued so far (an event on CUDA, the host clock elsewhere)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def add(self, name: str, start: Any, end: Any) -> None:
        """Count the span from ``start`` to ``end`` (two marks) towards phase ``name``."""
        self._spans.append((name, start, end))

    def totals(self) -> dict[str, float]:
        """Seconds per phase since the last call (one device synchronisation on CUDA)."""
        if self.cuda and self._spans:
            self._spans[-1][2].synchronize()
        totals: dict[str, float] = {}
        for name, start, end in self._spans:
            seconds = start.elapsed_time(end) / 1000 if self.cuda else end - start
            totals[name] = totals.get(name, 0.0) + seconds
        self._spans.clear()
        return totals
