"""Spot on the local target, for real: reclaims with and without notice, and a capacity window with
and without the guard (a twin, a Ray head with autoscaler v2, local nodes per EC2 instance).

One cluster (scenario mixed) serves the module: `raylab up`, `raylab stage 6`, then the same capacity
window with the guard stopped, then `raylab down`. Sizes are small (2 cores shared with others).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration
LAB = "spotit"
SMALL = {"tasks": 10, "duration": 15.0, "spot_workers": 3, "notice": 6.0, "capacity_window": 30.0,
         "cooldown": 15.0, "probe": 10.0, "spot_wait": 120.0, "timeout": 240.0}


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest):
    # a short, stable path (not pytest's rotating basetemp): its logs stay readable after a failure
    base = Path(tempfile.mkdtemp(prefix="rl-spotit-", dir="/tmp"))
    work = base / ".raylab"
    env = {"RAYLAB_WORKDIR": str(work), "RAYLAB_SPOT_DRILL": json.dumps(SMALL)}
    up = run_cli("up", "--lab", LAB, "--scenario", "mixed", "--yes", "--json", env=env, timeout=420)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield work, env
    finally:
        down = run_cli("down", "--lab", LAB, "--yes", "--json", env=env, timeout=420)
        assert down.returncode == 0, down.stderr[-3000:]
        assert json.loads(down.stdout)["leftovers"] == []
    if request.session.testsfailed == 0:  # kept (with every log) when a test failed
        shutil.rmtree(base, ignore_errors=True)


def test_stage6_reclaims_and_guard(cluster):
    work, env = cluster
    p = run_cli("stage", "6", "--lab", LAB, "--scenario", "mixed", "--yes", "--json", env=env, timeout=900)
    assert p.stdout, f"no result; logs under {work}: {p.stderr[-4000:]}"
    out = json.loads(p.stdout)
    checks = {c["name"]: c for s in out.get("stages", []) for c in s["checks"]}
    assert p.returncode == 0, (out, p.stderr[-3000:])
    assert all(c["ok"] for c in checks.values()), checks
    d = json.loads((work / "spot" / "stage6.json").read_text())["drills"]
    # (1) reclaim without notice: every task completes, some re-ran, replacements launched
    nn = d["reclaim_no_notice"]
    assert len(nn["reclaimed"]) == 1 and nn["spot_workers"] == 3  # a third of the spot workers at once
    assert nn["tasks_completed"] == nn["tasks_total"] and nn["tasks_retried"] >= 1 and nn["replacements"] >= 1
    assert nn["workers_max_after"] >= nn["workers_before"]
    # (2) with notice: drained by its watcher; no task started on it after the drain (from what the
    # tasks recorded about their node); terminated at the deadline
    wn = d["reclaim_notice"]
    iid = wn["reclaimed"][0]
    assert wn["drained"] and wn["started_after_drain"] == 0
    assert wn["terminated_after_s"] >= SMALL["notice"] - 1
    ran_there = [x for x in wn["executions_detail"] if x["instance_id"] == iid]
    assert ran_there, "the reclaimed node ran demo tasks (the drill picks a busy one)"
    # (3) capacity window with the guard: spot refused, guard capped, on-demand took the burst
    cap = d["capacity"]
    assert cap["capacity_errors"] >= 1 and cap["guard_caps"] >= 1 and cap["ondemand_launched_in_window"] >= 1
    assert cap["tasks_completed"] == cap["tasks_total"]
    assert "burst moved to on-demand" in cap["guard_message"]
    # ... and the same job without failures, from the same base, took at most 1/1.5 as long
    assert cap["baseline"]["tasks_completed"] == cap["baseline"]["tasks_total"] == cap["tasks_total"]
    assert cap["makespan_ratio"] <= 1.5, (cap["makespan_s"], cap["baseline"])
    # after the window, with spot restored, the same burst launched spot (on-demand stayed at its base)
    assert cap["after"]["spot_launched"] >= 1 and cap["after"]["ondemand_launched"] == 0, cap["after"]
    assert cap["after"]["tasks_completed"] == cap["after"]["tasks_total"]
    assert Path(cap["chart"]).exists()
    status = json.loads((work / "state.json").read_text())["spot"]
    assert status["nodes_reclaimed"] >= 2 and status["capacity_events"] >= 1
    # `raylab status` says what the guard did and why
    st = run_cli("status", "--lab", LAB, "--json", env=env)
    assert st.returncode == 0, st.stderr
    g = json.loads(st.stdout)["capacity_guard"]
    assert g["running"] is True and g["types"]["ray.worker.spot"]["status"] in ("ok", "probing")
    assert any("burst moved to on-demand" in e["message"] for e in g["recent"]) \
        or g["types"]["ray.worker.spot"]["failures"] >= 1, g


def test_capacity_without_guard_shows_rays_own_behaviour(cluster, monkeypatch):
    """The same window with the guard off: Ray keeps planning spot (capacity errors every tick) and
    on-demand does not take the burst; the guard's value is measured against this."""
    from raylab.cli.options import make_context
    from raylab.stages import stage6_spot as s6

    work, env = cluster
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = make_context("local", LAB, workdir=work, scenario="mixed")
    s6.stop_guard(ctx)
    with_guard = json.loads((work / "spot" / "stage6.json").read_text())["drills"]["capacity"]
    r = s6.drill_capacity(ctx, work / "spot", s6.drill_options(ctx), guard=False,
                          baseline=with_guard["baseline"])
    assert r["tasks_completed"] == r["tasks_total"]
    assert r["guard_caps"] == 0
    assert r["capacity_errors"] > with_guard["capacity_errors"]
    assert r["ondemand_launched_in_window"] < with_guard["ondemand_launched_in_window"]
    # Ray alone: no worker is added until the window ends (spot is planned every tick and fails);
    # with the guard, on-demand capacity came inside the window
    assert r["first_launch_s"] is None or r["first_launch_s"] >= r["window_s"], r
    assert with_guard["first_launch_s"] < with_guard["window_s"], with_guard
    # the makespans are measured and printed, not compared: at a burst this small on 2 shared cores the gap is
    # within the noise (a loaded CI run measured 1.23 without the guard against 1.33 with it)
    keys = ("tasks_total", "makespan_s", "makespan_ratio", "burst_start_s", "first_launch_s",
            "capacity_errors", "ondemand_launched_in_window", "guard_caps")
    compare = {"guard": {k: with_guard[k] for k in keys}, "no_guard": {k: r[k] for k in keys}}
    (work / "spot" / "compare.json").write_text(json.dumps(compare))
    print("capacity window, guard vs no guard:", json.dumps(compare))  # visible with `pytest -s`


