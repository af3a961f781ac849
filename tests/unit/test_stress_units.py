"""Stage 4's decisions: the scale mapping, the job's output, the config limits, the checks, the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.observe.job import entrypoint, parse_job_output
from raylab.observe.run import default_workload, limits_from_config
from raylab.stages.results import StressRecord
from raylab.stages.stage4_stress import checks_for
from tests.conftest import ROOT, run_cli


def _stress_module():
    spec = importlib.util.spec_from_file_location("stress", ROOT / "workloads" / "stress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize(("scale", "expected"), [(1, (480, 300.0)), (4, (120, 30.0)), (8, (60, 30.0))])
def test_scale_mapping_is_the_same_in_the_script_and_raylab(scale: int, expected: tuple) -> None:
    assert _stress_module().scaled(None, None, scale) == expected
    assert default_workload(scale) == expected


def test_script_is_the_plans_script() -> None:
    text = (ROOT / "workloads" / "stress.py").read_text()
    assert "@ray.remote(num_cpus=1)" in text and "def heavy_task():" in text and "time.sleep(" in text
    assert "[heavy_task.remote() for _ in range(" in text
    assert 'address="auto"' not in text.split('"""', 2)[2]  # only mentioned as a warning in the doc


def test_parse_job_output_takes_last_progress_and_the_summary() -> None:
    log = "\n".join([
        "2026-11-25 INFO worker.py -- Connecting to existing Ray cluster",
        json.dumps({"raylab_progress": {"finished": 0, "total": 4}}),
        "{not json",
        json.dumps({"raylab_progress": {"finished": 3, "total": 4}}),
        json.dumps({"raylab_stress_summary": {"tasks_total": 4, "tasks_completed": 4}}),
    ])
    progress, summary = parse_job_output(log)
    assert progress == {"finished": 3, "total": 4} and summary == {"tasks_total": 4, "tasks_completed": 4}
    assert parse_job_output("") == (None, None)


def test_entrypoint() -> None:
    assert entrypoint(24, 8.0, 4) == "exec python stress.py --tasks 24 --duration 8 --scale 4"


CFG = {
    "max_workers": 30, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.5,
    "head_node_type": "ray.head.default",
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "c7i.4xlarge"}},
        "ray.worker.ondemand": {"min_workers": 1, "max_workers": 30, "resources": {"CPU": 4},
                                "node_config": {"InstanceType": "c7i.4xlarge"}},
        "ray.worker.spot": {"min_workers": 0, "max_workers": 0, "resources": {"CPU": 4},
                            "node_config": {"InstanceType": "c7i.4xlarge",
                                            "InstanceMarketOptions": {"MarketType": "spot"}}},
    },
}


def test_limits_from_config() -> None:
    lim = limits_from_config(CFG, scale=4)
    assert (lim.worker_type, lim.head_vcpus, lim.worker_vcpus, lim.cpus_per_worker) == \
        ("ray.worker.ondemand", 16, 16, 4)
    got = (lim.min_workers, lim.max_workers, lim.market, lim.idle_timeout_minutes)
    assert got == (1, 30, "on-demand", 0.5)


def test_limits_unknown_instance_type_uses_cpus_times_scale_and_refuses_without_head() -> None:
    cfg = json.loads(json.dumps(CFG))
    cfg["available_node_types"]["ray.worker.ondemand"]["node_config"]["InstanceType"] = "z9.huge"
    assert limits_from_config(cfg, scale=4).worker_vcpus == 16
    del cfg["available_node_types"]["ray.head.default"]
    with pytest.raises(RaylabError, match="no head node type"):
        limits_from_config(cfg, scale=4)


def _summary(**kw: object) -> StressRecord:
    s = {"tasks_total": 120, "tasks_completed": 120, "tasks_failed": 0, "quota_cap_workers": 9,
         "peak_workers": 9, "min_workers": 0, "quota_vcpus": 160, "max_workers": 30, "quota_errors": 12,
         "demand_exceeds_quota": True}
    s.update(kw)
    return StressRecord.from_json(s)


@pytest.mark.parametrize(("kw", "failed"), [
    ({}, []),
    ({"tasks_completed": 119, "tasks_failed": 1}, ["all tasks completed"]),
    ({"peak_workers": 0}, ["the autoscaler added workers"]),
    ({"peak_workers": 10}, ["peak workers within the quota"]),
    ({"quota_errors": 0}, ["quota error recorded"]),
    ({"quota_errors": 0, "demand_exceeds_quota": False}, []),
])
def test_stage4_checks(kw: dict, failed: list[str]) -> None:
    assert [c.name for c in checks_for(_summary(**kw)) if not c.ok] == failed


@pytest.mark.parametrize(("args", "message"), [
    (["--tasks", "0"], "--tasks must be at least 1, got 0"),
    (["--tasks", "-5"], "--tasks must be at least 1, got -5"),
    (["--duration", "0"], "--duration must be > 0 seconds"),
    (["--scale", "0"], "--scale must be at least 1"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path: Path, args: list[str],
                                                          message: str) -> None:
    wd = tmp_path / ".raylab"
    p = run_cli("stress", *args, "--workdir", str(wd), "--json")
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == "" and not wd.exists()


def test_non_numeric_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("stress", "--tasks", "many", "--workdir", str(tmp_path / ".raylab"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Invalid value for '--tasks'" in p.stderr


def test_no_cluster_says_what_to_run(tmp_path: Path) -> None:
    p = run_cli("stress", "--workdir", str(tmp_path / ".raylab"), "--json")
    assert p.returncode != 0 and "raylab up" in p.stderr and "Traceback" not in p.stderr


def test_aws_quota_check_accepts_failed_launches_without_a_code() -> None:
    s = _summary(quota_errors=0, launch_failures=7, target="aws")
    c = next(c for c in checks_for(s) if c.name == "quota error recorded")
    assert c.ok and "monitor.log" in c.detail
    s = _summary(quota_errors=0, launch_failures=7, target="local")
    assert not next(c for c in checks_for(s) if c.name == "quota error recorded").ok
