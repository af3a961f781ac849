"""What the lab does by target and by option (each found by the AWS rehearsal): stage 4's workload and
scale (stage 3 used to record scale 4 for every target, so an AWS lab ran 120 x 30 s), stage 3's
teardown and its wait for min_workers, and the stages `lab --through/--skip` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylab.cli.options import make_context
from raylab.options import LabOptions
from raylab.stages.stage3_cluster import lab_scale
from raylab.stages.stage4_stress import workload


@pytest.mark.parametrize(("target", "want"), [("aws", (480, 300.0, 1)), ("local", (60, 30.0, 8))])
def test_default_workload_is_the_targets(tmp_path: Path, target: str, want: tuple[int, float, int]) -> None:
    ctx = make_context(target, "t", workdir=tmp_path / ".raylab", quiet=True)
    assert workload(ctx) == want


def test_a_given_scale_wins_on_aws(tmp_path: Path) -> None:
    ctx = make_context("aws", "t", workdir=tmp_path / ".raylab", quiet=True)
    ctx.options = LabOptions(scale=8)
    assert workload(ctx) == (60, 30.0, 8)


@pytest.mark.parametrize(("target", "want"), [("aws", 1), ("local", 8)])
def test_stage_3_records_the_targets_scale_for_stage_4(tmp_path: Path, target: str, want: int) -> None:
    ctx = make_context(target, "t", workdir=tmp_path / ".raylab", quiet=True)
    assert lab_scale(ctx) == want
    ctx.state.update("cluster", scale=lab_scale(ctx))  # as stage 3 records it
    assert workload(ctx)[2] == want


def test_a_scaled_aws_lab_keeps_its_16_cpu_workers() -> None:
    """The AWS YAML sets no CPU (Ray's AWS provider fills it from the instance type): at --scale 8
    the stress stage must plan with 16-CPU c7i.4xlarge workers, not 16/8."""
    from raylab.observe.run import limits_from_config

    cfg = {"max_workers": 30, "head_node_type": "head", "available_node_types": {
        "head": {"node_config": {"InstanceType": "c7i.4xlarge"}, "min_workers": 0, "max_workers": 0},
        "w": {"node_config": {"InstanceType": "c7i.4xlarge"}, "min_workers": 0, "max_workers": 30}}}
    lim = limits_from_config(cfg, 8)
    assert (lim.worker_vcpus, lim.cpus_per_worker) == (16, 16)


def test_stage_3_teardown_sweeps_even_when_no_cluster_was_recorded(tmp_path: Path) -> None:
    """`ray up` can fail after launching the head (setup failed): no cluster is recorded, and the
    head must still be terminated by the teardown."""
    from raylab.stages.stage3_cluster import STAGE

    downs: list[str] = []

    class Target:
        name, faults, default_scale = "aws", "fis", 1

        def cluster_down(self, ctx: object) -> None:
            downs.append("down")

    ctx = make_context("aws", "t", workdir=tmp_path / ".raylab", quiet=True)
    ctx._target = Target()  # type: ignore[assignment]  # a recording target
    assert not ctx.state.get("cluster")
    STAGE.destroy(ctx)
    assert downs == ["down"]


@pytest.mark.parametrize(("agreement", "expected", "head", "ok"), [
    ({"ok": True, "running": ["h"]}, 2, "h", False),  # they agree before any worker is launched
    ({"ok": True, "running": ["h", "w1"]}, 2, "h", False),
    ({"ok": True, "running": ["h", "w1", "w2"]}, 2, "h", True),
    ({"ok": False, "running": ["h", "w1", "w2"]}, 2, "h", False),
    ({"ok": True, "running": ["w1", "w2"]}, 2, None, True),  # a head that is no EC2 instance
    ({"ok": True, "running": ["h"]}, 0, "h", True),
])
def test_stage_3_waits_for_min_workers_not_only_agreement(agreement: dict, expected: int, head: str | None,
                                                          ok: bool) -> None:
    from raylab.stages.stage3_cluster import settled

    assert settled(agreement, expected, head) is ok


@pytest.mark.parametrize(("through", "skip", "want"), [
    (None, None, [1, 2, 3, 4, 5, 6, 7]),
    (3, None, [1, 2, 3]),
    (None, [4, 5, 6], [1, 2, 3, 7]),
    (5, [4], [1, 2, 3, 5]),
])
def test_lab_runs_the_stages_asked_for(through: int | None, skip: list[int] | None, want: list[int]) -> None:
    from raylab.cli.cmd_lab import lab_stages

    assert [i.number for i in lab_stages(through, skip)] == want


@pytest.mark.parametrize(("scale", "fis"), [([], "1"), (["--scale", "8"], "0.25")])
def test_the_rehearsal_world_gets_the_labs_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                scale: list[str], fis: str) -> None:
    """`lab --rehearsal --scale 8` starts a world whose FIS runs on the lab's clock (the scale must be
    known before the world is entered: it once was set after, and the drills ran on AWS's time)."""
    from typer.testing import CliRunner

    from raylab.cli.main import app
    from raylab.rehearsal import enter, internet

    seen: list[list[str]] = []
    monkeypatch.setattr(enter, "check_can_enter", lambda: None)
    monkeypatch.setattr(enter, "run_world", lambda cmd: seen.append(cmd) or 0)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "ray-2.60.0-cp311-none-any.whl").touch()
    monkeypatch.setattr(internet, "WHEELHOUSE", tmp_path / "wheels")
    r = CliRunner().invoke(app, ["lab", "--target", "aws", "--rehearsal", *scale, "--yes",
                                 "--workdir", str(tmp_path / ".raylab")])
    assert r.exit_code == 0, r.output
    assert seen[0][seen[0].index("--fis-time") + 1] == fis
