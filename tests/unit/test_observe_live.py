"""The live view: plain lines when stderr is not a terminal, a Rich panel when it is."""

from __future__ import annotations

import io

import pytest

from raylab.observe.live import LiveView, plain_due, plain_line, render
from raylab.ui import UI

SAMPLE = {"t": 12.4, "tasks": {"pending": 20, "running": 16, "finished": 4, "failed": 0, "total": 40},
          "workers": 4, "nodes": {"ray.worker.ondemand": {"RUNNING": 4, "LAUNCHING": 2}},
          "instances": {"running": {"on-demand": 5}, "pending": {"spot": 1}}, "job": "RUNNING",
          "events": [{"ts": 1000.0, "kind": "quota_error", "detail": "VcpuLimitExceeded", "count": 1},
                     {"ts": 1000.0, "kind": "quota_error", "detail": "VcpuLimitExceeded", "count": 1}]}


def test_plain_line_names_every_count() -> None:
    line = plain_line(SAMPLE)
    assert line.startswith("[    12s] tasks pending 20 running 16 done 4/40 | workers 4 |")
    assert "pending: spot 1" in line and "running: on-demand 5" in line
    assert "events: quota_error 2" in line and line.endswith("job RUNNING")


def test_plain_line_with_unknown_sources() -> None:
    s = {"t": 2.0, "tasks": {"pending": None, "running": None, "finished": 0, "total": 4}, "workers": None,
         "instances": None, "events": [], "job": "PENDING"}
    assert "instances - " in plain_line(s) and "workers None" in plain_line(s)


def test_rich_panel_renders_tables() -> None:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=120).print(render(SAMPLE, SAMPLE["events"], "stress 40 x 30s"))
    out = buf.getvalue()
    for text in ("pending 20", "ray.worker.ondemand", "LAUNCHING 2", "on-demand 5", "VcpuLimitExceeded",
                 "job RUNNING"):
        assert text in out


def test_not_a_terminal_prints_plain_lines_on_news_or_every_period(capsys) -> None:  # noqa: ANN001
    ui = UI()
    launch = [{"ts": 1001.0, "kind": "launch", "detail": "1 on-demand", "count": 1}]
    with LiveView(ui, "t", plain_every_s=3600) as live:
        live.update(SAMPLE)                      # first sample: printed
        live.update({**SAMPLE, "events": []})    # nothing new, period not over: quiet
        live.update({**SAMPLE, "events": launch})  # a launch: printed
    err = capsys.readouterr().err
    assert err.count("tasks pending") == 2


def _ev(kind: str, n: int = 1) -> list[dict[str, object]]:
    return [{"kind": kind, "count": 1, "ts": 0.0}] * n


@pytest.mark.parametrize(("events", "workers", "since_s", "due"), [
    (_ev("quota_error", 5), 8, 2.0, False),  # the wall answered again this loop: no news
    (_ev("capacity_error"), 8, 2.0, False),  # a capacity window, likewise
    (_ev("quota_error", 5) + _ev("launch"), 8, 2.0, True),  # a launch is news
    (_ev("spot_reclaim"), 8, 2.0, True),
    ([], 7, 2.0, True),  # a worker joined or left
    (_ev("quota_error", 5), 8, 10.0, True),  # the period is over
    ([], 8, 9.9, False),
])
def test_a_plain_line_is_due_on_news_or_after_the_period(events: list[dict[str, object]], workers: int,
                                                          since_s: float, due: bool) -> None:
    assert plain_due(events, workers, 8, since_s, 10.0) is due


def test_repeated_wall_errors_add_up_into_the_next_line(capsys) -> None:  # noqa: ANN001
    """With a 1 s autoscaler loop the wall answers every loop: the lines stay a few seconds apart and
    each says how many errors came since the line before."""
    ui = UI()
    base = {**SAMPLE, "workers": 8}
    with LiveView(ui, "t", plain_every_s=3600) as live:
        live.update({**base, "events": []})  # first sample: printed
        for _ in range(3):
            live.update({**base, "events": _ev("quota_error", 5)})  # quiet, added up
        live.update({**base, "events": _ev("launch")})  # news: printed with what came before
    lines = [x for x in capsys.readouterr().err.splitlines() if "tasks pending" in x]
    assert len(lines) == 2
    assert "events: launch 1 quota_error 15" in lines[1]
