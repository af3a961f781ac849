"""Each stage's JSON, pinned: the top-level keys of what every stage returns (its ``applied`` in
`raylab lab/up/stage --json`), built by the same pure functions and record types the stages use.
A change to these keys is a change to raylab's JSON output: update the sets here on purpose, and
docs/runbook.md ("Stage 4's JSON record") for stage 4.

Stage 4's record is also checked end to end through the real commands (a faked stress run and
target): `raylab stress --json` prints exactly the record `raylab stage 4 --json` reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raylab.checks import Check
from raylab.observe import timeline as tl
from raylab.spot.fis_record import new_record
from raylab.spot.metrics import spot_metrics
from raylab.stages import (
    stage1_network,
    stage2_identity,
    stage3_cluster,
    stage5_scaling,
    stage7_data,
    teardown,
)
from raylab.stages.base import StageResult
from raylab.stages.results import StressRecord
from raylab.stages.stage6_spot import _brief

ENVELOPE = {"number", "name", "ok", "seconds", "applied", "checks"}  # one entry of `stages`

STAGE_KEYS: dict[str, set[str]] = {
    "1 network": {"action", "stack", "operator_cidr", "vpc_id", "availability_zones"},
    "2 identity": {"action", "head_instance_profile", "worker_instance_profile"},
    "3 cluster": {"cluster_name", "gcs_address", "dashboard_url", "head_instance_id", "config_path",
                  "head_ready_s"},
    "4 stress": {
        "tasks_total", "tasks_completed", "tasks_failed", "task_duration_s", "makespan_s", "ideal_makespan_s",
        "makespan_ratio", "nodes_used", "job_id", "job_status", "job_summary",
        "peak_workers", "peak_instances_running", "quota_cap_workers", "quota_cap_by_market",
        "quotas_by_market", "quota_vcpus", "reserved_vcpus", "demand_exceeds_quota", "quota_errors",
        "capacity_errors", "launch_failures", "launches", "terminations",
        "min_workers", "max_workers", "upscaling_speed", "idle_timeout_minutes", "scale", "scale_mapping",
        "target",
        "tasks_retried", "nodes_reclaimed", "nodes_replaced", "capacity_events", "guard_actions",
        "timeline", "chart", "readiness", "forecast",
    },
    "5 scaling": {"changes", "rendered", "quota_set", "idle_removal", "peak_workers", "makespan_s", "chart"},
    "6 spot (local drills)": {"drills", "tasks_retried", "nodes_reclaimed", "nodes_replaced",
                              "capacity_events", "guard_actions"},
    "6 spot (fis)": {"method", "endpoint", "fis_acts", "head_id", "fis_role", "drills", "claims", "job"},
    "7 data": {"where", "job_id", "clips", "kept", "out"},
    "7 data (noop re-run)": {"where", "clips", "kept", "out"},
    "teardown": {"errors"},
}

# run_stress's own fields beside the timeline summary and the spot metrics; stage 4 adds the last three
RUN_STRESS_FIELDS = {"timeline", "chart", "job_id", "job_status", "target", "job_summary"}
STAGE4_FIELDS = {"scale_mapping", "readiness", "forecast"}

META = {"tasks": 8, "duration_s": 6.0, "cpus_per_worker": 4, "worker_vcpus": 16, "head_vcpus": 16,
        "quota_vcpus": 64, "reserved_vcpus": 18, "min_workers": 0, "max_workers": 4, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.5, "scale": 4, "target": "local",
        "markets": {"on-demand": {"max_workers": 4, "worker_vcpus": 16, "quota_vcpus": 64,
                                  "reserved_vcpus": 18}}}
SAMPLES = [{"t": 2.0, "workers": 2, "tasks": {"pending": 0, "running": 8, "finished": 0, "failed": 0},
            "instances": {"running": {"on-demand": 2}},
            "events": [{"ts": 1.0, "kind": "launch", "detail": "2"},
                       {"ts": 1.5, "kind": "quota_error", "detail": "VcpuLimitExceeded"}]}]
JOB = {"tasks_total": 8, "tasks_completed": 8, "tasks_failed": 0, "makespan_s": 7.5, "nodes_used": 2}


def stress_summary(out: Path) -> dict[str, Any]:
    """What run_stress returns, made from its pure parts (the timeline summary, the spot metrics)."""
    return {**tl.summarize(META, SAMPLES, JOB), **spot_metrics(tl.events(SAMPLES), []),
            "timeline": str(out / "timeline.jsonl"), "chart": str(out / "chart.png"), "job_id": "raysubmit_1",
            "job_status": "SUCCEEDED", "target": "local", "job_summary": str(out / "job-summary.json")}


def built() -> dict[str, dict[str, Any]]:
    """Each stage's JSON, built as the stage builds it (placeholder inputs)."""
    return {
        "1 network": stage1_network.applied_json("created", "raylab-t1-network", "203.0.113.7/32", {}),
        "2 identity": stage2_identity.applied_json(True, {}),
        "3 cluster": stage3_cluster.applied_json({"cluster_name": "raylab-t1", "extra": 1}),
        "4 stress": StressRecord.from_run(stress_summary(Path("/x")), scale_mapping="m",
                                          readiness={}).as_json(),
        "5 scaling": stage5_scaling.applied_json(
            {"changes": [], "rendered": "/x.yaml", "quota_set": None, "settings": {}},
            {"idle_removal_line": "gone", "peak_workers": 3, "makespan_s": 10.0, "chart": "/c.png"}),
        "6 spot (local drills)": _brief({"drills": {"capacity": {"executions_detail": []}},
                                         **spot_metrics([], [])}),
        "6 spot (fis)": new_record("AWS us-west-2", True),
        "7 data": stage7_data.applied_json("here", None, {"clips": 3, "kept": 2}, "/out"),
        "7 data (noop re-run)": {k: None for k in stage7_data.NOOP_KEYS},
        "teardown": teardown.applied_json([]),
    }


