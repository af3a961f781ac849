"""The twin's node launcher (targets/local/launcher.py): Ray's CLI imported once, forked per node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylab.procs import Records
from raylab.proctable import start_time
from raylab.targets.local.launcher import Launcher
from raylab.targets.local.recovery import node_is_ours


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    lau = Launcher(tmp_path_factory.mktemp("launcher") / "launcher.log", dict(os.environ))
    assert lau.wait_ready(120), lau.failed  # Ray's CLI imported, and no thread started by it
    yield lau
    lau.close()


def test_a_launched_node_runs_rays_own_cli_in_its_own_session_recorded_and_logged(
        launcher: Launcher, tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.dir.mkdir()
    body = Records.body(["ray", "--version"], what="ray node i-1", owner="twin", lab="", ephemeral=True)
    node = launcher.launch("i-1", ["--version"], {"PATH": os.environ["PATH"]}, str(tmp_path / "node.log"),
                           str(records.dir), body)
    assert node.wait(60) == 0
    import ray

    assert f"version {ray.__version__}" in (tmp_path / "node.log").read_text()  # the CLI's output, in its log
    [rec] = records.all()
    assert (rec.pid, rec.pgid, rec.what) == (node.pid, node.pid, "ray node i-1")
    assert rec.cmd == ("ray", "--version")


def test_a_failing_cli_reports_its_exit_code(launcher: Launcher, tmp_path: Path) -> None:
    node = launcher.launch("i-2", ["no-such-command"], {}, str(tmp_path / "node.log"))
    assert node.wait(60) == 2  # click's usage error, as `ray no-such-command` exits
    assert "No such command" in (tmp_path / "node.log").read_text()


def test_nodes_forked_together_get_their_own_environment(launcher: Launcher, tmp_path: Path) -> None:
    """`ray start` reads its environment and passes it to what it execs: each node's must be its own.
    Checked through Ray's CLI itself: `ray disable-usage-stats` writes where RAY_USAGE_STATS_CONFIG_PATH
    says, read when the command runs (after the fork)."""
    nodes = {a: launcher.launch(f"i-{a}", ["disable-usage-stats"],
                                {"RAY_USAGE_STATS_CONFIG_PATH": str(tmp_path / f"{a}.json")},
                                str(tmp_path / f"{a}.log")) for a in ("a", "b")}
    for a, n in nodes.items():
        assert n.wait(60) == 0, (tmp_path / f"{a}.log").read_text()
        assert json.loads((tmp_path / f"{a}.json").read_text()) == {"usage_stats": False}


def test_a_machines_entry_is_ours_by_its_recorded_start_time() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = start_time(p.pid)
        assert node_is_ours({"pid": p.pid, "start": st})
        assert not node_is_ours({"pid": p.pid, "start": (st or 0) + 1})  # a recycled pid
        assert not node_is_ours({"pid": p.pid, "temp_dir": "/tmp/rl-x/n1"})  # old entry: by its --temp-dir
    finally:
        p.kill()
        p.wait()
    time.sleep(0.05)
    assert not node_is_ours({"pid": p.pid, "start": st})


@pytest.mark.parametrize(("setting", "launcher_started"), [(None, True), ("0", False), ("off", False),
                                                           ("1", True)])
def test_the_twin_starts_its_launcher_with_its_first_cluster_unless_turned_off(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str | None, launcher_started: bool) -> None:
    from raylab.targets.local.machines import LAUNCHER_ENV, Machines

    if setting is None:
        monkeypatch.delenv(LAUNCHER_ENV, raising=False)
    else:
        monkeypatch.setenv(LAUNCHER_ENV, setting)
    ms = Machines(list, lambda iid, why: None, lambda kind, **kw: None, tmp_path / "logs")
    try:
        assert ms.launcher is None  # a twin without a cluster pays nothing for it
        ms.register("c", {"gcs_address": "127.0.0.1:1", "temp_root": str(tmp_path)})
        assert (ms.launcher is not None) == launcher_started
        if ms.launcher is not None:
            assert ms.launcher.wait_ready(120), ms.launcher.failed
    finally:
        ms.shutdown()
    if ms.launcher is not None:
        assert ms.launcher.proc.poll() is not None  # the twin's shutdown ends it
