"""The rehearsal's machines and the way into its world, as decisions (pure; no namespaces here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raylab.rehearsal.enter import without_rehearsal_flags, world_command
from raylab.rehearsal.machine import HOST_PYTHONS, MachineSpec, files, inner_script

SPEC = MachineSpec("i-0123456789abcdef0", "10.42.16.20", 16, "admin", "3.11",
                   ("/usr/local/bin", "/usr/bin", "/bin"), "ssh-ed25519 AAAA lab")


@pytest.mark.parametrize(("argv", "want"), [
    (["lab", "--target", "aws", "--rehearsal"], ["lab", "--target", "aws"]),
    (["lab", "--rehearsal", "--boot-delay", "3", "--yes"], ["lab", "--yes"]),
    (["lab", "--boot-delay=0", "--rehearsal", "-t", "aws"], ["lab", "-t", "aws"]),
])
def test_the_operator_inside_runs_the_same_command_without_the_switch(argv: list[str],
                                                                     want: list[str]) -> None:
    assert without_rehearsal_flags(argv) == want


def test_the_world_is_a_private_network_and_mount_namespace() -> None:
    cmd = world_command(Path("/w"), Path("/s"), "us-west-2", 6, ["lab", "-t", "aws"])
    assert cmd[:cmd.index(sys.executable)] == ["unshare", "--net", "--mount", "--propagation", "private",
                                               "--fork", "--kill-child"]
    assert cmd[-3:] == ["--", "lab", "-t", "aws"][-3:]


@pytest.mark.parametrize(("scale", "fis"), [(None, "1"), (1, "1"), (4, "0.25"), (16, "0.25")])
def test_fis_runs_on_the_labs_clock(scale: int | None, fis: str) -> None:
    from raylab.rehearsal.enter import fis_time

    cmd = world_command(Path("/w"), Path("/s"), "us-west-2", 6, ["lab"], fis_time_x=fis_time(scale))
    assert cmd[cmd.index("--fis-time") + 1] == fis


def test_a_machine_has_its_image_user_as_uid_0_and_its_key_only() -> None:
    f = files(SPEC, {"UV_OFFLINE": "1"}, "/mnt/rehearsal/node-bin")
    assert f["etc/passwd"].startswith("admin:x:0:0:admin:/home/admin:/bin/bash\n")
    assert f["home/.ssh/authorized_keys"] == "ssh-ed25519 AAAA lab\n"
    path = "/mnt/rehearsal/node-bin:/mnt/machine/ami-bin:/usr/local/bin:/usr/bin:/bin"
    assert f"export PATH={path}\n" in f["home/.bashrc"]
    assert "export UV_OFFLINE=1\n" in f["home/.bashrc"]


@pytest.mark.parametrize("role", ["bastion", "node"])
def test_every_machine_takes_keys_only_and_forwards_tcp_as_the_images_do(role: str) -> None:
    from dataclasses import replace

    cfg = files(replace(SPEC, role=role), {}, "/x")["sshd_config"].splitlines()
    assert "AllowTcpForwarding yes" in cfg  # the hop and the dashboard tunnel
    assert "PasswordAuthentication no" in cfg
    assert "PubkeyAuthentication yes" in cfg


def test_an_image_with_another_python_hides_the_hosts() -> None:
    other = inner_script(SPEC, Path("/m"), Path("/s"), "/root/.pyenv/versions/3.6.15/bin/python3.6", 1)
    same = inner_script(SPEC, Path("/m"), Path("/s"), HOST_PYTHONS[1], 1)
    assert "mount --bind /mnt/machine/absent /usr/bin/python3.11" in other
    assert "/mnt/machine/absent" not in same
    assert same.rstrip().endswith("exec /usr/sbin/sshd -D -e -f /mnt/machine/sshd_config")


def test_a_killed_worlds_machine_disks_are_swept_a_live_ones_kept(tmp_path: Path) -> None:
    import os

    from raylab.rehearsal.world import sweep_dead_worlds

    live, dead = tmp_path / str(os.getpid()), tmp_path / "99999999"  # above any pid_max: never live
    for d in (live, dead):
        (d / "i-0abc" / "home").mkdir(parents=True)
    assert sweep_dead_worlds(tmp_path) == ["99999999"]
    assert live.exists() and not dead.exists()
