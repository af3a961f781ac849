"""Stage 5's decisions: input checks, where each edit goes, the comparison, the removal checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.stages.results import StressRecord
from raylab.stages.stage5_scaling import (
    Scaling,
    check_scaling,
    compare,
    compare_lines,
    edit_plan,
    effective_min_max,
    head_kept_check,
    removal_checks,
)
from tests.conftest import ROOT, run_cli


@pytest.mark.parametrize(
    ("s", "quota_settable", "message"),
    [
        (Scaling(upscaling_speed=-1), True, "--upscaling-speed must be a number >= 0, got -1"),
        (Scaling(upscaling_speed=float("nan")), True, "--upscaling-speed must be a number >= 0"),
        (Scaling(idle_timeout_minutes=-0.5), True, "--idle-timeout must be minutes >= 0, got -0.5"),
        (Scaling(min_workers=-1), True, "--min-workers must be >= 0, got -1"),
        (Scaling(max_workers=-2), True, "--max-workers must be >= 0, got -2"),
        (Scaling(min_workers=5, max_workers=2), True, "--min-workers 5 is above --max-workers 2"),
        (Scaling(quota=224), False, "--quota works only on the local target"),
        (Scaling(quota=0), True, "--quota must be a positive number of vCPUs, got 0"),
        (Scaling(), True, "nothing to change"),
    ],
)
def test_check_scaling_refuses(s: Scaling, quota_settable: bool, message: str) -> None:
    with pytest.raises(RaylabError) as e:
        check_scaling(s, quota_settable)
    assert message in e.value.message and e.value.exit_code == 2


def test_check_scaling_accepts_fractions_and_zero() -> None:
    check_scaling(Scaling(upscaling_speed=0, idle_timeout_minutes=0.25, min_workers=0, max_workers=0), False)
    check_scaling(Scaling(quota=224), True)


def test_effective_min_max_checks_against_the_current_config() -> None:
    assert effective_min_max(Scaling(min_workers=2), 0, 30) == (2, 30)
    with pytest.raises(RaylabError, match="min_workers 4 would be above max_workers 3"):
        effective_min_max(Scaling(min_workers=4), 0, 3)
    with pytest.raises(RaylabError, match="min_workers 2 would be above max_workers 1"):
        effective_min_max(Scaling(max_workers=1), 2, 30)


def test_edit_plan_sends_overlay_keys_to_the_overlay() -> None:
    overlay = {"max_workers": 30, "available_node_types": {"ray.worker.ondemand": {"max_workers": 30}}}
    plan = edit_plan(
        Scaling(upscaling_speed=2, idle_timeout_minutes=0.5, min_workers=1, max_workers=4),
        "ray.worker.ondemand",
        overlay,
    )
    assert plan == {
        "base": {"upscaling_speed": 2, "idle_timeout_minutes": 0.5},
        "overlay": {"max_workers": 4},
        "overlay_type": {"min_workers": 1, "max_workers": 4, "node_type": "ray.worker.ondemand"},
    }
    assert edit_plan(Scaling(min_workers=1), "w", {}) == {"base_type": {"min_workers": 1, "node_type": "w"}}


OUTPUTS = {
    "PrivateSubnetIds": "subnet-a,subnet-b",
    "AvailabilityZones": "us-west-2a,us-west-2b",
    "RaySecurityGroupId": "sg-1",
    "BastionPublicIp": "203.0.113.5",
    "head_instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/h",
    "worker_instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/w",
}


def test_edits_land_in_the_rendered_config_and_keep_comments(tmp_path: Path) -> None:
    """The working copy path end to end: set_scaling per the plan, then render as stage 3 does."""
    from raylab.cluster.config import load_yaml, render, scenario_path
    from raylab.cluster.edit import set_scaling

    base = tmp_path / "ray-cluster.yaml"
    shutil.copy2(ROOT / "configs" / "ray-cluster.yaml", base)
    shutil.copytree(ROOT / "configs" / "scenarios", tmp_path / "scenarios")
    ov = scenario_path("autoscale", base)
    s = Scaling(upscaling_speed=4.0, idle_timeout_minutes=0.25, min_workers=1, max_workers=6)
    for where, kw in edit_plan(s, "ray.worker.ondemand", load_yaml(ov)).items():
        set_scaling(ov if where.startswith("overlay") else base, **kw)
    cfg = render(target="aws", scenario="autoscale", lab="t1", outputs=OUTPUTS, base=base)
    w = cfg["available_node_types"]["ray.worker.ondemand"]
    assert (cfg["upscaling_speed"], cfg["idle_timeout_minutes"], cfg["max_workers"]) == (4.0, 0.25, 6)
    assert (w["min_workers"], w["max_workers"]) == (1, 6)
    assert "# How fast the autoscaler adds nodes" in base.read_text()
    assert (ROOT / "configs" / "ray-cluster.yaml").read_text() != base.read_text()


def test_compare_and_lines() -> None:
    c = compare(
        StressRecord(peak_workers=9, makespan_s=160.0, quota_errors=40, quota_vcpus=160),
        StressRecord(peak_workers=13, makespan_s=130.5, quota_errors=0, quota_vcpus=224),
    )
    assert c["peak_workers"] == {"before": 9, "after": 13, "change": 4}
    assert c["makespan_s"]["change"] == -29.5
    lines = compare_lines(c)
    assert lines[0].split() == ["peak", "workers", "9", "->", "13", "(+4)"]
    assert lines[1].split()[-1] == "(-29.5)"


@pytest.mark.parametrize(
    ("listed", "ok", "says"),
    [
        (["raysubmit_a", "raysubmit_b"], True, "still lists stage 4's job raysubmit_a"),
        (["raysubmit_b"], False, "was restarted by the re-apply"),  # `ray up` without --no-restart
        ([], False, "is gone from the GCS (0 jobs)"),
        (None, False, "did not answer"),
    ],
)
def test_head_kept_check(listed: list[str] | None, ok: bool, says: str) -> None:
    c = head_kept_check("raysubmit_a", listed)
    assert (c.ok, c.name) == (ok, "head kept running")
    assert says in c.detail


def test_removal_checks() -> None:
    ok = removal_checks({"idle_at": 40, "down_at": 58, "workers_when_idle": 3, "delay_s": 18.0}, 0.25, 0)
    assert [c.ok for c in ok] == [True, True] and "18 s after going idle" in ok[0].detail
    early = removal_checks({"idle_at": 40, "down_at": 42, "workers_when_idle": 3, "delay_s": 2.0}, 1.0, 0)
    assert [c.ok for c in early] == [True, False]
    # the AWS rehearsal: 44 s after the job's last task, 60 s timeout, 30 s tasks: a node whose own
    # last task ended up to 30 s before the job's was idle long enough
    uneven = {"idle_at": 92, "down_at": 136, "workers_when_idle": 4, "delay_s": 44.0}
    assert [c.ok for c in removal_checks(uneven, 1.0, 2, task_s=30.0)] == [True, True]
    assert [c.ok for c in removal_checks(uneven, 1.0, 2)] == [True, False]
    assert not removal_checks({**uneven, "delay_s": 10.0}, 1.0, 2, task_s=30.0)[1].ok
    stuck = removal_checks({"idle_at": 40, "down_at": None, "workers_when_idle": 3, "delay_s": None}, 0.25, 0)
    assert [c.ok for c in stuck] == [False]
    assert not removal_checks(None, 0.25, 0)[0].ok
    assert not removal_checks({"idle_at": 1, "down_at": 1, "workers_when_idle": 1, "delay_s": 0}, 0.25, 1)[
        0
    ].ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upscaling-speed", "-1"], "--upscaling-speed must be a number >= 0"),
        (["--min-workers", "3", "--max-workers", "1"], "--min-workers 3 is above --max-workers 1"),
        (["--quota", "224", "--target", "aws"], "--quota works only on the local target"),
        (["--idle-timeout", "-1"], "--idle-timeout must be minutes >= 0"),
        ([], "nothing to change"),
    ],
)
def test_scale_bad_input_exit_2_nothing_changed(tmp_path: Path, args: list[str], message: str) -> None:
    wd = tmp_path / ".raylab"
    before = (ROOT / "configs" / "ray-cluster.yaml").read_text()
    p = run_cli("scale", *args, "--workdir", str(wd), "--json")
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
    assert not wd.exists() and (ROOT / "configs" / "ray-cluster.yaml").read_text() == before


def test_scale_non_numeric_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("scale", "--max-workers", "lots", "--workdir", str(tmp_path / ".raylab"))
    assert (
        p.returncode == 2 and "Invalid value for '--max-workers'" in p.stderr and "Traceback" not in p.stderr
    )


def test_scale_without_a_cluster_says_what_to_run(tmp_path: Path) -> None:
    p = run_cli("scale", "--idle-timeout", "0.5", "--workdir", str(tmp_path / ".raylab"))
    assert p.returncode != 0 and "raylab up" in p.stderr and "Traceback" not in p.stderr
