"""The twin's "machines": every running EC2 instance of a registered Ray cluster is a real local Ray node.

Runs inside the twin process. A reconcile loop compares moto's instances with the node processes:

- an instance of a registered cluster (tag ``ray-cluster-name``, not ``ray-node-type=head``) that is
  ``running`` and has no node -> queue a boot: ``ray start --address=<gcs> --block`` in its own
  session with ``RAY_CLOUD_INSTANCE_ID`` / ``RAY_NODE_TYPE_NAME``, its own short temp root, dynamic
  ports, and resources from the cluster's node type (instance vCPUs / scale);
- a node whose instance left ``running`` (terminated by the autoscaler, by an outside
  TerminateInstances, stopped, reclaimed) -> stop its process group (SIGTERM, then SIGKILL);
- a node process that died by itself -> terminate its instance, so the cloud and Ray agree.

Boots are asynchronous and run together, as instances launched together boot together on EC2,
bounded by what the machine can take (``boot_slots``: 1 per core, at least 2); stops run on
their own threads, so no EC2 call ever waits for a Ray process. A node runs only the processes a
worker of the lab needs: its raylet with the two agents the raylet requires (dashboard agent,
runtime-env agent), without the log monitor (``--include-log-monitor=false``: the lab's tasks print
nothing a driver shows, and it was 17% of a node's boot CPU; bench/node_boot.py). A node whose raylet
gave up waiting for its agents (Ray's fixed 15 s, missed on shared cores under load) boots again.

A node's `ray start` is forked by the twin's node launcher (``launcher.py``: Ray's unmodified CLI,
imported once when the first cluster registers), so the ~1 CPU-second of importing it is not paid
again by every node on the shared cores; an EC2 instance pays it on its own. Without the launcher
(``RAYLAB_TWIN_LAUNCHER=0``, or if it cannot start) each node is a new process, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylab.procs import Records, stop_group
from raylab.proctable import MARK_ENV, start_time
from raylab.state import pid_alive
from raylab.targets.local.launcher import LaunchedNode, Launcher, LauncherError

log = logging.getLogger("raylab.twin.machines")

TAG_CLUSTER = "ray-cluster-name"
TAG_KIND = "ray-node-type"  # Ray's TAG_RAY_NODE_KIND: head | worker | unmanaged
TAG_TYPE = "ray-user-node-type"
# Variables a node must not inherit from the twin's (or the head monitor's) environment.
_DROP_ENV = ("RAY_CLOUD_INSTANCE_ID", "RAY_NODE_TYPE_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "RAY_ADDRESS")
RAYLET_READY_TIMEOUT_S = 90.0
MAX_BOOT_SLOTS = 16
# Ray 2.60's raylet gives its agents 15 s to write their port files (no setting changes it), then aborts:
# "Timed out waiting for file <session>/metrics_agent_port_<node id>". On EC2 each node has its own cores;
# on the twin every node shares this machine's, and under load an agent can take longer than that to start
# (measured: 19 s at load average 13). That failure is the twin's, not the lab's: the twin boots the node
# again (the instance stays running) instead of leaving Ray a node that never joins.
AGENT_WAIT_GAVE_UP = "Timed out waiting for file"
AGENT_PORT_FILES = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port",
                    "runtime_env_agent_port")
BOOT_RETRIES = 2
LAUNCHER_ENV = "RAYLAB_TWIN_LAUNCHER"
LAUNCHER_OFF = ("0", "false", "off", "no")  # any other value (or none): the launcher is used


def boot_slots(cpus: int | None) -> int:
    """How many nodes boot at once on a machine with ``cpus`` cores (pure): one per core, at least two.
    A node's boot is ~2.6 CPU-seconds that keep both cores of an idle 2-core machine busy for ~1.6 s
    (the raylet and its two agents start side by side). More boots at once only share the cores, so
    all of them come up late; one per core brings the first ones up early, and their slots run tasks
    sooner (stage 4 on 2 cores: median 1.24x the ideal with 2 slots, 1.27x with 4, within the runs'
    spread; README, "Where a ramp's CPU goes")."""
    return max(2, min(MAX_BOOT_SLOTS, cpus or 1))


@dataclass
class Machine:
    instance_id: str
    cluster: str
    node_type: str
    instance_type: str
    market: str
    state: str = "queued"  # queued -> booting -> running -> stopping -> stopped | exited | failed
    pid: int | None = None
    temp_dir: str = ""
    log: str = ""
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    boot_retries: int = 0  # boots again after Ray's agent wait gave up (see AGENT_WAIT_GAVE_UP)
    start_time: int | None = None  # /proc/<pid>/stat's start time: the pid is ours only while it matches
    proc: subprocess.Popen[bytes] | LaunchedNode | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "proc"}


@dataclass
class ClusterReg:
    """What the target registers for one cluster (PUT /raylab/clusters/<name>)."""

    name: str
    gcs_address: str
    temp_root: str
    node_types: dict[str, dict[str, Any]]  # node type -> {"resources": {...}}
    object_store_memory: int = 200 * 1024**2

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ClusterReg:
        return cls(name=name, gcs_address=str(d["gcs_address"]), temp_root=str(d["temp_root"]),
                   node_types=dict(d.get("node_types", {})),
                   object_store_memory=int(d.get("object_store_memory", 200 * 1024**2)))


def agents_ready(temp_dir: str) -> bool:
    """Has this node's every agent written its port file (what the raylet waits for before it registers)?"""
    session = Path(temp_dir) / "session_latest"
    return all(any(session.glob(f"{name}_*")) for name in AGENT_PORT_FILES)


