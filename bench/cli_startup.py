"""Benchmark: `raylab --help` wall time as a ratio to `python -c "import typer, rich"`.

Both are measured in the same run, interleaved, median of N runs each. Target: <= 1.3x.
`raylab stage --help` and `raylab lab --help` (each builds only its own command) are timed in the same
rounds and printed against the same baseline, for information.
Both run as a user's install does, with bytecode caches: PYTHONDONTWRITEBYTECODE (set on some CI and
sandbox machines) is dropped for them, so the warm-up run writes raylab's ``__pycache__`` once instead
of every run compiling raylab from source (that alone measured 1.9x here).
Run: .venv/bin/python bench/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TARGET = 1.3
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    baseline_cmd = [sys.executable, "-c", "import typer, rich"]
    raylab_cmd = [sys.executable, "-m", "raylab", "--help"]
    others = {"stage --help": [sys.executable, "-m", "raylab", "stage", "--help"],
              "lab --help": [sys.executable, "-m", "raylab", "lab", "--help"]}
    for cmd in (baseline_cmd, raylab_cmd, *others.values()):
        _time(cmd)  # warm the file cache (and write raylab's bytecode)
    base, ours = [], []
    other_times: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(args.runs):
        base.append(_time(baseline_cmd))
        ours.append(_time(raylab_cmd))
        for name, cmd in others.items():
            other_times[name].append(_time(cmd))
    b, o = statistics.median(base), statistics.median(ours)
    ratio = o / b
    print(f"baseline  python -c 'import typer, rich'  median {b * 1000:7.1f} ms  ({args.runs} runs)")
    print(f"raylab    --help                          median {o * 1000:7.1f} ms")
    for name, times in other_times.items():
        m = statistics.median(times)
        print(f"raylab    {name:<31} median {m * 1000:7.1f} ms  ({m / b:.2f}x, for information)")
    print(f"ratio     {ratio:.2f}x  (target <= {TARGET}x)  {'OK' if ratio <= TARGET else 'OVER TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
