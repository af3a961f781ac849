"""Benchmark: what one local Ray worker node costs to boot, and N of them booted together.

The local target's twin turns every running instance into a real Ray worker node (`ray start
--address=... --block`, targets/local/machines.py). This bench starts a bare Ray head (its own temp
dir and ports, loopback only, stopped by its pid) and boots N worker nodes at once with the twin's
own command line, for each variant of Ray's per-node switches, and prints per node:

- wall time from the process start to its raylet socket (the twin's "running") and to the GCS
  seeing the node ALIVE (what the autoscaler waits for);
- CPU-seconds spent by the node's whole process group in its first ``--settle`` seconds;
- CPU-seconds per minute once every node is alive (its idle cost: agents, reporter, `ray start`'s
  wait loop);
- which processes the node runs (raylet, agents, log monitor, prestarted workers).

Variants: ``ray-default`` is `ray start` as Ray ships it; ``twin`` is the twin's command line
(`node_command`, Ray's switches and environment only, no patches) as a new process each;
``launcher`` is the same command line forked by the twin's launcher (Ray's CLI imported once). The
ratio twin / ray-default is the figure in the README's benchmark table. ``quiet`` (``--variants
twin,quiet``) adds Ray's switches for an idle node's periodic work, to measure what they save.

  .venv/bin/python bench/node_boot.py [--nodes 3] [--cpus 4] [--settle 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from raylab.procs import free_port, stop_group  # noqa: E402
from raylab.targets.local.head import loopback_env, ray_bin  # noqa: E402
from raylab.targets.local.launcher import Launcher  # noqa: E402
from raylab.targets.local.machines import ClusterReg, node_command, node_env  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, str] | None:
    """(session id, cpu seconds incl. reaped children, comm) of one process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()
    sid = int(f[3])
    cpu = sum(int(x) for x in f[11:15]) / TICK  # utime stime cutime cstime
    return sid, cpu, comm


def session_usage(sid: int) -> tuple[float, list[str]]:
    """CPU-seconds and "name cpu" of every process in session ``sid``."""
    total, names = 0.0, []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        s = _stat(int(d))
        if s and s[0] == sid:
            total += s[1]
            try:
                argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
                name = next((Path(a.decode()).name for a in argv[:3] if a.endswith(b".py")), s[2])
            except OSError:
                name = s[2]
            names.append(f"{name} {s[1]:.2f}")
    return total, sorted(names)


def alive_nodes(gcs: str) -> set[str]:
    from ray._raylet import GcsClient

    infos = GcsClient(address=gcs).get_all_node_info(timeout=5)
    return {n.hex() for n, info in infos.items() if info.state == 0}  # ALIVE


VARIANTS = {
    # what `ray start --address` does out of the box
    "ray-default": lambda cmd: ([c for c in cmd if c not in ("--include-log-monitor=false",)], {}),
    # the twin's own command line and environment (targets/local/machines.py)
    "twin": lambda cmd: (cmd, {}),
    # the twin's launcher: the same command line, Ray's CLI imported once and forked per node
    "launcher": lambda cmd: (cmd, {}),
    # the twin plus Ray's switches for an idle node's periodic work: the reporter every 60 s instead
    # of 5 s, the agents watch their raylet by a pipe instead of polling it every 0.4 s, no metrics.
    # Not used by the twin: measured in stage 4, it did not change the makespan (README).
    "quiet": lambda cmd: (cmd, {"REPORTER_UPDATE_INTERVAL_MS": "60000",
                                "RAY_enable_pipe_based_agent_to_parent_health_check": "1",
                                "RAY_enable_metrics_collection": "0"}),
}


_LAUNCHER: list[Launcher] = []


def launcher() -> Launcher:
    """The twin's node launcher, started once (its import of Ray's CLI is paid once per twin)."""
    if not _LAUNCHER:
        env = node_env({**os.environ, **loopback_env(dict(os.environ))}, "", "")
        _LAUNCHER.append(Launcher(Path(tempfile.gettempdir()) / f"rb-launcher-{os.getpid()}.log", env))
        if not _LAUNCHER[0].wait_ready():
            raise SystemExit(f"the node launcher is not ready: {_LAUNCHER[0].failed}")
    return _LAUNCHER[0]


