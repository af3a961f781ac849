"""One EC2 instance of the rehearsal as a machine: its own network namespace with the private IP EC2
gave it, its own mount, UTS and PID namespaces, a home for the image's login user, and a real sshd.

What a machine is (pure: ``MachineSpec``, ``files``), and its edge (``Machine.boot``/``stop``): the
``ip`` commands that give it a veth on the world's bridge, and one ``unshare`` whose PID namespace
holds everything that ever runs on the machine (sshd, Ray, the jobs), so stopping the machine is one
kill of that namespace's init, and a world that dies takes its machines with it (parent-death
signal on the ``unshare``, ``--kill-child`` on its init).

Inside, the machine sees the host's file system except: ``/tmp`` (its own, as Ray's session dirs
must be), ``/home`` (only its user's home), ``/etc/passwd``/``group``/``shadow`` (its image's user
as uid 0), and the image's Python (``python3`` on its PATH; a Python the image does not ship is
hidden). Its dirs are reached inside through ``/mnt/machine`` and ``/mnt/rehearsal``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from raylab.procs import death_signal

GATEWAY = "169.254.169.254"  # the VPC's router as machines see it: the AWS endpoint and IMDS live here
BRIDGE = "rlbr0"
SSHD = "/usr/sbin/sshd"
HOST_PYTHONS = ("/usr/bin/python3", "/usr/bin/python3.11")  # Debian 12's own, on this machine kind
PYENV = Path("/root/.pyenv/versions")


@dataclass(frozen=True)
class MachineSpec:
    instance_id: str
    private_ip: str
    prefix: int  # the VPC's prefix length: every machine of the VPC is on one link
    user: str  # the image's login user (admin, ec2-user, ubuntu)
    python: str  # the image's python3, "3.11"
    path: tuple[str, ...]  # the image's PATH
    authorized_key: str  # the instance's key pair, as cloud-init writes it
    role: str = "node"  # "bastion" (TCP forwarding for ProxyJump) or "node"

    @property
    def short(self) -> str:
        return self.instance_id.removeprefix("i-")[-10:]

    @property
    def netns(self) -> str:
        return f"m-{self.short}"

    @property
    def veth(self) -> str:
        return f"v{self.short}"[:15]

    @property
    def hostname(self) -> str:
        return "ip-" + self.private_ip.replace(".", "-")  # EC2's private DNS name, short form


def python_for(version: str) -> str | None:
    """The executable that plays ``python3`` of an image shipping ``version`` (None: none here)."""
    if version == "3.11" and Path(HOST_PYTHONS[1]).exists():
        return HOST_PYTHONS[1]
    for d in sorted(PYENV.glob(f"{version}.*")) if PYENV.is_dir() else []:
        exe = d / "bin" / f"python{version}"
        if exe.exists():
            return str(exe)
    return None


def files(spec: MachineSpec, env: dict[str, str], node_bin: str) -> dict[str, str]:
    """The machine's own files, relative to its dir (pure)."""
    path = ":".join([node_bin, "/mnt/machine/ami-bin", *spec.path])
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    bashrc = (f"# the image's login shell (raylab rehearsal)\nexport PATH={path}\n{exports}")
    return {
        "etc/passwd": f"{spec.user}:x:0:0:{spec.user}:/home/{spec.user}:/bin/bash\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                      "sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n",
        "etc/group": f"{spec.user}:x:0:\nnogroup:x:65534:\n",
        "etc/shadow": f"{spec.user}:*:19000:0:99999:7:::\n",
        "home/.profile": '[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n',
        "home/.bashrc": bashrc,
        "home/.ssh/authorized_keys": spec.authorized_key.strip() + "\n",
        "sshd_config": "\n".join([
            "Port 22", "ListenAddress 0.0.0.0",
            "HostKey /mnt/machine/ssh_host_ed25519_key",
            "PidFile /mnt/machine/sshd.pid",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            # the images' sshd defaults: TCP forwarding (ProxyJump through the bastion, raylab's dashboard
            # tunnel to the head) and agent forwarding allowed; raylab never asks for an agent
            "AllowTcpForwarding yes", "AllowAgentForwarding yes", "X11Forwarding no",
            "MaxStartups 100:30:200", "MaxSessions 50",
            "LogLevel VERBOSE", "",
        ]),
    }


