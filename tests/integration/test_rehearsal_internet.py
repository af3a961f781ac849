"""The nodes' internet for real: the lab's own setup commands on two machines with no network.

Each machine is a fresh HOME whose ``~/.bashrc`` holds the rehearsal's lines (``profile_lines``), in its
own network namespace (``unshare --net``: loopback only), running every command the way Ray's updater
does (``bash --login -c -i``): uv from the mirror's installer, ``~/ray-env`` on this host's Python 3.11,
``ray[default]`` and the head's packages from the wheelhouse. The second machine shares the uv cache.
Needs root (for ``unshare``), /usr/bin/python3.11 and the wheelhouse (`make wheelhouse`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from raylab.cluster.bootstrap import RAY_VERSION, UV_VERSION, head_setup_commands, setup_commands
from raylab.rehearsal.internet import (
    WHEELHOUSE,
    node_bin,
    node_environment,
    profile_lines,
    wheelhouse_ready,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not wheelhouse_ready(WHEELHOUSE),
                       reason=f"no wheelhouse at {WHEELHOUSE}: run `make wheelhouse` (downloads ~145 MB)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                       reason="needs root and unshare(1) for a network namespace"),
    pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(),
                       reason="no /usr/bin/python3.11 (plays the AMI's Python)"),
]


def make_machine(root: Path, name: str, bindir: Path, env: dict[str, str]) -> Path:
    home = root / name
    home.mkdir()
    (home / ".profile").write_text('[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n')
    (home / ".bashrc").write_text("\n".join(profile_lines(bindir, env)) + "\n")
    return home


def on_machine(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """One command as Ray's updater runs it, in a network namespace of its own (loopback only)."""
    script = f"ip link set lo up; exec bash --login -c -i {shlex.quote(command)}"
    return subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True,
                          timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb"})


def test_setup_commands_install_ray_offline_on_two_machines(tmp_path: Path) -> None:
    env = node_environment(WHEELHOUSE, tmp_path / "uv-cache")
    bindir = node_bin(tmp_path / "node-bin", WHEELHOUSE, UV_VERSION, cache=tmp_path / "uv-dist")
    commands = [*setup_commands("3.11"), *head_setup_commands()]
    took = []
    for name in ("head", "worker"):
        home = make_machine(tmp_path, name, bindir, env)
        t0 = time.monotonic()
        for cmd in commands:
            p = on_machine(home, cmd)
            assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        took.append(time.monotonic() - t0)
        p = on_machine(home, "python -c 'import ray, boto3, ruamel.yaml; print(ray.__version__)'")
        assert p.stdout.strip().splitlines()[-1] == RAY_VERSION, p.stderr
        py = os.path.realpath(home / "ray-env" / "bin" / "python")
        assert py == "/usr/bin/python3.11"
    print(f"setup commands: first machine {took[0]:.1f} s, second (warm uv cache) {took[1]:.1f} s")
    # the second machine's files are hardlinks into the shared cache
    raylet = tmp_path / "worker" / "ray-env" / "lib" / "python3.11" / "site-packages" / "ray" / "_raylet.so"
    assert raylet.stat().st_nlink >= 2


def test_the_rest_of_the_internet_is_unreachable(tmp_path: Path) -> None:
    env = node_environment(WHEELHOUSE, tmp_path / "uv-cache")
    bindir = node_bin(tmp_path / "node-bin", WHEELHOUSE, UV_VERSION, cache=tmp_path / "uv-dist")
    home = make_machine(tmp_path, "m", bindir, env)
    p = on_machine(home, "curl -fsSL https://pypi.org/simple/")
    last = p.stderr.strip().splitlines()[-1]
    assert (p.returncode, last) == (6, "curl: (6) Could not resolve host: pypi.org")
    p = on_machine(home, "/usr/bin/curl -sS --max-time 5 https://pypi.org/simple/")  # the real curl: no route
    assert p.returncode != 0
    setup = setup_commands("3.11")
    for cmd in setup[:2]:
        assert on_machine(home, cmd).returncode == 0
    p = on_machine(home, "~/.local/bin/uv pip install --python ~/ray-env/bin/python tomli-w")
    assert p.returncode != 0 and "not found in the package registry" in p.stderr
