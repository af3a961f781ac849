"""`ray up` / `ray down` through the AWS target with Ray's own AWS provider creating the head in moto.

Runs tests/aws/netns_ray_up.py inside `unshare --net` (only loopback exists there, so nothing can
leave the machine even if a fake were missing) with ssh/rsync replaced by recorders on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raylab.targets.aws.ssh import forbidden_flags

pytestmark = pytest.mark.aws

SCRIPT = Path(__file__).with_name("netns_ray_up.py")
ROOT = Path(__file__).resolve().parents[2]


def _netns_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not _netns_ok():
        pytest.skip("needs root and `unshare --net` (network namespaces) to isolate Ray's updater")
    tmp = tmp_path_factory.mktemp("rl")
    r = subprocess.run(
        ["unshare", "--net", "--", sys.executable, str(SCRIPT), str(tmp)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RAYLAB-REPORT ")), None)
    logs = tmp / ".raylab" / "logs"
    detail = (
        r.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in logs.glob("*.log")) if logs.exists() else ""
    )
    assert r.returncode == 0 and line, detail
    return json.loads(line.split(" ", 1)[1])


def test_nothing_leaves_the_namespace(report: dict) -> None:
    assert report["connect_10"] == ["OSError: [Errno 101] Network is unreachable"]


def test_ray_up_creates_the_head_with_its_profile_and_key(report: dict) -> None:
    heads = [i for i in report["after_up"] if i["tags"].get("ray-node-type") == "head"]
    assert len(heads) == 1 and heads[0]["state"] == "running"
    head = heads[0]
    assert head["id"] == report["info"]["head_instance_id"]
    assert head["profile"] == report["identity"]["head_instance_profile_arn"]
    assert head["key"] == "raylab-nt"
    assert head["tags"]["ray-node-status"] == "up-to-date"  # Ray's updater ran to the end
    assert report["info"]["head_ip"] == head["ip"]
    assert report["key_mode"] == "0o600"
    assert report["home_ssh"] == []  # Ray's bootstrap wrote no key of its own into ~/.ssh


def test_every_ssh_hop_goes_through_the_bastion_without_agent(report: dict) -> None:
    ssh_calls = [c["argv"] for c in report["calls"] if c["tool"] == "ssh"]
    rsync_calls = [c["argv"] for c in report["calls"] if c["tool"] == "rsync"]
    assert ssh_calls and rsync_calls
    bastion = f"ec2-user@{report['bastion_ip']}"
    head = f"admin@{report['info']['head_ip']}"  # Debian 12 node image
    for argv in ssh_calls:
        proxy = [a for a in argv if a.startswith("ProxyCommand=")]
        assert len(proxy) == 1, argv
        hop = shlex.split(proxy[0].split("=", 1)[1])
        assert hop[:3] == ["ssh", "-W", "%h:%p"] and hop[-1] == bastion
        assert "StrictHostKeyChecking=yes" in hop and "ForwardAgent=no" in hop
        assert head in argv  # private IP (use_internal_ips), never a public one
        assert forbidden_flags(argv) == [] and forbidden_flags(hop) == []
    for argv in rsync_calls:
        rsh = shlex.split(argv[argv.index("--rsh") + 1])
        assert any(a.startswith("ProxyCommand=ssh -W %h:%p") and a.endswith(bastion) for a in rsh)
        assert forbidden_flags(rsh) == []
        assert argv[-1].startswith(f"{head}:")


def test_ray_down_and_the_sweep_leave_no_instance(report: dict) -> None:
    states = {i["id"]: i["state"] for i in report["after_down"]}
    assert report["orphan"] in states
    assert set(states.values()) == {"terminated"}
    # only what the test seeded for stages 1-2 is left (their own teardown removes it)
    left = report["leftovers"]
    gone = [report["orphan"], report["info"]["head_instance_id"], "key pair", "process"]
    assert not any(g in x for g in gone for x in left), left
    assert {"instance profile ray-instance-profile-nt", "IAM role raylab-nt-ray-head"} <= set(left)


def test_the_spot_helpers_reach_the_head_and_the_guard_starts_there(report: dict) -> None:
    """file_mounts copy the guard and the watcher (workers get them from the head's copy); the head's
    start commands start the guard beside the autoscaler."""
    rsync_calls = [c["argv"] for c in report["calls"] if c["tool"] == "rsync"]
    copied = {a.rsplit(":", 1)[-1] for argv in rsync_calls for a in argv[-1:]}
    assert {"~/raylab/guard.py", "~/raylab/imds_watcher.py"} <= copied, copied
    sources = {argv[-2] for argv in rsync_calls}
    assert any(s.endswith("src/raylab/spot/imds_watcher.py") for s in sources), sources
    remote = " ".join(a for c in report["calls"] if c["tool"] == "ssh" for a in c["argv"])
    assert "ray-env/bin/python ~/raylab/guard.py --config ~/ray_bootstrap_config.yaml" in remote
