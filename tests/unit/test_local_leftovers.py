"""Teardown's verdict on the local target covers the twin's cloud, not only processes.

The twin's cloud lives in its memory, so `stop` checks it before stopping the twin; once the twin
is gone, `leftovers` reports what that check found."""

from __future__ import annotations

from pathlib import Path

from raylab.cli.options import make_context
from raylab.targets.local import LocalTarget


def test_leftovers_after_stop_report_what_the_cloud_still_held(tmp_path: Path) -> None:
    ctx = make_context(workdir=tmp_path / ".raylab", lab="lo")
    ctx.state.put("teardown", {"cloud_leftovers": ["instance i-0abc (running)"], "checked_at": 0})
    assert LocalTarget().leftovers(ctx) == ["instance i-0abc (running)"]


def test_clean_teardown_reports_nothing(tmp_path: Path) -> None:
    ctx = make_context(workdir=tmp_path / ".raylab", lab="lo")
    ctx.state.put("teardown", {"cloud_leftovers": [], "checked_at": 0})
    assert LocalTarget().leftovers(ctx) == []