def inner_script(spec: MachineSpec, mdir: Path, shared: Path, python: str, boot_delay_s: float) -> str:
    """What the machine's init runs (in its new mount/UTS/PID namespaces): uv's cache seeded into the
    home (``raylab.rehearsal.uvcache``), the mounts, then sshd."""
    from raylab.rehearsal.uvcache import seed_lines

    q = shlex.quote
    lines = [
        "set -eu",
        *seed_lines(shared / "uv-cache", mdir / "home"),  # host paths: before the home is a mount
        "mount -t tmpfs rl-mnt /mnt", "mkdir -p /mnt/machine /mnt/rehearsal",
        f"mount --bind {q(str(mdir))} /mnt/machine", f"mount --bind {q(str(shared))} /mnt/rehearsal",
        f"hostname {q(spec.hostname)}",
        "mount --bind /mnt/machine/tmp /tmp",
        "mount -t tmpfs rl-home /home", f"mkdir -p /home/{spec.user}",
        f"mount --bind /mnt/machine/home /home/{spec.user}",
        *[f"mount --bind /mnt/machine/etc/{f} /etc/{f}" for f in ("passwd", "group", "shadow")],
    ]
    if python not in HOST_PYTHONS:  # the image ships another Python: the host's is not there
        lines += [f"mount --bind /mnt/machine/absent {p}" for p in HOST_PYTHONS if Path(p).exists()]
    lines += [
        "mkdir -p /run/sshd",
        f"sleep {boot_delay_s:.2f}",  # the image's boot until sshd listens (modelled, see the runbook)
        f"exec {SSHD} -D -e -f /mnt/machine/sshd_config",
    ]
    return "\n".join(lines) + "\n"


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Machine:
    """A booted machine (the edge). ``boot`` returns at once; sshd listens after the boot delay."""

    def __init__(self, spec: MachineSpec, root: Path, shared: Path, env: dict[str, str],
                 node_bin: str, boot_delay_s: float) -> None:
        self.spec = spec
        self.dir = root / spec.instance_id
        self.shared = shared
        self.env = env
        self.node_bin = node_bin
        self.boot_delay_s = boot_delay_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.public_ips: list[str] = []
        self.booted_at = 0.0

    @property
    def host_pub(self) -> Path:
        return self.dir / "ssh_host_ed25519_key.pub"

    def boot(self) -> None:
        s = self.spec
        python = python_for(s.python)
        if python is None:
            raise RuntimeError(f"this machine cannot play Python {s.python} (image of {s.instance_id})")
        for rel, text in files(s, self.env, self.node_bin).items():
            p = self.dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        (self.dir / "tmp").mkdir(exist_ok=True)
        (self.dir / "tmp").chmod(0o1777)
        (self.dir / "absent").write_text("")
        (self.dir / "absent").chmod(0o000)
        ami_bin = self.dir / "ami-bin"
        ami_bin.mkdir(exist_ok=True)
        for name in ("python3", f"python{s.python}"):
            link = ami_bin / name
            link.unlink(missing_ok=True)
            link.symlink_to(python)
        key = self.dir / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{s.hostname}",
                            "-f", str(key)], check=True)
        ip("netns", "add", s.netns)
        ip("link", "add", s.veth, "type", "veth", "peer", "name", "eth0", "netns", s.netns)
        ip("link", "set", s.veth, "master", BRIDGE, "up")
        ip("-n", s.netns, "link", "set", "lo", "up")
        ip("-n", s.netns, "addr", "add", f"{s.private_ip}/{s.prefix}", "dev", "eth0")
        ip("-n", s.netns, "link", "set", "eth0", "up")
        ip("-n", s.netns, "route", "add", GATEWAY, "dev", "eth0")
        ip("-n", s.netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink")
        ip("route", "replace", f"{s.private_ip}/32", "dev", BRIDGE)
        script = inner_script(s, self.dir.resolve(), self.shared.resolve(), python, self.boot_delay_s)
        (self.dir / "init.sh").write_text(script)
        log = open(self.dir / "console.log", "ab")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", s.netns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--propagation", "private",
             "sh", str(self.dir / "init.sh")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=death_signal(signal.SIGKILL),  # noqa: PLW1509 - the world dies, the machine dies
            start_new_session=True)
        log.close()
        self.booted_at = time.monotonic()

    def add_public_ip(self, addr: str) -> None:
        if addr in self.public_ips:
            return
        ip("-n", self.spec.netns, "addr", "add", f"{addr}/32", "dev", "eth0")
        ip("route", "replace", f"{addr}/32", "dev", BRIDGE)
        self.public_ips.append(addr)

    def remove_public_ip(self, addr: str) -> None:
        """The Elastic IP moved to another instance (a replaced bastion): it leaves this machine."""
        ip("-n", self.spec.netns, "addr", "del", f"{addr}/32", "dev", "eth0")
        self.public_ips.remove(addr)

    def console(self) -> str:
        """What cloud-init prints to the console: the host key fingerprints."""
        if not self.host_pub.exists():
            return ""
        fp = subprocess.run(["ssh-keygen", "-l", "-f", str(self.host_pub)], capture_output=True,
                            text=True).stdout.strip()
        return ("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n" + fp +
                "\n-----END SSH HOST KEY FINGERPRINTS-----\n")

    def stop(self) -> None:
        """Everything on the machine ends with its PID namespace's init; then its links go."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for addr in [self.spec.private_ip, *self.public_ips]:
            subprocess.run(["ip", "route", "del", f"{addr}/32", "dev", BRIDGE], capture_output=True)
        subprocess.run(["ip", "link", "del", self.spec.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.spec.netns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)  # its disk (~0.4 GB with Ray's env) goes with it
