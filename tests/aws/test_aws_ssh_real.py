"""raylab's SSH command reaches a command on the "head" through the "bastion": two real OpenSSH
servers on 127.0.0.1, the bastion's host key pinned first, no agent forwarding."""

from __future__ import annotations

import getpass
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from raylab.procs import stop_group
from raylab.targets.aws import ssh

pytestmark = pytest.mark.aws


def bastion_and_head(tmp_path: Path, sshd_factory) -> tuple[str, ssh.SshPlan, object, object]:
    """A key, two real sshd (bastion, head) that accept it, and the written ssh config for the hop."""
    user = getpass.getuser()
    workdir = tmp_path / ".raylab"
    _, pub = ssh.ensure_key(workdir / "ssh" / "raylab-t.pem", "raylab-t")
    bastion = sshd_factory("bastion", pub)
    head = sshd_factory("head", pub)
    plan = ssh.plan_for(workdir, "raylab-t", ssh.Hop(user, "127.0.0.1", bastion.port))
    ssh.write_config(plan)
    return user, plan, bastion, head


def test_command_reaches_head_through_bastion(tmp_path: Path, sshd_factory) -> None:
    user = getpass.getuser()
    workdir = tmp_path / ".raylab"
    key, pub = ssh.ensure_key(workdir / "ssh" / "raylab-t.pem", "raylab-t")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700

    bastion = sshd_factory("bastion", pub)
    head = sshd_factory("head", pub, allow_forwarding=False)
    plan = ssh.plan_for(workdir, "raylab-t", ssh.Hop(user, "127.0.0.1", bastion.port))
    ssh.write_config(plan)
    assert stat.S_IMODE(plan.config.stat().st_mode) == 0o600

    # The bastion's key is pinned (and checked against what "the console" printed) before use.
    expected = ssh.fingerprints(bastion.host_pub.read_text())
    fps = ssh.pin_host_key(plan, "127.0.0.1", bastion.port, expected=expected)
    assert set(fps) & set(expected)
    assert ssh.pinned(plan, "127.0.0.1", bastion.port)
    assert not ssh.pinned(plan, "127.0.0.1", head.port)

    # An agent with the key loaded is running locally: the head must not see it.
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            if agent_sock.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_sock), "HOME": str(tmp_path)}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)

        cmd = ssh.ssh_command(
            plan,
            ssh.Hop(user, "127.0.0.1", head.port),
            "echo head-says $((6*7)) agent=${SSH_AUTH_SOCK:-none}",
        )
        assert ssh.forbidden_flags(cmd) == []
        assert f"ProxyJump={user}@127.0.0.1:{bastion.port}" in cmd
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    finally:
        stop_group(agent.pid, timeout=5)

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "head-says 42 agent=none"
    # The bastion forwarded a TCP connection to the head's port: the hop really happened.
    assert re.search(
        rf"direct_tcpip: originator .* target 127\.0\.0\.1 port {head.port}\b", bastion.log_text()
    ), bastion.log_text()[-2000:]
    assert "Accepted publickey" in head.log_text()
    # The head (first contact, through the pinned bastion) was recorded, not ignored.
    assert ssh.pinned(plan, "127.0.0.1", head.port)


