"""The capacity guard: what Ray 2.60's autoscaler lacks when spot capacity is gone.

Measured (field notes): an InsufficientInstanceCapacity launch ends ALLOCATION_FAILED, never lowers
the spot type's availability score, and v2 plans spot again every tick (5 RunInstances calls each,
no backoff). On-demand only gets what overflows spot's max_workers. So a burst waits on spot for
as long as the capacity is gone, and the EC2 API takes a retry storm.

The guard runs next to the autoscaler and steers it through a supported means: the autoscaling
YAML that v2 re-reads every loop. When spot launches of a node type fail with a capacity code it
caps that type's ``max_workers`` at the number of its instances that exist now, so the scheduler
plans the rest of the demand on the on-demand type of the same shape; after a cooldown it restores
the original value and watches (probing). A new failure while probing caps again with the cooldown
multiplied (exponential backoff, bounded); a quiet probe means spot is back.

Layout: ``step`` is the pure state machine (table-tested); ``set_node_type_limits`` is the YAML
action (ruamel round-trip); ``Guard.tick`` is the I/O loop; failures come from ``TwinEventsSource``
(local target) or ``MonitorLogSource`` (AWS, on the head). Operator-side code on the guard's files
(``guard_status.py``; stage 6's ``set_node_type_fields``) lives elsewhere: only this file is shipped.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity",
                            "InsufficientHostCapacity", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow"})


@dataclass(frozen=True)
class GuardConfig:
    cooldown_s: float = 60.0  # first cap lasts this long
    max_cooldown_s: float = 600.0
    backoff: float = 2.0  # cooldown multiplier when spot is still unavailable after a cap
    probe_s: float = 30.0  # after restoring, a capacity failure within this long caps again


@dataclass(frozen=True)
class Failure:
    t: float
    node_type: str
    instance_type: str
    code: str
    az: str = ""


@dataclass(frozen=True)
class TypeState:
    status: str = "ok"  # ok | capped | probing
    since: float | None = None  # first failure of this episode
    until: float = 0.0  # capped: restore at; probing: spot counts as back at
    cooldown_s: float = 0.0
    cap: int | None = None
    restored_at: float = 0.0
    failures: int = 0
    code: str = ""
    az: str = ""


@dataclass(frozen=True)
class Decision:
    kind: str  # "cap" | "restore" | "note"
    node_type: str
    max_workers: int | None
    message: str
    reason: str = ""


def step(s: TypeState, *, node_type: str, instance_type: str, now: float, failures: list[Failure],
         running: int, original_max: int, fallback: str | None,
         cfg: GuardConfig) -> tuple[TypeState, list[Decision]]:
    """One tick for one spot node type. ``failures``: capacity failures seen since the last tick;
    ``running``: its instances that exist now (pending or running); ``fallback``: the on-demand type
    of the same shape (None: the burst waits)."""
    fails = [f for f in failures if f.code in CAPACITY_CODES and f.t >= s.restored_at]
    where = f" in {fails[-1].az}" if fails and fails[-1].az else (f" in {s.az}" if s.az else "")
    goes = (f"burst moved to on-demand ({fallback})" if fallback
            else "no on-demand type of that shape: burst waits")

    def cap(cooldown: float, since: float, why: str) -> tuple[TypeState, list[Decision]]:
        c, at = max(0, running), time.strftime("%H:%M:%S", time.localtime(since))
        ns = TypeState("capped", since, now + cooldown, cooldown, c, s.restored_at,
                       s.failures + len(fails), fails[-1].code if fails else s.code,
                       (fails[-1].az if fails else s.az) or s.az)
        msg = (f"spot {instance_type} unavailable{where} since {at} ({ns.code} x{len(fails)}): "
               f"{node_type} capped at {c} worker(s), {goes}; {why} in {int(cooldown)} s")
        return ns, [Decision("cap", node_type, c, msg, ns.code)]

    if s.status == "ok":
        if fails:
            return cap(cfg.cooldown_s, fails[0].t, "spot is tried again")
        return s, []
    if s.status == "capped":
        s = replace(s, failures=s.failures + len(fails))
        if now >= s.until:
            ns = replace(s, status="probing", until=now + cfg.probe_s, cap=None, restored_at=now)
            msg = (f"cooldown over: {node_type} back to max_workers={original_max}; "
                   f"probing spot {instance_type} for {int(cfg.probe_s)} s")
            return ns, [Decision("restore", node_type, original_max, msg, "cooldown")]
        if s.cap is not None and running < s.cap:  # a capped spot node went away: do not refill it
            ns = replace(s, cap=running)
            msg = f"{node_type}: {s.cap - running} capped spot node(s) gone; cap follows down to {running}"
            return ns, [Decision("cap", node_type, running, msg, "follow")]
        return s, []
    # probing
    if fails:
        since = s.since if s.since is not None else fails[0].t
        return cap(min(cfg.max_cooldown_s, max(cfg.cooldown_s, s.cooldown_s) * cfg.backoff), since,
                   "still unavailable after the cooldown; backing off, next try")
    if now >= s.until:
        msg = (f"spot {instance_type}: no capacity error in the {int(cfg.probe_s)} s after the restore: "
               f"{node_type} takes bursts again")
        return TypeState(restored_at=s.restored_at), [Decision("note", node_type, None, msg, "recovered")]
    return s, []


# --- the cluster YAML ---------------------------------------------------------------------------

def spot_node_types(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Spot worker types -> {instance_type, max_workers, min_workers, fallback}; fallback is the
    on-demand worker type with the same InstanceType (the first in config order), or None."""
    types = cfg.get("available_node_types") or {}
    head = cfg.get("head_node_type")

    def market(nc: dict[str, Any]) -> str:
        imo = nc.get("InstanceMarketOptions") or {}
        return "spot" if str(imo.get("MarketType", "")).lower() == "spot" else "on-demand"

    out: dict[str, dict[str, Any]] = {}
    for name, t in types.items():
        nc = t.get("node_config") or {}
        if name == head or market(nc) != "spot":
            continue
        itype = nc.get("InstanceType", "")
        fb = next((n for n, o in types.items() if n not in (name, head)
                   and market(o.get("node_config") or {}) == "on-demand"
                   and (o.get("node_config") or {}).get("InstanceType") == itype), None)
        out[name] = {"instance_type": itype,
                     "max_workers": int(t.get("max_workers", cfg.get("max_workers", 0))),
                     "min_workers": int(t.get("min_workers", 0)), "fallback": fb}
    return out


