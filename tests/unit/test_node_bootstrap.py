"""Finding 2: every node gets the operator's Python minor version and the operator's Ray, on PATH."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from raylab.cluster import bootstrap as B
from raylab.cluster.config import dump_yaml, render
from tests.unit.test_config_rules import OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
        "worker_start_ray_commands")


def _aws() -> dict:
    return render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)


def test_python_is_the_operators_minor_version() -> None:
    assert B.operator_python() == f"{sys.version_info.major}.{sys.version_info.minor}" == "3.11"
    venv = [c for c in _aws()["setup_commands"] if " venv " in c]
    assert len(venv) == 1 and "uv venv --python 3.11 $HOME/ray-env" in venv[0]


def test_ray_is_the_installed_one_and_pinned_exactly() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert version("ray") == B.RAY_VERSION and "ray[default]==" + B.RAY_VERSION in pins
    text = " ".join(_aws()["setup_commands"])
    assert "'ray[default]==2.60.0'" in text and text.count("ray[default]") == 1


def test_uv_is_pinned() -> None:
    first = B.setup_commands("3.11")[0]
    assert f"https://astral.sh/uv/{B.UV_VERSION}/install.sh" in first and "UV_NO_MODIFY_PATH=1" in first
    assert re.fullmatch(r"\d+\.\d+\.\d+", B.UV_VERSION)


def test_nodes_install_nothing_named_raylab_and_never_use_system_pip() -> None:
    cfg = _aws()
    text = json.dumps({k: cfg[k] for k in KEYS})
    assert not re.search(r"pip3? install[^\"]*\braylab\b", text)
    assert not re.search(r"(^|[;&|(]\s*|\")pip3? install", text), "only `uv pip install --python <env>`"
    assert "raylab" not in dump_yaml({k: cfg[k] for k in ("setup_commands", "head_setup_commands")})


def test_start_commands_run_ray_from_the_env() -> None:
    cfg = _aws()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in cfg[key]:
            if re.search(r"(^|; )ray (start|stop)", cmd):
                assert cmd.startswith(B.PATH_EXPORT + ";"), cmd
            else:  # the spot helpers: the env's Python, by path
                assert "nohup $HOME/ray-env/bin/python ~/raylab/" in cmd, cmd
    assert B.PATH_EXPORT == 'export PATH="$HOME/ray-env/bin:$PATH"'
    assert any(B.PATH_EXPORT in c and ".bashrc" in c for c in cfg["setup_commands"])  # ray exec/attach too


def test_the_watcher_and_guard_log_to_files_not_dev_null() -> None:
    cfg = _aws()
    for cmd in (cfg["head_start_ray_commands"][-1], cfg["worker_start_ray_commands"][-1]):
        started = cmd.split("nohup ", 1)[1].split(" & ", 1)[0]  # the helper itself, not `kill` before it
        assert not re.search(r">>?\s*/dev/null", started), cmd
    assert ">> ~/raylab/imds-watcher.out 2>&1" in cfg["worker_start_ray_commands"][-1]


def test_the_config_gives_all_five_lists_so_rays_defaults_never_apply() -> None:
    cfg = _aws()
    assert {k: cfg[k] for k in KEYS} == B.node_commands("raylab-kim", "3.11")
    assert cfg["worker_setup_commands"] == []


def test_a_list_in_the_config_replaces_ours(tmp_path: Path) -> None:
    import shutil

    base = tmp_path / "configs" / "ray-cluster.yaml"
    shutil.copytree(ROOT / "configs", base.parent)
    base.write_text(base.read_text() + "\nworker_setup_commands: [echo mine]\n")
    cfg = render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS, base=base)
    assert cfg["worker_setup_commands"] == ["echo mine"]
    assert cfg["setup_commands"] == B.setup_commands("3.11")


@pytest.mark.parametrize("key", KEYS)
def test_every_command_is_valid_bash(key: str) -> None:
    for cmd in _aws()[key]:
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)


@pytest.mark.parametrize(("python", "ok"), [("3.11", True), ("3.10", False)])
def test_the_env_check_passes_only_on_the_pinned_python_and_ray(tmp_path: Path, python: str,
                                                               ok: bool) -> None:
    """The setup's last check, run for real against this machine's env standing in for ~/ray-env."""
    (tmp_path / "ray-env").symlink_to(Path(sys.prefix))
    check = next(c for c in B.setup_commands(python) if "importlib.metadata" in c)
    r = subprocess.run(["bash", "-c", check], capture_output=True, text=True, env={"HOME": str(tmp_path),
                                                                                    "PATH": "/usr/bin:/bin"})
    assert (r.returncode == 0) is ok, r.stderr
    assert r.stdout.strip() == f"node env: Python {sys.version.split()[0]} Ray {B.RAY_VERSION}"


def test_node_python_is_chosen_and_checked() -> None:
    """--node-python 3.10 gives every node a 3.10 venv (and its check); a minor without Ray 2.60 wheels
    is refused; no choice is the operator's minor."""
    from raylab.cluster.bootstrap import node_commands, node_python, operator_python
    from raylab.errors import RaylabError

    cmds = node_commands("c", python="3.10")["setup_commands"]
    assert any("uv venv --python 3.10 $HOME/ray-env" in c for c in cmds)
    assert any("sys.version_info[:2] == (3, 10)" in c for c in cmds)
    assert node_python(None) == operator_python()
    for bad in ("3.9", "3.14", "2.7", "three"):
        with pytest.raises(RaylabError, match="has no wheel for Python"):
            node_python(bad)
