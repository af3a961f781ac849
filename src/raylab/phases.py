"""Where a run's minutes go: each stage's time split into named phases (issue 17).

A stage marks its long parts (``with ctx.clock.phase("job running"): ...``); the runner times the
stage as a whole and its verify. What no phase covers is reported as the stage's "other", so the
phases of a stage always add up to its time. `raylab lab` prints the breakdown at the end and puts
it in ``--json`` (``phases``). Base layer: imports nothing of raylab.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PhaseTime:
    stage: str
    phase: str
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class PhaseClock:
    """Phases recorded in order. Nested phases count once: only the outermost one is recorded."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now: Callable[[], float] = now or time.monotonic
        self.rows: list[PhaseTime] = []
        self.stage = ""
        self._depth = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self._now()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.rows.append(PhaseTime(self.stage, name, round(self._now() - t0, 2)))

    def add(self, name: str, seconds: float) -> None:
        """A phase timed by the caller (e.g. the parts of one sampling loop)."""
        if self._depth == 0:
            self.rows.append(PhaseTime(self.stage, name, round(max(0.0, seconds), 2)))

    @contextmanager
    def in_stage(self, stage: str) -> Iterator[None]:
        before, self.stage = self.stage, stage
        try:
            yield
        finally:
            self.stage = before


def breakdown(rows: list[PhaseTime], stage_seconds: dict[str, float]) -> list[PhaseTime]:
    """Each stage's phases in order, then "other" for what no phase covered (pure).

    Rows stay in the order they ran; a phase outside the listed stages (the target's start before
    stage 1, the time-to-ready measurement after stage 3) is kept as it is."""
    out: list[PhaseTime] = []
    done: set[str] = set()
    for r in rows:
        if r.stage not in stage_seconds:
            out.append(r)
        elif r.stage not in done:
            done.add(r.stage)
            mine = [x for x in rows if x.stage == r.stage]
            out += mine + _other(r.stage, stage_seconds[r.stage], mine)
    for stage, total in stage_seconds.items():
        if stage not in done:
            out += _other(stage, total, [])
    return out


def _other(stage: str, total: float, mine: list[PhaseTime]) -> list[PhaseTime]:
    rest = round(total - sum(r.seconds for r in mine), 2)
    return [PhaseTime(stage, "other", max(0.0, rest))] if rest >= 0.05 or not mine else []


def table_lines(rows: list[PhaseTime], width: int = 36) -> list[str]:
    """The breakdown as aligned lines with a bar per phase, longest phase = 30 characters (pure)."""
    if not rows:
        return []
    top = max(r.seconds for r in rows) or 1.0
    total = sum(r.seconds for r in rows)
    lines = []
    for r in rows:
        bar = "#" * max(1 if r.seconds >= 0.5 else 0, round(30 * r.seconds / top))
        share = 100 * r.seconds / total if total else 0
        lines.append(f"{r.stage[:14]:<14} {r.phase[:width]:<{width}} {r.seconds:7.1f} s {share:4.0f}%  {bar}")
    lines.append(f"{'total':<14} {'':<{width}} {total:7.1f} s")
    return lines
