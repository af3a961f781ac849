"""scripts/walk_guide.py walks the guide's local commands in order, and never the AWS track or the
internet (it runs on a machine whose traffic must stay on loopback)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("walk_guide", ROOT / "scripts" / "walk_guide.py")
assert _spec and _spec.loader
walk = importlib.util.module_from_spec(_spec)
sys.modules["walk_guide"] = walk  # dataclasses look their module up while the class is built
_spec.loader.exec_module(walk)


def test_the_walk_is_local_only_and_in_chapter_order() -> None:
    cmds = [s.cmd for s in walk.steps()]
    assert not [c for c in cmds if "--target aws" in c or "--rehearsal" in c]
    assert "raylab data schema" not in cmds, "reads S3 over the internet: must not run here"
    assert cmds.index("raylab stage 3") < cmds.index("raylab stress") < cmds.index("raylab stage 6") \
        < cmds.index("raylab stage 7") < len(cmds) - 1
    assert cmds[-2:] == ["raylab down", "raylab down --json"]
    assert "raylab stress --json" not in cmds, "'(위 대신)': the same run, not a second one"


def test_the_manual_drills_run_beside_their_stress_job() -> None:
    steps = walk.steps()
    t1 = [s for s in steps if s.terminal == 1]
    t2 = [s.cmd for s in steps if s.terminal == 2]
    assert [s.cmd for s in t1] == ["raylab stress --tasks 40 --duration 60"]
    assert t2[0] == "raylab status" and "raylab chaos reclaim --count 1 --no-notice" in t2


def test_only_documented_exits_are_expected() -> None:
    assert walk.expected_failure("raylab stress", "static")
    assert walk.expected_failure("raylab stress", "mixed") is None
    assert walk.expected_failure("raylab stage 6", "static") is None
