"""SSH on the AWS target: the lab's key, its pinned host keys, and every command through the bastion.

Choices (security):
- Every connection to a Ray node hops through the bastion: ``-o ProxyJump=user@bastion`` for
  raylab's own commands, ``ssh -W %h:%p ... user@bastion`` as Ray's ``auth.ssh_proxy_command``
  (the same hop; Ray only takes a ProxyCommand). Never ``-A`` / ``ForwardAgent yes``: the lab's
  ssh config says ``ForwardAgent no`` and raylab never adds ``-A``.
- ``-F .raylab/ssh/config``: the lab's own ssh config is the only one read (so a user's
  ``~/.ssh/config`` with ForwardAgent or another IdentityFile cannot leak into the hop), and the
  jump ssh gets it too (OpenSSH passes ``-F`` on to the ProxyJump hop, not ``-i`` or ``-o``).
- Host keys are never trusted silently. The bastion's key is pinned before first use into the
  lab's own known_hosts (``.raylab/ssh/known_hosts``) with ``ssh-keyscan``, compared with the
  fingerprints cloud-init printed to the instance's console when EC2 has them, and printed;
  afterwards ``StrictHostKeyChecking yes`` for the bastion. Ray nodes (private IPs, new every
  cluster, reachable only through the pinned bastion) are recorded on first contact
  (``accept-new``) in the same file and removed at ``ray down``.
- Keys raylab generates are ed25519, mode 0600, in a 0700 folder under ``.raylab/ssh/``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raylab.errors import RaylabError


@dataclass(frozen=True)
class Hop:
    user: str
    host: str
    port: int = 22

    @property
    def spec(self) -> str:
        """``user@host[:port]`` as ProxyJump takes it."""
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


@dataclass(frozen=True)
class SshPlan:
    """Where the lab's SSH material lives and which bastion every hop goes through."""

    key: Path
    known_hosts: Path
    config: Path
    bastion: Hop


def ssh_dir(workdir: Path) -> Path:
    return workdir / "ssh"


def plan_for(workdir: Path, key_name: str, bastion: Hop) -> SshPlan:
    d = ssh_dir(workdir).resolve()
    return SshPlan(
        key=d / f"{key_name}.pem", known_hosts=d / "known_hosts", config=d / "config", bastion=bastion
    )


def config_text(plan: SshPlan) -> str:
    """The lab's ssh config: first match wins, so the bastion's strict entry comes first."""
    return "\n".join(
        [
            "# raylab: this lab's ssh config (generated; `ssh -F` reads only this file)",
            f"Host {plan.bastion.host}",
            "  StrictHostKeyChecking yes",
            "Host *",
            "  StrictHostKeyChecking accept-new",
            f"  IdentityFile {plan.key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {plan.known_hosts}",
            "  ForwardAgent no",
            "  ForwardX11 no",
            "  BatchMode yes",
            "  ConnectTimeout 20",
            "  ServerAliveInterval 15",
            "  ServerAliveCountMax 4",
            "",
        ]
    )


def write_config(plan: SshPlan) -> Path:
    _private_dir(plan.config.parent)
    _write_private(plan.config, config_text(plan))
    return plan.config


