"""Stage 6's I/O helpers: the twin's events and machines, the capacity guard's process, the spot demo
job and the waits and sizes the drills need. ``stage6_spot`` runs the drills with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.spot import GUARD

if TYPE_CHECKING:
    from raylab.context import Context

# configs/scenarios/mixed.yaml: a small on-demand base, spot preferred (priority) for bursts
MIXED = {"ray.worker.ondemand": {"min_workers": 2, "max_workers": 30, "priority": 0},
         "ray.worker.spot": {"min_workers": 0, "max_workers": 28, "priority": 10}}


# --- I/O helpers --------------------------------------------------------------------------------

def twin_client(ctx: Context) -> Any:
    from raylab.targets.local.control import TwinClient

    return TwinClient(ctx.state.get("twin")["endpoint_url"])


def twin_events(ctx: Context, since: int = 0) -> list[dict[str, Any]]:
    return twin_client(ctx).events(since)


def set_node_type_fields(path: Path, node_type: str, fields: dict[str, Any]) -> bool:
    """Set fields of one node type in the cluster YAML (None removes the field), with the guard's
    round-trip edit. Returns False when nothing changed. Operator side only: never on the nodes."""
    from raylab.spot.guard import edit_node_type

    def edit(nt: Any) -> bool:
        changed = False
        for k, v in fields.items():
            if v is None:
                changed |= nt.pop(k, None) is not None
            elif nt.get(k) != v:
                nt[k] = v
                changed = True
        return changed

    return edit_node_type(path, node_type, edit)


def ensure_spot_allowed(cfg: Path) -> dict[str, dict[str, Any]]:
    """If the scenario has no spot workers, give the drill the mixed scenario's limits and priorities;
    return what to put back (a field the config did not have comes back as None: removed)."""
    from raylab.spot.guard import load_yaml

    types = load_yaml(cfg).get("available_node_types", {})
    if int(types.get("ray.worker.spot", {}).get("max_workers", 0)) > 0:
        return {}
    restore = {}
    for nt, fields in MIXED.items():
        if nt in types:
            restore[nt] = {k: types[nt].get(k) for k in fields}
            set_node_type_fields(cfg, nt, fields)
    return restore


# The worker limits as they were before stage 6 edited them (mixed limits, pinned sizes). Each edit is
# put back in a ``finally``, which a SIGKILL skips: the record lets the next run put them back first.
HELD = "spot_limits"
LIMIT_FIELDS = ("min_workers", "max_workers", "priority")


def limits_of(types: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker types' limits stage 6 edits, as they are in ``types`` (pure)."""
    return {nt: {k: types[nt].get(k) for k in LIMIT_FIELDS} for nt in MIXED if nt in types}


