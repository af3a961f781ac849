"""`raylab plan` as a user runs it: the JSON contract, --compare, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, json_out, run_cli

CONFIG = """
cluster_name: plan-test
max_workers: 30
upscaling_speed: 1.0
idle_timeout_minutes: 1
provider: {type: aws, region: us-west-2}
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {InstanceType: c7i.4xlarge}
  ray.worker.ondemand:
    min_workers: 0
    max_workers: 30
    resources: {}
    node_config: {InstanceType: c7i.4xlarge}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(CONFIG)
    return p


def test_plan_numbers_hit_the_quota_wall_and_say_what_to_request(cfg: Path) -> None:
    # the numbers: quota 160 with the head included and nothing else running
    r = run_cli("plan", "--config", str(cfg), "--json", "--trainees", "20", "--other-vcpus", "0")
    assert r.returncode == 0, r.stderr
    f = json_out(r)
    assert f["peak_workers"] == 9
    q = f["quota"]
    assert q["limited"] is True and q["market"] == "ondemand"
    assert (q["quota_vcpus"], q["needed_vcpus"], q["capped_workers"]) == (160, 496, 21)
    assert q["request"] == "request an increase to 496 vCPUs"
    assert f["makespan_s"] == pytest.approx(1330, rel=0.05)
    rnd = f["rounds"][0]
    assert set(rnd) >= {"t_s", "requested", "failed_by_quota"}
    assert any(sum(x["failed_by_quota"].values()) for x in f["rounds"])
    c = f["cost"]
    assert c["trainees"] == 20 and c["total"] == pytest.approx(c["per_trainee"] * 20, abs=0.01)
    assert 0 < c["spot_usd"] < c["ondemand_usd"]
    assert c["price_source"] == "offline" and c["price_date"]


def test_human_output_names_the_wall_and_counts_the_bastion_by_default(cfg: Path) -> None:
    r = run_cli("plan", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    # the lab's t3.micro bastion takes 2 of the 160 vCPUs: 142 // 16 = 8 workers
    assert "quota WALL" in r.stderr and "at 8 of 30 workers (22 short)" in r.stderr
    assert "request an increase to 498 vCPUs" in r.stderr and "bastion" in r.stderr


def test_compare_speed_with_enough_quota(cfg: Path) -> None:
    r = run_cli("plan", "--config", str(cfg), "--quota-ondemand", "512", "--compare", "upscaling_speed=1,10",
                "--json")
    assert r.returncode == 0, r.stderr
    comp = json_out(r)["compare"]
    assert comp["param"] == "upscaling_speed"
    slow, fast = comp["results"]
    assert slow["peak_workers"] == fast["peak_workers"] == 30
    assert fast["round_count"] < slow["round_count"]
    assert slow["quota"]["limited"] is False
    assert fast["setting"] == {"upscaling_speed": 10.0}


def test_compare_quota_and_png(cfg: Path, tmp_path: Path) -> None:
    png = tmp_path / "plan.png"
    r = run_cli("plan", "--config", str(cfg), "--tasks", "96", "--duration", "60", "--boot-seconds", "30",
                "--other-vcpus", "0", "--compare", "quota=48,512", "--png", str(png), "--json")
    assert r.returncode == 0, r.stderr
    walled, free = json_out(r)["compare"]["results"]
    assert walled["peak_workers"] == 2 and walled["quota"]["limited"] is True
    assert free["peak_workers"] == 6 and free["quota"]["limited"] is False
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_repo_config_default_scenario_runs() -> None:
    # the lab's own configs/ray-cluster.yaml + scenarios/autoscale.yaml
    r = run_cli("plan", "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    f = json_out(r)
    assert f["quota"]["limited"] is True
    assert f["peak_workers"] == 8  # 160 - 16 (head) - 2 (bastion) = 142 vCPUs = 8 workers


def test_the_local_forecast_launches_nothing_after_the_job() -> None:
    """The local target's forecast keeps the local head's REQUESTED timeout (15 s), as its lab runs:
    the job at the wall ends at about 2:26 and no launch follows (with Ray's 600 s, three workers
    launched at 10:30 with nothing queued)."""
    r = run_cli("plan", "--tasks", "120", "--duration", "30", "--scale", "4", "--boot-seconds", "4",
                "--max-concurrent-boots", "1", "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    f = json_out(r)
    assert f["peak_workers"] == 8 and f["quota"]["limited"] is True
    late = [x for x in f["rounds"] if x["t_s"] > f["makespan_s"] and sum(x["launched"].values())]
    assert late == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--compare", "speed=1,2"], "cannot compare"),
    (["--compare", "upscaling_speed=1,x"], "not a number"),
    (["--tasks", "-5"], "must be > 0"),
    (["--quota-ondemand", "lots"], "not a number"),
    (["--boot-seconds", "-1"], "must be >= 0"),
    (["--tasks", "inf"], "must be a finite number"),  # was a traceback (int(inf))
    (["--tick-seconds", "0"], "must be > 0"),
    (["--tick-seconds", "0.5"], "must be a whole number"),  # Ray reads it as whole seconds
    (["--config", "/nonexistent/cluster.yaml"], "not found"),
    (["--scenario", "huge"], "unknown scenario"),
])
def test_bad_input_is_one_line_exit_2(cfg: Path, args: list[str], needle: str) -> None:
    full = args if "--config" in args else ["--config", str(cfg), *args]
    r = run_cli("plan", *full)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_instance_type_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "typo.yaml"
    p.write_text(CONFIG.replace("c7i.4xlarge}\n  ray.worker", "c7i.4xlarg}\n  ray.worker"))
    r = run_cli("plan", "--config", str(p))
    assert r.returncode == 2
    assert "unknown instance type 'c7i.4xlarg'" in r.stderr and "c7i.4xlarge" in r.stderr


def test_a_config_ray_rejects_is_a_one_line_error(tmp_path: Path) -> None:
    p = tmp_path / "floor.yaml"
    p.write_text(CONFIG.replace("max_workers: 30\nupscaling", "max_workers: 2\nupscaling")
                 .replace("min_workers: 0", "min_workers: 3"))
    r = run_cli("plan", "--config", str(p))
    assert r.returncode == 2
    assert "Ray rejects this cluster setting" in r.stderr and "Traceback" not in r.stderr