def test_a_changed_bastion_key_is_refused(tmp_path: Path, sshd_factory) -> None:
    user, plan, bastion, head = bastion_and_head(tmp_path, sshd_factory)
    # A console that printed other fingerprints: nothing is pinned, the run stops.
    with pytest.raises(Exception, match="does not match its console"):
        ssh.pin_host_key(plan, "127.0.0.1", bastion.port, expected=["SHA256:notTheBastionKey"])
    assert not ssh.pinned(plan, "127.0.0.1", bastion.port)
    # Unpinned bastion: StrictHostKeyChecking yes refuses the hop.
    r = subprocess.run(
        ssh.ssh_command(plan, ssh.Hop(user, "127.0.0.1", head.port), "true"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert r.returncode != 0
    assert "Host key verification failed" in r.stderr


def test_head_python_and_dashboard_tunnel_through_bastion(tmp_path: Path, sshd_factory) -> None:
    """What `raylab status`/stage 3 (a program on stdin for the head's Python) and `raylab dashboard`
    (a tunnel bound to 127.0.0.1) send through the bastion, against real sshd processes."""
    import http.server
    import threading
    import urllib.request

    from raylab.procs import free_port, port_in_use
    from raylab.targets.aws.cluster import HEAD_PYTHON

    user, plan, bastion, head = bastion_and_head(tmp_path, sshd_factory)
    ssh.pin_host_key(plan, "127.0.0.1", bastion.port)
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("SSH_AUTH_SOCK", None)
    hop = ssh.Hop(user, "127.0.0.1", head.port)

    r = subprocess.run(
        ssh.ssh_command(plan, hop, HEAD_PYTHON),
        input="import sys\nprint('RAYLAB', 6 * 7)\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "RAYLAB 42" in r.stdout.splitlines(), (r.stdout, r.stderr)

    # "the dashboard": an HTTP server on the head's loopback; the tunnel ends on the operator's loopback
    body = b"ray dashboard"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    lport = free_port()
    cmd = ssh.ssh_command(plan, hop, forward=(lport, "127.0.0.1", httpd.server_address[1]))
    tunnel = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        for _ in range(200):
            if port_in_use(lport):
                break
            assert tunnel.poll() is None, tunnel.stderr.read() if tunnel.stderr else ""
            subprocess.run(["sleep", "0.05"], check=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{lport}/", timeout=10) as resp:
            assert resp.read() == body
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{lport}"], capture_output=True, text=True
        ).stdout
        local_addrs = [ln.split()[3] for ln in listening.splitlines() if ln.strip()]
        assert local_addrs == [f"127.0.0.1:{lport}"]  # bound to loopback only, one listener
    finally:
        stop_group(tunnel.pid, timeout=5)
        httpd.shutdown()


class _Console:
    """EC2's get_console_output, as cloud-init prints host key fingerprints to it."""

    def __init__(self, fingerprints: list[str]) -> None:
        self.text = "\n".join(
            [
                "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
                *[f"256 {f} root@ip-10-42-0-5 (ED25519)" for f in fingerprints],
                "-----END SSH HOST KEY FINGERPRINTS-----",
            ]
        )

    def get_console_output(self, InstanceId: str, Latest: bool) -> dict:  # noqa: N803 - boto3's names
        return {"Output": self.text}


@pytest.mark.parametrize("console_matches", [True, False])
def test_bastion_key_checked_against_console(tmp_path: Path, sshd_factory, console_matches: bool) -> None:
    from raylab.cli.options import make_context
    from raylab.errors import RaylabError
    from raylab.options import LabOptions
    from raylab.targets.aws import AwsTarget

    ctx = make_context("aws", "t", workdir=tmp_path / ".raylab", quiet=True)
    _, pub = ssh.ensure_key(ctx.workdir / "ssh" / "raylab-t.pem", "raylab-t")
    bastion = sshd_factory("bastion", pub)
    ctx.state.put("network", {"BastionPublicIp": "127.0.0.1", "BastionInstanceId": "i-0bastion"})
    ctx.options = LabOptions(bastion_port=bastion.port)
    real = ssh.fingerprints(bastion.host_pub.read_text())
    console = _Console(real if console_matches else ["SHA256:someoneElsesKey"])

    class Target(AwsTarget):
        def _client(self, ctx, service):  # type: ignore[no-untyped-def]
            return console

    target = Target()
    plan = target.ssh_plan(ctx)
    assert plan.bastion == ssh.Hop("ec2-user", "127.0.0.1", bastion.port)
    if console_matches:
        target.ensure_bastion_pinned(ctx, plan, wait_s=30)
        assert ssh.pinned(plan, "127.0.0.1", bastion.port)
    else:
        with pytest.raises(RaylabError, match="does not match its console"):
            target.ensure_bastion_pinned(ctx, plan, wait_s=30)
        assert not ssh.pinned(plan, "127.0.0.1", bastion.port)


def test_a_replaced_bastion_is_pinned_again(tmp_path: Path, sshd_factory) -> None:
    """CloudFormation replaced the bastion (a new AMI): same Elastic IP, new instance, new host key. The
    old pin is forgotten and the new key pinned against the new instance's console, not refused."""
    from raylab.cli.options import make_context
    from raylab.options import LabOptions
    from raylab.targets.aws import AwsTarget

    ctx = make_context("aws", "t", workdir=tmp_path / ".raylab", quiet=True)
    _, pub = ssh.ensure_key(ctx.workdir / "ssh" / "raylab-t.pem", "raylab-t")
    new, old = sshd_factory("bastion", pub), sshd_factory("old-bastion", pub)
    ctx.state.put("network", {"BastionPublicIp": "127.0.0.1", "BastionInstanceId": "i-0new"})
    ctx.options = LabOptions(bastion_port=new.port)
    console = _Console(ssh.fingerprints(new.host_pub.read_text()))

    class Target(AwsTarget):
        def _client(self, ctx, service):  # type: ignore[no-untyped-def]
            return console

    target = Target()
    plan = target.ssh_plan(ctx)
    plan.known_hosts.parent.mkdir(parents=True, exist_ok=True)  # the old bastion's key, pinned earlier
    plan.known_hosts.write_text(f"{ssh.known_host_name('127.0.0.1', new.port)} {old.host_pub.read_text()}")
    plan.known_hosts.with_name("bastion-instance").write_text("i-0old\n")
    target.ensure_bastion_pinned(ctx, plan, wait_s=30)
    assert ssh.fingerprints(plan.known_hosts.read_text()) == ssh.fingerprints(new.host_pub.read_text())
    assert plan.known_hosts.with_name("bastion-instance").read_text().strip() == "i-0new"
    r = subprocess.run(["ssh", "-F", str(plan.config), "-i", str(plan.key), "-o", "StrictHostKeyChecking=yes",
                        "-o", f"UserKnownHostsFile={plan.known_hosts}", "-p", str(new.port),
                        "root@127.0.0.1", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr  # StrictHostKeyChecking=yes passes with the new pin
