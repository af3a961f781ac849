"""A working directory holds one lab: commands act on it, another --lab or target is refused.

Found in session 11: after `raylab lab --lab td --keep`, a plain `raylab down` in the same directory
tore down the cluster its state named but looked for the OS user's stack and IAM (`raylab-root-...`),
so on AWS the held lab's stack and instance profile would have been left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.labid import lab_for_workdir
from tests.conftest import run_cli

OWNER = {"id": "kim", "target": "local"}
NET = {"stack_name": "raylab-kim-network", "VpcId": "vpc-1"}


@pytest.mark.parametrize(("held", "given", "target", "want"), [
    # nothing recorded: the given lab, else the default (the OS user's)
    ({}, None, "local", "root"),
    ({}, "lee", "local", "lee"),
    # an owner but nothing held any more (torn down): any lab may use the directory
    ({"lab": OWNER, "run": {"stage": "teardown"}}, "lee", "aws", "lee"),
    ({"lab": OWNER, "cost": {"total_usd": 0}}, None, "local", "root"),
    # something held: without --lab the command acts on the held lab
    ({"lab": OWNER, "network": NET}, None, "local", "kim"),
    ({"lab": OWNER, "twin": {"pid": 1}}, None, "local", "kim"),
    ({"lab": OWNER, "cluster": {"cluster_name": "raylab-kim"}}, "kim", "local", "kim"),
    # a state written before the owner was recorded: as before (the given lab or the default)
    ({"network": NET}, None, "local", "root"),
])
def test_the_lab_a_command_acts_on(held: dict, given: str | None, target: str, want: str) -> None:
    assert lab_for_workdir(held, given, target, "root") == want


@pytest.mark.parametrize(("given", "target", "needle"), [
    ("lee", "local", "holds lab 'kim' (local), not 'lee'"),
    (None, "aws", "holds lab 'kim' on the local target, not aws"),
    ("kim", "aws", "add --target local"),
])
def test_another_lab_or_target_is_refused_while_one_is_held(given: str | None, target: str,
                                                            needle: str) -> None:
    with pytest.raises(RaylabError) as e:
        lab_for_workdir({"lab": OWNER, "identity": {"role": "r"}}, given, target, "root")
    assert needle in e.value.one_line()


def _held_workdir(tmp_path: Path) -> Path:
    wd = tmp_path / ".raylab"
    wd.mkdir()
    (wd / "state.json").write_text(json.dumps({"lab": OWNER, "network": NET}))
    return wd


def test_down_for_another_lab_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    wd = _held_workdir(tmp_path)
    before = (wd / "state.json").read_text()
    p = run_cli("down", "--yes", "--lab", "lee", "--workdir", str(wd))
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "holds lab 'kim'" in err[0] and "raylab down --lab kim" in err[0], p.stderr
    assert (wd / "state.json").read_text() == before


def test_a_command_without_lab_acts_on_the_held_lab(tmp_path: Path) -> None:
    wd = _held_workdir(tmp_path)
    p = run_cli("preflight", "--json", "--workdir", str(wd))
    assert json.loads(p.stdout)["lab"] == "kim", p.stdout + p.stderr


def test_a_room_command_in_a_held_directory_leaves_its_owner(tmp_path: Path) -> None:
    """The room acts on every lab of the account: what it writes here must not make the directory
    another lab's (a later `raylab down` would then look for that lab's stack)."""
    from raylab.cli.options import make_context
    from raylab.state import State

    wd = _held_workdir(tmp_path)
    ctx = make_context(target="aws", workdir=wd, one_lab=False)
    ctx.state.put("run", {"command": "raylab room status"})
    assert lab_for_workdir(State(wd).load(), None, "local", "root") == "kim"