@pytest.mark.parametrize("stage", sorted(STAGE_KEYS))
def test_each_stage_json_keys_are_pinned(stage: str) -> None:
    assert set(built()[stage]) == STAGE_KEYS[stage]


def test_every_stage_is_pinned() -> None:
    from raylab.stages import STAGES

    pinned = {k.split(" ")[0] for k in STAGE_KEYS}
    assert pinned == {str(s.number) if s.number else s.name for s in STAGES}


def test_the_stage_envelope_is_pinned() -> None:
    r = StageResult(4, "stress", {"a": 1}, (Check("c", True, "fine"),), 1.234)
    assert set(r.as_dict()) == ENVELOPE
    assert set(r.as_dict()["checks"][0]) == {"name", "ok", "detail", "hint"}


def test_stress_record_holds_everything_run_stress_reports() -> None:
    """No summary number is dropped on the way into the record, and the record has nothing else."""
    parts = set(tl.summarize(META, SAMPLES, JOB)) | set(spot_metrics([], [])) | RUN_STRESS_FIELDS
    assert parts | STAGE4_FIELDS == set(StressRecord.keys())


def test_stress_record_round_trips_through_json() -> None:
    rec = StressRecord.from_run(stress_summary(Path("/x")), scale_mapping="m", readiness={"nodes": []})
    back = StressRecord.from_json(json.loads(json.dumps(rec.as_json())))
    assert back == rec
    assert (rec.tasks_completed, rec.peak_workers, rec.quota_errors, rec.launches) == (8, 2, 1, 1)
    # an older or partial record reads back with defaults; unknown keys (stage 5's) are ignored
    old = StressRecord.from_json({"tasks_total": 4, "idle_removal": {"delay_s": 3}})
    assert old.tasks_total == 4 and old.job_summary is None and set(old.as_json()) == STAGE_KEYS["4 stress"]


# --- the two commands agree ------------------------------------------------------------------------
class _Target:
    """What stage 4 and the commands ask of a target; the stress run itself is faked."""

    name = "local"
    spends_money = False
    preflight_shown = False
    default_scale = 4

    def preflight(self, ctx: Any) -> list[Check]:
        return []

    def start(self, ctx: Any) -> None:
        return None

    def readiness(self, ctx: Any) -> dict[str, Any]:
        return {"nodes": [], "summary": {}}


def test_stress_json_prints_the_record_stage_4_json_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import raylab.observe.run
    import raylab.targets
    from raylab.cli import cmd_lab, cmd_stress

    monkeypatch.setattr(raylab.targets, "get_target", lambda name: _Target())
    monkeypatch.setattr(raylab.observe.run, "run_stress", lambda ctx, **kw: stress_summary(Path("/runs/1")))
    wd = tmp_path / ".raylab"
    cmd_stress.stress(tasks=None, duration=None, scale=None, target="local", lab="t1", json_mode=True,
                      quiet=True, workdir=wd)
    stress = json.loads(capsys.readouterr().out)
    cmd_lab.stage(number="4", verify_only=False, target="local", lab="t1", scenario="autoscale", yes=True,
                  json_mode=True, quiet=True, workdir=wd)
    stage = json.loads(capsys.readouterr().out)
    (entry,) = stage["stages"]
    assert set(entry) == ENVELOPE and entry["ok"] and stress["ok"]
    record = {k: v for k, v in stress.items() if k not in ("ok", "checks")}
    assert set(record) == STAGE_KEYS["4 stress"]
    assert entry["applied"] == record
    assert [c["name"] for c in stress["checks"]] == [c["name"] for c in entry["checks"]]
    assert StressRecord.from_json(json.loads((wd / "state.json").read_text())["stress"]).as_json() == \
        entry["applied"]


def test_the_runbook_documents_every_key_of_stage_4s_record() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "runbook.md").read_text()
    section = text.split("## Stage 4's JSON record", 1)[1].split("\n## ", 1)[0]
    documented = {k for k in STAGE_KEYS["4 stress"] if f"`{k}`" in section.split("| keys |", 1)[1]}
    assert documented == STAGE_KEYS["4 stress"]
