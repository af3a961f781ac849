"""Benchmark: installing `ray[default]` into a fresh venv from the rehearsal's wheelhouse, uv vs pip.

Baseline, measured in the same run: `pip install --no-index --find-links <wheelhouse>` (pip's defaults,
bytecode compilation included, `--isolated` so no pip config of this host adds an index) into a fresh
`python -m venv`. Against it: uv (the nodes' installer, the wheelhouse's uv binary, with the rehearsal's
`node_environment`) into a fresh `uv venv`, with a cold cache (a new, empty `UV_CACHE_DIR`: a rehearsal's
first machine) and a warm one (the cache a previous install filled: every later machine). Only the
install is timed; runs are interleaved, each in its own temp dir; medians of N.
Targets: uv warm <= 0.2x pip, uv cold <= 0.5x pip. Nothing is fetched: every source is the wheelhouse.
Run: .venv/bin/python bench/bench_node_installer.py [--runs N]   (after `make wheelhouse`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raylab.cluster.bootstrap import RAY_VERSION, UV_VERSION
from raylab.rehearsal.internet import WHEELHOUSE, extract_uv, node_environment, wheelhouse_ready

TARGET_WARM = 0.2
TARGET_COLD = 0.5
REQ = f"ray[default]=={RAY_VERSION}"


def _time(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def pip_install(tmp: Path) -> float:
    venv = tmp / "pip-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return _time([str(venv / "bin" / "python"), "-m", "pip", "install", "--isolated", "--quiet",
                  "--disable-pip-version-check", "--no-index", "--find-links", str(WHEELHOUSE), REQ])


def uv_install(uv: Path, tmp: Path, cache: Path) -> float:
    venv = tmp / "uv-env"
    env = node_environment(WHEELHOUSE, cache)
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True,
                   env={**os.environ, **env})
    return _time([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), REQ], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not wheelhouse_ready(WHEELHOUSE):
        print(f"no wheelhouse at {WHEELHOUSE}: run `make wheelhouse` first", file=sys.stderr)
        return 2
    uv = extract_uv(WHEELHOUSE, UV_VERSION) / "uv"
    pip_s, cold_s, warm_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-installer-") as root:
        warm_cache = Path(root) / "warm-cache"
        uv_install(uv, Path(tempfile.mkdtemp(dir=root)), warm_cache)  # fill the warm cache once
        for _ in range(args.runs):
            pip_s.append(pip_install(Path(tempfile.mkdtemp(dir=root))))
            cold = Path(tempfile.mkdtemp(dir=root))
            cold_s.append(uv_install(uv, cold, cold / "cache"))
            warm_s.append(uv_install(uv, Path(tempfile.mkdtemp(dir=root)), warm_cache))
    p, c, w = statistics.median(pip_s), statistics.median(cold_s), statistics.median(warm_s)
    print(f"baseline  pip install --no-index --find-links  median {p:6.2f} s  ({args.runs} runs)")
    print(f"uv {UV_VERSION}  cold cache                      median {c:6.2f} s  ratio {c / p:.3f}x "
          f"(target <= {TARGET_COLD}x)")
    print(f"uv {UV_VERSION}  warm cache                      median {w:6.2f} s  ratio {w / p:.3f}x "
          f"(target <= {TARGET_WARM}x)")
    ok = c / p <= TARGET_COLD and w / p <= TARGET_WARM
    print("OK" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
