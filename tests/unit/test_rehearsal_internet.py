"""The nodes' internet of the AWS rehearsal: the curl model, the uv installer it serves, the uv
environment, the wheelhouse stamp. No network: a fake uv wheel and a fake pip runner stand in."""

from __future__ import annotations

import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from raylab.cluster.bootstrap import UV_VERSION, setup_commands
from raylab.errors import RaylabError
from raylab.rehearsal import internet
from raylab.rehearsal.internet import (
    INSTALLER_URL,
    build_wheelhouse,
    mirror_facts,
    node_bin,
    node_environment,
    pip_download_argv,
    wheelhouse_ready,
    write_index,
)

URL = INSTALLER_URL.format(version=UV_VERSION)


def fake_uv_wheel(wheelhouse: Path, version: str = UV_VERSION) -> Path:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    whl = wheelhouse / f"uv-{version}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for b in ("uv", "uvx"):
            z.writestr(f"uv-{version}.data/scripts/{b}", f"#!/bin/sh\necho '{b} {version} (fake)'\n")
    return whl


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """A machine's environment: the rehearsal's PATH dir first, its own HOME."""
    wheelhouse = tmp_path / "wheels"
    fake_uv_wheel(wheelhouse)
    bindir = node_bin(tmp_path / "node-bin", wheelhouse, UV_VERSION)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home)}


def sh(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_pinned_installer_installs_uv_into_uv_install_dir(machine: dict[str, str]) -> None:
    home = Path(machine["HOME"])
    p = sh(f"curl -LsSf {URL} | env UV_INSTALL_DIR=$HOME/tools UV_NO_MODIFY_PATH=1 sh", machine)
    assert p.returncode == 0, p.stderr
    out = subprocess.run([str(home / "tools" / "uv"), "--version"], capture_output=True, text=True)
    assert out.stdout.startswith(f"uv {UV_VERSION}")
    assert (home / "tools" / "uvx").is_file()
    assert not (home / ".bashrc").exists() and not (home / ".profile").exists()
    assert not (home / "tools" / "env").exists()


def test_installer_without_no_modify_path_edits_profiles_once(machine: dict[str, str]) -> None:
    home = Path(machine["HOME"])
    for _ in range(2):
        p = sh(f"curl -fsSL {URL} | sh", machine)
        assert p.returncode == 0, p.stderr
    line = f'. "{home}/.local/bin/env"'
    for rc in (".profile", ".bashrc"):
        assert (home / rc).read_text().splitlines() == [line]
    p = sh(f'PATH=/usr/bin:/bin; . "{home}/.local/bin/env"; uv --version', machine)
    assert p.stdout.startswith(f"uv {UV_VERSION}")


def test_the_lab_first_setup_command_installs_then_is_a_noop(machine: dict[str, str]) -> None:
    first = setup_commands("3.11")[0]
    assert URL in first
    for _ in range(2):
        p = sh(first, machine)
        assert p.returncode == 0, p.stderr
    assert (Path(machine["HOME"]) / ".local" / "bin" / "uv").is_file()


NO_HOST = "curl: (6) Could not resolve host: {}\n"
TRY = "curl: try 'curl --help' or 'curl --manual' for more information\n"


@pytest.mark.parametrize(("args", "rc", "stdout", "stderr"), [
    ("-LsSf https://pypi.org/simple/", 6, "", NO_HOST.format("pypi.org")),
    ("-fsSL https://user@github.com:443/astral-sh/uv", 6, "", NO_HOST.format("github.com")),
    ("http://files.pythonhosted.org?x=1", 6, "", NO_HOST.format("files.pythonhosted.org")),
    ("-s https://pypi.org/", 6, "", ""),  # -s without -S: curl stays silent
    # another uv version: astral.sh is served, that path is not (a 404)
    ("-LsSf https://astral.sh/uv/0.9.0/install.sh", 22, "",
     "curl: (22) The requested URL returned error: 404\n"),
    ("-Ls https://astral.sh/uv/0.9.0/install.sh", 0, "404: Not Found\n", ""),
    ("-LsSf", 2, "", "curl: no URL specified!\n" + TRY),
    (f"-sS {URL} -o", 2, "", "curl: option -o: requires parameter\n" + TRY),
])
def test_curl_everything_else_is_no_route_or_404(machine: dict[str, str], args: str, rc: int, stdout: str,
                                                   stderr: str) -> None:
    p = sh(f"curl {args}", machine)
    assert (p.returncode, p.stdout, p.stderr) == (rc, stdout, stderr)


@pytest.mark.parametrize("flags", ["-LsSf -o {f}", "-fsSLo {f}", "--proto =https --tlsv1.2 -sSf --output {f}",
                                   "-sSf -H 'Accept: */*' -A raylab -o{f} --retry 3"])
def test_curl_flags_and_output_file(machine: dict[str, str], tmp_path: Path, flags: str) -> None:
    f = tmp_path / "install.sh"
    p = sh(f"curl {flags.format(f=f)} {URL}", machine)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    assert f.read_text().startswith("#!/bin/sh\n# uv " + UV_VERSION)


def test_node_bin_without_uv_wheel_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RaylabError) as e:
        node_bin(tmp_path / "bin", tmp_path / "empty-wheelhouse", UV_VERSION)
    assert "make wheelhouse" in e.value.one_line()


def test_node_environment_points_uv_and_pip_at_the_mirror_only(tmp_path: Path) -> None:
    env = node_environment(tmp_path / "wheels")
    assert env == {
        "UV_DEFAULT_INDEX": f"file://{tmp_path}/wheels/simple",
        "PIP_INDEX_URL": f"file://{tmp_path}/wheels/simple",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON_PREFERENCE": "only-system",
        "UV_NO_CONFIG": "1",
    }  # no UV_CACHE_DIR: uv's own ~/.cache/uv in the machine's home, as on EC2 (rehearsal/uvcache.py)
    assert node_environment(tmp_path / "wheels", tmp_path / "c")["UV_CACHE_DIR"] == f"{tmp_path}/c"


