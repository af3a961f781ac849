"""Ray's cluster on AWS: `ray up`/`ray down` through the bastion, the sweep by tag, status, the dashboard.

``AwsCluster`` (between ``AwsAccess`` and ``AwsTarget``) renders the config as `ray up` on AWS needs it
(``aws_overlay``: the bastion as proxy, private IPs, the lab's key pair, node images pinned), runs
`ray up`/`ray down` as recorded subprocesses (again while IAM has not propagated the instance
profiles), terminates and waits out every instance still tagged with the cluster name, reads Ray's
status and the capacity guard's on the head in one SSH round trip, and opens the dashboard through an
SSH tunnel bound to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.targets.aws import ssh as sshmod
from raylab.targets.aws.access import AwsAccess, head_of

if TYPE_CHECKING:
    from raylab.context import Context

DASHBOARD_PORT = 8265
TUNNEL = "aws-dashboard-tunnel"
RAY_UP_TIMEOUT_S = 45 * 60
LIVE = ["pending", "running", "stopping", "stopped"]  # what terminate_instances must still end
# Not gone yet: a `shutting-down` instance still holds its ENI, so deleting the stack's security group
# or subnets before it is `terminated` fails with DependencyViolation.
NOT_GONE = [*LIVE, "shutting-down"]
SWEEP_TIMEOUT_S = 900.0
# A Python reading its program from stdin on the head, in the same shell Ray's updater uses (login +
# interactive + ~/.bashrc: where Ray's AMI activates the environment that has `ray`).
HEAD_PYTHON = "bash --login -c -i 'source ~/.bashrc 2>/dev/null; python3 -'"


# The capacity guard on the head (started by head_start_ray_commands in configs/ray-cluster.yaml):
# its decisions, state and whether it runs, read by `raylab status` in the same SSH round trip.
GUARD_ON_HEAD = """
import json, os
d = os.path.expanduser("~/raylab")
def _read(name):
    try:
        with open(os.path.join(d, name)) as fh:
            return fh.read()
    except OSError:
        return None
evs = []
for ln in (_read("guard-events.jsonl") or "").splitlines()[-20:]:
    try:
        evs.append(json.loads(ln))
    except ValueError:
        pass
try:
    st = json.loads(_read("guard-state.json") or "null")
except ValueError:
    st = None
try:
    os.kill(int((_read("guard.pid") or "").strip()), 0)
    running = True
except (ValueError, OSError):
    running = False
print("RAYLAB-GUARD " + json.dumps({"events": evs, "state": st, "running": running}))
"""


# --- pure helpers ---------------------------------------------------------------------------------
def aws_overlay(cfg: dict[str, Any], *, plan: sshmod.SshPlan, key_name: str, region: str) -> dict[str, Any]:
    """The rendered config as `ray up` on AWS needs it: absolute key paths, the bastion hop as the
    proxy command, private IPs only, the lab's key pair on every node type. Refuses inline keys."""
    import copy

    out = copy.deepcopy(cfg)
    prov = out.setdefault("provider", {})
    creds = prov.get("aws_credentials") or {}
    if any("secret" in k.lower() or "token" in k.lower() for k in creds):
        raise RaylabError(
            "the cluster config carries AWS credentials (provider.aws_credentials)",
            "remove them: raylab uses your credential chain (aws configure / AWS_PROFILE)",
        )
    prov["region"] = region
    prov["use_internal_ips"] = True
    auth = out.setdefault("auth", {})
    auth.setdefault("ssh_user", "admin")  # Debian 12, the node image configs/ray-cluster.yaml pins
    auth["ssh_private_key"] = str(plan.key)
    auth["ssh_proxy_command"] = sshmod.ray_proxy_command(plan)
    for nt in (out.get("available_node_types") or {}).values():
        nt.setdefault("node_config", {})["KeyName"] = key_name
    return out


