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


def test_leftovers_list_a_process_of_the_work_dir_that_nothing_recorded(tmp_path: Path) -> None:
    """The measured bug: an orphaned terraform-provider-aws ran while `down` said "nothing left"."""
    import os
    import subprocess

    from raylab.proctable import MARK_ENV

    wd = tmp_path / ".raylab"
    module = wd / "terraform" / "lo" / "module"
    module.mkdir(parents=True)
    ctx = make_context(workdir=wd, lab="lo")
    ctx.state.put("teardown", {"cloud_leftovers": [], "checked_at": 0})
    by_cwd = subprocess.Popen(["sleep", "30"], cwd=module)  # a provider's cwd is terraform's -chdir
    by_marker = subprocess.Popen(["sleep", "30"], env={**os.environ, MARK_ENV: str(wd)})
    try:
        left = LocalTarget().leftovers(ctx)
        assert any(f"pid {by_cwd.pid}, cwd under {wd}" in x for x in left), left
        assert any(f"pid {by_marker.pid}, marker under {wd}" in x for x in left), left
    finally:
        for p in (by_cwd, by_marker):
            p.kill()
            p.wait()
    assert LocalTarget().leftovers(ctx) == []