def edit_node_type(path: Path, node_type: str, edit: Callable[[Any], bool]) -> bool:
    """Round-trip edit of one node type (ruamel keeps comments, order and quoting), written to a
    temp file and renamed so the autoscaler never reads half a file. ``edit`` changes the node
    type's mapping in place and says whether anything changed; nothing is written if not."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    doc = y.load(path.read_text())
    if not edit(doc["available_node_types"][node_type]):
        return False
    tmp = path.with_name(f".{path.name}.guard.tmp")
    with open(tmp, "w") as fh:
        y.dump(doc, fh)
    os.replace(tmp, path)
    return True


def set_node_type_limits(path: Path, node_type: str, max_workers: int,
                         min_workers: int | None = None) -> bool:
    """Set a node type's max_workers (and min_workers) in the YAML. Returns False when nothing had
    to change."""

    def edit(nt: Any) -> bool:
        changed = nt.get("max_workers") != max_workers
        nt["max_workers"] = max_workers
        if min_workers is not None and nt.get("min_workers", 0) != min_workers:
            nt["min_workers"] = min_workers
            changed = True
        return changed

    return edit_node_type(path, node_type, edit)


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def cluster_region(flag: str | None, config: Path) -> str | None:
    """The region whose instances the guard counts: ``--region``, else the cluster's own
    ``provider.region`` in the YAML the autoscaler reads (what `ray up` launched in). Never a default
    region: a guard counting another region's instances would see none and uncap spot at once."""
    import yaml

    if flag:
        return flag
    try:
        cfg = load_yaml(config)
    except (OSError, yaml.YAMLError):
        return None
    provider = cfg.get("provider") if isinstance(cfg, dict) else None
    region = provider.get("region") if isinstance(provider, dict) else None
    return str(region) if region else None


# --- failure sources ------------------------------------------------------------------------------