def left_changed(held: dict[str, dict[str, Any]], types: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields whose value differs from the held one: what a killed run left edited (pure)."""
    out = {nt: {k: v for k, v in fields.items() if types[nt].get(k) != v}
           for nt, fields in held.items() if nt in types}
    return {nt: f for nt, f in out.items() if f}


def hold_limits(ctx: Context, cfg: Path) -> None:
    """Before stage 6 edits the YAML: put back what a killed run left edited (its record), else
    record the limits as they are; ``release_limits`` forgets them once the edits are undone."""
    from raylab.spot.guard import load_yaml

    held = ctx.state.get(HELD)
    types = load_yaml(cfg).get("available_node_types", {})
    if not held:
        ctx.state.put(HELD, limits_of(types))
        return
    back = left_changed(held, types)
    for nt, fields in back.items():
        set_node_type_fields(cfg, nt, fields)
    if back:
        what = "; ".join(f"{nt} " + ", ".join(f"{k} {v}" for k, v in f.items()) for nt, f in back.items())
        ctx.ui.warning(f"put back the worker limits a killed stage 6 left edited: {what}")


def release_limits(ctx: Context) -> None:
    ctx.state.drop(HELD)


def guard_command(ctx: Context, cooldown: float, probe: float) -> list[str]:
    cl, tw = ctx.state.cluster().required(), ctx.state.get("twin")
    d = ctx.workdir / "spot"
    return [sys.executable, "-m", "raylab.spot.guard", f"--config={cl.config_path}",
            f"--cluster-name={cl.cluster_name}", f"--twin={tw['endpoint_url']}",
            f"--events={d / 'guard-events.jsonl'}", f"--state={d / 'guard-state.json'}",
            "--interval=2", f"--cooldown={cooldown}", f"--probe={probe}",
            f"--region={tw.get('region', 'us-west-2')}"]


def ensure_guard(ctx: Context, cooldown: float, probe: float) -> int:
    from raylab.procs import Records, spawn
    from raylab.state import pid_alive

    rec = ctx.state.get("processes").get(GUARD)
    if rec and pid_alive(int(rec["pid"])):
        ctx.ui.noop(f"noop: capacity guard already running (pid {rec['pid']})")
        return int(rec["pid"])
    cmd = guard_command(ctx, cooldown, probe)
    env = {**os.environ, **ctx.target.aws_env(ctx)}
    # long-lived (it runs beside the head until teardown): a later run adopts it
    p = spawn(cmd, ctx.workdir / "logs" / "spot-guard.log", env=env, records=Records(ctx.workdir),
              what="capacity guard", owner="spot-guard", lab=ctx.lab)
    ctx.state.record_process(GUARD, p.pid, cmd)
    ctx.ui.success(f"capacity guard started (pid {p.pid}): caps spot on capacity errors, restores after "
                   f"{cooldown:g} s")
    return p.pid


def stop_guard(ctx: Context) -> None:
    from raylab.procs import stop_group
    from raylab.state import pid_alive

    rec = ctx.state.get("processes").get(GUARD)
    if not rec:
        return
    if pid_alive(int(rec["pid"])):
        stop_group(int(rec["pid"]), timeout=10)  # SIGTERM: the guard puts the YAML back first
        ctx.ui.success("capacity guard stopped")
    ctx.state.forget_process(GUARD)


def start_demo(ctx: Context, out: Path, tasks: int, duration: float) -> subprocess.Popen[bytes]:
    """The spot demo as a driver on the cluster; ``out`` gets its summary, ``out.live`` what runs now."""
    from raylab.procs import Records, spawn
    from raylab.targets.local.head import driver_env

    script = ctx.root / "workloads" / "spot_demo.py"
    cmd = [sys.executable, str(script), f"--address={ctx.state.get('cluster')['gcs_address']}",
           f"--tasks={tasks}", f"--duration={duration}", f"--out={out}", f"--live={live_path(out)}"]
    live_path(out).unlink(missing_ok=True)
    env = {k: v for k, v in driver_env().items() if k != "RAY_ADDRESS"}
    # ephemeral: it dies with this run (a killed stage 6 must not leave it submitting tasks beside
    # the re-run's demo), Ctrl-C stops it, and a later run stops one it finds orphaned
    return spawn(cmd, out.with_suffix(".log"), env=env, records=Records(ctx.workdir), what="spot demo",
                 owner="stage6", lab=ctx.lab, ephemeral=True)


def wait_demo(p: subprocess.Popen[bytes], out: Path, timeout: float,
              tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Wait for the demo driver, calling ``tick`` about once a second meanwhile."""
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if tick is not None:
            with contextlib.suppress(Exception):  # an observation, never the drill's failure
                tick()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=1.0)
    if p.poll() is None:
        from raylab.procs import stop_group

        stop_group(p.pid)
        raise RaylabError(f"the spot demo did not finish in {timeout:.0f} s",
                          f"see {out.with_suffix('.log')}") from None
    if not out.exists():
        raise RaylabError(f"the spot demo failed (exit {p.returncode})", f"see {out.with_suffix('.log')}")
    r = json.loads(out.read_text())
    r["out"] = str(out)
    return r


def running_workers(ctx: Context, exclude: set[str] | frozenset[str] = frozenset()) -> int:
    cluster = ctx.state.cluster().required().cluster_name
    return sum(1 for m in twin_client(ctx).machines()
               if m["cluster"] == cluster and m["state"] == "running" and m["instance_id"] not in exclude)


def running_spot(ctx: Context) -> list[str]:
    cluster = ctx.state.cluster().required().cluster_name
    return sorted(m["instance_id"] for m in twin_client(ctx).machines()
                  if m["cluster"] == cluster and m["market"] == "spot" and m["state"] == "running")


