"""Pure parts of the local target: node command lines, status agreement, launch failure grouping."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from raylab.cluster.status import agreement
from raylab.targets.local.head import head_run_args, loopback_env
from raylab.targets.local.machines import (
    AGENT_PORT_FILES,
    MAX_BOOT_SLOTS,
    ClusterReg,
    Machine,
    Machines,
    agents_ready,
    boot_slots,
    node_command,
    node_env,
)
from raylab.targets.local.target import launch_failures


def reg() -> ClusterReg:
    return ClusterReg(name="raylab-t", gcs_address="127.0.0.1:6380", temp_root="/tmp/rl-x",
                      node_types={"ray.worker.ondemand": {"resources": {"CPU": 4, "memory": 8 * 1024**3}}})


def test_node_command_is_loopback_with_its_own_temp_dir_and_dynamic_ports() -> None:
    cmd = node_command("ray", reg(), "ray.worker.ondemand", "/tmp/rl-x/abcd1234")
    assert "--address=127.0.0.1:6380" in cmd and "--block" in cmd
    assert "--node-ip-address=127.0.0.1" in cmd
    assert "--num-cpus=4" in cmd and f"--memory={8 * 1024**3}" in cmd
    assert "--temp-dir=/tmp/rl-x/abcd1234" in cmd
    assert "--min-worker-port=0" in cmd and "--dashboard-agent-listen-port=0" in cmd


def test_a_node_runs_no_log_monitor() -> None:
    """The lab's tasks print nothing a driver shows; the log monitor was 17% of a boot's CPU."""
    assert "--include-log-monitor=false" in node_command("ray", reg(), "ray.worker.ondemand", "/tmp/rl-x/a")


@pytest.mark.parametrize(("cpus", "slots"), [
    (None, 2),  # unknown core count: still two at once
    (1, 2),
    (2, 2),  # this machine kind: one boot per core (a boot keeps both cores busy for ~1.6 s)
    (4, 4),
    (64, MAX_BOOT_SLOTS),
])
def test_boot_slots_grow_with_the_cores(cpus: int | None, slots: int) -> None:
    assert boot_slots(cpus) == slots


def test_node_env_drops_inherited_identity_and_keys() -> None:
    base = {"RAY_CLOUD_INSTANCE_ID": "i-head", "RAY_NODE_TYPE_NAME": "ray.head.default",
            "AWS_SECRET_ACCESS_KEY": "x", "PATH": "/bin"}
    env = node_env(base, "i-w1", "ray.worker.spot")
    assert env["RAY_CLOUD_INSTANCE_ID"] == "i-w1" and env["RAY_NODE_TYPE_NAME"] == "ray.worker.spot"
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["PATH"] == "/bin"
    assert float(env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]) <= 5


def test_loopback_env_puts_the_override_first() -> None:
    env = loopback_env({"PYTHONPATH": "/a"})
    assert env["PYTHONPATH"].endswith(":/a") and env["RAYLAB_LOOPBACK_ONLY"] == "1"
    assert env["RAY_AUTH_MODE"] == "disabled"


def test_head_run_args_carry_the_heads_node_config_and_rays_tags() -> None:
    cfg = {"cluster_name": "raylab-t", "head_node_type": "h",
           "available_node_types": {"h": {"node_config": {
               "InstanceType": "c7i.4xlarge", "SubnetIds": ["subnet-a", "subnet-b"],
               "SecurityGroupIds": ["sg"],
               "IamInstanceProfile": {"Arn": "arn:p"}, "MetadataOptions": {"HttpTokens": "required"},
               "TagSpecifications": [{"ResourceType": "instance",
                                      "Tags": [{"Key": "raylab-lab", "Value": "t"}]}]}}}}
    args = head_run_args(cfg, "t")
    assert args["SubnetId"] == "subnet-a" and "SubnetIds" not in args
    assert args["MinCount"] == args["MaxCount"] == 1
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    tags = {t["Key"]: t["Value"] for t in args["TagSpecifications"][0]["Tags"]}
    assert tags["ray-cluster-name"] == "raylab-t" and tags["ray-node-type"] == "head"
    assert tags["raylab-lab"] == "t"


def _node(iid: str, group: str = "idle") -> dict:
    return {"instance_id": iid, "group": group}


def test_agreement() -> None:
    ray = {"ray_nodes": [_node("i-h"), _node("i-1", "active"), _node("req-x", "pending")]}
    inst = [{"id": "i-h", "state": "running"}, {"id": "i-1", "state": "running"},
            {"id": "i-2", "state": "terminated"}]
    assert agreement(ray, inst, "i-h")["ok"]
    inst.append({"id": "i-3", "state": "running"})  # booting: EC2 has it, Ray not yet
    a = agreement(ray, inst, "i-h")
    assert not a["ok"] and a["ec2_only"] == ["i-3"]
    assert not agreement(ray, inst[:1], "i-h")["ok"]  # Ray has i-1, EC2 does not run it


def test_launch_failures_grouped_by_aws_code() -> None:
    ev = [{"kind": "launch", "t": 1.0},
          {"kind": "quota_error", "t": 2.0, "code": "VcpuLimitExceeded", "instance_type": "c7i.4xlarge",
           "market": "on-demand", "limit": 64, "quota_code": "L-1216C47A"},
          {"kind": "quota_error", "t": 3.0, "code": "VcpuLimitExceeded", "instance_type": "c7i.4xlarge",
           "market": "on-demand", "limit": 64, "quota_code": "L-1216C47A"},
          {"kind": "capacity_error", "t": 4.0, "code": "InsufficientInstanceCapacity",
           "instance_type": "c7i.4xlarge", "market": "spot"}]
    lf = launch_failures(ev)
    assert [(f["code"], f["count"]) for f in lf] == [("VcpuLimitExceeded", 2),
                                                     ("InsufficientInstanceCapacity", 1)]
    assert lf[0]["limit"] == 64 and lf[0]["last_t"] == 3.0


def test_only_the_recorded_program_counts_as_ours() -> None:
    import subprocess
    import time
    from pathlib import Path

    from raylab.targets.local.recovery import is_ours, recorded_program

    p = subprocess.Popen(["sleep", "30.5"])
    try:
        deadline = time.monotonic() + 5
        while b"30.5" not in Path(f"/proc/{p.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd
        assert is_ours(p.pid, recorded_program({"cmd": ["sleep", "30.5"]}))
        assert not is_ours(p.pid, recorded_program({"cmd": ["sleep", "99"]}))  # a recycled PID
        assert not is_ours(p.pid, recorded_program({}))
    finally:
        p.kill()
        p.wait()
    assert not is_ours(p.pid, recorded_program({"cmd": ["sleep", "30.5"]}))


def test_head_ready_waits_for_the_autoscaler_to_adopt_the_head() -> None:
    """Right after `ray start --head`, v2 lists the head twice: the live node and a pending record of
    its own (a fresh uuid) that it will not scale past; the stage waits for the second to go."""
    from raylab.cluster.status import head_ready

    live = {"instance_id": "i-head", "type": "ray.head.default", "group": "idle"}
    adopting = {"instance_id": "7337ad64-9dc3-4999-86cb-3a0fb2a44d28", "type": "ray.head.default",
                "group": "pending"}
    worker_pending = {"instance_id": "0f0e", "type": "ray.worker.ondemand", "group": "pending"}
    assert not head_ready({"ray_nodes": [live, adopting]}, "i-head")
    assert head_ready({"ray_nodes": [live]}, "i-head")
    assert head_ready({"ray_nodes": [live, worker_pending]}, "i-head")  # workers booting: still ready
    assert not head_ready({"ray_nodes": [adopting]}, "i-head")
    assert not head_ready({"ray_nodes": [{**live, "instance_id": "i-other"}]}, "i-head")


@pytest.mark.parametrize(("raylet_out", "retries_before", "then"), [
    ("... Check failed: ... Timed out waiting for file /t/metrics_agent_port_3ce7\n", 0, "boots again"),
    ("... Check failed: ... Timed out waiting for file /t/metrics_agent_port_3ce7\n", 1, "boots again"),
    ("... Check failed: ... Timed out waiting for file /t/metrics_agent_port_3ce7\n", 2, "terminated"),
    ("[raylet] some other fatal error\n", 0, "terminated"),
    (None, 0, "terminated"),  # no raylet log at all: Ray never started there
])
def test_a_node_whose_raylet_gave_up_on_its_agents_boots_again(
        tmp_path: Path, raylet_out: str | None, retries_before: int, then: str) -> None:
    """Ray 2.60's raylet aborts when its agents miss a fixed 15 s (shared cores under load): the twin
    boots that node again, twice at most; any other exit terminates the instance (cloud and Ray agree)."""
    session = tmp_path / "node" / "session_2026"
    (session / "logs").mkdir(parents=True)
    (tmp_path / "node" / "session_latest").symlink_to(session)
    if raylet_out is not None:
        (session / "logs" / "raylet.out").write_text(raylet_out)
    terminated: list[tuple[str, str]] = []
    events: list[str] = []
    inst = {"id": "i-0123456789abcdef0", "state": "running", "type": "c7i.4xlarge", "market": "spot",
            "tags": {"ray-cluster-name": "c", "ray-node-type": "worker", "ray-user-node-type": "w"}}
    ms = Machines(lambda: [inst], lambda iid, why: terminated.append((iid, why)),
                  lambda kind, **kw: events.append(kind), tmp_path / "logs")
    ms.clusters["c"] = ClusterReg(name="c", gcs_address="127.0.0.1:1", temp_root=str(tmp_path), node_types={})
    proc = subprocess.Popen(["true"])
    proc.wait()
    m = Machine(instance_id=inst["id"], cluster="c", node_type="w", instance_type="c7i.4xlarge",
                market="spot", state="booting", pid=proc.pid, temp_dir=str(tmp_path / "node"),
                boot_retries=retries_before, proc=proc)
    ms.machines[m.instance_id] = m
    ms.reconcile_once()
    time.sleep(0.2)  # terminate runs on its own thread
    if then == "boots again":
        assert m.state == "queued" and m.boot_retries == retries_before + 1 and m.proc is None
        assert events == ["node_boot_retry"] and terminated == []
        assert ms._queue.get_nowait() == m.instance_id
    else:
        assert m.state == "exited" and terminated == [(m.instance_id, "Ray node process exited")]


def test_agents_are_ready_when_every_port_file_the_raylet_waits_for_is_written(tmp_path: Path) -> None:
    session = tmp_path / "session_x"
    session.mkdir()
    (tmp_path / "session_latest").symlink_to(session)
    for name in AGENT_PORT_FILES[:-1]:
        assert not agents_ready(str(tmp_path))
        (session / f"{name}_3ce750ea").write_text("41234")
    assert not agents_ready(str(tmp_path))
    (session / f"{AGENT_PORT_FILES[-1]}_3ce750ea").write_text("41235")
    assert agents_ready(str(tmp_path))


def test_a_raylet_that_gave_up_is_booted_again_before_its_ray_start_exits(tmp_path: Path) -> None:
    """`ray start --block` notices its raylet gone only seconds later (measured: the retry came 15 s after
    the give-up, and the node was reported running meanwhile): the twin reads the raylet's own line and
    boots the node again at once, stopping what is left of the first boot."""
    session = tmp_path / "node" / "session_2026"
    (session / "logs").mkdir(parents=True)
    (tmp_path / "node" / "session_latest").symlink_to(session)
    (session / "logs" / "raylet.out").write_text("... Timed out waiting for file /t/metrics_agent_port_3c\n")
    events: list[str] = []
    inst = {"id": "i-0123456789abcdef1", "state": "running", "type": "c7i.4xlarge", "market": "on-demand",
            "tags": {"ray-cluster-name": "c", "ray-node-type": "worker", "ray-user-node-type": "w"}}
    ms = Machines(lambda: [inst], lambda iid, why: None, lambda kind, **kw: events.append(kind),
                  tmp_path / "logs")
    ms.clusters["c"] = ClusterReg(name="c", gcs_address="127.0.0.1:1", temp_root=str(tmp_path), node_types={})
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)  # `ray start --block`, still waiting
    try:
        m = Machine(instance_id=inst["id"], cluster="c", node_type="w", instance_type="c7i.4xlarge",
                    market="on-demand", state="booting", pid=proc.pid, temp_dir=str(tmp_path / "node"),
                    proc=proc)
        ms.machines[m.instance_id] = m
        ms.reconcile_once()
        assert m.state == "queued" and m.boot_retries == 1 and events == ["node_boot_retry"]
        assert ms._queue.get_nowait() == m.instance_id
        assert proc.wait(timeout=10) is not None  # the first boot's session stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
