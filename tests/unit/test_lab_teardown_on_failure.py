"""`raylab lab`: a stage that fails (a failed check, an error, Ctrl-C) still ends in teardown and the
leftover check (unless --keep), the failed stage is named and the exit is non-zero. The stages and
the target are fakes that record what ran; the lab command, the runner and teardown are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raylab.cli import cmd_lab
from raylab.errors import RaylabError
from raylab.stages import STAGES
from raylab.stages.base import Check


class FakeTarget:
    def __init__(self, name: str, cloud: dict[str, str]) -> None:
        from raylab.targets.aws import AwsTarget
        from raylab.targets.local import LocalTarget

        real = AwsTarget if name == "aws" else LocalTarget  # what the lab command asks, as declared
        for member in ("spends_money", "fixed_region", "fixed_operator_cidr", "rehearsable",
                       "preflight_shown", "live_prices", "time_scale"):
            setattr(self, member, getattr(real, member))
        self.name = name
        self.cloud = cloud  # what "exists": stage name -> resource
        self.calls: list[str] = []
        self.picks_node_python = name == "aws"  # as the real targets declare

    def preflight(self, ctx: Any) -> list[Check]:
        self.calls.append("preflight")
        self.region = ctx.options.region
        return [Check("quota", True, "fine")]

    def start(self, ctx: Any) -> None:
        self.calls.append("start")

    def stop(self, ctx: Any) -> None:
        self.calls.append("stop")

    def leftovers(self, ctx: Any) -> list[str]:
        self.calls.append("leftovers")
        return sorted(self.cloud.values())


class FakeStage:
    def __init__(self, number: int, name: str, target: FakeTarget, fail: str | None) -> None:
        self.number, self.name, self.target, self.fail = number, name, target, fail

    def apply(self, ctx: Any) -> dict[str, Any]:
        self.target.calls.append(f"apply {self.number}")
        if self.fail == "error":
            raise RaylabError(f"stage {self.number} cannot run here", "use the local target")
        if self.fail == "crash":
            raise RuntimeError("unexpected")
        if self.fail == "interrupt":
            raise KeyboardInterrupt
        self.target.cloud[self.name] = f"{self.name} resource"
        return {}

    def verify(self, ctx: Any) -> list[Check]:
        ok = self.fail != "check"
        return [Check("thing holds", ok, "ok" if ok else "it does not", None if ok else "look")]

    def destroy(self, ctx: Any) -> None:
        self.target.calls.append(f"destroy {self.number}")
        self.target.cloud.pop(self.name, None)


def _install(monkeypatch: pytest.MonkeyPatch, target_name: str, fail_at: int, how: str,
             stuck: bool = False) -> FakeTarget:
    import raylab.stages
    import raylab.stages.runner
    import raylab.stages.teardown
    import raylab.targets

    target = FakeTarget(target_name, {})
    fakes = {s.name: FakeStage(s.number, s.name, target, how if s.number == fail_at else None)
             for s in STAGES if s.number}
    if stuck:  # one resource teardown cannot remove
        fakes["network"].destroy = lambda ctx: target.calls.append("destroy 1")  # type: ignore[method-assign]
    real_load = raylab.stages.load

    def load(info: Any) -> Any:
        return fakes[info.name] if info.number else real_load(info)

    for mod in (raylab.stages, raylab.stages.runner, raylab.stages.teardown):
        monkeypatch.setattr(mod, "load", load)
    monkeypatch.setattr(raylab.targets, "get_target", lambda name: target)
    return target


def _lab(tmp_path: Path, target: str, keep: bool = False) -> None:
    cmd_lab.lab(target=target, lab="t1", scenario="autoscale", keep=keep, region=None, yes=True,
                json_mode=True, quiet=True, workdir=tmp_path / ".raylab")


@pytest.mark.parametrize("target_name", ["local", "aws"])
@pytest.mark.parametrize(
    ("fail_at", "how", "line", "code"),
    [
        (3, "check", "stage 3 cluster: check 'thing holds' failed: it does not", 1),
        (6, "error", "stage 6 spot failed: stage 6 cannot run here", 1),  # SpotStage on aws, today
        (7, "crash", "stage 7 data failed: RuntimeError: unexpected", 1),
        (4, "interrupt", "stage 4 stress failed: interrupted", 130),
    ],
)
def test_a_failed_stage_still_ends_in_teardown_and_the_leftover_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target_name: str, fail_at: int, how: str, line: str, code: int,
) -> None:
    target = _install(monkeypatch, target_name, fail_at, how)
    with pytest.raises(RaylabError) as exc:
        _lab(tmp_path, target_name)
    err = exc.value
    assert err.message == line and err.exit_code == code
    assert err.hint.endswith("torn down: nothing of the lab is left")
    ran = [c for c in target.calls if c.startswith("apply")]
    assert ran == [f"apply {n}" for n in range(1, fail_at + 1)]  # stopped at the failed stage
    # teardown undid every stage 7 -> 1, stopped the target, then listed what is left
    after = target.calls[target.calls.index(f"apply {fail_at}") + 1:]
    assert after == [f"destroy {n}" for n in range(7, 0, -1)] + ["stop", "leftovers"]
    assert target.cloud == {}
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] is False
    assert out["failed_stage"] == next(f"{s.number} {s.name}" for s in STAGES if s.number == fail_at)
    assert out["teardown"] == {"ran": True, "errors": [], "leftovers": []}


def test_what_teardown_could_not_remove_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _install(monkeypatch, "aws", 3, "check", stuck=True)
    with pytest.raises(RaylabError) as exc:
        _lab(tmp_path, "aws")
    assert exc.value.exit_code == 1
    assert exc.value.hint == "torn down, but 1 resource(s) are left: re-run `raylab down`"
    assert target.calls[-1] == "leftovers" and target.cloud == {"network": "network resource"}


def test_keep_leaves_the_lab_up_and_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _install(monkeypatch, "local", 3, "check")
    with pytest.raises(RaylabError) as exc:
        _lab(tmp_path, "local", keep=True)
    assert exc.value.exit_code == 1 and "stage 3 cluster" in exc.value.message
    assert not [c for c in target.calls if c.startswith("destroy")] and "leftovers" not in target.calls
    assert set(target.cloud) == {"network", "identity", "cluster"}


def test_a_lab_that_passes_tears_down_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _install(monkeypatch, "local", 99, "check")
    _lab(tmp_path, "local")
    assert [c for c in target.calls if c.startswith("destroy")] == [f"destroy {n}" for n in range(7, 0, -1)]
    assert target.cloud == {}


def test_up_takes_region_as_preflight_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _install(monkeypatch, "aws", 99, "check")
    cmd_lab.up(target="aws", lab="t1", scenario="autoscale", region="eu-west-1", yes=True, json_mode=True,
               quiet=True, workdir=tmp_path / ".raylab")
    assert target.region == "eu-west-1"
    assert [c for c in target.calls if c.startswith("apply")] == ["apply 1", "apply 2", "apply 3"]
    _install(monkeypatch, "local", 99, "check")  # the local target declares its region fixed
    with pytest.raises(RaylabError, match="--region applies to --target aws only"):
        cmd_lab.up(target="local", lab="t1", scenario="autoscale", region="eu-west-1", yes=True,
                   json_mode=True, quiet=True, workdir=tmp_path / ".raylab")


def test_up_help_lists_region() -> None:
    from typer.testing import CliRunner

    from raylab.cli.main import app

    r = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--region" in r.output


def test_allow_ssh_from_is_a_real_option_checked_before_anything(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A classroom behind one NAT gives the NAT's address; a bad CIDR is refused before stage 1."""
    target = _install(monkeypatch, "aws", 99, "check")
    seen: dict[str, Any] = {}
    real_preflight = target.__class__.preflight

    def preflight(self: Any, ctx: Any) -> Any:
        seen["cidr"] = ctx.options.allow_ssh_from
        return real_preflight(self, ctx)

    monkeypatch.setattr(target.__class__, "preflight", preflight)
    cmd_lab.up(target="aws", lab="t1", scenario="autoscale", allow_ssh_from="198.51.100.7", yes=True,
               json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert seen["cidr"] == "198.51.100.7/32"
    target.calls.clear()
    with pytest.raises(RaylabError, match="--allow-ssh-from 'lab-nat' is not a CIDR"):
        cmd_lab.up(target="aws", lab="t1", scenario="autoscale", allow_ssh_from="lab-nat", yes=True,
                   json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert target.calls == []  # nothing applied
    _install(monkeypatch, "local", 99, "check")  # the local target declares its operator CIDR fixed
    with pytest.raises(RaylabError, match="--allow-ssh-from applies to --target aws only"):
        cmd_lab.lab(target="local", lab="t1", scenario="autoscale", allow_ssh_from="198.51.100.7/32",
                    yes=True, json_mode=True, quiet=True, workdir=tmp_path / ".raylab")


def test_node_python_is_checked_before_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--node-python picks the nodes' Python on AWS; a minor Ray 2.60 has no wheel for, or a local
    target whose nodes run raylab's own Python, is refused before stage 1."""
    from raylab.cluster.bootstrap import operator_python

    target = _install(monkeypatch, "aws", 99, "check")
    seen: dict[str, Any] = {}
    real_preflight = target.__class__.preflight

    def preflight(self: Any, ctx: Any) -> Any:
        seen["py"] = ctx.options.node_python
        return real_preflight(self, ctx)

    monkeypatch.setattr(target.__class__, "preflight", preflight)
    cmd_lab.up(target="aws", lab="t1", scenario="autoscale", node_python="3.10", yes=True,
               json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert seen["py"] == "3.10"
    target.calls.clear()
    with pytest.raises(RaylabError, match=r"Ray 2.60.0 has no wheel for Python '3.9' on the nodes"):
        cmd_lab.lab(target="aws", lab="t1", scenario="autoscale", node_python="3.9", yes=True,
                    json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert target.calls == []  # nothing applied
    other = "3.10" if operator_python() != "3.10" else "3.11"
    target = _install(monkeypatch, "local", 99, "check")
    own = f"--node-python {other}: the local target's nodes run raylab's own"
    with pytest.raises(RaylabError, match=own):
        cmd_lab.lab(target="local", lab="t1", scenario="autoscale", node_python=other, yes=True,
                    json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert target.calls == []
