"""Forecast vs measured: `raylab plan` against the real local lab (Ray 2.60 autoscaler v2 on the twin).

For each setting it sets the twin's vCPU quota and the cluster's upscaling_speed, runs
`raylab stress --json` on the real local cluster, reads the twin's events (launch calls, quota
errors, node boots), then asks `raylab plan --json` for the same setting, with the boot time measured
in that run, and prints forecast vs measured: peak workers, launch rounds, makespan, with error
ratios (targets: peak workers exact, makespan within 20%).

Heavy (a real Ray cluster of several nodes on this machine, a few minutes per setting): run it by
hand, never in CI:  .venv/bin/python bench/plan_vs_local.py [--tasks 24 --duration 20] [--keep]

The quota is set through the twin's control API (raylab.targets.local.control.TwinClient) because
there is no `raylab scale --quota` command yet; the upscaling_speed is written into the rendered
cluster YAML, which Ray's autoscaler re-reads on every loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IDLE_MINUTES = 0.5  # the bench's idle timeout, so each setting starts from zero workers sooner
# launch calls closer than this belong to one autoscaler tick (the local head's loop: 1 s)
ROUND_GAP_S = 0.5

# (label, upscaling_speed, on-demand quota in vCPUs, head included)
SETTINGS: list[tuple[str, float, int]] = [
    ("speed 1, no wall", 1.0, 1024),
    ("speed 10, no wall", 10.0, 1024),
    ("quota wall 64 vCPU", 1.0, 64),
]


def raylab(*args: str, timeout: float = 1800) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-m", "raylab", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=os.environ.copy())
    if p.returncode != 0:
        raise SystemExit(f"raylab {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def set_speed(config_path: Path, speed: float, idle_minutes: float) -> None:
    import yaml

    cfg = yaml.safe_load(config_path.read_text())
    cfg["upscaling_speed"] = speed
    cfg["idle_timeout_minutes"] = idle_minutes
    tmp = config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(config_path)  # atomic: the autoscaler never reads half a file


def workers_running(twin: Any, head_type: str) -> int:
    return sum(1 for m in twin.machines() if m.get("state") in ("running", "booting", "queued")
               and m.get("node_type") != head_type)


def wait_idle(twin: Any, head_type: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while workers_running(twin, head_type) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers still running after {limit_s:.0f} s: "
                             "the previous run did not scale down")
        time.sleep(2)


def measured_rounds(events: list[dict[str, Any]]) -> int:
    """Ticks with at least one launch call (launch or quota_error), grouping calls < ROUND_GAP_S apart."""
    ts = sorted(e["t"] for e in events
                if e.get("kind") in ("launch", "quota_error") and e.get("node_kind") != "head")
    rounds, last = 0, None
    for t in ts:
        if last is None or t - last > ROUND_GAP_S:
            rounds += 1
        last = t
    return rounds


def boot_seconds(events: list[dict[str, Any]]) -> float | None:
    """Seconds one worker takes from its launch call to a running Ray node, on this machine now:
    the median over the run's workers of the twin's own events (launch -> node_running). The twin
    boots nodes together (up to --max-concurrent-boots), so each span is that node's own boot."""
    launched: dict[str, float] = {}
    spans: list[float] = []
    for e in events:
        if e.get("kind") == "launch" and e.get("node_kind") != "head":
            for iid in e.get("instance_ids") or []:
                launched.setdefault(iid, float(e["t"]))
        elif e.get("kind") == "node_running" and e.get("instance_id") in launched:
            spans.append(float(e["t"]) - launched[e["instance_id"]])
    return round(statistics.median(spans), 1) if spans else None


def worker_start_seconds(timeline: Path, duration: float) -> float:
    """Python worker start-up, from the run's timeline (``raylab.observe.timeline.worker_start_s``,
    what stage 4 gives its own forecast)."""
    from raylab.observe import timeline as tl

    return tl.worker_start_s(tl.read(timeline)[1], duration)

def head_instance_vcpus(cfg: dict[str, Any]) -> int:
    from raylab.cluster import instance_types

    itype = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]["InstanceType"]
    it = instance_types.lookup(itype)
    return it.vcpus if it else 0


