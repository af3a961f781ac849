"""scripts/uv_flags.py: uv is handed the package sources pip is configured with (make setup installs
with uv, which reads no pip configuration). One rule per row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("uv_flags", ROOT / "scripts" / "uv_flags.py")
assert _spec and _spec.loader
uvf = importlib.util.module_from_spec(_spec)
sys.modules["uv_flags"] = uvf
_spec.loader.exec_module(uvf)

ROWS = [
    ("no pip settings: no flags", "", []),
    ("an index replaces PyPI", "global.index-url='https://mirror/simple'", ["--index-url", "https://mirror/simple"]),
    ("extra indexes, each, and pip's rule of the best version from any index",
     "global.extra-index-url='file:///a/simple file:///b/simple'",
     ["--extra-index-url", "file:///a/simple", "--extra-index-url", "file:///b/simple",
      "--index-strategy", "unsafe-best-match"]),
    ("local wheels", ":env:.find-links='/opt/wheels'", ["--find-links", "/opt/wheels"]),
    ("a constraints file", "global.constraint='/etc/xdg/pip/constraints.txt'",
     ["--constraint", "/etc/xdg/pip/constraints.txt"]),
    ("a PIP_* variable wins over the files, as in pip", ":env:.find-links='/a'\nglobal.find-links='/b'",
     ["--find-links", "/a"]),
    ("among files the later (more specific) one wins", "global.find-links='/a'\nuser.find-links='/b'",
     ["--find-links", "/b"]),
    ("settings uv has no flag for are left out",
     "global.timeout='60'\n:env:.disable-pip-version-check='1'", []),
    ("a line that is not a setting is skipped", "WARNING: something", []),
]


@pytest.mark.parametrize(("why", "listing", "want"), ROWS, ids=[r[0] for r in ROWS])
def test_uv_gets_pips_sources(why: str, listing: str, want: list[str]) -> None:
    assert uvf.uv_flags(uvf.settings(listing)) == want


def test_the_ca_bundle_is_read_as_pip_has_it() -> None:
    assert uvf.settings("global.cert='/etc/ssl/certs/ca-certificates.crt'")["cert"] == [
        "/etc/ssl/certs/ca-certificates.crt"]


def test_make_lab_does_not_build_the_rehearsals_wheelhouse() -> None:
    make = (ROOT / "Makefile").read_text()
    lab = next(line for line in make.splitlines() if line.startswith("lab:"))
    assert "wheelhouse" not in lab and "setup" in lab
