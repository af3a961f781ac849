"""Time-to-ready per node: launch call -> SSH up -> setup done -> Ray node alive.

Pure: ``join`` matches EC2's instances of the cluster with Ray's nodes (the GCS node table as the
dashboard's ``/nodes?view=summary`` gives it) and ``summarize`` reduces the rows. A phase a target
does not have is None and printed as "—" (the local target has no SSH: its machines start Ray
directly; on AWS only the head's `ray up` log says when SSH came up and the setup commands ended).

Timestamps are epoch seconds. ``launched_at`` is EC2's LaunchTime (whole seconds, so a duration
from it is up to 1 s long); ``ray_alive_at`` is the raylet's start time in the GCS node table (the
node registers with the GCS at that moment). A worker's *setup* excludes the image's own boot: it is
measured from SSH up when known, else from launch plus the boot delay the target models.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

SETUP_TARGET_S = 60.0  # issue 14: a worker's setup (launch to Ray node alive, excluding boot) at most
DASH = "—"


@dataclass(frozen=True)
class RayNode:
    """One node of the GCS node table (what the join needs)."""

    node_id: str
    instance_id: str
    ip: str
    start_s: float | None
    alive: bool


@dataclass(frozen=True)
class NodeReadiness:
    instance_id: str
    node_type: str
    kind: str  # head | worker (Ray's ray-node-type tag)
    market: str
    state: str  # EC2 state now
    launched_at: float
    ssh_up_at: float | None = None
    setup_done_at: float | None = None
    ray_alive_at: float | None = None
    boot_delay_s: float | None = None  # the image's own boot, when the target models it (local)

    @staticmethod
    def _span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(max(b - a, 0.0), 2)

    @property
    def launch_to_alive_s(self) -> float | None:
        return self._span(self.launched_at, self.ray_alive_at)

    @property
    def launch_to_ssh_s(self) -> float | None:
        return self._span(self.launched_at, self.ssh_up_at)

    @property
    def ssh_to_setup_s(self) -> float | None:
        return self._span(self.ssh_up_at, self.setup_done_at)

    @property
    def setup_to_alive_s(self) -> float | None:
        return self._span(self.setup_done_at, self.ray_alive_at)

    @property
    def setup_s(self) -> float | None:
        """Launch to Ray node alive without the image's boot: from SSH up when known, else from
        launch + the modelled boot delay; None when neither is known (AWS workers)."""
        if self.ssh_up_at is not None:
            return self._span(self.ssh_up_at, self.ray_alive_at)
        if self.boot_delay_s is not None:
            return self._span(self.launched_at + self.boot_delay_s, self.ray_alive_at)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "launch_to_alive_s": self.launch_to_alive_s,
                "launch_to_ssh_s": self.launch_to_ssh_s, "ssh_to_setup_s": self.ssh_to_setup_s,
                "setup_to_alive_s": self.setup_to_alive_s, "setup_s": self.setup_s}


# --- inputs ---------------------------------------------------------------------------------------
def _epoch(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, int | float):
        return float(v)
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def ray_nodes_from_summary(payload: dict[str, Any]) -> list[RayNode]:
    """Ray's nodes from the dashboard's ``GET /nodes?view=summary`` (each entry's ``raylet`` is the
    GCS node info in camelCase; uint64 fields such as ``startTimeMs`` arrive as strings)."""
    out = []
    for entry in (payload.get("data") or {}).get("summary") or []:
        r = entry.get("raylet") or {}
        ms = r.get("startTimeMs")
        try:
            start = int(ms) / 1000.0 if ms not in (None, "", "0", 0) else None
        except (TypeError, ValueError):
            start = None
        out.append(RayNode(node_id=str(r.get("nodeId", "")), instance_id=str(r.get("instanceId") or ""),
                           ip=str(r.get("nodeManagerAddress") or entry.get("ip") or ""), start_s=start,
                           alive=r.get("state") == "ALIVE"))
    return out


def instances_from_ec2(reservations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """describe_instances' reservations as the join's instances (raw boto3 shapes)."""
    out = []
    for r in reservations:
        for i in r.get("Instances", []):
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            out.append({"id": i["InstanceId"], "launched_at": _epoch(i.get("LaunchTime")),
                        "node_type": tags.get("ray-user-node-type", ""),
                        "kind": tags.get("ray-node-type", ""),
                        "market": "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
                        "state": i.get("State", {}).get("Name", "?"),
                        "ip": i.get("PrivateIpAddress") or ""})
    return out


# --- `ray up`'s updater log (record style: "<local time>\tINFO updater.py:N -- <message>") -------------
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\s+\w+\s+\S+ -- (.*)$")


def updater_marks(text: str, tz: Any = None) -> list[tuple[float, str]]:
    """(time, mark) from Ray's updater lines: ``ssh_up`` (the "Success." after "Waiting for SSH to
    become available"), ``setup_done`` ("Starting the Ray runtime": setup commands ended). Times are
    the machine's local time unless ``tz`` is given."""
    marks: list[tuple[float, str]] = []
    waiting_ssh = False
    for line in text.splitlines():
        m = _RECORD.match(line.strip())
        if not m:
            continue
        dt = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if tz is not None:
            dt = dt.replace(tzinfo=tz)
        t = dt.timestamp() + int(m.group(2)) / 1000.0
        msg = m.group(3)
        if "Waiting for SSH to become available" in msg:
            waiting_ssh = True
        elif waiting_ssh and msg.strip() == "Success.":
            marks.append((t, "ssh_up"))
            waiting_ssh = False
        elif "Starting the Ray runtime" in msg:
            marks.append((t, "setup_done"))
    return marks