def wait_for(pred: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return None


def live_path(out: Path) -> Path:
    return out.with_suffix(".live.json")


def busy_spot(ctx: Context, out: Path, want: int, full: int = 1) -> list[str]:
    """Spot instances running at least ``full`` demo tasks right now, once at least ``want`` do.
    A node whose every CPU runs a task has no lease in flight: whatever starts there after a drain
    is new work, which is what the notice drill must be able to see."""
    try:
        running = json.loads(live_path(out).read_text()).get("running", {})
    except (OSError, ValueError):
        return []
    up = set(running_spot(ctx))
    busy = sorted((i for i in running if i in up and running[i] >= full), key=lambda i: -running[i])
    return busy if len(busy) >= want else []


def type_cpus(ctx: Context, node_type: str) -> int:
    from raylab.spot.guard import load_yaml

    types = load_yaml(Path(ctx.state.cluster().required().config_path)).get("available_node_types", {})
    return int(types.get(node_type, {}).get("resources", {}).get("CPU", 0))


def fixed_size(cfg: Path, spot: int) -> dict[str, tuple[int, int]]:
    """Pin the cluster for a reclaim drill: on-demand at its min_workers, spot at exactly ``spot``.
    With work queued beyond that size, a reclaimed node leaves demand behind, so a replacement is
    Ray's answer, not a scale-up. Returns the limits to put back."""
    from raylab.spot.guard import load_yaml, set_node_type_limits

    types = load_yaml(cfg).get("available_node_types", {})
    back = {nt: (int(types[nt].get("min_workers", 0)), int(types[nt].get("max_workers", 0)))
            for nt in ("ray.worker.ondemand", "ray.worker.spot") if nt in types}
    od_min = back.get("ray.worker.ondemand", (0, 0))[0]
    if "ray.worker.ondemand" in back:
        set_node_type_limits(cfg, "ray.worker.ondemand", od_min, od_min)
    set_node_type_limits(cfg, "ray.worker.spot", spot, spot)
    return back


def worker_cpus(ctx: Context) -> int:
    """CPUs of the worker nodes up now (to size a burst beyond them)."""
    from raylab.spot.guard import load_yaml

    types = load_yaml(Path(ctx.state.cluster().required().config_path)).get("available_node_types", {})
    cluster = ctx.state.cluster().required().cluster_name
    return sum(int(types.get(m["node_type"], {}).get("resources", {}).get("CPU", 0))
               for m in twin_client(ctx).machines() if m["cluster"] == cluster and m["state"] == "running")


def watcher_drained_at(ctx: Context, instance_id: str) -> float | None:
    log = Path(ctx.state.get("twin")["state_dir"]) / "logs" / f"watcher-{instance_id}.log"
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") == "drained":
            return float(ev["ts"])
    return None


def split_markets_by_az(cfg: Path, network: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """As the mixed scenario does: on-demand workers in stage 1's first private subnet, spot in the
    second, so the capacity drill is a spot-only outage. Returns what to put back ({} with one subnet)."""
    from raylab.cluster.config import subnet_values
    from raylab.spot.guard import load_yaml

    sv = subnet_values(network)
    if not sv or sv["PrivateSubnetA"] == sv["PrivateSubnetB"]:
        return {}
    types = load_yaml(cfg).get("available_node_types", {})
    restore: dict[str, dict[str, Any]] = {}
    split = (("ray.worker.ondemand", sv["PrivateSubnetA"]), ("ray.worker.spot", sv["PrivateSubnetB"]))
    for nt, subnet in split:
        if nt in types:
            old = dict(types[nt].get("node_config") or {})
            restore[nt] = {"node_config": old}
            set_node_type_fields(cfg, nt, {"node_config": {**old, "SubnetIds": [subnet]}})
    return restore


def fis_apply(ctx: Context, o: dict[str, Any]) -> dict[str, Any]:
    """The drills as FIS experiments. A scenario without spot workers (autoscale, static) gets the
    mixed scenario's limits for the drill, re-applied with `ray up --no-restart` (autoscaler v2
    re-reads the YAML), and put back afterwards, as on the local target."""
    from raylab.spot.fis import run_drills

    cfg = Path(ctx.state.cluster().required().config_path)
    restore = ensure_spot_allowed(cfg)
    if restore:
        for nt, fields in split_markets_by_az(cfg, ctx.state.get("network")).items():
            restore.setdefault(nt, {}).update(fields)
        ctx.ui.step("spot workers allowed for the drills (the mixed scenario's limits and AZs), re-applied")
        ctx.target.reapply(ctx, cfg)
    try:
        ctx.state.put("spot", rec := run_drills(ctx, o))
    finally:
        if restore:
            for nt, fields in restore.items():
                set_node_type_fields(cfg, nt, fields)
            ctx.target.reapply(ctx, cfg)
    return rec