class TwinEventsSource:
    """Local target: capacity_error events from the twin's control API (exact AWS code and AZ)."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.since = 0

    def poll(self, spot_types: dict[str, dict[str, Any]]) -> list[Failure]:
        with urllib.request.urlopen(f"{self.endpoint_url}/raylab/events?since={self.since}", timeout=5) as r:
            events = json.loads(r.read())["events"]
        if events:
            self.since = max(e["seq"] for e in events)
        return failures_from_twin_events(events, spot_types)


def failures_from_twin_events(events: Iterable[dict[str, Any]],
                              spot_types: dict[str, dict[str, Any]]) -> list[Failure]:
    out = []
    for e in events:
        if e.get("kind") != "capacity_error" or e.get("market") != "spot":
            continue
        for name, t in spot_types.items():
            if t["instance_type"] == e.get("instance_type"):
                out.append(Failure(float(e["t"]), name, t["instance_type"], str(e.get("code", "")),
                                   str(e.get("az", ""))))
    return out


# Ray 2.60 v2 (instance_manager/node_provider.py) logs, in monitor.log (the code, never the AZ):
#   "Failed to launch 2 nodes of type ray.worker.spot: Node Launch Exception
#    (InsufficientInstanceCapacity): ..." (one line)
_LAUNCH_FAIL = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)?.*?"
                          r"Failed to launch (?P<n>\d+) nodes? of type (?P<type>\S+?):\s*(?P<rest>.*)$")
_CODE = re.compile(r"\((?P<code>[A-Za-z]+)\)|\b(?P<bare>" + "|".join(sorted(CAPACITY_CODES)) + r")\b")


def parse_monitor_line(line: str, spot_types: dict[str, dict[str, Any]], now: float) -> Failure | None:
    """AWS path: one monitor.log line -> a Failure of a spot node type, or None."""
    m = _LAUNCH_FAIL.search(line)
    if not m or m.group("type") not in spot_types:
        return None
    c = _CODE.search(m.group("rest"))
    if not c:
        return None
    code = c.group("code") or c.group("bare")
    t = now
    if m.group("ts"):
        t = time.mktime(time.strptime(m.group("ts"), "%Y-%m-%d %H:%M:%S"))
    return Failure(t, m.group("type"), spot_types[m.group("type")]["instance_type"], code)


class MonitorLogSource:
    """AWS path (on the head): follow Ray's monitor.log for launch failures of spot types."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0  # only failures from now on

    def poll(self, spot_types: dict[str, dict[str, Any]]) -> list[Failure]:
        if not self.path.exists():
            return []
        if self.path.stat().st_size < self.offset:  # a new Ray session: session_latest moved on
            self.offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        now = time.time()
        lines = data[:cut].decode("utf-8", "replace").splitlines()
        return [f for f in (parse_monitor_line(ln, spot_types, now) for ln in lines) if f]


def ec2_counter(ec2: Any, cluster_name: str) -> Callable[[], dict[str, int]]:
    """Instances (pending/running) per Ray node type of the cluster, from DescribeInstances."""

    def count() -> dict[str, int]:
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:ray-cluster-name", "Values": [cluster_name]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        types = ({t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("ray-user-node-type")
                 for page in pages for r in page["Reservations"] for i in r["Instances"])
        return dict(Counter(nt for nt in types if nt))

    return count


# --- the loop ----------------------------------------------------------------------------------------

@dataclass
class Guard:
    config_path: Path
    source: Any  # .poll(spot_types) -> list[Failure]
    count: Callable[[], dict[str, int]]
    emit: Callable[[dict[str, Any]], None]
    cfg: GuardConfig = field(default_factory=GuardConfig)
    state_path: Path | None = None  # originals and states survive a guard restart
    clock: Callable[[], float] = time.time
    states: dict[str, TypeState] = field(default_factory=dict)
    originals: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_path and self.state_path.exists():
            d = json.loads(self.state_path.read_text())
            self.originals = d.get("originals", {})
            self.states = {k: TypeState(**v) for k, v in d.get("states", {}).items()}

    def _save(self) -> None:
        if self.state_path:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"originals": self.originals,
                                       "states": {k: asdict(v) for k, v in self.states.items()}}))
            os.replace(tmp, self.state_path)

    def tick(self) -> list[Decision]:
        now = self.clock()
        types = spot_node_types(load_yaml(self.config_path))
        for name, t in types.items():
            # What to restore is the config as it stands while the guard has not capped this type:
            # learnt again on every tick in state "ok" (so edits made by the user or another tool
            # are kept), frozen while capped or probing (the YAML then holds the guard's values).
            if self.states.get(name, TypeState()).status == "ok" or name not in self.originals:
                self.originals[name] = {"max_workers": t["max_workers"], "min_workers": t["min_workers"]}
        failures = self.source.poll(types)
        counts = self.count()
        done: list[Decision] = []
        for name, t in types.items():
            orig = self.originals[name]
            st, decisions = step(self.states.get(name, TypeState()), node_type=name,
                                 instance_type=t["instance_type"], now=now,
                                 failures=[f for f in failures if f.node_type == name],
                                 running=counts.get(name, 0), original_max=orig["max_workers"],
                                 fallback=t["fallback"], cfg=self.cfg)
            self.states[name] = st
            for d in decisions:
                if d.kind == "cap" and d.max_workers is not None:
                    set_node_type_limits(self.config_path, name, d.max_workers,
                                         min(orig["min_workers"], d.max_workers))
                elif d.kind == "restore" and d.max_workers is not None:
                    set_node_type_limits(self.config_path, name, orig["max_workers"], orig["min_workers"])
                self._say(now, d, st.status)
                done.append(d)
        self._save()
        return done

    def restore_all(self) -> None:
        """Put every capped type back as the user wrote it (guard shutdown)."""
        for name, orig in self.originals.items():
            if self.states.get(name, TypeState()).status == "capped":
                n = orig["max_workers"]
                set_node_type_limits(self.config_path, name, n, orig["min_workers"])
                msg = f"guard stopped: {name} back to max_workers={n}"
                self._say(self.clock(), Decision("restore", name, n, msg, "guard stopped"), "ok")
                self.states[name] = TypeState()
        self._save()

    def _say(self, now: float, d: Decision, status: str) -> None:
        self.emit({"t": round(now, 3), "kind": f"guard_{d.kind}", "node_type": d.node_type,
                   "max_workers": d.max_workers, "reason": d.reason, "message": d.message, "status": status})