def agents_gave_up(temp_dir: str) -> bool:
    """Did this node's raylet abort because its agents were not up within Ray's 15 s (its raylet.out)?"""
    try:
        with open(Path(temp_dir) / "session_latest" / "logs" / "raylet.out", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            return AGENT_WAIT_GAVE_UP.encode() in f.read()
    except OSError:
        return False


def node_command(ray_bin: str, reg: ClusterReg, node_type: str, temp_dir: str) -> list[str]:
    """The `ray start` line for a worker node of ``node_type`` (pure: tested without Ray)."""
    res = dict(reg.node_types.get(node_type, {}).get("resources", {}))
    cpus = int(res.pop("CPU", 1))
    gpus = int(res.pop("GPU", 0))
    memory = res.pop("memory", None)
    res.pop("object_store_memory", None)
    cmd = [ray_bin, "start", f"--address={reg.gcs_address}", "--block", "--node-ip-address=127.0.0.1",
           f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", f"--object-store-memory={reg.object_store_memory}",
           "--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0",
           "--include-log-monitor=false", "--disable-usage-stats"]
    if gpus:
        cmd.append(f"--num-gpus={gpus}")
    if memory:
        cmd.append(f"--memory={int(memory)}")
    if res:
        import json

        cmd.append(f"--resources={json.dumps(res, sort_keys=True)}")
    return cmd


def node_env(base: dict[str, str], instance_id: str, node_type: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _DROP_ENV}
    env.update({
        "RAY_CLOUD_INSTANCE_ID": instance_id,
        "RAY_NODE_TYPE_NAME": node_type,
        # v2 has drained the node already when it terminates the instance
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",
        "RAY_AUTH_MODE": base.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    return env


class Machines:
    """Instance -> local Ray node manager. ``snapshot`` returns moto's instances as plain dicts."""

    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]],
                 terminate: Callable[[str, str], None], event: Callable[..., Any], log_dir: Path) -> None:
        self._snapshot = snapshot
        self._terminate = terminate
        self._event = event
        self.log_dir = log_dir
        self.lock = threading.RLock()
        self.machines: dict[str, Machine] = {}
        self.clusters: dict[str, ClusterReg] = {}
        self.boot_delay_s = 0.0
        self.max_concurrent_boots = boot_slots(os.cpu_count())
        self.boot_failure_types: set[str] = set()
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        # the twin runs with the work dir marker (raylab.procs): its nodes are recorded there too
        marker = os.environ.get(MARK_ENV)
        self.records = Records(Path(marker)) if marker else None
        # Ray's CLI imported once and forked per node (launcher.py); RAYLAB_TWIN_LAUNCHER=0: a process each
        self.use_launcher = os.environ.get(LAUNCHER_ENV, "1").strip().lower() not in LAUNCHER_OFF
        self.launcher: Launcher | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        t = threading.Thread(target=self._reconcile_loop, name="machines-reconcile", daemon=True)
        t.start()
        self._threads.append(t)
        for i in range(MAX_BOOT_SLOTS):  # boot workers; the slot count bounds concurrency
            b = threading.Thread(target=self._boot_loop, name=f"machines-boot-{i}", daemon=True)
            b.start()
            self._threads.append(b)
        self._active_boots = 0

    def shutdown(self) -> None:
        """Stop every node process (the twin is going away)."""
        self._stop.set()
        with self.lock:
            ms = [m for m in self.machines.values() if m.pid]
        threads = [threading.Thread(target=stop_group, args=(m.pid, 5.0)) for m in ms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        if self.launcher is not None:  # after its nodes: it reaps them
            self.launcher.close()

    # --- registration --------------------------------------------------------------------
    def register(self, name: str, d: dict[str, Any]) -> ClusterReg:
        reg = ClusterReg.from_dict(name, d)
        with self.lock:
            self.clusters[name] = reg
            if self.use_launcher and self.launcher is None and not self._stop.is_set():
                # started with the first cluster (its import of Ray's CLI is done before the first
                # worker boots); it ends when the twin closes its stdin, or dies
                base = node_env(dict(os.environ), "", "")
                for k in ("RAY_CLOUD_INSTANCE_ID", "RAY_NODE_TYPE_NAME"):
                    base.pop(k, None)
                self.launcher = Launcher(self.log_dir / "launcher.log", base, self.records)
        return reg

    def unregister(self, name: str) -> None:
        with self.lock:
            self.clusters.pop(name, None)

    def persist(self) -> None:
        """machines.json: every node process by pid, so raylab can stop them even if the twin dies."""
        import json

        with self.lock:
            data = {m.instance_id: {"pid": m.pid, "pgid": m.pid, "start": m.start_time, "state": m.state,
                                    "cluster": m.cluster, "temp_dir": m.temp_dir}
                    for m in self.machines.values() if m.pid}
        tmp = self.log_dir.parent / "machines.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.log_dir.parent / "machines.json")

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m.as_dict() for m in self.machines.values()]

    # --- reconcile -------------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # noqa: BLE001 - keep the loop alive; moto may mutate mid-iteration
                log.exception("machines reconcile failed")
            self._stop.wait(0.5)

    def reconcile_once(self) -> None:
        instances = {i["id"]: i for i in self._snapshot()}
        with self.lock:
            for iid, inst in instances.items():
                tags = inst["tags"]
                cluster = tags.get(TAG_CLUSTER)
                if not cluster or cluster not in self.clusters or tags.get(TAG_KIND) == "head":
                    continue
                m = self.machines.get(iid)
                # a stopped node whose instance runs again (stop/start) boots again; an exited or
                # failed one does not (its instance is being terminated, or Ray never starts there)
                if inst["state"] == "running" and (m is None or m.state == "stopped"):
                    self._queue_boot(inst, cluster)
            for iid, m in list(self.machines.items()):
                now = instances.get(iid)
                gone = now is None or now["state"] != "running"
                if m.state in ("queued", "booting", "running") and gone:
                    why = now["state"] if now else "gone"
                    self._begin_stop(m, f"instance {why}")
                elif m.state == "booting" and m.boot_retries < BOOT_RETRIES and agents_gave_up(m.temp_dir):
                    self._boot_again(m)  # at once: `ray start --block` notices its raylet gone ~15 s later
                elif m.state in ("booting", "running") and m.proc is not None and m.proc.poll() is not None:
                    m.exit_code = m.proc.returncode
                    if m.boot_retries < BOOT_RETRIES and agents_gave_up(m.temp_dir):
                        self._boot_again(m)
                        continue
                    m.state = "exited"
                    m.ended_at = time.time()
                    self._event("node_exit", instance_id=iid, node_type=m.node_type, exit_code=m.exit_code)
                    threading.Thread(target=self.persist, daemon=True).start()
                    threading.Thread(target=self._terminate, args=(iid, "Ray node process exited"),
                                     daemon=True).start()

    def _queue_boot(self, inst: dict[str, Any], cluster: str) -> None:
        m = Machine(instance_id=inst["id"], cluster=cluster, node_type=inst["tags"].get(TAG_TYPE, ""),
                    instance_type=inst["type"], market=inst["market"])
        self.machines[m.instance_id] = m
        self._queue.put(m.instance_id)

    def _boot_again(self, m: Machine) -> None:
        """Queue a node whose raylet gave up on its agents for another boot, at once (lock held)."""
        m.boot_retries += 1
        self._event("node_boot_retry", instance_id=m.instance_id, node_type=m.node_type,
                    retry=m.boot_retries, exit_code=m.exit_code,
                    why="Ray's raylet gave up waiting 15 s for its agents (shared cores)")
        if m.pid:  # what is left of the first boot's session (an agent still starting)
            threading.Thread(target=stop_group, args=(m.pid, 5.0), daemon=True).start()
        m.state, m.proc, m.pid, m.started_at, m.ready_at = "queued", None, None, None, None
        m.queued_at = time.time() - self.boot_delay_s  # the instance booted already: no second boot delay
        self._queue.put(m.instance_id)

    def _begin_stop(self, m: Machine, reason: str) -> None:
        prev = m.state
        m.state = "stopping"
        self._event("node_stop", instance_id=m.instance_id, node_type=m.node_type, reason=reason, was=prev)

        def run() -> None:
            if m.pid:
                stop_group(m.pid, timeout=5.0)
                if m.proc is not None:
                    with contextlib.suppress(Exception):
                        m.proc.wait(timeout=1)
            with self.lock:
                m.state = "stopped"
                m.ended_at = time.time()
            self.persist()

        threading.Thread(target=run, name=f"stop-{m.instance_id}", daemon=True).start()

    # --- boots ---------------------------------------------------------------------------------
    def _boot_loop(self) -> None:
        while not self._stop.is_set():
            try:
                iid = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self.lock:
                m = self.machines.get(iid)
                if m is None or m.state != "queued":
                    continue
                delay = m.queued_at + self.boot_delay_s - time.time()
            if delay > 0:
                self._stop.wait(delay)
            self._acquire_slot()
            try:
                self._boot(iid)
            except Exception as e:  # noqa: BLE001 - a failed boot is an event, not a crash
                log.exception("boot of %s failed", iid)
                with self.lock:
                    m = self.machines.get(iid)
                    if m is not None:
                        m.state = "failed"
                        m.ended_at = time.time()
                self._event("node_boot_failed", instance_id=iid, error=str(e))
            finally:
                self._release_slot()

    def _start_node(self, iid: str, cmd: list[str], env: dict[str, str],
                    log_path: str) -> subprocess.Popen[bytes] | LaunchedNode:
        """Start a node's `ray start`: forked by the launcher, else as a process (lock held)."""
        what = f"ray node {iid}"
        if self.launcher is not None:
            if self.records is not None:
                env = {**env, MARK_ENV: str(self.records.root)}
            body = Records.body(cmd, what=what, owner="twin", lab="", ephemeral=True) if self.records else b""
            try:  # recorded by pid + start time by the child itself, before it runs
                return self.launcher.launch(iid, cmd[1:], env, log_path,
                                            str(self.records.dir) if self.records else "", body)
            except LauncherError as e:
                self._event("node_launcher_unavailable", error=str(e))
                log.warning("node launcher unavailable (%s): nodes start as processes", e)
                self.launcher = None
        out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            if self.records is not None:  # recorded by pid + start time; stopped if the twin dies
                return self.records.start(cmd, what=what, owner="twin", lab="", ephemeral=True, env=env,
                                          stdout=out)
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        finally:
            out.close()

    def _acquire_slot(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                if self._active_boots < max(1, self.max_concurrent_boots):
                    self._active_boots += 1
                    return
            time.sleep(0.2)

    def _release_slot(self) -> None:
        with self.lock:
            self._active_boots = max(0, self._active_boots - 1)

    def _boot(self, iid: str) -> None:
        if self.launcher is not None:  # its first node waits for Ray's CLI to be imported, unlocked
            self.launcher.wait_ready()
        with self.lock:
            m = self.machines.get(iid)
            if m is None or m.state != "queued":
                return
            reg = self.clusters.get(m.cluster)
            if reg is None:
                m.state = "failed"
                return
            if m.node_type in self.boot_failure_types:
                m.state = "failed"
                m.ended_at = time.time()
                self._event("node_boot_failed", instance_id=iid, node_type=m.node_type,
                            error="injected boot failure: Ray never starts on this instance")
                return
            m.state = "booting"
            m.temp_dir = f"{reg.temp_root}/{iid[-8:]}" + (f"r{m.boot_retries}" if m.boot_retries else "")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            m.log = str(self.log_dir / f"node-{iid}.log")
            cmd = node_command(self.ray_bin, reg, m.node_type, m.temp_dir)
            env = node_env(dict(os.environ), iid, m.node_type)
            Path(m.temp_dir).mkdir(parents=True, exist_ok=True)
            m.proc = self._start_node(iid, cmd, env, m.log)
            m.pid = m.proc.pid
            m.start_time = start_time(m.pid)
            m.started_at = time.time()
        self.persist()
        self._event("node_boot", instance_id=iid, node_type=m.node_type, pid=m.pid)
        # Hold the boot slot until the raylet is up (its socket exists) with every agent it waits for
        # (their port files), or the node gave up: the agents' start-up is most of a boot's CPU.
        deadline = time.monotonic() + RAYLET_READY_TIMEOUT_S
        sock = Path(m.temp_dir) / "session_latest" / "sockets" / "raylet"
        while time.monotonic() < deadline and not self._stop.is_set():
            if m.state != "booting" or not pid_alive(m.pid):
                return
            if sock.exists() and agents_ready(m.temp_dir) and not agents_gave_up(m.temp_dir):
                with self.lock:
                    if m.state == "booting":
                        m.state = "running"
                        m.ready_at = time.time()
                self._event("node_running", instance_id=iid, node_type=m.node_type,
                            boot_s=round(time.time() - (m.started_at or time.time()), 2))
                return
            time.sleep(0.2)
