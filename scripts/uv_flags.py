"""Print `uv pip install` flags that make uv read the package sources pip is configured with.

uv does not read pip's configuration (pip.conf, PIP_* variables). `make setup` installs with uv
(README: design notes), so on a machine whose pip is pointed at a mirror, extra indexes, local
wheels or a constraints file, uv gets the same through its own flags:

    index-url -> --index-url; extra-index-url -> --extra-index-url (and --index-strategy
    unsafe-best-match, pip's rule: the best version from any index); find-links -> --find-links;
    constraint -> --constraint. `--cert` prints pip's CA bundle, which the Makefile gives uv as
    SSL_CERT_FILE.

Reads `python -m pip config list` of the interpreter that runs it (stdlib only). Prints one
shell-quoted line; nothing when pip has no such settings.

    .venv/bin/python scripts/uv_flags.py            # the flags
    .venv/bin/python scripts/uv_flags.py --cert     # only the CA bundle pip uses, or nothing
"""

from __future__ import annotations

import shlex
import subprocess
import sys

MAPPED = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
          "constraint": "--constraint"}


def settings(listing: str) -> dict[str, list[str]]:
    """``pip config list`` lines (``global.find-links='a b'``, ``:env:.cert='c'``) as {option: values}.
    As in pip, a PIP_* variable (``:env:``) wins over the files, and among files a later line (a more
    specific file) wins (pure)."""
    files: dict[str, list[str]] = {}
    env: dict[str, list[str]] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1]
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        (env if key.startswith(":env:") else files)[name] = " ".join(words).split()
    return files | env


def uv_flags(conf: dict[str, list[str]]) -> list[str]:
    """uv's flags for pip's settings (pure)."""
    flags: list[str] = []
    for name, flag in MAPPED.items():
        values = conf.get(name, [])
        for v in values[:1] if name == "index-url" else values:  # one index replaces PyPI
            flags += [flag, v]
    if conf.get("extra-index-url"):
        flags += ["--index-strategy", "unsafe-best-match"]
    return flags


def main(argv: list[str]) -> int:
    p = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    conf = settings(p.stdout if p.returncode == 0 else "")
    if argv[1:2] == ["--cert"]:
        print(conf.get("cert", [""])[0])
    else:
        print(shlex.join(uv_flags(conf)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
