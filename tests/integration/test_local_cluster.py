"""The local target for real: twin "AWS" on 127.0.0.1, Ray 2.60's autoscaler v2 launching "EC2 instances"
that become real local Ray nodes.

One lab, one test (a Ray cluster is the expensive part): the twin is started by the target, the
network/identity pieces stage 3 reads are created with boto3 against the twin (stages 1-2 have their
own tests), stage 3 runs through the real CLI, demand comes from a driver's ``request_resources``.
The quota is set so the wall is hit at 3 workers. Asserted as a user sees it: `raylab status --json`,
describe_instances, the twin's events, /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import json_out, run_cli

pytestmark = pytest.mark.integration

LAB = "itlocal"
DRIVER = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
from ray.autoscaler.sdk import request_resources
request_resources(bundles=[{"CPU": 2}] * int(sys.argv[2]))
print("ADDRS " + json.dumps(sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]})), flush=True)
"""


def parse(proc: subprocess.CompletedProcess[str]) -> dict:
    try:
        return json_out(proc)
    except json.JSONDecodeError:
        raise AssertionError(f"not one JSON object on stdout: {proc.stdout[-1500:]!r} / "
                             f"stderr: {proc.stderr[-1500:]!r}") from None


def wait_for(pred, timeout: float, what: str, every: float = 1.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def procs_with(needle: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in cmd and stat not in ("Z", "X"):
                out.append(int(p.name))
    return out


def make_ctx(workdir: Path):  # noqa: ANN201
    from raylab.cli.options import make_context

    return make_context("local", LAB, False, True, "autoscale", workdir, True)


def create_network_and_identity(ctx) -> None:  # noqa: ANN001
    """What stages 1-2 leave in state, made directly on the twin (their own tests cover them)."""
    from raylab.aws.session import client

    ec2, iam = client(ctx, "ec2"), client(ctx, "iam")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24",
                                 AvailabilityZone=az)["Subnet"]["SubnetId"]
               for i, az in ((1, "us-west-2a"), (2, "us-west-2b"))]
    sg = ec2.create_security_group(GroupName="ray", Description="ray", VpcId=vpc)["GroupId"]
    arns = {}
    for kind in ("head", "worker"):
        prof = ctx.names[f"{kind}_profile"]
        iam.create_role(RoleName=ctx.names[f"{kind}_role"], AssumeRolePolicyDocument="{}")
        arns[kind] = iam.create_instance_profile(InstanceProfileName=prof)["InstanceProfile"]["Arn"]
        iam.add_role_to_instance_profile(InstanceProfileName=prof, RoleName=ctx.names[f"{kind}_role"])
    ctx.state.put("network", {"VpcId": vpc, "PrivateSubnetIds": ",".join(subnets), "RaySecurityGroupId": sg,
                              "AvailabilityZones": "us-west-2a,us-west-2b",
                              "BastionPublicIp": "203.0.113.10"})
    ctx.state.put("identity", {"head_instance_profile_arn": arns["head"],
                               "worker_instance_profile_arn": arns["worker"]})


def remove_network_and_identity(ctx) -> None:  # noqa: ANN001
    """Undo create_network_and_identity, so the teardown check sees a clean twin."""
    from raylab.aws.ec2 import sweep_network
    from raylab.aws.session import client

    ec2, iam = client(ctx, "ec2"), client(ctx, "iam")
    vpc = ctx.state.get("network").get("VpcId")
    for sg in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]:
        if sg["GroupName"] != "default":
            ec2.delete_security_group(GroupId=sg["GroupId"])
    assert sweep_network(ec2, ctx.lab, [vpc]) == []
    for kind in ("head", "worker"):
        prof, role = ctx.names[f"{kind}_profile"], ctx.names[f"{kind}_role"]
        iam.remove_role_from_instance_profile(InstanceProfileName=prof, RoleName=role)
        iam.delete_instance_profile(InstanceProfileName=prof)
        iam.delete_role(RoleName=role)


