"""What runs on every Ray node before and at `ray start`: one Python, one Ray, the same everywhere.

Ray replaces its default ``setup_commands`` (which put the Deep Learning AMI's conda env on PATH) by
any list a cluster YAML gives, so the lab writes the whole list itself (pure; see docs/runbook.md):

- uv, pinned (``UV_VERSION``), from its versioned standalone installer into ``~/.local/bin``: no pip
  and no package index lookup for the installer itself, nothing written to shell profiles;
- ``~/ray-env``: a virtual environment of the operator's Python minor version (3.11 for this lab;
  Debian 12's own python3.11, so uv downloads no interpreter), with ``ray[default]`` pinned to the
  Ray the operator runs (``RAY_VERSION``, the same pin as pyproject.toml), and pip (Ray's runtime_env
  ``pip`` clones this venv and installs a job's packages with the clone's pip);
- a check that fails the node's setup (and so `ray up`) when the env has another Python or Ray;
- ``~/ray-env/bin`` first on PATH: in ``~/.bashrc`` (Ray's updater runs every command in an
  interactive login bash, and so do `ray exec`/`ray attach`), and explicitly in the start commands,
  so `ray start` and every job driver it spawns use the env.

The head adds boto3 (Ray's AWS node provider) and ruamel.yaml (the capacity guard). The guard and the
interruption watcher are files copied by ``file_mounts`` and run by the env's Python, each with its
own log file. Nothing named ``raylab`` is installed on a node: that name on the package index is
someone else's library.
"""

from __future__ import annotations

import shlex
import sys

from raylab.errors import RaylabError

RAY_VERSION = "2.60.0"
UV_VERSION = "0.13.8"
ENV_DIR = "$HOME/ray-env"
UV = "$HOME/.local/bin/uv"
PATH_EXPORT = f'export PATH="{ENV_DIR}/bin:$PATH"'
HEAD_PACKAGES = ("boto3>=1.34", "ruamel.yaml>=0.18")
RAY_PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # the CPython minors Ray 2.60 ships wheels for


def operator_python() -> str:
    """The Python minor version raylab runs on here ("3.11"): by default every node gets the same one."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def node_python(choice: str | None = None) -> str:
    """The Python minor version every node gets (pure): ``--node-python`` if given, else the operator's
    (so a driver or Ray Client here matches the cluster). RaylabError for a minor Ray 2.60 has no wheel
    for, before anything is created."""
    py = (choice or operator_python()).strip()
    if py not in RAY_PYTHONS:
        raise RaylabError(f"Ray {RAY_VERSION} has no wheel for Python {py!r} on the nodes "
                          f"(it supports {', '.join(RAY_PYTHONS)})",
                          "pass --node-python with one of those, e.g. --node-python 3.11")
    return py


def setup_commands(python: str, ray: str = RAY_VERSION, uv: str = UV_VERSION) -> list[str]:
    """Common setup on every node: pinned uv, a ``python`` venv with ``ray[default]==ray``, PATH."""
    want = f"sys.version_info[:2] == {tuple(int(p) for p in python.split('.'))}"
    check = (f'import sys; from importlib.metadata import version; '
             f'ok = {want} and version("ray") == "{ray}"; '
             'print("node env: Python", sys.version.split()[0], "Ray", version("ray")); '
             'sys.exit(0 if ok else 1)')
    return [
        # uv, exactly this version (re-run: a no-op when it is already there)
        f"({UV} --version 2>/dev/null | grep -qE '^uv {uv.replace('.', '[.]')}( |$)') || "
        f"(set -o pipefail; curl -LsSf https://astral.sh/uv/{uv}/install.sh | "
        f"env UV_INSTALL_DIR=$HOME/.local/bin UV_NO_MODIFY_PATH=1 sh)",
        # the env, recreated only when missing or of another Python minor version
        f"({ENV_DIR}/bin/python -c 'import sys; sys.exit(0 if {want} else 1)' 2>/dev/null) || "
        f"(rm -rf {ENV_DIR} && {UV} venv --python {python} {ENV_DIR})",
        # pip too: Ray's runtime_env `pip` (stage 7's job) clones this venv and runs the clone's pip,
        # and a uv venv has none ("No module named pip": found by the AWS rehearsal)
        f"{UV} pip install --python {ENV_DIR}/bin/python {shlex.quote(f'ray[default]=={ray}')} pip",
        f"{ENV_DIR}/bin/python -c {shlex.quote(check)}",
        f"grep -qxF {shlex.quote(PATH_EXPORT)} ~/.bashrc || echo {shlex.quote(PATH_EXPORT)} >> ~/.bashrc",
    ]


def head_setup_commands() -> list[str]:
    pkgs = " ".join(shlex.quote(p) for p in HEAD_PACKAGES)
    return [f"{UV} pip install --python {ENV_DIR}/bin/python {pkgs}"]


def head_start_ray_commands(cluster_name: str) -> list[str]:
    """`ray start --head` with the autoscaler, then the capacity guard beside it. The guard reads the
    region from the YAML the autoscaler reads (``provider.region``: where `ray up` launched)."""
    return [
        f"{PATH_EXPORT}; ray stop",
        f"{PATH_EXPORT}; ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076"
        " --autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1",
        "kill $(cat ~/raylab/guard.pid 2>/dev/null) 2>/dev/null; "
        f"nohup {ENV_DIR}/bin/python ~/raylab/guard.py --config ~/ray_bootstrap_config.yaml"
        f" --cluster-name {shlex.quote(cluster_name)}"
        " --monitor-log /tmp/ray/session_latest/logs/monitor.log --events ~/raylab/guard-events.jsonl"
        " --state ~/raylab/guard-state.json < /dev/null > ~/raylab/guard.log 2>&1 &"
        " echo $! > ~/raylab/guard.pid",
    ]


def worker_start_ray_commands() -> list[str]:
    """Join the head at its private address, then the interruption watcher (its JSON lines go to
    ``--log``; anything else it prints, a traceback included, to ``imds-watcher.out``)."""
    return [
        f"{PATH_EXPORT}; ray stop",
        f"{PATH_EXPORT}; ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076",
        "kill $(cat ~/raylab/imds-watcher.pid 2>/dev/null) 2>/dev/null; "
        f"nohup {ENV_DIR}/bin/python ~/raylab/imds_watcher.py --gcs-address=$RAY_HEAD_IP:6379"
        " --release-before 10 --log ~/raylab/imds-watcher.log < /dev/null >> ~/raylab/imds-watcher.out 2>&1 &"
        " echo $! > ~/raylab/imds-watcher.pid",
    ]


def node_commands(cluster_name: str, python: str | None = None, ray: str = RAY_VERSION,
                  uv: str = UV_VERSION) -> dict[str, list[str]]:
    """The five command lists of the cluster YAML (pure)."""
    py = node_python(python)
    return {
        "setup_commands": setup_commands(py, ray, uv),
        "head_setup_commands": head_setup_commands(),
        "worker_setup_commands": [],
        "head_start_ray_commands": head_start_ray_commands(cluster_name),
        "worker_start_ray_commands": worker_start_ray_commands(),
    }
