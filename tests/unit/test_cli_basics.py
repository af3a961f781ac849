from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import json_out, run_cli


def test_help_teaches_the_stages() -> None:
    p = run_cli("--help")
    assert p.returncode == 0
    for word in ("network", "identity", "cluster", "stress", "scaling", "spot", "data", "--target"):
        assert word in p.stdout


def test_stages_json_lists_numbered_stages() -> None:
    p = run_cli("stages", "--json")
    assert p.returncode == 0, p.stderr
    names = [(s["number"], s["name"]) for s in json_out(p)["stages"]]
    assert names[:7] == [(1, "network"), (2, "identity"), (3, "cluster"), (4, "stress"),
                         (5, "scaling"), (6, "spot"), (7, "data")]
    assert names[-1] == (None, "teardown")


def test_unknown_stage_is_one_line_and_exit_2() -> None:
    p = run_cli("stage", "9")
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: no stage '9'")
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_unknown_target_refused() -> None:
    p = run_cli("up", "--target", "gcp", "--yes")
    assert p.returncode == 2
    assert "unknown target 'gcp'" in p.stderr


def test_bad_lab_id_refused() -> None:
    p = run_cli("up", "--lab", "Bad_Name!", "--yes")
    assert p.returncode == 2
    assert "lab id 'Bad_Name!' is not valid" in p.stderr


def test_help_imports_no_heavy_modules() -> None:
    """`raylab --help` must start fast: no ray, boto3, moto or matplotlib at startup."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "raylab", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines() if "|" in line}
    assert not imported & {"ray", "boto3", "botocore", "moto", "matplotlib", "pyarrow"}


def test_usage_errors_are_one_clear_message_not_a_traceback() -> None:
    for args, needle in ((["stage", "3", "--bogus"], "No such option: --bogus"),
                         (["nosuch"], "No such command 'nosuch'"),
                         (["stage"], "Missing")):
        p = run_cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr
        assert "Traceback" not in p.stderr


def test_bare_raylab_shows_help() -> None:
    p = run_cli()
    assert p.returncode == 0
    assert "Stages (see `raylab stages`)" in p.stdout


def test_aws_is_never_the_default_target() -> None:
    """Every command that takes --target defaults to local: spending money is never implied."""
    import typer.main

    from raylab.cli.main import app

    def walk(cmd):  # noqa: ANN001, ANN202
        yield cmd
        for sub in getattr(cmd, "commands", {}).values():
            yield from walk(sub)

    seen = 0
    for cmd in walk(typer.main.get_command(app)):
        for p in getattr(cmd, "params", []):
            if p.name == "target":
                seen += 1
                assert p.default == "local", f"{cmd.name}: --target defaults to {p.default!r}"
    assert seen >= 8


@pytest.mark.parametrize("command", [["up"], ["lab"], ["stage", "1"]])
@pytest.mark.parametrize(("cidr", "error"), [
    ("0.0.0.0/0", "error: --allow-ssh-from '0.0.0.0/0' opens the bastion's SSH to the whole internet"),
    ("lab-nat", "error: --allow-ssh-from 'lab-nat' is not a CIDR"),
])
def test_a_bad_allow_ssh_from_is_one_line_and_creates_nothing(tmp_path: Path, command: list[str], cidr: str,
                                                              error: str) -> None:
    wd = tmp_path / ".raylab"
    p = run_cli(*command, "--target", "aws", "--allow-ssh-from", cidr, "--yes", "--workdir", str(wd))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith(error)
    assert len(p.stderr.strip().splitlines()) == 1
    assert not wd.exists()