def test_chaos_cli_on_the_local_target(cluster):
    _, env = cluster
    p = run_cli("chaos", "capacity", "--market", "spot", "--for", "5", "--lab", LAB, "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["fault"]["market"] == "spot" and out["until"] > 0 and len(out["faults"]) >= 1
    assert "InsufficientInstanceCapacity for 5 s" in p.stderr
    p = run_cli("chaos", "capacity", "--clear", "--lab", LAB, "--json", env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["faults"] == []
    p = run_cli("chaos", "reclaim", "--count", "999", "--lab", LAB, "--json", env=env)
    assert p.returncode == 2 and "asked to reclaim 999 spot instance(s)" in p.stderr


def test_stress_on_the_mixed_cluster_counts_each_market_against_its_quota(cluster):
    """Issue 13: after `up --scenario mixed`, `raylab stress` failed its own quota check ("peak 12 <=
    8"): every worker was counted against the on-demand quota. Spot workers draw on the spot quota."""
    _, env = cluster
    p = run_cli("stress", "--tasks", "12", "--duration", "8", "--lab", LAB, "--json", env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    failed = [c for c in out["checks"] if not c["ok"]]
    assert failed == []
    assert out["quota_cap_by_market"] == {"on-demand": 8, "spot": 10}
    assert out["quota_cap_workers"] == 18
