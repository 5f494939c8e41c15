"""PhaseTimer: sums of named spans, reset after reading."""
import time

from tmix_aug.step_timer import PhaseTimer


def test_phases_add_up_and_reset():
    timer = PhaseTimer("cpu")
    for _ in range(3):
        start = timer.mark()
        time.sleep(0.002)
        middle = timer.mark()
        time.sleep(0.001)
        timer.add("first", start, middle)
        timer.add("both", start, timer.mark())
    totals = timer.totals()
    assert set(totals) == {"first", "both"}
    assert 0.006 <= totals["first"] < totals["both"]
    assert timer.totals() == {}
