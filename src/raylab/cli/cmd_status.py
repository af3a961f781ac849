"""`raylab status`: Ray's own view of the cluster next to EC2's, and the launch errors AWS returned."""

from __future__ import annotations

import time
from typing import Any

import typer

from raylab.cli.options import Shared, takes_shared


def status_view(st: dict[str, Any]) -> dict[str, Any]:
    """The `--json` object: ray_nodes, instances, launch failures, agreement (pure)."""
    nodes = [{"type": n["type"], "state": n["state"], "group": n["group"], "instance_id": n["instance_id"],
              "ip": n["ip"], "resources": n["resources"]} for n in st.get("ray_nodes", [])]
    instances = [{"id": i["id"], "type": i["type"], "state": i["state"], "market": i["market"],
                  "node_type": i.get("node_type", ""), "kind": i.get("kind", "")}
                 for i in st.get("instances", [])]
    return {"cluster_name": st.get("cluster_name"), "gcs_address": st.get("gcs_address"),
            "ray_nodes": nodes, "instances": instances,
            "pending_launches": st.get("pending_launches", []),
            "failed_launches": st.get("failed_launches", []),
            "launch_failures": st.get("launch_failures", []),
            "demand": st.get("demand", []), "agreement": st.get("agreement", {}),
            "capacity_guard": st.get("capacity_guard") or {"running": None, "types": {}, "recent": []}}


def guard_lines(g: dict[str, Any], now: float) -> list[str]:
    """The capacity guard in a few lines for people (pure)."""
    if not g.get("types") and not g.get("recent"):
        idle = "capacity guard: running, nothing to do (no spot capacity error)"
        return [idle] if g.get("running") else []
    on = {True: "running", False: "stopped", None: "unknown"}[g.get("running")]
    out = []
    for name, t in sorted(g.get("types", {}).items()):
        what = t["status"]
        if t["status"] == "capped":
            left = max(0, int(t["until"] - now))
            what = f"capped at {t['max_workers']} ({t['code']}), restores in {left} s"
        elif t["status"] == "probing":
            what = f"probing spot again for {max(0, int(t['until'] - now))} s"
        out.append(f"capacity guard ({on}): {name} {what}")
    for e in g.get("recent", [])[-3:]:
        out.append(f"  {time.strftime('%H:%M:%S', time.localtime(e['t'] or 0))} {e['message']}")
    return out


@takes_shared("target", "lab", "json_mode", "quiet", "workdir")
def status(shared: Shared) -> None:
    """Show the cluster as Ray sees it (autoscaler v2 status) and as EC2 sees it (instances by the
    ray-cluster-name tag), plus launch failures with AWS's reason (e.g. VcpuLimitExceeded), and what
    the capacity guard did about spot capacity errors and why."""
    ctx = shared.context()
    view = status_view(ctx.target.cluster_status(ctx))
    view["readiness"] = ctx.target.readiness(ctx)
    from raylab.cli.cost_report import measure, report

    if ctx.ui.json_mode:
        view["cost"] = report(ctx, measure(ctx), "so far this lab cost", table=False)
        ctx.ui.result(view)
        return
    ctx.ui.table(f"Ray nodes ({view['cluster_name']}, GCS {view['gcs_address']})",
                 ["type", "state", "instance", "ip", "CPU"],
                 [[n["type"], n["state"], n["instance_id"], n["ip"], int(n["resources"].get("CPU", 0))]
                  for n in view["ray_nodes"]])
    ctx.ui.table("EC2 instances (tag ray-cluster-name)", ["id", "type", "state", "market", "node type"],
                 [[i["id"], i["type"], i["state"], i["market"], i["node_type"] or i["kind"]]
                  for i in view["instances"]])
    from raylab.observe.readiness import show

    show(ctx.ui, view["readiness"])
    for p in view["pending_launches"]:
        ctx.ui.info(f"pending launch: {p['count']} x {p['type']} ({p['state']})")
    for f in view["launch_failures"]:
        ago = time.time() - f["last_t"]
        limit = f" (quota {f['limit']} vCPUs)" if f.get("limit") else ""
        ctx.ui.warning(f"launch failed {f['count']}x: {f['code']}{limit} for {f['instance_type']} "
                       f"{f['market']}, last {ago:.0f}s ago")
    hint = ctx.target.ray_cli_hint(ctx, view["gcs_address"])
    if hint:
        ctx.ui.info(hint)
    for line in guard_lines(view["capacity_guard"], time.time()):
        ctx.ui.info(line)
    a = view["agreement"]
    if a.get("ok"):
        ctx.ui.success(f"Ray and EC2 agree: {len(a['running'])} running instance(s)")
    else:
        ctx.ui.warning(f"Ray and EC2 differ (booting or stopping nodes?): Ray only {a.get('ray_only')}, "
                       f"EC2 only {a.get('ec2_only')}")
    report(ctx, measure(ctx), "so far this lab cost", table=False)  # and what it costs per hour now


def register(app: typer.Typer) -> None:
    app.command("status")(status)
