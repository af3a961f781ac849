"""LocalTarget: the lab's "AWS" is raylab's twin on 127.0.0.1; Ray runs for real on this machine.

State it owns in ``.raylab/state.json``:
- ``twin``: {pid, port, endpoint_url, log, state_dir, region}
- ``cluster``: {cluster_name, config_path, gcs_address, dashboard_url, head_instance_id, head_pid,
  temp_dir, temp_root, ports, scenario, scale, head_ready_s}
- ``processes``: ``twin`` and ``ray-head`` (pid = process group); worker node processes are the
  twin's (listed in ``.raylab/twin/machines.json`` so they can be stopped even if the twin died).

Every process it starts is also recorded by pid and start time in ``.raylab/procs/`` (see
:mod:`raylab.procs`): preflight stops what a killed run left (terraform, ``ray up``) and adopts the
twin and head (``recovery.py``: which PID is still ours, converging a killed run); ``leftovers``
lists every live process of the work dir (records + a /proc scan) and ``stop`` stops them, each by pid
with its start time checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab import procs
from raylab.checks import Check
from raylab.errors import RaylabError
from raylab.leftovers import find_leftovers, stop_leftovers
from raylab.procs import free_port, port_in_use, spawn, stop_group
from raylab.state import pid_alive
from raylab.targets.local.declared import REGION, LocalDeclared
from raylab.targets.local.down import terminate_cluster, wait_nodes_gone
from raylab.targets.local.recovery import (
    cleanup_temp,
    converge_stale,
    head_needle,
    is_ours,
    machine_pids,
    node_is_ours,
    recorded_program,
    twin_alive,
    twin_state_dir,
)

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.targets.local.control import TwinClient

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto's own test keys
TWIN_READY_TIMEOUT_S = 60.0
_AWS_ENV_DROP = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE")


class LocalTarget(LocalDeclared):
    name = "local"
    faults = "twin"  # stage 6's drills go through the twin's control API
    default_scale = 8  # nodes of 16/8 CPUs, 60 tasks of 30 s: the lab on a 2-core laptop (README: benchmarks)

    # --- helpers ---------------------------------------------------------------------------------
    def twin(self, ctx: Context) -> TwinClient:
        """Client of the running twin's control API (RaylabError if it is not running)."""
        from raylab.targets.local.control import TwinClient

        tw = ctx.state.get("twin")
        if not tw.get("endpoint_url"):
            raise RaylabError("the local twin is not running", "run `raylab up` first")
        return TwinClient(tw["endpoint_url"])

    # --- contract ----------------------------------------------------------------------------------
    def preflight(self, ctx: Context) -> list[Check]:
        checks = [converge_stale(ctx)]
        tf = shutil.which("terraform")
        if tf is None:
            ctx.ui.warning("terraform is not on PATH: stage 2 (identity) will fail until it is installed")
        checks.append(Check("terraform", True, tf or "not found on PATH (warning: stage 2 needs it)"))
        port = self._wanted_port(ctx)
        if port and not twin_alive(ctx) and port_in_use(port):
            checks.append(Check("twin port", False, f"127.0.0.1:{port} is already in use",
                                "free it or pick another port with RAYLAB_TWIN_PORT (unset: a free port)"))
        else:
            checks.append(Check("twin port", True, f"127.0.0.1:{port}" if port else "a free port is picked"))
        return checks

    def preflight_report(self, ctx: Context) -> tuple[list[Check], dict[str, Any]]:
        return self.preflight(ctx), {}

    def _wanted_port(self, ctx: Context) -> int | None:
        p = os.environ.get("RAYLAB_TWIN_PORT")
        return int(p) if p else None

    def start(self, ctx: Context) -> None:
        # a twin that a killed run left still booting: wait for it rather than start a second one
        deadline = time.monotonic() + TWIN_READY_TIMEOUT_S
        while twin_alive(ctx) and time.monotonic() < deadline:
            if self.twin(ctx).alive():
                ctx.ui.noop(f"twin already running at {ctx.state.get('twin')['endpoint_url']}")
                return
            time.sleep(0.3)
        if twin_alive(ctx):  # alive but never answered: ours (pid checked), stop it
            stop_group(int(ctx.state.get("twin")["pid"]), timeout=5)
        converge_stale(ctx)
        port = self._wanted_port(ctx) or free_port()
        state_dir = twin_state_dir(ctx)
        log = ctx.workdir / "logs" / "twin.log"
        cmd = [sys.executable, "-m", "raylab.targets.local.twin", "--port", str(port),
               "--state-dir", str(state_dir)]
        for flag, quota in (("--quota-on-demand", ctx.options.quota_on_demand),
                            ("--quota-spot", ctx.options.quota_spot)):
            if quota is not None:
                cmd += [flag, str(quota)]
        from raylab.targets.local.head import loopback_env

        env = {k: v for k, v in os.environ.items() if k not in _AWS_ENV_DROP}
        env.update(loopback_env(env))
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        ctx.state.ensure_dir()
        proc = spawn(cmd, log, env=env, records=procs.Records(ctx.workdir), what="twin", owner="local-target",
                     lab=ctx.lab)
        endpoint = f"http://127.0.0.1:{port}"
        ctx.state.record_process("twin", proc.pid, cmd, port=port)
        ctx.state.put("twin", {"pid": proc.pid, "port": port, "endpoint_url": endpoint, "log": str(log),
                               "state_dir": str(state_dir), "region": REGION, "started": time.time()})
        with ctx.ui.waiting(f"starting the local AWS twin on {endpoint}"):
            deadline = time.monotonic() + TWIN_READY_TIMEOUT_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                    ctx.state.drop("twin")
                    ctx.state.forget_process("twin")
                    why = " | ".join(tail) or str(proc.returncode)
                    raise RaylabError(f"the local twin exited at start: {why}",
                                      f"see {log}")
                if self.twin(ctx).alive():
                    ctx.ui.success(f"local AWS twin on {endpoint} (pid {proc.pid})")
                    return
                time.sleep(0.3)
        raise RaylabError(f"the local twin did not answer within {TWIN_READY_TIMEOUT_S:.0f}s", f"see {log}")

    def aws_env(self, ctx: Context) -> dict[str, str]:
        tw = ctx.state.get("twin")
        if not tw.get("endpoint_url"):
            raise RaylabError("the local twin is not running, so there is no local AWS endpoint",
                              "run `raylab up` (it starts the twin)")
        if not twin_alive(ctx):
            raise RaylabError(f"the local twin (pid {tw.get('pid')}) is gone, and its EC2/IAM/CloudFormation "
                              "state with it", "`raylab up` starts a new one; `raylab down` cleans up")
        return {"AWS_DEFAULT_REGION": tw.get("region", REGION), "AWS_REGION": tw.get("region", REGION),
                "AWS_ENDPOINT_URL": tw["endpoint_url"], "AWS_EC2_METADATA_DISABLED": "true", **FAKE_KEYS}

    # --- cluster ------------------------------------------------------------------------------------
    def cluster_up(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        import yaml

        from raylab.aws.session import client
        from raylab.targets.local import head as H

        cfg = yaml.safe_load(Path(config_path).read_text())
        cluster = cfg["cluster_name"]
        cur = ctx.state.get("cluster")
        if cur.get("gcs_address") and is_ours(cur.get("head_pid"), head_needle(cur)) \
                and not _head_answers(cur):  # a head a killed run left starting: wait, as for the twin
            with ctx.ui.waiting(f"the Ray head (pid {cur['head_pid']}) is still starting: waiting for it"), \
                    contextlib.suppress(RaylabError):
                H.wait_head_ready(cur["gcs_address"], cur.get("head_instance_id", ""), int(cur["head_pid"]),
                                  timeout=60)
        if cur.get("gcs_address") and _head_answers(cur):
            if Path(cur.get("config_path", "")) != Path(config_path):
                ctx.ui.warning("the running head keeps its config; "
                               "`raylab down` then `raylab up` to change it")
            ctx.ui.noop(f"Ray head already running for {cluster} at {cur['gcs_address']}")
            return cur
        if cur.get("head_pid"):  # a dead or half-started head from before: clean it first
            self.cluster_down(ctx)
        from botocore.exceptions import ClientError

        ec2 = client(ctx, "ec2")
        iid = H.find_head_instance(ec2, cluster)
        if iid is None:
            try:
                resp = ec2.run_instances(**H.head_run_args(cfg, ctx.lab))
            except ClientError as e:
                err = e.response.get("Error", {})
                raise RaylabError(f"the head instance could not be launched: {err.get('Code')}: "
                                  f"{err.get('Message')}",
                                  "re-run stages 1-2 (`raylab up`) so the subnets, security group and "
                                  "profiles exist on this twin; for a quota error raise it "
                                  "(`raylab scale --quota`)") from None
            iid = resp["Instances"][0]["InstanceId"]
            itype = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]["InstanceType"]
            ctx.ui.success(f"head instance {iid} ({itype}) running on the twin")
        # Ray gives a starting node 30 s (hard-coded) to register; on 2 cores shared with a busy
        # lab that can pass. One retry with fresh ports and temp dir, then a clear error.
        for attempt in (1, 2):
            try:
                return self._start_head(ctx, cfg, Path(config_path), iid)
            except RaylabError as e:
                if attempt == 2 or "exited while starting" not in e.message:
                    raise
                ctx.ui.warning("the Ray head gave up starting (busy machine?): trying once more")
                self._stop_head(ctx)
        raise AssertionError("unreachable")

    def _start_head(self, ctx: Context, cfg: dict[str, Any], config_path: Path, iid: str) -> dict[str, Any]:
        from raylab.targets.local import head as H

        cluster = cfg["cluster_name"]
        temp_root = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
        temp_dir = f"{temp_root}/h"
        ports = H.head_ports()
        gcs = f"127.0.0.1:{ports['gcs']}"
        node_types = {n: {"resources": nt.get("resources", {})}
                      for n, nt in cfg["available_node_types"].items()}
        self.twin(ctx).register_cluster({"name": cluster, "gcs_address": gcs, "temp_root": temp_root,
                                         "node_types": node_types,
                                         "object_store_memory": H.WORKER_OBJECT_STORE_BYTES})
        cmd = H.head_command(cfg, config_path.resolve(), temp_dir, ports)
        env = H.head_env(self.aws_env(ctx), iid, cfg["head_node_type"])
        log = ctx.workdir / "logs" / "ray-head.log"
        proc = spawn(cmd, log, env=env, records=procs.Records(ctx.workdir), what="ray-head",
                     owner="local-target", lab=ctx.lab)
        ctx.state.record_process("ray-head", proc.pid, cmd, temp_dir=temp_dir)
        info = {"cluster_name": cluster, "config_path": str(config_path.resolve()), "gcs_address": gcs,
                "dashboard_url": f"http://127.0.0.1:{ports['dashboard']}", "head_instance_id": iid,
                "head_pid": proc.pid, "temp_root": temp_root, "temp_dir": temp_dir, "ports": ports,
                "scenario": ctx.scenario, "log": str(log), "started": time.time()}
        ctx.state.put("cluster", {**ctx.state.get("cluster"), **info})
        with ctx.ui.waiting(f"starting the Ray head (autoscaler v2) at {gcs}"):
            waited = H.wait_head_ready(gcs, iid, proc.pid)
        ctx.state.update("cluster", head_ready_s=round(waited, 2))
        ctx.ui.success(f"Ray head running at {gcs} in {waited:.1f}s; dashboard {info['dashboard_url']}")
        return ctx.state.get("cluster")

    def _stop_head(self, ctx: Context, show: bool = True) -> None:
        """Stop the head process group (if it is still ours) and remove its temp root. ``show``: with
        a spinner (not from a thread next to another one)."""
        cur = ctx.state.get("cluster")
        head = cur.get("head_pid")
        if is_ours(head, head_needle(cur)):
            with ctx.ui.waiting(f"stopping the Ray head (pid {head})") if show else contextlib.nullcontext():
                stop_group(int(head), timeout=15)
        ctx.state.forget_process("ray-head")
        cleanup_temp(cur)

    def cluster_down(self, ctx: Context) -> None:
        cur = ctx.state.get("cluster")
        if not cur:
            ctx.ui.noop("no local Ray cluster recorded")
            return
        cluster = cur.get("cluster_name", ctx.names["cluster"])
        if not twin_alive(ctx):
            self._stop_head(ctx)
            ctx.state.drop("cluster")
            return
        # The head and the workers stop together: the twin stops each worker node on its own thread
        # once its instance is terminated, so the head's stop (about 6 s) no longer waits in front of
        # the workers'. What the autoscaler launched while its head went down goes in a second pass.
        head_pid = cur.get("head_pid") if is_ours(cur.get("head_pid"), head_needle(cur)) else None
        head = threading.Thread(target=self._stop_head, args=(ctx, False), name="stop-head", daemon=True)
        head.start()
        try:
            n = terminate_cluster(ctx, cluster)
            if n:
                ctx.ui.success(f"terminated {n} instance(s) of {cluster}")
        finally:
            stopping = ctx.ui.waiting(f"stopping the Ray head (pid {head_pid})") if head_pid else None
            with stopping or contextlib.nullcontext():
                head.join()
        late = terminate_cluster(ctx, cluster)
        if late:
            ctx.ui.success(f"terminated {late} instance(s) the autoscaler launched while its head stopped")
        with ctx.ui.waiting("waiting for the worker nodes' processes to stop"):
            wait_nodes_gone(self.twin(ctx), cluster, timeout=60)
        with contextlib.suppress(RaylabError):
            self.twin(ctx).unregister_cluster(cluster)
        cleanup_temp(cur)
        ctx.state.drop("cluster")

    def cluster_status(self, ctx: Context) -> dict[str, Any]:
        from raylab.aws.session import client
        from raylab.cluster.status import agreement, ec2_instances, ray_status

        cur = ctx.state.get("cluster")
        if not cur.get("gcs_address"):
            raise RaylabError("no local Ray cluster is running", "run `raylab up` (or `raylab stage 3`)")
        hint = f"see {cur.get('log', '.raylab/logs/ray-head.log')}; `raylab stage 3` restarts a dead head"
        if not is_ours(cur.get("head_pid"), head_needle(cur)):
            raise RaylabError(f"the Ray head (pid {cur.get('head_pid')}) is not running", hint)
        try:
            ray = ray_status(cur["gcs_address"])
        except Exception as e:  # noqa: BLE001 - grpc/Ray errors: the head is wedged
            raise RaylabError(f"Ray's GCS at {cur['gcs_address']} does not answer: {type(e).__name__}",
                              hint) from None
        instances = ec2_instances(client(ctx, "ec2"), cur["cluster_name"])
        return {**ray, "cluster_name": cur["cluster_name"], "gcs_address": cur["gcs_address"],
                "instances": instances, "agreement": agreement(ray, instances, cur.get("head_instance_id")),
                "launch_failures": launch_failures(self.twin(ctx).events()),
                "capacity_guard": self.guard_report(ctx)}

    def guard_report(self, ctx: Context) -> dict[str, Any]:
        """The capacity guard next to the local head (stage 6): its process, state and decisions."""
        from raylab.spot import GUARD
        from raylab.spot.guard_status import recent_events, report

        d = ctx.workdir / "spot"
        rec = ctx.state.get("processes").get(GUARD)
        running = bool(rec and is_ours(rec.get("pid"), recorded_program(rec)))
        try:
            state = json.loads((d / "guard-state.json").read_text())
        except (OSError, ValueError):
            state = None
        return report(recent_events(d / "guard-events.jsonl", 20), state, running)

    def set_quota(self, ctx: Context, code: str, vcpus: int) -> int | None:
        """Through the twin's control API: the new quota is in force for the next launch."""
        return self.twin(ctx).set_quotas(**{code: vcpus}).get(code)

    def reapply(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        """Nothing to push: the head's autoscaler v2 re-reads the YAML at ``config_path`` every loop."""
        return {}

    def readiness(self, ctx: Context) -> dict[str, Any]:
        """No SSH and no setup commands here: a twin machine starts Ray directly, after the twin's
        modelled boot delay (``--boot-delay``, 0 by default), which a worker's setup excludes."""
        from raylab.aws.session import client
        from raylab.observe.readiness_fetch import collect

        try:
            boot = float(self.twin(ctx).boot().get("boot_delay_s") or 0.0)
            ec2 = client(ctx, "ec2")
        except Exception as e:  # noqa: BLE001 - reported, never raised
            return {"nodes": [], "summary": {}, "error": f"{type(e).__name__}: {e}"}
        cluster = ctx.state.get("cluster").get("cluster_name") or ctx.names["cluster"]
        return collect(ec2, cluster, lambda: self.dashboard_url(ctx), boot_delay_s=boot)

    def dashboard_url(self, ctx: Context) -> str:
        url = ctx.state.get("cluster").get("dashboard_url")
        if not url:
            raise RaylabError("no local Ray cluster is running", "run `raylab up`")
        return str(url)

    # --- stop / leftovers -------------------------------------------------------------------------
    def stop(self, ctx: Context) -> None:
        from raylab.signals import note_stage

        note_stage(ctx.workdir, "teardown")
        if ctx.state.get("cluster"):
            self.cluster_down(ctx)
        # every other process raylab recorded (jobs, tunnels, watchers), by its own group; twin last
        for name, rec in ctx.state.get("processes").items():
            if name != "twin" and is_ours(rec.get("pid"), recorded_program(rec)):
                stop_group(int(rec["pid"]), timeout=10)
        tw = ctx.state.get("twin")
        state_dir = Path(tw.get("state_dir") or twin_state_dir(ctx))
        # The twin's cloud lives in the twin's memory: check it for leftovers BEFORE stopping it, so
        # teardown's verdict covers instances, stacks, network pieces and profiles, not only processes.
        cloud_left = self._cloud_leftovers(ctx) if twin_alive(ctx) else []
        ctx.state.put("teardown", {"cloud_leftovers": cloud_left, "checked_at": time.time()})
        if twin_alive(ctx):
            with ctx.ui.waiting(f"stopping the local twin (pid {tw['pid']})"):
                with contextlib.suppress(RaylabError):
                    self.twin(ctx).shutdown()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and pid_alive(int(tw["pid"])):
                    time.sleep(0.2)
                stop_group(int(tw["pid"]), timeout=5)
        for iid, rec in machine_pids(state_dir).items():
            if node_is_ours(rec):
                stop_group(int(rec["pid"]), timeout=5)
                ctx.ui.warning(f"stopped a left-over node process of {iid}")
        for name, rec in ctx.state.get("processes").items():
            if is_ours(rec.get("pid"), recorded_program(rec)):
                stop_group(int(rec["pid"]))
            if not pid_alive(int(rec.get("pid", 0))):
                ctx.state.forget_process(name)
        ctx.state.drop("twin")
        # last, everything else this work dir still runs (records + /proc scan), by verified pid
        for x in stop_leftovers(ctx.workdir):
            ctx.ui.warning(f"stopped a left-over {x.line()}")
        ctx.ui.success("local target stopped (twin, Ray head and nodes)")

    def leftovers(self, ctx: Context) -> list[str]:
        found = find_leftovers(ctx.workdir)
        seen = {x.proc.pid for x in found}
        left = [x.line() for x in found]
        for name, rec in ctx.state.get("processes").items():
            if int(rec.get("pid", 0)) not in seen and is_ours(rec.get("pid"), recorded_program(rec)):
                left.append(f"process {name} (pid {rec['pid']})")
        tw = ctx.state.get("twin")
        state_dir = Path(tw.get("state_dir") or twin_state_dir(ctx))
        for iid, rec in machine_pids(state_dir).items():
            if int(rec.get("pid") or 0) not in seen and node_is_ours(rec):
                left.append(f"process ray node of {iid} (pid {rec['pid']})")
        if twin_alive(ctx):
            left += self._cloud_leftovers(ctx)
        else:  # the twin is gone with its cloud: report what it still held when it was stopped
            left += ctx.state.get("teardown").get("cloud_leftovers", [])
        return left

    def _cloud_leftovers(self, ctx: Context) -> list[str]:
        from raylab.aws import leftovers

        left: list[str] = []
        n = ctx.names
        for inst in self.twin(ctx).instances():
            tags = inst["tags"]
            if inst["state"] != "terminated" and (tags.get("raylab-lab") == ctx.lab
                                                  or tags.get("ray-cluster-name") == n["cluster"]):
                left.append(f"instance {inst['id']} ({inst['state']})")
        for check in (leftovers.network, leftovers.identity):
            try:
                left += check(ctx)
            except Exception as e:  # noqa: BLE001 - a check that cannot run is reported, never a pass
                left.append(f"could not check the lab's {check.__name__} leftovers: {e}")
        return list(dict.fromkeys(left))


def _head_answers(cluster: dict[str, Any]) -> bool:
    """The recorded head is ours, its GCS listens and v2 shows its instance running."""
    from raylab.cluster.status import head_is_running
    from raylab.targets.local.head import gcs_listening

    return is_ours(cluster.get("head_pid"), head_needle(cluster)) and gcs_listening(cluster["gcs_address"]) \
        and head_is_running(cluster["gcs_address"], cluster.get("head_instance_id", ""))


def launch_failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Launch errors from the twin's events, grouped by AWS code, instance type and market (pure)."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        if e.get("kind") not in ("quota_error", "capacity_error"):
            continue
        key = (e.get("code", ""), e.get("instance_type", ""), e.get("market", ""))
        g = groups.setdefault(key, {"code": key[0], "instance_type": key[1], "market": key[2], "count": 0,
                                    "first_t": e["t"], "last_t": e["t"], "quota_code": e.get("quota_code"),
                                    "limit": e.get("limit")})
        g["count"] += 1
        g["last_t"] = e["t"]
        g["limit"] = e.get("limit", g["limit"])
    return sorted(groups.values(), key=lambda g: g["first_t"])