def boot(gcs: str, temp_root: Path, nodes: int, cpus: int, settle: float, variant: str) -> list[dict]:
    reg = ClusterReg(name="bench", gcs_address=gcs, temp_root=str(temp_root),
                     node_types={"w": {"resources": {"CPU": cpus}}})
    before = alive_nodes(gcs)
    procs = []
    base_env = {**os.environ, **loopback_env(dict(os.environ))}
    for i in range(nodes):
        tdir = temp_root / f"{variant[:3]}{i}{int(time.time()) % 1000}"
        tdir.mkdir(parents=True)
        cmd, extra = VARIANTS[variant](node_command(ray_bin(), reg, "w", str(tdir)))
        env = {**node_env(base_env, f"i-bench{i}", "w"), **extra}
        if variant == "ray-default":
            for k in [k for k in env if k.startswith("RAY_") and k not in base_env]:
                if k not in ("RAY_CLOUD_INSTANCE_ID", "RAY_NODE_TYPE_NAME"):
                    env.pop(k)
        if variant == "launcher":
            p = launcher().launch(f"n{i}", cmd[1:], env, str(tdir / "node.log"))
        else:
            log = open(tdir / "node.log", "wb")  # noqa: SIM115
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append({"p": p, "t0": time.monotonic(), "dir": tdir, "sock": None, "alive": None})
    t_start = time.monotonic()
    up_at: float | None = None
    up_cpu: list[float] = []
    while time.monotonic() - t_start < max(settle, 60):
        now = time.monotonic()
        for r in procs:
            if r["sock"] is None and (r["dir"] / "session_latest" / "sockets" / "raylet").exists():
                r["sock"] = now - r["t0"]
        n_alive = len(alive_nodes(gcs) - before)
        if n_alive >= nodes and all(r["sock"] is not None for r in procs):
            for r in procs:
                if r["alive"] is None:
                    r["alive"] = now - r["t0"]
        elif n_alive:
            # the GCS does not say which is which cheaply; credit the earliest sockets first
            for r in sorted(procs, key=lambda r: r["sock"] or 1e9)[:n_alive]:
                if r["alive"] is None and r["sock"] is not None:
                    r["alive"] = now - r["t0"]
        if all(r["alive"] is not None for r in procs):
            if up_at is None:  # every node alive: what they cost from here on is their idle cost
                up_at, up_cpu = now, [session_usage(r["p"].pid)[0] for r in procs]
            if now - t_start >= settle:
                break
        time.sleep(0.1)
    out = []
    idle_for = time.monotonic() - up_at if up_at is not None else 0.0
    for i, r in enumerate(procs):
        cpu, names = session_usage(r["p"].pid)
        idle = (cpu - up_cpu[i]) / idle_for * 60 if idle_for > 5 and up_cpu else None
        out.append({"sock_s": r["sock"], "alive_s": r["alive"], "cpu_s": cpu, "idle_cpu_per_min": idle,
                    "procs": names})
    for r in procs:
        stop_group(r["p"].pid, timeout=5.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3, help="worker nodes booted at once")
    ap.add_argument("--cpus", type=int, default=4, help="CPUs per node (c7i.4xlarge at --scale 4)")
    ap.add_argument("--settle", type=float, default=12.0, help="CPU is summed over this many seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default="ray-default,twin")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    port = free_port()
    env = {**os.environ, **loopback_env(dict(os.environ)), "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [ray_bin(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=false", "--num-cpus=0", f"--temp-dir={tmp}/h", "--disable-usage-stats",
         f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    gcs = f"127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                alive_nodes(gcs)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        time.sleep(3)
        results: dict[str, list[dict]] = {v: [] for v in a.variants.split(",")}
        for _ in range(a.repeat):
            for v in results:  # paired: each round boots every variant
                results[v].append({"nodes": boot(gcs, tmp / "n", a.nodes, a.cpus, a.settle, v)})
                time.sleep(2)
        print(f"{a.nodes} node(s) of {a.cpus} CPU booted at once, {a.repeat} round(s), "
              f"load average {os.getloadavg()[0]:.1f}")
        base_cpu = None
        for v, rounds in results.items():
            per = [n for r in rounds for n in r["nodes"]]
            last_alive = [max((n["alive_s"] or 99) for n in r["nodes"]) for r in rounds]
            cpu = statistics.median(n["cpu_s"] for n in per)
            base_cpu = base_cpu or cpu
            print(f"  {v:12s} cpu/node {cpu:5.2f} s ({cpu / base_cpu:.2f}x)  "
                  f"raylet up {statistics.median(n['sock_s'] or 99 for n in per):5.2f} s  "
                  f"last of {a.nodes} alive {statistics.median(last_alive):5.2f} s (median of rounds)")
            idle = [n["idle_cpu_per_min"] for n in per if n["idle_cpu_per_min"] is not None]
            if idle:
                print(f"  {'':12s} idle, every node alive: {statistics.median(idle):.2f} CPU-s per node "
                      "per minute")
            print(f"  {'':12s} processes: {', '.join(per[-1]['procs'])}")
    finally:
        for lau in _LAUNCHER:
            lau.close()
        stop_group(head.pid, timeout=10.0)
        head.send_signal(signal.SIGCONT) if head.poll() is None else None
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