def ssh_command(
    plan: SshPlan,
    target: Hop,
    remote: str | Sequence[str] | None = None,
    *,
    forward: tuple[int, str, int] | None = None,
) -> list[str]:
    """``ssh`` to ``target`` through the bastion. ``remote``: a command (string, or argv that is
    shell-quoted); ``forward``: (local port, remote host, remote port) for a tunnel bound to
    127.0.0.1 (then no command runs: ``-N``)."""
    cmd = [
        "ssh",
        "-F",
        str(plan.config),
        "-o",
        f"ProxyJump={plan.bastion.spec}",
        "-i",
        str(plan.key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={plan.known_hosts}",
    ]
    if target.port != 22:
        cmd += ["-p", str(target.port)]
    if forward is not None:
        lport, rhost, rport = forward
        cmd += ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{lport}:{rhost}:{rport}"]
    cmd.append(f"{target.user}@{target.host}")
    if remote is not None and forward is None:
        cmd += ["--", remote if isinstance(remote, str) else shlex.join(remote)]
    return cmd


def ray_proxy_command(plan: SshPlan) -> str:
    """Ray's ``auth.ssh_proxy_command``: the bastion hop as a ProxyCommand (what ProxyJump runs)."""
    parts = [
        "ssh",
        "-W",
        "%h:%p",
        "-i",
        str(plan.key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        f"UserKnownHostsFile={plan.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    if plan.bastion.port != 22:
        parts += ["-p", str(plan.bastion.port)]
    parts.append(f"{plan.bastion.user}@{plan.bastion.host}")
    return " ".join(shlex.quote(p) if p != "%h:%p" else p for p in parts)


def forbidden_flags(argv: Sequence[str]) -> list[str]:
    """Agent forwarding in an ssh argv (``-A``, ``-NA``, ``-o ForwardAgent=yes``...): must be empty."""
    bad = []
    for i, a in enumerate(argv):
        if re.fullmatch(r"-[A-Za-z]*A[A-Za-z]*", a):
            bad.append(a)
        opt = (
            a[2:]
            if a.startswith("-o") and len(a) > 2
            else (argv[i + 1] if a == "-o" and i + 1 < len(argv) else "")
        )
        if re.match(r"(?i)^\s*forwardagent\s*[= ]\s*(yes|true)", opt):
            bad.append(opt)
    return bad


# --- keys and host keys -------------------------------------------------------------------------
def _private_dir(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def ensure_key(path: Path, comment: str) -> tuple[Path, str]:
    """An ed25519 key pair at ``path`` (0600) and ``path.pub``; generated once. Returns (path, public)."""
    _private_dir(path.parent)
    pub = path.with_name(path.name + ".pub")
    if not (path.exists() and pub.exists()):
        for p in (path, pub):
            p.unlink(missing_ok=True)
        r = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise RaylabError(
                f"ssh-keygen failed: {r.stderr.strip()}", "install OpenSSH's client (ssh-keygen)"
            )
    os.chmod(path, 0o600)
    return path, pub.read_text().strip()


def known_host_name(host: str, port: int = 22) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def fingerprints(key_lines: str) -> list[str]:
    """``SHA256:...`` fingerprints of public host key lines (known_hosts / keyscan format)."""
    r = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=key_lines, capture_output=True, text=True, check=False
    )
    return [ln.split()[1] for ln in r.stdout.splitlines() if len(ln.split()) > 1]


def console_fingerprints(console_output: str) -> list[str]:
    """The SHA256 fingerprints cloud-init printed between its SSH HOST KEY FINGERPRINTS markers."""
    m = re.search(
        r"BEGIN SSH HOST KEY FINGERPRINTS-+(.*?)-+END SSH HOST KEY FINGERPRINTS", console_output, re.S
    )
    return re.findall(r"(SHA256:[A-Za-z0-9+/=]+)", m.group(1)) if m else []


def pinned(plan: SshPlan, host: str, port: int = 22) -> bool:
    if not plan.known_hosts.exists():
        return False
    r = subprocess.run(
        ["ssh-keygen", "-F", known_host_name(host, port), "-f", str(plan.known_hosts)],
        capture_output=True,
        text=True,
        check=False,
    )
    return r.returncode == 0 and bool(r.stdout.strip())


def pin_host_key(
    plan: SshPlan, host: str, port: int = 22, expected: Sequence[str] = (), timeout: int = 10
) -> list[str]:
    """Scan ``host``'s keys and add them to the lab's known_hosts; return their fingerprints.

    With ``expected`` fingerprints (from the EC2 console), a scanned key must match one of them,
    else nothing is written and the run stops: someone may sit between you and the bastion.
    """
    r = subprocess.run(
        ["ssh-keyscan", "-T", str(timeout), "-p", str(port), host],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = "\n".join(ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#"))
    if not lines:
        raise RaylabError(
            f"no SSH host key from {host}:{port} ({r.stderr.strip()[-200:] or 'no answer'})",
            "check that the bastion is running and that SSH is allowed from your IP",
        )
    fps = fingerprints(lines + "\n")
    if expected and not set(fps) & set(expected):
        raise RaylabError(
            f"host key of {host} ({', '.join(fps)}) does not match its console ({', '.join(expected)})",
            "do not connect; recreate the bastion (raylab down)",
        )
    _private_dir(plan.known_hosts.parent)
    old = plan.known_hosts.read_text() if plan.known_hosts.exists() else ""
    _write_private(plan.known_hosts, old + ("" if not old or old.endswith("\n") else "\n") + lines + "\n")
    return fps


def forget_host(plan: SshPlan, host: str, port: int = 22) -> None:
    if plan.known_hosts.exists():
        subprocess.run(
            ["ssh-keygen", "-R", known_host_name(host, port), "-f", str(plan.known_hosts)],
            capture_output=True,
            check=False,
        )
        plan.known_hosts.with_name(plan.known_hosts.name + ".old").unlink(missing_ok=True)