def head_phases(marks: list[tuple[float, str]], launched_at: float) -> dict[str, float | None]:
    """The head's SSH up / setup done: the first of each mark at or after its launch (a later
    `ray up --no-restart` logs its own; an earlier one belongs to a head that is gone)."""
    out: dict[str, float | None] = {"ssh_up_at": None, "setup_done_at": None}
    for t, mark in sorted(marks):
        key = f"{mark}_at"
        if t >= launched_at - 1.0 and out.get(key) is None:  # LaunchTime is whole seconds
            out[key] = t
    if out["ssh_up_at"] is not None and out["setup_done_at"] is not None \
            and out["setup_done_at"] < out["ssh_up_at"]:
        out["setup_done_at"] = None
    return out


# --- the join ---------------------------------------------------------------------------------------
def join(instances: list[dict[str, Any]], nodes: list[RayNode], *,
         head_phases_at: dict[str, float | None] | None = None,
         boot_delay_s: float | None = None) -> list[NodeReadiness]:
    """One row per EC2 instance of the cluster that has a launch time, in launch order.

    A Ray node belongs to an instance by the instance id Ray records (RAY_CLOUD_INSTANCE_ID), else
    by a private IP no other instance has. Alive is the FIRST such node's start (a node restarted
    later does not make the instance ready later) and never before the launch."""
    by_ip: dict[str, int] = {}
    for i in instances:
        if i.get("ip"):
            by_ip[i["ip"]] = by_ip.get(i["ip"], 0) + 1
    known_ids = {i["id"] for i in instances}
    rows = []
    for i in instances:
        launched = i.get("launched_at")
        if launched is None:
            continue
        mine = [n for n in nodes if n.instance_id == i["id"]]
        if not mine and i.get("ip") and by_ip.get(i["ip"]) == 1:
            mine = [n for n in nodes if n.ip == i["ip"] and n.instance_id not in known_ids]
        starts = sorted(n.start_s for n in mine if n.start_s is not None and n.start_s >= launched - 1.0)
        is_head = i.get("kind") == "head"
        phases = (head_phases_at or {}) if is_head else {}
        rows.append(NodeReadiness(
            instance_id=i["id"], node_type=i.get("node_type") or "", kind=i.get("kind") or "worker",
            market=i.get("market") or "on-demand", state=i.get("state") or "?", launched_at=float(launched),
            ssh_up_at=phases.get("ssh_up_at"), setup_done_at=phases.get("setup_done_at"),
            ray_alive_at=starts[0] if starts else None, boot_delay_s=boot_delay_s))
    return sorted(rows, key=lambda r: (r.launched_at, r.instance_id))


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


def summarize(rows: list[NodeReadiness], target_s: float = SETUP_TARGET_S) -> dict[str, Any]:
    """Head's launch->alive; workers' median/max launch->alive and setup; the 60 s target."""
    head = next((r for r in rows if r.kind == "head"), None)
    workers = [r for r in rows if r.kind != "head"]
    alive = [r.launch_to_alive_s for r in workers if r.launch_to_alive_s is not None]
    setup = [r.setup_s for r in workers if r.setup_s is not None]
    return {"head_launch_to_alive_s": head.launch_to_alive_s if head else None,
            "workers": len(workers), "workers_alive": len(alive),
            "workers_not_alive": len(workers) - len(alive),
            "worker_launch_to_alive_median_s": _median(alive),
            "worker_launch_to_alive_max_s": round(max(alive), 2) if alive else None,
            "worker_setup_median_s": _median(setup),
            "worker_setup_max_s": round(max(setup), 2) if setup else None,
            "setup_target_s": target_s,
            "within_target": (max(setup) <= target_s) if setup else None}


def report(rows: list[NodeReadiness], **extra: Any) -> dict[str, Any]:
    """The ``readiness`` object of `--json`: per-node rows and the summary."""
    return {"nodes": [r.as_dict() for r in rows], "summary": summarize(rows), **extra}


# --- for people ------------------------------------------------------------------------------------
# the phases in order: launch -> SSH up -> setup done -> Ray node alive ("—": the target has no such phase)
COLUMNS = ["node", "type", "market", "launch→alive s", "→ssh s", "→setup s", "→alive s"]


def _s(v: Any) -> str:
    return DASH if v is None else f"{float(v):.1f}"


def table_rows(rep: dict[str, Any]) -> list[list[str]]:
    return [[n["instance_id"], (n["node_type"] or n["kind"]).removeprefix("ray."),
             n["market"], _s(n["launch_to_alive_s"]), _s(n["launch_to_ssh_s"]), _s(n["ssh_to_setup_s"]),
             _s(n["setup_to_alive_s"])] for n in rep.get("nodes", [])]


def summary_line(rep: dict[str, Any]) -> str:
    s = rep.get("summary") or {}
    parts = [f"head {_s(s.get('head_launch_to_alive_s'))} s"]
    if s.get("workers"):
        parts.append(f"workers ({s['workers_alive']}/{s['workers']} alive) median "
                     f"{_s(s.get('worker_launch_to_alive_median_s'))} s, max "
                     f"{_s(s.get('worker_launch_to_alive_max_s'))} s")
        if s.get("within_target") is not None:
            verdict = "within" if s["within_target"] else "OVER"
            parts.append(f"setup max {_s(s.get('worker_setup_max_s'))} s "
                         f"({verdict} the {s['setup_target_s']:.0f} s target)")
    return "time to ready (launch → Ray node alive): " + "; ".join(parts)


def show(ui: Any, rep: dict[str, Any] | None, title: str = "Time to ready per node") -> None:
    """The table and the summary line (``ui`` is raylab.ui.UI); a report with an error says so."""
    if not rep:
        return
    if rep.get("error"):
        ui.warning(f"time to ready: not measured ({rep['error']})")
        return
    ui.table(title, COLUMNS, table_rows(rep))
    ui.info(summary_line(rep))