def test_local_cluster_end_to_end(tmp_path: Path) -> None:
    from raylab.aws.session import client
    from raylab.cluster.status import ec2_instances
    from raylab.stages import BY_NAME, load
    from raylab.targets.local.head import driver_env

    workdir = tmp_path / ".raylab"
    ctx = make_ctx(workdir)
    target = ctx.target
    t0 = time.monotonic()
    try:
        target.start(ctx)
        twin = target.twin(ctx)
        create_network_and_identity(ctx)
        # head (16 vCPU) + 3 workers (16 each) = 64: the 4th worker hits the wall
        twin.set_quotas(on_demand=64)

        # --- stage 3 through the real CLI --------------------------------------------------------
        r = run_cli("stage", "3", "--lab", LAB, "--workdir", str(workdir), "--json", timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        out = parse(r)
        assert out["ok"] and out["stages"][0]["name"] == "cluster"
        names = {c["name"]: c["ok"] for c in out["stages"][0]["checks"]}
        assert names == {"head running": True, "ray and ec2 agree": True, "loopback only": True}
        head_ready = time.monotonic() - t0
        stage_s, ready_s = out["stages"][0]["seconds"], ctx.state.get("cluster")["head_ready_s"]
        cl = ctx.state.get("cluster")
        gcs, head_id = cl["gcs_address"], cl["head_instance_id"]
        assert gcs.startswith("127.0.0.1:")

        # a second apply converges (a live head is a noop)
        r = run_cli("stage", "3", "--lab", LAB, "--workdir", str(workdir), "--json", timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ctx.state.get("cluster")["head_pid"] == cl["head_pid"]

        # --- demand: 5 workers' worth; the quota allows 3 -----------------------------------------
        d = subprocess.run([sys.executable, "-c", DRIVER, gcs, "5"], env=driver_env(), capture_output=True,
                           text=True, timeout=120)
        assert d.returncode == 0, d.stderr[-2000:]
        line = next((ln for ln in d.stdout.splitlines() if ln.startswith("ADDRS ")), "ADDRS null")
        addrs = json.loads(line.split(" ", 1)[1])  # Ray may print its own lines around ours
        assert addrs and all(a.startswith("127.") for a in addrs), addrs  # NodeManagerAddress is loopback
        t_demand = time.monotonic()

        def three_running() -> list[dict] | None:
            ms = [m for m in twin.machines() if m["state"] == "running"]
            return ms if len(ms) >= 3 else None

        wait_for(three_running, 150, "3 worker nodes running")
        t_workers = time.monotonic() - t_demand
        wait_for(lambda: any(e["kind"] == "quota_error" for e in twin.events()), 60, "a VcpuLimitExceeded")

        def agreed() -> dict | None:
            r = run_cli("status", "--lab", LAB, "--workdir", str(workdir), "--json", timeout=60)
            assert r.returncode == 0, r.stderr[-2000:]
            s = parse(r)
            return s if s["agreement"]["ok"] and len(s["agreement"]["running"]) == 4 else None

        st = wait_for(agreed, 60, "Ray and EC2 to agree on head + 3 workers", every=2)
        workers = [n for n in st["ray_nodes"]
                   if n["type"] == "ray.worker.ondemand" and n["group"] != "pending"]
        assert len(workers) == 3 and all(n["resources"]["CPU"] == 2 for n in workers)  # 16 vCPU / scale 8
        assert all(n["ip"].startswith("127.") for n in st["ray_nodes"] if n["ip"])
        running = [i for i in st["instances"] if i["state"] == "running"]
        assert {i["market"] for i in running} == {"on-demand"} and len(running) == 4
        assert any(f["code"] == "VcpuLimitExceeded" and f["limit"] == 64 for f in st["launch_failures"])
        ec2 = client(ctx, "ec2")
        assert {i["id"] for i in ec2_instances(ec2, ctx.names["cluster"]) if i["state"] == "running"} == \
            set(st["agreement"]["running"])
        assert head_id in st["agreement"]["running"]

        # --- an outside TerminateInstances of a worker: its Ray node process goes away --------------
        victim = next(m for m in twin.machines() if m["state"] == "running")
        ec2.terminate_instances(InstanceIds=[victim["instance_id"]])
        wait_for(lambda: not procs_with(victim["temp_dir"]), 40, f"node of {victim['instance_id']} to stop")
        assert any(e["kind"] == "node_stop" and e["instance_id"] == victim["instance_id"]
                   for e in twin.events())

        # --- a node that dies by itself: its instance is terminated --------------------------------
        victim2 = next(m for m in twin.machines() if m["state"] == "running")
        os.killpg(victim2["pid"], signal.SIGKILL)

        def instance_terminated() -> bool:
            return any(i["id"] == victim2["instance_id"] and i["state"] == "terminated"
                       for i in ec2_instances(ec2, ctx.names["cluster"]))

        wait_for(instance_terminated, 30, "the dead node's instance to be terminated")

        # --- destroy: nothing running, no process ----------------------------------------------------
        temp_root = ctx.state.get("cluster")["temp_root"]
        load(BY_NAME["cluster"]).destroy(ctx)
        assert not [i for i in ec2_instances(ec2, ctx.names["cluster"]) if i["state"] != "terminated"]
        assert procs_with(temp_root) == []
        twin_pid = ctx.state.get("twin")["pid"]
        remove_network_and_identity(ctx)
        target.stop(ctx)
        assert target.leftovers(ctx) == []
        assert procs_with(temp_root) == [] and procs_with(str(workdir)) == []
        assert not Path(f"/proc/{twin_pid}").exists() or procs_with(f"--state-dir {workdir}") == []
        print(f"\nstage 3 {stage_s:.1f}s (head ready {ready_s:.1f}s), since start {head_ready:.1f}s; "
              f"3 workers running {t_workers:.1f}s after demand; "
              f"total {time.monotonic() - t0:.1f}s")
    finally:
        with __import__("contextlib").suppress(Exception):
            target.stop(ctx)


def test_stale_workdir_from_a_killed_run_converges(tmp_path: Path) -> None:
    workdir = tmp_path / ".raylab"
    ctx = make_ctx(workdir)
    ctx.target.start(ctx)
    pid = ctx.state.get("twin")["pid"]
    try:
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not procs_with(f"--state-dir {workdir}"), 10, "the twin to die")
        r = run_cli("status", "--lab", LAB, "--workdir", str(workdir), timeout=60)
        assert r.returncode != 0 and "raylab up" in r.stderr  # says what to do, no traceback
        assert "Traceback" not in r.stderr
        checks = {c.name: c for c in ctx.target.preflight(ctx)}
        assert checks["stale state"].ok and "twin" in checks["stale state"].detail
        assert ctx.state.get("twin") == {} and ctx.state.get("processes") == {}
        ctx.target.start(ctx)  # converges: a new twin
        assert ctx.target.twin(ctx).alive()
    finally:
        ctx.target.stop(ctx)
    assert ctx.target.leftovers(ctx) == []