class AwsCluster(AwsAccess):
    """The Ray cluster of an AWS lab (the middle of ``AwsTarget``)."""

    # cluster ----------------------------------------------------------------------------------
    def _ray(self) -> str:
        exe = Path(sys.executable).with_name("ray")
        return str(exe) if exe.exists() else "ray"

    def _run_ray(self, ctx: Context, args: list[str], log_name: str, timeout: float) -> None:
        from raylab import procs

        log = ctx.workdir / "logs" / log_name
        env = {**os.environ, **self.aws_env(ctx)}
        p = procs.spawn([self._ray(), *args], log, env=env, cwd=ctx.workdir, what=f"ray {args[0]}",
                        records=procs.Records(ctx.workdir), owner="aws-target", lab=ctx.lab, ephemeral=True)
        ctx.state.record_process(f"aws-{log_name.split('.')[0]}", p.pid, [self._ray(), *args], log=str(log))
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs.stop_group(p.pid)
            rc = -1
        finally:
            ctx.state.forget_process(f"aws-{log_name.split('.')[0]}")
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RaylabError(
                f"`ray {args[0]}` failed (exit {rc}): {' | '.join(tail)[-400:]}", f"full log: {log}"
            )

    def reapply(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        """Re-apply a changed config to the running cluster (stage 5): `ray up --no-restart`, so Ray
        on the head keeps running (GCS, job history, the guard); autoscaler v2 re-reads the YAML."""
        return self.cluster_up(ctx, config_path, restart=False)

    def wait_for_profiles(self, ctx: Context) -> None:
        """Before the head's launch: the lab's instance profiles usable (IAM eventual consistency)."""
        from raylab.targets.aws.readiness import wait_profiles

        ident = ctx.state.get("identity")
        names = [ident[k] for k in ("head_instance_profile_name", "worker_instance_profile_name")
                 if ident.get(k)]
        if not names:
            return
        waited = wait_profiles(self._client(ctx, "iam"), names)
        if waited:
            ctx.ui.info(f"waited {waited:.0f} s for IAM to propagate {', '.join(names)}")

    def _ray_up(self, ctx: Context, path: Path, restart: bool) -> None:
        """`ray up`, run again (bounded) while RunInstances refuses a profile IAM has not propagated."""
        from raylab.targets.aws.readiness import RAY_UP_ATTEMPTS, ray_up_args, ray_up_retry_after

        log = ctx.workdir / "logs" / "ray-up.log"
        attempt = 0
        while True:
            attempt += 1
            start = log.stat().st_size if log.exists() else 0
            try:
                self._run_ray(ctx, ray_up_args(path, restart=restart), "ray-up.log", RAY_UP_TIMEOUT_S)
                return
            except RaylabError:
                with open(log, "rb") as fh:
                    fh.seek(start)
                    text = fh.read().decode(errors="replace")
                delay = ray_up_retry_after(attempt, text)
                if delay is None:
                    raise
                ctx.ui.warning(
                    f"RunInstances refused the instance profile (IAM has not propagated it yet): "
                    f"`ray up` again in {delay:.0f} s (attempt {attempt + 1}/{RAY_UP_ATTEMPTS})"
                )
                time.sleep(delay)

    def cluster_up(self, ctx: Context, config_path: Path, restart: bool = True) -> dict[str, Any]:
        from raylab.cluster.config import dump_yaml, load_yaml
        from raylab.cluster.status import ec2_instances
        from raylab.targets.aws.image import pin_node_images

        plan = self.ssh_plan(ctx)
        self.ensure_bastion_pinned(ctx, plan)
        cfg = aws_overlay(
            load_yaml(Path(config_path)),
            plan=plan,
            key_name=ctx.names["key_pair"],
            region=self.aws_env(ctx)["AWS_DEFAULT_REGION"],
        )
        cfg = pin_node_images(cfg, self._client(ctx, "ssm"), self._client(ctx, "ec2"))  # one AMI, root fits
        path = ctx.workdir / "cluster-aws.yaml"
        sshmod._write_private(path, dump_yaml(cfg))
        if restart:
            self.wait_for_profiles(ctx)
        t0 = time.monotonic()
        with ctx.ui.waiting(
            f"ray up {'' if restart else '--no-restart '}{ctx.names['cluster']} through bastion "
            f"{plan.bastion.host} (log: {ctx.workdir / 'logs' / 'ray-up.log'})"
        ):
            self._ray_up(ctx, path, restart)
        head = head_of(ec2_instances(self._client(ctx, "ec2"), ctx.names["cluster"]))
        if head is None:
            raise RaylabError(
                "`ray up` finished but no running head instance carries the cluster tag",
                f"see {ctx.workdir / 'logs' / 'ray-up.log'}",
            )
        info = {
            "cluster_name": ctx.names["cluster"],
            "config_path": str(path),
            "head_instance_id": head["id"],
            "head_ip": self._private_ip(ctx, head["id"]),
            "ssh_user": cfg["auth"]["ssh_user"],
            "bastion": plan.bastion.host,
            "head_ready_s": round(time.monotonic() - t0, 1),
        }
        ctx.state.update("cluster", **info)
        return info

    def cluster_down(self, ctx: Context) -> None:
        cl = ctx.state.get("cluster")
        path = cl.get("config_path")
        if path and Path(path).exists() and ctx.state.network().bastion_public_ip:
            try:
                self._run_ray(ctx, ["down", "-y", str(path)], "ray-down.log", 15 * 60)
            except RaylabError as e:  # the sweep below still terminates what is left
                ctx.ui.warning(f"{e.one_line()}; sweeping by tag")
        try:
            self.sweep(ctx)
        finally:  # the tunnel is ours to stop even when the sweep could not finish
            self.stop_tunnel(ctx)
        if cl.get("head_ip"):
            with contextlib.suppress(RaylabError):
                sshmod.forget_host(self.ssh_plan(ctx), cl["head_ip"])

    def sweep(self, ctx: Context, timeout: float = SWEEP_TIMEOUT_S, poll_s: float = 5.0) -> list[str]:
        """Terminate every instance still tagged ray-cluster-name=<cluster>, then wait until each is
        `terminated` (not merely `shutting-down`: it still holds its network interface, and the
        stack's delete would meet DependencyViolation). Returns the ids it terminated."""
        ec2 = self._client(ctx, "ec2")
        cluster = ctx.names["cluster"]

        def by_state() -> dict[str, str]:
            flt = [
                {"Name": "tag:ray-cluster-name", "Values": [cluster]},
                {"Name": "instance-state-name", "Values": NOT_GONE},
            ]
            out: dict[str, str] = {}
            for page in ec2.get_paginator("describe_instances").paginate(Filters=flt):
                out.update({i["InstanceId"]: i["State"]["Name"] for r in page["Reservations"]
                            for i in r["Instances"]})
            return out

        states = by_state()
        ids = sorted(i for i, st in states.items() if st in LIVE)
        if not states:
            ctx.ui.noop(f"no instance of {cluster} left")
            return []
        if ids:
            ctx.ui.step(f"terminating {len(ids)} leftover instance(s) of {cluster}: {', '.join(ids)}")
            ec2.terminate_instances(InstanceIds=ids)
        deadline = time.monotonic() + timeout
        with ctx.ui.waiting(f"waiting until every instance of {cluster} is terminated (ENIs released)"):
            while states:
                if time.monotonic() >= deadline:
                    left = ", ".join(f"{i} ({st})" for i, st in sorted(states.items()))
                    raise RaylabError(
                        f"instances of {cluster} not terminated after {int(timeout)} s: {left}",
                        "wait a minute and re-run `raylab down` (the stack cannot be deleted before)",
                    )
                time.sleep(poll_s)
                states = by_state()
        return ids

    def cluster_status(self, ctx: Context) -> dict[str, Any]:
        """Ray's v2 status read on the head (through the bastion) + EC2's instances of the cluster tag."""
        from raylab.cluster import status
        from raylab.spot.guard_status import report

        script = inspect.getsource(status) + (
            "\nimport json\nprint('RAYLAB-STATUS ' + json.dumps(ray_status('127.0.0.1:6379'), default=str))\n"
        ) + GUARD_ON_HEAD
        out = self.on_head(ctx, HEAD_PYTHON, stdin=script)
        line = next((ln for ln in out.splitlines() if ln.startswith("RAYLAB-STATUS ")), None)
        if line is None:
            raise RaylabError(
                "Ray's status could not be read on the head",
                "run `ray status` on the head: ssh through the bastion, see the runbook",
            )
        ray = json.loads(line.split(" ", 1)[1])
        g: dict[str, Any] = next((json.loads(ln.split(" ", 1)[1]) for ln in out.splitlines()
                  if ln.startswith("RAYLAB-GUARD ")), {"events": [], "state": None, "running": None})
        inst = status.ec2_instances(self._client(ctx, "ec2"), ctx.names["cluster"])
        head_id = ctx.state.get("cluster").get("head_instance_id")
        return {**ray, "instances": inst, "agreement": status.agreement(ray, inst, head_id),
                "capacity_guard": report(g["events"], g["state"], g["running"])}

    def readiness(self, ctx: Context) -> dict[str, Any]:
        """Ray node alive from the dashboard through the tunnel; the head's SSH up and setup done from
        `ray up`'s updater lines (record style); workers are set up by the head's autoscaler, whose
        log stays on the head, so their SSH/setup phases are None."""
        from raylab.observe.readiness_fetch import collect

        log = ctx.workdir / "logs" / "ray-up.log"
        try:
            text = log.read_text(errors="replace") if log.exists() else None
            ec2 = self._client(ctx, "ec2")
        except Exception as e:  # noqa: BLE001 - reported, never raised
            return {"nodes": [], "summary": {}, "error": f"{type(e).__name__}: {e}"}
        return collect(ec2, ctx.names["cluster"], lambda: self.dashboard_url(ctx), head_log=text)

    # dashboard ----------------------------------------------------------------------------------
    def dashboard_url(self, ctx: Context) -> str:
        from raylab import procs
        from raylab.state import pid_alive

        rec = ctx.state.get("processes").get(TUNNEL)
        if rec and pid_alive(int(rec["pid"])) and procs.port_in_use(int(rec["port"])):
            return f"http://127.0.0.1:{rec['port']}"
        plan = self.ssh_plan(ctx)
        self.ensure_bastion_pinned(ctx, plan)
        port = procs.free_port()
        cmd = sshmod.ssh_command(plan, self.head_hop(ctx), forward=(port, "127.0.0.1", DASHBOARD_PORT))
        # recorded before it runs; long-lived (later commands reuse it), stopped by `raylab down`
        p = procs.spawn(cmd, ctx.workdir / "logs" / "dashboard-tunnel.log",
                        records=procs.Records(ctx.workdir), what="dashboard tunnel", owner="aws-target",
                        lab=ctx.lab)
        ctx.state.record_process(TUNNEL, p.pid, cmd, port=port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if p.poll() is not None:
                ctx.state.forget_process(TUNNEL)
                raise RaylabError(
                    "the SSH tunnel to the dashboard exited",
                    f"see {ctx.workdir / 'logs' / 'dashboard-tunnel.log'}",
                )
            if procs.port_in_use(port):
                return f"http://127.0.0.1:{port}"
            time.sleep(0.2)
        procs.stop_group(p.pid)
        ctx.state.forget_process(TUNNEL)
        raise RaylabError(
            "the SSH tunnel to the dashboard did not open in 30 s", "check the bastion and the head"
        )

    def stop_tunnel(self, ctx: Context) -> None:
        from raylab.procs import stop_group

        rec = ctx.state.get("processes").get(TUNNEL)
        if rec:
            stop_group(int(rec["pgid"]), timeout=5)
            ctx.state.forget_process(TUNNEL)
