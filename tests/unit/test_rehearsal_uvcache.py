"""Each rehearsal machine's uv cache: hardlinks to one warm cache, in the machine's own home."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from raylab.rehearsal.uvcache import STAMP, is_warm, node_packages, seed_lines, warm_script

PYTHONS = {"3.10": "/opt/py310/bin/python3.10", "3.11": "/usr/bin/python3.11"}


def _warm_cache(root: Path, *, stamped: bool = True) -> Path:
    cache = root / "shared" / "uv-cache"
    (cache / "archive-v0" / "abc" / "ray").mkdir(parents=True)
    (cache / "archive-v0" / "abc" / "ray" / "__init__.py").write_text("# ray\n")
    if stamped:
        (cache / STAMP).write_text("{}\n")
    return cache


def _run(lines: list[str]) -> None:
    subprocess.run(["sh", "-c", "set -eu\n" + "\n".join(lines)], check=True)


def test_a_machines_home_gets_the_warm_cache_as_hardlinks(tmp_path: Path) -> None:
    cache = _warm_cache(tmp_path)
    home = tmp_path / "machine" / "home"
    home.mkdir(parents=True)
    _run(seed_lines(cache, home))
    src = cache / "archive-v0" / "abc" / "ray" / "__init__.py"
    dst = home / ".cache" / "uv" / "archive-v0" / "abc" / "ray" / "__init__.py"
    assert dst.read_text() == "# ray\n"
    assert dst.stat().st_ino == src.stat().st_ino  # a link, not a copy
    _run(seed_lines(cache, home))  # a second boot of the same disk: left as it is
    assert not (home / ".cache" / "uv" / "uv-cache").exists()


def test_no_warm_cache_no_seed(tmp_path: Path) -> None:
    """A cache nobody finished warming (no stamp) is not handed out: uv starts cold instead."""
    cache = _warm_cache(tmp_path, stamped=False)
    home = tmp_path / "home"
    home.mkdir()
    _run(seed_lines(cache, home))
    assert not (home / ".cache" / "uv").exists()


def test_a_failed_link_leaves_no_half_cache(tmp_path: Path) -> None:
    """cp -al fails (here: an unreadable dir; across file systems: EXDEV): the partial copy is removed,
    so uv never trusts an archive entry whose files are missing."""
    cache = _warm_cache(tmp_path)
    blocked = cache / "archive-v0" / "zzz"
    blocked.mkdir()
    (blocked / "f").write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    lines = [ln.replace("cp -al", "false &&  cp -al") for ln in seed_lines(cache, home)]
    _run(lines)
    assert not (home / ".cache" / "uv").exists()


def test_warm_runs_the_nodes_uv_steps_where_the_machines_see_the_mirror() -> None:
    """uv keys its cache by the index URL: the warm-up must see the mirror at the machines' path."""
    script = warm_script(PYTHONS, node_packages())
    assert 'mount --bind "$1" /mnt/rehearsal' in script
    assert "/mnt/rehearsal/uv-dist/0.13.8/uv venv --quiet --python /opt/py310/bin/python3.10 " \
           "/mnt/rehearsal/.uv-warm/3.10" in script
    assert ("/mnt/rehearsal/uv-dist/0.13.8/uv pip install --quiet --python "
            "/mnt/rehearsal/.uv-warm/3.11/bin/python 'ray[default]==2.60.0' pip") in script
    assert script.rstrip().endswith("rm -rf /mnt/rehearsal/.uv-warm")


def test_the_stamp_names_the_pythons_and_packages(tmp_path: Path) -> None:
    from raylab.rehearsal.uvcache import _key

    (tmp_path / STAMP).write_text(json.dumps({"key": _key(PYTHONS, node_packages())}))
    assert is_warm(tmp_path, PYTHONS, node_packages())
    assert not is_warm(tmp_path, {"3.11": PYTHONS["3.11"]}, node_packages())
    assert not is_warm(tmp_path, PYTHONS, node_packages("2.59.0"))
    assert not is_warm(tmp_path / "nowhere", PYTHONS, node_packages())
