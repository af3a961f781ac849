"""The AWS target's SSH commands and its overlay on the rendered cluster config (pure parts)."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.targets.aws import ssh
from raylab.targets.aws.access import region_of
from raylab.targets.aws.cluster import aws_overlay


def plan(tmp_path: Path, port: int = 22) -> ssh.SshPlan:
    return ssh.plan_for(tmp_path / ".raylab", "raylab-kim", ssh.Hop("ec2-user", "34.1.2.3", port))


def test_command_hops_through_the_bastion_without_agent(tmp_path: Path) -> None:
    p = plan(tmp_path)
    cmd = ssh.ssh_command(p, ssh.Hop("ubuntu", "10.42.16.7"), ["ray", "status"])
    assert cmd[:3] == ["ssh", "-F", str(p.config)]
    assert "ProxyJump=ec2-user@34.1.2.3" in cmd
    assert cmd[cmd.index("-i") + 1] == str(p.key)
    assert "IdentitiesOnly=yes" in cmd
    assert cmd[-3:] == ["ubuntu@10.42.16.7", "--", "ray status"]
    assert "-A" not in cmd and not any("ForwardAgent" in a for a in cmd)
    assert ssh.forbidden_flags(cmd) == []


def test_tunnel_binds_loopback_only(tmp_path: Path) -> None:
    cmd = ssh.ssh_command(
        plan(tmp_path, 2222), ssh.Hop("ubuntu", "10.42.16.7"), forward=(40001, "127.0.0.1", 8265)
    )
    assert "ProxyJump=ec2-user@34.1.2.3:2222" in cmd
    assert cmd[cmd.index("-L") + 1] == "127.0.0.1:40001:127.0.0.1:8265"
    assert "-N" in cmd and cmd[-1] == "ubuntu@10.42.16.7"


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", "-A", "h"],
        ["ssh", "-NA", "h"],
        ["ssh", "-o", "ForwardAgent=yes", "h"],
        ["ssh", "-oForwardAgent yes", "h"],
    ],
)
def test_agent_forwarding_is_detected(argv: list[str]) -> None:
    assert ssh.forbidden_flags(argv)


def test_config_pins_bastion_and_never_forwards_the_agent(tmp_path: Path) -> None:
    p = plan(tmp_path)
    ssh.write_config(p)
    text = p.config.read_text()
    assert stat.S_IMODE(p.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.config.parent.stat().st_mode) == 0o700
    lines = [ln.strip() for ln in text.splitlines()]
    # first match wins in ssh_config: the bastion's strict rule precedes the catch-all
    assert lines.index("Host 34.1.2.3") < lines.index("StrictHostKeyChecking yes") < lines.index("Host *")
    assert "ForwardAgent no" in lines and f"UserKnownHostsFile {p.known_hosts}" in lines


def test_ray_proxy_command_is_the_bastion_hop(tmp_path: Path) -> None:
    p = plan(tmp_path)
    parts = shlex.split(ssh.ray_proxy_command(p))
    assert parts[:3] == ["ssh", "-W", "%h:%p"]
    assert parts[-1] == "ec2-user@34.1.2.3"
    assert "StrictHostKeyChecking=yes" in parts and "ForwardAgent=no" in parts
    assert ssh.forbidden_flags(parts) == []


def test_overlay_for_ray_up(tmp_path: Path) -> None:
    p = plan(tmp_path)
    cfg = {
        "provider": {"type": "aws", "region": "us-west-2"},
        "auth": {"ssh_user": "ubuntu", "ssh_private_key": ".raylab/ssh/raylab-kim.pem"},
        "available_node_types": {"h": {"node_config": {}}, "w": {"node_config": {"KeyName": "other"}}},
    }
    out = aws_overlay(cfg, plan=p, key_name="raylab-kim", region="eu-west-1")
    assert out["provider"]["use_internal_ips"] is True and out["provider"]["region"] == "eu-west-1"
    assert out["auth"]["ssh_private_key"] == str(p.key) and Path(out["auth"]["ssh_private_key"]).is_absolute()
    assert out["auth"]["ssh_proxy_command"] == ssh.ray_proxy_command(p)
    assert {nt["node_config"]["KeyName"] for nt in out["available_node_types"].values()} == {"raylab-kim"}
    assert cfg["available_node_types"]["w"]["node_config"]["KeyName"] == "other"  # input untouched
    cfg["provider"]["aws_credentials"] = {"aws_secret_access_key": "x"}
    with pytest.raises(RaylabError, match="carries AWS credentials"):
        aws_overlay(cfg, plan=p, key_name="raylab-kim", region="eu-west-1")


def test_region_precedence() -> None:
    assert region_of("eu-west-1", "us-west-2", {"AWS_DEFAULT_REGION": "us-east-1"}, None) == "eu-west-1"
    assert region_of(None, "us-west-2", {"AWS_DEFAULT_REGION": "us-east-1"}, None) == "us-west-2"
    assert region_of(None, None, {"AWS_DEFAULT_REGION": "us-east-1"}, "ap-south-1") == "us-east-1"
    assert region_of(None, None, {}, "ap-south-1") == "ap-south-1"
    assert region_of(None, None, {}, None) is None


def test_console_fingerprints() -> None:
    console = (
        "junk\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 SHA256:abcDEF+/1 root@ip (ED25519)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
    )
    assert ssh.console_fingerprints(console) == ["SHA256:abcDEF+/1"]
    assert ssh.console_fingerprints("nothing yet") == []


def test_generated_key_is_private(tmp_path: Path) -> None:
    key, pub = ssh.ensure_key(tmp_path / "k" / "raylab-kim.pem", "raylab-kim")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and pub.startswith("ssh-ed25519 ")
    again, pub2 = ssh.ensure_key(key, "raylab-kim")
    assert pub2 == pub  # generated once