def ratio(forecast: float | None, measured: float | None) -> str:
    if not forecast or not measured:
        return "n/a"
    return f"{forecast / measured:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = ap.parse_args()

    from raylab.targets.local import LocalTarget
    from raylab.targets.local.control import TwinClient

    workdir = Path(tempfile.mkdtemp(prefix="rl-plb-"))
    lab = f"plb{os.getpid() % 100000}"
    common = ["--workdir", str(workdir), "--lab", lab]
    rows: list[dict[str, Any]] = []
    print(f"bench: lab {lab}, workdir {workdir}; "
          f"{args.tasks} tasks x 1 CPU x {args.duration:g} s per setting", file=sys.stderr)
    try:
        t0 = time.monotonic()
        raylab("up", "--yes", "--json", *common)
        print(f"up in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        state = json.loads((workdir / "state.json").read_text())
        cluster, twin_state = state["cluster"], state["twin"]
        config_path = Path(cluster["config_path"])
        import yaml

        cfg = yaml.safe_load(config_path.read_text())
        head_type = cfg["head_node_type"]
        idle_s = max(float(cfg.get("idle_timeout_minutes", 1)), IDLE_MINUTES) * 60
        twin = TwinClient(twin_state["endpoint_url"])
        concurrency = int(twin.boot().get("max_concurrent_boots", 1))
        for label, speed, quota in SETTINGS:
            wait_idle(twin, head_type, idle_s + 180)
            twin.set_quotas(on_demand=quota)
            set_speed(config_path, speed, IDLE_MINUTES)
            time.sleep(LocalTarget.tick_s + 1)  # one whole autoscaler loop, so it runs with the new YAML
            since = max((e.get("seq", 0) for e in twin.events()), default=0)
            print(f"-- {label}: stress ...", file=sys.stderr)
            m = raylab("stress", "--json", "--tasks", str(args.tasks), "--duration", str(args.duration),
                       *common)
            events = twin.events(since=since)
            boot = boot_seconds(events) or 10.0
            wstart = worker_start_seconds(Path(m["timeline"]), args.duration)
            head_vcpus = head_instance_vcpus(cfg)
            other = max(0, int(m.get("reserved_vcpus") or 0) - head_vcpus)  # e.g. the bastion
            crashed = sum(1 for e in events if e.get("kind") == "node_exit")
            f = raylab("plan", "--json", "--config", str(config_path), "--tasks", str(args.tasks),
                       "--duration", str(args.duration), "--quota-ondemand", str(quota),
                       "--boot-seconds", str(boot), "--max-concurrent-boots", str(concurrency),
                       "--worker-start-seconds", str(wstart), "--other-vcpus", str(other),
                       "--tick-seconds", str(int(LocalTarget.tick_s)))  # the local head's loop
            rows.append({
                "setting": label, "upscaling_speed": speed, "quota_vcpus": quota,
                "boot_s": boot, "worker_start_s": wstart, "other_vcpus": other, "nodes_crashed": crashed,
                "peak": (f["peak_workers"], m.get("peak_workers")),
                "rounds": (f["round_count"], measured_rounds(events)),
                "makespan": (f["makespan_s"], m.get("makespan_s")),
                "quota_limited": (f["quota"]["limited"], bool(m.get("quota_errors"))),
            })
    finally:
        if not args.keep:
            subprocess.run([sys.executable, "-m", "raylab", "down", "--yes", *common], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
    print("boot s and worker-start s were measured in the same run and given to the forecast")
    print(f"{'setting':<22}{'boot s':>7}{'wstart':>7}  {'peak f/m':>9}  {'rounds f/m':>10}  "
          f"{'makespan f/m (s)':>18}  {'ratio':>6}  verdict")
    ok = True
    for r in rows:
        (pf, pm), (rf, rm), (mf, mm) = r["peak"], r["rounds"], r["makespan"]
        peak_ok = pf == pm
        span_ok = bool(mf and mm and abs(mf / mm - 1) <= 0.20)
        ok &= peak_ok and span_ok
        checks = (("peak differs", not peak_ok), ("makespan off >20%", not span_ok),
                  (f"{r['nodes_crashed']} Ray nodes crashed: the measurement is not comparable",
                   r["nodes_crashed"] > 0))
        problems = [x for x, bad in checks if bad]
        verdict = ", ".join(problems) or "ok"
        print(f"{r['setting']:<22}{r['boot_s']:>7}{r['worker_start_s']:>7}  {pf:>4}/{pm:<4}  "
              f"{rf:>5}/{rm:<4}  {mf!s:>8}/{mm!s:<9}  {ratio(mf, mm):>6}  {verdict}")
    print(json.dumps({"bench": "plan_vs_local", "tasks": args.tasks, "duration_s": args.duration,
                      "rows": rows, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
