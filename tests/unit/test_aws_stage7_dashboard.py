"""Stage 7 on aws finds the cluster's dashboard through the target (an SSH tunnel through the bastion
to the head), not from ``state.cluster.dashboard_url``, which the AWS target never writes.

The AWS target is real except where it would reach a host: its bastion/head addresses are made up
and the "tunnel" process is a local HTTP server on the forwarded port that answers like a dashboard.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from raylab.context import Context
from raylab.errors import RaylabError
from raylab.targets.aws import AwsTarget
from raylab.targets.aws import ssh as sshmod
from raylab.ui import UI

FAKE_DASHBOARD = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/version" else 404)
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class OfflineAws(AwsTarget):
    def ssh_plan(self, ctx: Context) -> sshmod.SshPlan:
        return sshmod.plan_for(ctx.workdir, ctx.names["key_pair"], sshmod.Hop("ec2-user", "52.95.110.9"))

    def ensure_bastion_pinned(self, ctx: Context, plan: sshmod.SshPlan, wait_s: float = 0) -> None:
        return None

    def head_hop(self, ctx: Context) -> sshmod.Hop:
        return sshmod.Hop("ubuntu", "10.42.1.5")


def test_stage7_submits_through_the_tunnel_the_target_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raylab import procs
    from raylab.datajob import submit
    from raylab.stages.stage7_data import STAGE

    spawned: list[list[str]] = []
    real_spawn = procs.spawn

    def spawn(cmd: list[str], log: Path, **kw: Any):  # the tunnel, played by a local dashboard
        spawned.append(list(cmd))
        lport = int(cmd[cmd.index("-L") + 1].split(":")[1])
        return real_spawn([sys.executable, "-c", FAKE_DASHBOARD, str(lport)], log)

    submitted: list[str] = []

    def run_as_job(url: str, *a: Any, **kw: Any):
        submitted.append(url)
        raise RuntimeError("stop here: the job itself is not under test")

    monkeypatch.setattr(procs, "spawn", spawn)
    monkeypatch.setattr(submit, "run_as_job", run_as_job)
    target = OfflineAws()
    ctx = Context(target_name="aws", lab="t7", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                  _target=target)
    ctx.state.put("cluster", {"cluster_name": "raylab-t7", "head_instance_id": "i-0abc"})  # no URL
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            STAGE.apply(ctx)
    finally:
        target.stop_tunnel(ctx)
    assert len(spawned) == 1 and len(submitted) == 1
    cmd = spawned[0]
    assert "ProxyJump=ec2-user@52.95.110.9" in cmd and cmd[-1] == "ubuntu@10.42.1.5"
    lport = int(cmd[cmd.index("-L") + 1].split(":")[1])
    assert cmd[cmd.index("-L") + 1] == f"127.0.0.1:{lport}:127.0.0.1:8265"
    assert submitted == [f"http://127.0.0.1:{lport}"]
    assert "aws-dashboard-tunnel" not in ctx.state.get("processes")  # the tunnel was stopped by its pid


def test_stage7_on_aws_without_a_cluster_says_so(tmp_path: Path) -> None:
    from raylab.stages.stage7_data import STAGE

    ctx = Context(target_name="aws", lab="t7", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                  _target=OfflineAws())
    with pytest.raises(RaylabError, match="no cluster is up"):
        STAGE.apply(ctx)


def test_the_dashboard_tunnel_is_recorded_before_it_runs(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The SSH tunnel is one of raylab's children: recorded by pid and start time (long-lived, so a
    later command adopts it) and found by the leftover check until `down` stops it."""
    from raylab import leftovers, procs

    real_spawn = procs.spawn

    def spawn(cmd: list[str], log: Path, **kw: Any):  # the tunnel, played by a local dashboard
        lport = int(cmd[cmd.index("-L") + 1].split(":")[1])
        return real_spawn([sys.executable, "-c", FAKE_DASHBOARD, str(lport)], log, **kw)

    monkeypatch.setattr(procs, "spawn", spawn)
    target = OfflineAws()
    wd = tmp_path / ".raylab"
    ctx = Context(target_name="aws", lab="t7", ui=UI(quiet=True), workdir=wd, _target=target)
    ctx.state.put("cluster", {"cluster_name": "raylab-t7", "head_instance_id": "i-0abc"})
    try:
        target.dashboard_url(ctx)
        pid = ctx.state.get("processes")["aws-dashboard-tunnel"]["pid"]
        recs = [(r.pid, r.what, r.owner, r.ephemeral) for r in procs.Records(wd).live()]
        assert recs == [(pid, "dashboard tunnel", "aws-target", False)]
        assert [x.what for x in leftovers.find_leftovers(wd)] == ["dashboard tunnel"]
    finally:
        target.stop_tunnel(ctx)
    assert leftovers.find_leftovers(wd) == []
