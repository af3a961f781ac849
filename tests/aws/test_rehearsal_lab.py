"""The AWS rehearsal, end to end: `raylab lab --target aws --rehearsal` stages 1-7 and
teardown, with every EC2 instance a real sshd machine in its own network namespace, Ray's own `ray up`
through the bastion, the head's autoscaler launching the workers, and nothing left afterwards.

The host's own network namespace must gain no address and no route (checked before and after)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raylab.rehearsal.internet import WHEELHOUSE

pytestmark = [pytest.mark.aws, pytest.mark.rehearsal]

RAYLAB = [sys.executable, "-m", "raylab"]


def host_network() -> str:
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return addrs + routes + "".join(ln.split(":")[1] for ln in links.splitlines())


def need_world() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or not Path("/usr/sbin/sshd").exists():
        pytest.skip("the rehearsal needs root, unshare and sshd (`make sysdeps`)")
    if not any(WHEELHOUSE.glob("ray-2.60.0-*.whl")):
        pytest.skip(f"no package mirror at {WHEELHOUSE}: `make wheelhouse`")


REPO = Path(__file__).resolve().parents[2]
DEBIAN_12 = "resolve:ssm:/aws/service/debian/release/12/latest/amd64"
UBUNTU_2204 = "resolve:ssm:/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"


def jammy_project(tmp_path: Path) -> Path:
    """The lab's project as an operator on Ubuntu 22.04 would change it: the same configs with Ubuntu's
    public SSM parameter as the node image, its login user and its root device (raylab refuses a
    mapping that names another root device)."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "configs", project / "configs")
    for name in ("infra", "workloads"):
        (project / name).symlink_to(REPO / name)
    cfg = project / "configs" / "ray-cluster.yaml"
    text = cfg.read_text()
    assert text.count(DEBIAN_12) == 3 and "ssh_user: admin" in text and "DeviceName: /dev/xvda" in text
    cfg.write_text(text.replace(DEBIAN_12, UBUNTU_2204).replace("ssh_user: admin", "ssh_user: ubuntu")
                   .replace("DeviceName: /dev/xvda", "DeviceName: /dev/sda1"))
    return project


def test_rehearsal_lab_end_to_end(tmp_path: Path) -> None:
    """The whole lab in the rehearsal: stages 1-7 and teardown, at lab scale 8 (stage 4's 60 x 30 s, the
    drills on the lab's clock), the mixed scenario (on-demand base, spot bursts).

    Played as an operator on Python 3.10 would run it: Ubuntu 22.04 nodes and ``--node-python 3.10``, the
    oldest Python Ray 2.60 supports, where a 3.11-only line in a file the nodes run (finding 9: the
    interruption watcher's ``datetime.UTC``) kills it; stage 6 asks Ray whether each reclaimed worker
    drained on its notice. The lab's default (Debian 12, the operator's 3.11) is the failed-stage test's."""
    need_world()
    before = host_network()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    project = jammy_project(tmp_path)
    t0 = time.monotonic()
    r = subprocess.run(
        [*RAYLAB, "lab", "--target", "aws", "--rehearsal", "--scenario", "mixed", "--scale", "8",
         "--node-python", "3.10", "--lab", "rh", "--yes", "--json", "--workdir", str(tmp_path / ".raylab")],
        capture_output=True, text=True, timeout=2400, env=env, cwd=project)
    took = time.monotonic() - t0
    assert host_network() == before  # the host's namespace gained no address, route or link
    assert r.returncode == 0, r.stderr[-6000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    names = [s["name"] for s in out["stages"]]
    assert names == ["network", "identity", "cluster", "stress", "scaling", "spot", "data", "teardown"]
    # The head and both on-demand workers were machines that ran Ray's setup and joined the cluster.
    ready = out["readiness"]["nodes"]
    assert len([n for n in ready if n.get("ray_alive_at") is not None]) >= 3, ready
    # Stage 5 re-applied with `ray up --no-restart` (finding 6): the head's GCS kept stage 4's job.
    assert "✓ stage 5 scaling · head kept running" in r.stderr
    # Stage 6: both FIS drills acted on the machines; stage 7 found the dashboard and read S3 (finding 5).
    assert "✓ stage 6 spot · reclaim: the targeted instances left running" in r.stderr
    assert "✓ stage 6 spot · capacity: the guard capped spot during the window" in r.stderr
    # Every reclaimed worker's Ray node died drained (finding 9: the watcher runs on 3.10 nodes).
    assert "✓ stage 6 spot · reclaim: each reclaimed worker drained on its notice" in r.stderr
    log = (tmp_path / ".raylab" / "logs" / "ray-up.log").read_text(errors="replace")
    assert "node env: Python 3.10." in log and "Ray 2.60.0" in log, log[-2000:]
    assert "✓ stage 7 data" in r.stderr
    assert "nothing left" in r.stderr
    print(f"rehearsal, stages 1-7 + teardown: {took:.0f} s; stages: {out.get('timings')}")


def test_rehearsal_failed_stage_still_tears_down(tmp_path: Path) -> None:
    """The nodes have no internet (a NAT that leads nowhere): the head's setup cannot install Ray, `ray up`
    fails, and `raylab lab` names stage 3, tears down the head, the stack and the profiles, and finds
    nothing left. The machines were real: the head booted and ran its setup before it failed."""
    need_world()
    before = host_network()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["RAYLAB_REHEARSAL_OFFLINE"] = "1"
    r = subprocess.run(
        [*RAYLAB, "lab", "--target", "aws", "--rehearsal", "--through", "3", "--lab", "rf", "--yes",
         "--json", "--workdir", str(tmp_path / ".raylab")],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert host_network() == before
    assert r.returncode == 1, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] is False and out["failed_stage"] == "3 cluster", out
    assert out["teardown"]["ran"] is True and out["teardown"]["leftovers"] == [], out["teardown"]
    assert "stage 3 cluster failed" in r.stderr
    log = (tmp_path / ".raylab" / "logs" / "ray-up.log").read_text(errors="replace")
    assert "pypi.org" in log or "astral.sh" in log, log[-2000:]  # it failed where a real node would
