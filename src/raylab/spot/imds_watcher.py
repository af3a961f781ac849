"""The spot interruption watcher: one small process beside every worker node's Ray.

It polls IMDSv2 every few seconds (AWS advises 5 s): ``spot/instance-action`` and
``events/recommendations/rebalance``. On an interruption notice it drains its own Ray node with
``DRAIN_NODE_REASON_PREEMPTION`` and the notice's time as the deadline, so Ray schedules no new
task there while running tasks get the notice time to finish (Ray itself does not enforce the
deadline; the instance simply goes away). A rebalance recommendation is logged (and drains only
with ``--drain-on-rebalance``). Every step is one JSON line in the log.

With ``--release-before S`` (the AWS workers' start command passes it; a machine that runs one Ray
node only) the watcher also *releases* a drained node S seconds before its deadline: it kills this
node's task workers (processes titled ``ray::...``), so each running task fails now, while the node is
still on the network, and its owner retries it on another node. Without that, the tasks of a reclaimed
node look RUNNING until the owner's gRPC keepalive notices the silently vanished host: measured in the
AWS rehearsal, two tasks stayed RUNNING for over 5 minutes after the GCS had marked their node dead.
The raylet stays up, so the GCS still records the node's death as a preemption.

It must never take the node down: IMDS errors (404, 401 -> new token, refused connections,
timeouts, garbage JSON) and GCS errors are logged and retried on the next poll.

Endpoint: ``--endpoint`` or ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore's variable), default
``http://169.254.169.254`` on EC2; on the local target a per-instance ``http://127.0.0.1:PORT/<id>``.

Run: ``python -m raylab.spot.imds_watcher --gcs-address HOST:PORT [--node-id HEX] [--log FILE]``.
Without ``--node-id`` it reads ``instance-id`` from IMDS and finds the Ray node with that
cloud instance id (Ray nodes started with ``RAY_CLOUD_INSTANCE_ID``), retrying until it appears.

It is one copied file run by the node's own Python, 3.8 or newer: standard library only at import,
no ``datetime.UTC`` (3.11) and no subscripted builtins evaluated at runtime (3.9).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, TextIO, Tuple  # noqa: UP035

DEFAULT_ENDPOINT = "http://169.254.169.254"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
PREEMPTION = "DRAIN_NODE_REASON_PREEMPTION"


class ImdsUnavailable(Exception):
    """IMDS did not answer (refused, timeout) or answered with an unexpected status."""


# --- IMDSv2 client (I/O) ---------------------------------------------------------------------

class ImdsClient:
    """IMDSv2 with a cached session token; a 401 fetches a new token and retries once."""

    def __init__(self, endpoint: str, timeout: float = 2.0, token_ttl: int = 21600) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl
        self._token: str | None = None
        self._token_expiry = 0.0

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310 - loopback/IMDS only
                return int(r.status), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode("utf-8", "replace") if e.fp else ""
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise ImdsUnavailable(f"{self.endpoint}: {getattr(e, 'reason', e)}") from e

    def token(self, refresh: bool = False) -> str:
        if refresh or self._token is None or time.time() > self._token_expiry - 60:
            status, body = self._request(
                "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)}
            )
            if status != 200 or not body:
                raise ImdsUnavailable(f"token request answered HTTP {status}")
            self._token, self._token_expiry = body.strip(), time.time() + self.token_ttl
        return self._token

    def get(self, path: str) -> tuple[int, str]:
        """GET a metadata path -> (status, body). 200 and 404 are normal answers."""
        status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token()})
        if status == 401:  # expired/revoked token (or IMDS restarted): new token, once
            status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token(True)})
        return status, body


# --- pure decisions --------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    kind: str  # "interruption" | "rebalance"
    action: str  # terminate|stop|hibernate, or "rebalance"
    time: datetime

    @property
    def deadline_ms(self) -> int:
        return int(self.time.timestamp() * 1000)


def parse_time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)  # noqa: UP017


def parse_instance_action(body: str) -> Notice:
    """``{"action": "terminate", "time": "2026-11-25T20:13:56Z"}`` -> Notice; ValueError if garbled."""
    d = json.loads(body)
    if not isinstance(d, dict) or "action" not in d or "time" not in d:
        raise ValueError(f"not an instance-action document: {body[:80]!r}")
    return Notice("interruption", str(d["action"]), parse_time(str(d["time"])))


def parse_rebalance(body: str) -> Notice:
    d = json.loads(body)
    if not isinstance(d, dict) or "noticeTime" not in d:
        raise ValueError(f"not a rebalance document: {body[:80]!r}")
    return Notice("rebalance", "rebalance", parse_time(str(d["noticeTime"])))


@dataclass(frozen=True)
class Poll:
    """What one poll saw: a notice per path, or an error string."""

    interruption: Notice | None = None
    rebalance: Notice | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class WatcherState:
    drained: bool = False
    drain_attempts: int = 0
    seen_interruption: Notice | None = None
    seen_rebalance: Notice | None = None
    consecutive_errors: int = 0
    deadline_ms: int | None = None  # of the accepted drain
    released: bool = False


@dataclass(frozen=True)
class Action:
    kind: str  # "log" | "drain" | "release"
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


MAX_DRAIN_ATTEMPTS = 5


def decide(state: WatcherState, poll: Poll, drain_on_rebalance: bool = False,
           now_ms: int = 0, release_before_s: float | None = None) -> tuple[WatcherState, list[Action]]:
    """Given what the poll saw (and, to release a drained node, the time), what to do (pure; the loop
    performs the actions)."""
    acts: list[Action] = []
    s = state
    if (release_before_s is not None and s.drained and not s.released and s.deadline_ms is not None
            and now_ms >= s.deadline_ms - release_before_s * 1000):
        s = replace(s, released=True)
        acts.append(Action("release", "release", {"deadline_ms": s.deadline_ms,
                                                  "before_s": release_before_s}))
    if poll.errors:
        s = replace(s, consecutive_errors=s.consecutive_errors + 1)
        # log the first error of a streak and then every 12th (once a minute at 5 s), not every poll
        if s.consecutive_errors == 1 or s.consecutive_errors % 12 == 0:
            acts.append(Action("log", "imds_error", {"errors": list(poll.errors),
                                                     "streak": s.consecutive_errors}))
    elif s.consecutive_errors:
        acts.append(Action("log", "imds_recovered", {"after_errors": s.consecutive_errors}))
        s = replace(s, consecutive_errors=0)
    if poll.rebalance and poll.rebalance != s.seen_rebalance:
        s = replace(s, seen_rebalance=poll.rebalance)
        acts.append(Action("log", "rebalance_recommendation", {"notice_time": _iso(poll.rebalance.time)}))
    target = poll.interruption or (poll.rebalance if drain_on_rebalance else None)
    if poll.interruption and poll.interruption != s.seen_interruption:
        s = replace(s, seen_interruption=poll.interruption)
        acts.append(Action("log", "interruption_notice", {"action": poll.interruption.action,
                                                          "time": _iso(poll.interruption.time)}))
    if target and not s.drained and s.drain_attempts < MAX_DRAIN_ATTEMPTS:
        s = replace(s, drain_attempts=s.drain_attempts + 1)
        acts.append(Action("drain", "drain", {"deadline_ms": target.deadline_ms, "kind": target.kind,
                                              "action": target.action, "time": _iso(target.time)}))
    return s, acts


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def poll_once(client: ImdsClient) -> Poll:
    """One round of GETs; never raises (errors become strings in the Poll)."""
    found: dict[str, Notice | None] = {"interruption": None, "rebalance": None}
    errors: list[str] = []
    for key, path, parse in (("interruption", ACTION_PATH, parse_instance_action),
                             ("rebalance", REBALANCE_PATH, parse_rebalance)):
        try:
            status, body = client.get(path)
            if status == 200:
                found[key] = parse(body)
            elif status != 404:
                errors.append(f"{path}: HTTP {status}")
        except ImdsUnavailable as e:
            errors.append(f"{path}: {e}")
            break  # the other path would fail the same way
        except ValueError as e:
            errors.append(f"{path}: unreadable answer: {e}")
        except Exception as e:  # noqa: BLE001 - the watcher must not die
            errors.append(f"{path}: {type(e).__name__}: {e}")
    return Poll(found["interruption"], found["rebalance"], tuple(errors))


# --- Ray side (I/O) --------------------------------------------------------------------------

Drainer = Callable[[str, str, int], Tuple[bool, str]]  # noqa: UP006 - evaluated at import


def gcs_drainer(gcs_address: str) -> Drainer:
    """drain_node through GCS (the same call as the hidden ``ray drain-node`` CLI)."""

    def drain(node_id: str, message: str, deadline_ms: int) -> tuple[bool, str]:
        import ray._raylet
        from ray.core.generated import autoscaler_pb2

        gcs = ray._raylet.GcsClient(address=gcs_address)
        accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value(PREEMPTION),
                                       message, deadline_ms)
        return bool(accepted), str(why or "")

    return drain


def find_node_id(gcs_address: str, instance_id: str) -> str | None:
    """The alive Ray node whose cloud instance id is ``instance_id`` (None if not there yet)."""
    import ray._raylet
    from ray.core.generated import gcs_pb2

    nodes = ray._raylet.GcsClient(address=gcs_address).get_all_node_info(timeout=10)
    for nid, info in nodes.items():
        if info.instance_id == instance_id and info.state == gcs_pb2.GcsNodeInfo.ALIVE:
            return nid.hex()
    return None


# Ray 2.60's titles of the node's own ``ray::`` processes that are not running a task
# (ray._private.ray_constants AGENT_PROCESS_TYPE_*, WORKER_PROCESS_TYPE_*; a unit test pins them):
# the raylet fate-shares with its agents, and idle or spill workers hold no task.
NOT_TASKS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::IDLE", "ray::SPILL_", "ray::RESTORE_")


def is_task_worker(title: str) -> bool:
    """A process title of a Ray worker running a task or an actor (pure)."""
    return title.startswith("ray::") and not title.startswith(NOT_TASKS)


def kill_task_workers(proc: str = "/proc") -> list[str]:
    """SIGKILL every process of this machine running a Ray task or actor (``is_task_worker``; the
    raylet, its agents and idle workers stay); returns "pid title" of each. Only for a machine that
    runs one Ray node (an EC2 instance, a rehearsal machine with its own PID namespace), never a
    shared host."""
    killed = []
    for d in os.listdir(proc):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(os.path.join(proc, d, "cmdline"), "rb") as f:
                title = f.read().split(b"\0")[0].decode("utf-8", "replace").strip()
        except OSError:
            continue
        if is_task_worker(title):
            try:
                os.kill(int(d), signal.SIGKILL)
                killed.append(f"{d} {title}")
            except OSError:
                pass
    return killed


# --- the loop ----------------------------------------------------------------------------------

@dataclass
class Watcher:
    client: ImdsClient
    drainer: Drainer
    node_id: str | None = None
    resolve_node: Callable[[], str | None] | None = None
    interval: float = 5.0
    drain_on_rebalance: bool = False
    out: TextIO = sys.stdout
    state: WatcherState = field(default_factory=WatcherState)
    clock: Callable[[], float] = time.time
    release_before: float | None = None  # seconds before the deadline to release a drained node
    releaser: Callable[[], list[str]] = field(default_factory=lambda: kill_task_workers)
    _resolve_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def log(self, event: str, **detail: Any) -> None:
        rec = {"ts": round(self.clock(), 3), "event": event, "node_id": self.node_id,
               "endpoint": self.client.endpoint, **detail}
        try:
            self.out.write(json.dumps(rec, sort_keys=True) + "\n")
            self.out.flush()
        except Exception:  # noqa: BLE001 - a full disk must not kill the node either
            pass

    def step(self) -> list[Action]:
        """One poll and its actions. Never raises."""
        try:
            poll = poll_once(self.client)
            self.state, acts = decide(self.state, poll, self.drain_on_rebalance,
                                      int(self.clock() * 1000), self.release_before)
            for a in acts:
                if a.kind == "log":
                    self.log(a.event, **a.detail)
                elif a.kind == "drain":
                    self._drain(a)
                elif a.kind == "release":
                    killed = self.releaser()
                    self.log("released", workers=killed, **a.detail)
            return acts
        except Exception as e:  # noqa: BLE001 - last line of defence
            self.log("watcher_error", error=f"{type(e).__name__}: {e}")
            return []

    def _resolve(self) -> None:
        """Find this node's Ray id (by its cloud instance id) if not known yet."""
        with self._resolve_lock:
            self._resolve_locked()

    def _resolve_locked(self) -> None:
        if self.node_id is None and self.resolve_node is not None:
            try:
                self.node_id = self.resolve_node()
                if self.node_id:
                    self.log("node_resolved")
            except Exception as e:  # noqa: BLE001
                self.log("node_resolve_error", error=f"{type(e).__name__}: {e}")

    def _drain(self, a: Action) -> None:
        self._resolve()
        if not self.node_id:
            self.log("drain_deferred", reason="Ray node id not known yet", **a.detail)
            self.state = replace(self.state, drain_attempts=self.state.drain_attempts - 1)
            return
        msg = f"spot {a.detail['action']} notice: instance goes away at {a.detail['time']}"
        try:
            accepted, why = self.drainer(self.node_id, msg, int(a.detail["deadline_ms"]))
        except Exception as e:  # noqa: BLE001
            accepted, why = False, f"{type(e).__name__}: {e}"
        if accepted:
            self.state = replace(self.state, drained=True, deadline_ms=int(a.detail["deadline_ms"]))
            self.log("drained", reason=PREEMPTION, message=msg, **a.detail)
        else:
            self.log("drain_failed", error=why, attempt=self.state.drain_attempts, **a.detail)

    def resolve_in_background(self, stop: threading.Event, every: float = 2.0) -> threading.Thread:
        """Find the Ray node id while nothing happens, so a notice drains within one poll (importing
        Ray takes seconds on a busy machine); until then a drain resolves it itself."""

        def loop() -> None:
            while self.node_id is None and not stop.is_set():
                self._resolve()
                if self.node_id is None:
                    stop.wait(every)

        t = threading.Thread(target=loop, name="resolve-node", daemon=True)
        t.start()
        return t

    def run(self, stop: threading.Event, exit_with_parent: bool = False) -> None:
        self.log("started", interval=self.interval)
        if self.resolve_node is not None:
            self.resolve_in_background(stop)
        parent = os.getppid()
        while not stop.is_set():
            self.step()
            stop.wait(self.interval)
            if exit_with_parent and os.getppid() != parent:
                self.log("parent_gone", parent=parent)
                break
        self.log("stopped", drained=self.state.drained)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m raylab.spot.imds_watcher",
                                 description="Drain this Ray node when EC2 announces a spot interruption.")
    ap.add_argument("--gcs-address", required=True, help="Ray GCS address HOST:PORT")
    ap.add_argument("--node-id", help="this node's Ray node id (hex); default: found by instance id")
    ap.add_argument("--instance-id", help="this node's EC2 instance id; default: asked from IMDS")
    ap.add_argument("--endpoint",
                    default=os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEFAULT_ENDPOINT))
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between polls (AWS advises 5)")
    ap.add_argument("--drain-on-rebalance", action="store_true")
    ap.add_argument("--log", help="append JSON lines here (default: stdout)")
    ap.add_argument("--release-before", type=float, metavar="S",
                    help="S seconds before a drained node's deadline, kill its task workers so their "
                         "tasks are retried elsewhere now (a machine that runs one Ray node only)")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="stop when the process that started it goes away (the local twin)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: TextIO = open(args.log, "a", buffering=1) if args.log else sys.stdout  # noqa: SIM115
    client = ImdsClient(args.endpoint)

    def resolve() -> str | None:
        iid = args.instance_id
        if not iid:
            status, body = client.get(INSTANCE_ID_PATH)
            if status != 200:
                return None
            iid = body.strip()
        return find_node_id(args.gcs_address, iid)

    w = Watcher(client, gcs_drainer(args.gcs_address), node_id=args.node_id,
                resolve_node=None if args.node_id else resolve, interval=args.interval,
                drain_on_rebalance=args.drain_on_rebalance, out=out, release_before=args.release_before)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    w.run(stop, exit_with_parent=args.exit_with_parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
