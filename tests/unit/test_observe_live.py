"""The live view: plain lines when stderr is not a terminal, a Rich panel when it is."""

from __future__ import annotations

import io

from raylab.observe.live import LiveView, plain_line, render
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


def test_not_a_terminal_prints_plain_lines_on_events_or_every_period(capsys) -> None:  # noqa: ANN001
    ui = UI()
    with LiveView(ui, "t", plain_every_s=3600) as live:
        live.update(SAMPLE)                      # first sample: printed
        live.update({**SAMPLE, "events": []})    # nothing new, period not over: quiet
        live.update(SAMPLE)                      # events: printed
    err = capsys.readouterr().err
    assert err.count("tasks pending") == 2
