"""Refusals before anything is created, and no credentials anywhere raylab writes or prints."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from raylab.state import State
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

FAKE_KEY_ID = "AKIARAYLABFAKE7EXAMPLE"
FAKE_SECRET = "rAyLaBfAkEsEcReT/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_second_command_while_one_runs_is_refused_without_side_effects(tmp_path: Path) -> None:
    wd = tmp_path / ".raylab"
    with State(wd).lock("up"):
        p = run_cli("up", "--yes", "--workdir", str(wd), "--lab", "guard")
    assert p.returncode == 2
    assert "`raylab up` (pid" in p.stderr and "is already running" in p.stderr
    assert "Traceback" not in p.stderr
    assert State(wd).get("twin") == {} and State(wd).get("network") == {}


def test_busy_twin_port_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    wd = tmp_path / ".raylab"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_cli("up", "--yes", "--workdir", str(wd), "--lab", "guard",
                    env={"RAYLAB_TWIN_PORT": str(port)})
    assert p.returncode == 2, p.stderr
    assert f"127.0.0.1:{port} is already in use" in p.stderr
    assert "Traceback" not in p.stderr
    assert State(wd).get("twin") == {} and State(wd).get("network") == {}


def test_no_credentials_in_state_logs_or_json(tmp_path: Path) -> None:
    """A user with AWS keys in the environment runs the local lab: the keys appear nowhere."""
    wd = tmp_path / ".raylab"
    env = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    outputs = []
    try:
        for stage in ("1", "2"):  # the stack, then Terraform (its state files are checked too)
            p = run_cli("stage", stage, "--yes", "--json", "--workdir", str(wd), "--lab", "sec", env=env)
            outputs.append(p.stdout + p.stderr)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["ok"] is True
    finally:
        down = run_cli("down", "--yes", "--json", "--workdir", str(wd), "--lab", "sec", env=env)
        outputs.append(down.stdout + down.stderr)
    assert json.loads(down.stdout)["leftovers"] == []
    written = [f for f in wd.rglob("*") if f.is_file() and f.stat().st_size < 50_000_000]
    assert written, "raylab wrote no state at all?"
    for text in outputs + [f.read_text(errors="replace") for f in written]:
        assert FAKE_KEY_ID not in text
        assert FAKE_SECRET not in text