def emitter(events_file: Path | None, twin_url: str | None) -> Callable[[dict[str, Any]], None]:
    """Guard events go to a JSON-lines file and, on the local target, into the twin's timeline."""

    def emit(ev: dict[str, Any]) -> None:
        line = json.dumps(ev, sort_keys=True)
        print(line, flush=True)
        if events_file:
            with open(events_file, "a") as fh:
                fh.write(line + "\n")
        if twin_url:
            try:
                req = urllib.request.Request(f"{twin_url.rstrip('/')}/raylab/spot/event", method="POST",
                                             data=json.dumps(ev).encode(),
                                             headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=5).close()
            except OSError:
                pass  # the file has it; the timeline is best effort

    return emit


def main(argv: list[str] | None = None) -> int:
    """``python -m raylab.spot.guard --config YAML --cluster-name N (--twin URL | --monitor-log PATH)``."""
    import argparse
    import signal
    import threading

    ap = argparse.ArgumentParser(prog="python -m raylab.spot.guard", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="the autoscaling YAML the autoscaler reads")
    ap.add_argument("--cluster-name", required=True)
    ap.add_argument("--twin", help="local target: the twin's URL (events source and EC2 endpoint)")
    ap.add_argument("--monitor-log", type=Path, help="AWS path: Ray's monitor.log on the head")
    ap.add_argument("--region", help="default: provider.region of --config (the cluster's own region)")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--cooldown", type=float, default=GuardConfig.cooldown_s)
    ap.add_argument("--max-cooldown", type=float, default=GuardConfig.max_cooldown_s)
    ap.add_argument("--probe", type=float, default=GuardConfig.probe_s)
    ap.add_argument("--events", type=Path, help="append guard events (JSON lines) here")
    ap.add_argument("--state", type=Path, help="guard state file (originals survive a restart)")
    a = ap.parse_args(argv)
    a.region = cluster_region(a.region, a.config)
    if not a.region:
        ap.error(f"no region: pass --region, or give {a.config} a provider.region")
    import boto3

    if a.twin:
        source: Any = TwinEventsSource(a.twin)
        ec2 = boto3.client("ec2", region_name=a.region, endpoint_url=a.twin,
                           aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                           aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    elif a.monitor_log:
        source = MonitorLogSource(a.monitor_log)
        ec2 = boto3.client("ec2", region_name=a.region)
    else:
        ap.error("give --twin (local target) or --monitor-log (AWS)")
    g = Guard(a.config, source, ec2_counter(ec2, a.cluster_name), emitter(a.events, a.twin),
              GuardConfig(a.cooldown, a.max_cooldown, probe_s=a.probe), state_path=a.state)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        try:
            g.tick()
        except Exception as e:  # noqa: BLE001 - keep guarding; say what went wrong
            g.emit({"t": round(time.time(), 3), "kind": "guard_error", "message": f"{type(e).__name__}: {e}"})
        stop.wait(a.interval)
    g.restore_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
