"""The stage registry is the one description of a stage: every stage module, `raylab --help`,
`raylab stages`, `lab` and `up` agree with it."""

from __future__ import annotations

import json

import pytest

from raylab.stages.registry import BY_NAME, LAB_STAGES, STAGES, UP_STAGES, help_lines, load
from tests.conftest import run_cli


@pytest.mark.parametrize("info", STAGES, ids=[s.name for s in STAGES])
def test_each_stage_module_says_what_the_registry_says(info) -> None:
    stage = load(info)
    assert (stage.number, stage.name, stage.summary, stage.verified_by) == \
        (info.number, info.name, info.summary, info.verified_by)


def test_lab_and_up_come_from_the_registry() -> None:
    from raylab.cli import cmd_lab

    assert LAB_STAGES == ("network", "identity", "cluster", "stress", "scaling", "spot", "data")
    assert UP_STAGES == ("network", "identity", "cluster")
    assert (cmd_lab.LAB_STAGES, cmd_lab.UP_STAGES) == (LAB_STAGES, UP_STAGES)
    assert [BY_NAME[n].number for n in LAB_STAGES] == list(range(1, 8))


def test_help_lists_every_numbered_stage_from_the_registry() -> None:
    from raylab.cli.main import HELP

    assert help_lines() in HELP
    line = "  4 stress    480 one-CPU tasks: watch the autoscaler hit the vCPU quota wall"
    assert line in HELP.splitlines()


def test_raylab_stages_prints_the_registry() -> None:
    r = run_cli("stages", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["stages"]
    assert [(x["name"], x["does"], x["verified_by"]) for x in rows] == \
        [(s.name, s.summary, s.verified_by) for s in STAGES]
