"""Where a run's minutes go (issue 17): phases add up to each stage's time, in the order they ran."""

from __future__ import annotations

import pytest

from raylab.phases import PhaseClock, PhaseTime, breakdown, table_lines


class FakeNow:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_phase_is_timed_in_its_stage() -> None:
    now = FakeNow()
    clock = PhaseClock(now)
    with clock.in_stage("stress"), clock.phase("job"):
        now.t = 12.5
    assert clock.rows == [PhaseTime("stress", "job", 12.5)]


def test_nested_phases_count_once() -> None:
    now = FakeNow()
    clock = PhaseClock(now)
    with clock.in_stage("spot"), clock.phase("drill"):
        with clock.phase("inner"):
            now.t = 3.0
        clock.add("also inner", 1.0)
        now.t = 5.0
    assert clock.rows == [PhaseTime("spot", "drill", 5.0)]


def test_a_phase_that_raises_is_still_recorded() -> None:
    now = FakeNow()
    clock = PhaseClock(now)
    with pytest.raises(KeyboardInterrupt), clock.in_stage("data"), clock.phase("data job"):
        now.t = 4.0
        raise KeyboardInterrupt
    assert clock.rows == [PhaseTime("data", "data job", 4.0)]


@pytest.mark.parametrize(("rows", "stages", "want"), [
    # what no phase covers is the stage's "other"; the phases add up to the stage's time
    ([PhaseTime("stress", "job", 100.0), PhaseTime("stress", "verify", 1.0)], {"stress": 110.0},
     [("stress", "job", 100.0), ("stress", "verify", 1.0), ("stress", "other", 9.0)]),
    # a stage with no phase is all "other"
    ([], {"network": 1.2}, [("network", "other", 1.2)]),
    # rows outside the stages (the target's start) stay where they ran, in order
    ([PhaseTime("start", "local target up", 3.0), PhaseTime("network", "verify", 0.5)],
     {"network": 0.5}, [("start", "local target up", 3.0), ("network", "verify", 0.5)]),
    # rounding noise never makes a negative "other"
    ([PhaseTime("cluster", "up", 8.02)], {"cluster": 8.0}, [("cluster", "up", 8.02)]),
])
def test_breakdown(rows: list[PhaseTime], stages: dict[str, float],
                   want: list[tuple[str, str, float]]) -> None:
    assert [(r.stage, r.phase, r.seconds) for r in breakdown(rows, stages)] == want


def test_table_lines_show_each_phase_and_the_total() -> None:
    lines = table_lines([PhaseTime("stress", "job", 90.0), PhaseTime("stress", "other", 10.0)])
    assert lines[0].startswith("stress") and "90.0 s" in lines[0] and "90%" in lines[0]
    assert lines[0].count("#") == 30 and lines[1].count("#") == 3
    assert lines[-1].startswith("total") and "100.0 s" in lines[-1]
