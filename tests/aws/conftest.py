"""Fixtures for the AWS target's tests: a real OpenSSH server on loopback, a moto server on loopback.

Nothing here reaches beyond 127.0.0.1. Every process a fixture starts is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raylab.procs import free_port, stop_group

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    host_pub: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')[-1000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}")


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator:
    """Start sshd processes on 127.0.0.1 (throwaway host keys, keys authorized from a tmp file)."""
    if not os.path.exists(SSHD):
        pytest.skip("sshd missing: `make sysdeps` installs openssh-server")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    started: list[Sshd] = []

    def start(name: str, authorized_pub: str, allow_forwarding: bool = True) -> Sshd:
        d = tmp_path / f"sshd-{name}"
        d.mkdir()
        hostkey = d / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
        (d / "authorized_keys").write_text(authorized_pub + "\n")
        port = free_port()
        cfg = d / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {hostkey}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowTcpForwarding {'yes' if allow_forwarding else 'no'}",
                    "AllowAgentForwarding yes",  # so the test can prove raylab never asks for it
                    "LogLevel DEBUG1",
                    "",
                ]
            )
        )
        log = d / "sshd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-p", str(port), "-f", str(cfg), "-h", str(hostkey)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        s = Sshd(port, proc, log, hostkey.with_suffix(".pub"))
        started.append(s)
        _wait_port(port, proc, log)
        return s

    yield start
    for s in started:
        stop_group(s.proc.pid, timeout=5)


@pytest.fixture
def ec2_quotas(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """EC2 vCPU quotas served by moto's Service Quotas (moto has none for EC2): edit the dict."""
    import urllib.request

    from moto.servicequotas.models import ServiceQuotasBackend

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    quotas: dict[str, float] = {}
    orig = ServiceQuotasBackend.get_service_quota

    def get_service_quota(self, service_code: str, quota_code: str):  # type: ignore[no-untyped-def]
        if service_code == "ec2" and quota_code in quotas:
            return {
                "ServiceCode": "ec2",
                "QuotaCode": quota_code,
                "QuotaName": quota_code,
                "Value": float(quotas[quota_code]),
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
        return orig(self, service_code, quota_code)

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", get_service_quota)
    return quotas


def aws_env(endpoint: str, **extra: str) -> dict[str, str]:
    """Environment for a raylab process against moto: fake keys, a region, no IMDS, no user config."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/raylab-test",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/raylab-test",
        "RAYLAB_OPERATOR_IP": "52.95.110.1",  # injected: the real lookup never runs in tests
        **extra,
    }