def test_simple_index_normalizes_names_and_links_relatively(tmp_path: Path) -> None:
    for name in ("ruamel.yaml-0.19.1-py3-none-any.whl", "Typing_Extensions-4.15.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    index = write_index(tmp_path)
    assert sorted(p.name for p in index.iterdir() if p.is_dir()) == ["ruamel-yaml", "typing-extensions"]
    page = (index / "ruamel-yaml" / "index.html").read_text()
    assert 'href="../../ruamel.yaml-0.19.1-py3-none-any.whl"' in page


def test_pip_download_argv_targets_cpython_manylinux_wheels_only(tmp_path: Path) -> None:
    argv = pip_download_argv(tmp_path, "3.11", ["ray[default]==2.60.0"], pip=["pip"])
    assert argv[:2] == ["pip", "download"] and argv[-1] == "ray[default]==2.60.0"
    joined = " ".join(argv)
    for part in ("--only-binary=:all:", "--python-version 3.11", "--abi cp311", "--implementation cp",
                 "--platform manylinux2014_x86_64", "--platform manylinux_2_28_x86_64"):
        assert part in joined


class FakePip:
    """Stands in for `pip download`: writes an empty wheel per requirement into --dest."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, argv: list[str]) -> None:
        self.calls += 1
        if self.fail:
            raise subprocess.CalledProcessError(1, argv)
        dest = Path(argv[argv.index("--dest") + 1])
        for req in argv[argv.index("none") + 1:]:
            if req.startswith("--platform") or "_x86_64" in req:
                continue
            name = internet._req_name(req).replace("-", "_")
            (dest / f"{name}-1.0-py3-none-any.whl").write_bytes(b"")


def test_wheelhouse_stamp_makes_the_second_build_a_noop(tmp_path: Path) -> None:
    dest, pip = tmp_path / "wheels", FakePip()
    reqs = ["tiny==1.0", "ruamel.yaml>=0.18"]
    assert build_wheelhouse(dest, "3.11", reqs=reqs, runner=pip) == dest
    assert pip.calls == 1 and wheelhouse_ready(dest, "3.11", reqs)
    assert (dest / "simple" / "ruamel-yaml" / "index.html").is_file()
    t0 = time.monotonic()
    build_wheelhouse(dest, "3.11", reqs=reqs, runner=pip)
    assert pip.calls == 1 and time.monotonic() - t0 < 1.0
    build_wheelhouse(dest, "3.11", reqs=[*reqs, "other>=2"], runner=pip)  # another list: downloads again
    assert pip.calls == 2 and (dest / "other-1.0-py3-none-any.whl").is_file()
    (dest / "tiny-1.0-py3-none-any.whl").unlink()  # a wheel gone: not ready any more
    assert not wheelhouse_ready(dest, "3.11", [*reqs, "other>=2"])


def test_failed_download_keeps_the_old_wheelhouse(tmp_path: Path) -> None:
    dest = tmp_path / "wheels"
    build_wheelhouse(dest, "3.11", reqs=["tiny==1.0"], runner=FakePip())
    with pytest.raises(RaylabError) as e:
        build_wheelhouse(dest, "3.11", reqs=["tiny==2.0"], runner=FakePip(fail=True))
    assert "make wheelhouse" in e.value.one_line()
    assert wheelhouse_ready(dest, "3.11", ["tiny==1.0"])
    assert not (tmp_path / "wheels.partial").exists()


def test_a_requirement_without_a_wheel_is_an_error(tmp_path: Path) -> None:
    def pip_without_wheels(argv: list[str]) -> None:
        return None

    with pytest.raises(RaylabError, match="no wheel for tiny==1.0"):
        build_wheelhouse(tmp_path / "wheels", "3.11", reqs=["tiny==1.0"], runner=pip_without_wheels)


def test_mirror_facts_name_the_pinned_url() -> None:
    facts = mirror_facts()
    assert facts[0].request == f"curl {URL}"
    assert any("Could not resolve host" in f.answer for f in facts)


def test_profile_lines_put_the_mirror_first_and_quote_values(tmp_path: Path) -> None:
    from raylab.rehearsal.internet import profile_lines

    lines = profile_lines(tmp_path / "my bin", {"UV_NO_CONFIG": "1", "X": "a b"})
    assert lines == [f"export PATH='{tmp_path}/my bin':\"$PATH\"", "export UV_NO_CONFIG=1", "export X='a b'"]
    p = sh("; ".join(lines) + '; echo "$PATH|$X"', {"PATH": "/usr/bin:/bin"})
    assert p.stdout == f"{tmp_path}/my bin:/usr/bin:/bin|a b\n"


def test_wheelhouse_downloads_once_per_node_python(tmp_path: Path) -> None:
    """Debian 12's 3.11 and Ubuntu 22.04's 3.10: one pip download each into one index; another set of
    Pythons is another wheelhouse."""
    dest, calls = tmp_path / "wheels", []

    def pip(argv: list[str]) -> None:
        calls.append(argv[argv.index("--python-version") + 1])
        FakePip()(argv)

    build_wheelhouse(dest, ("3.10", "3.11"), reqs=["tiny==1.0"], runner=pip)
    assert calls == ["3.10", "3.11"] and wheelhouse_ready(dest, ("3.10", "3.11"), ["tiny==1.0"])
    assert not wheelhouse_ready(dest, "3.11", ["tiny==1.0"])
    assert internet.NODE_PYTHONS == ("3.10", "3.11")
