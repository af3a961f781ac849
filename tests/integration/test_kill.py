"""Killed at any moment, raylab converges (issue 16): the real CLI, killed at seeded points in stages 1-2.

One work dir lives through a chain of attempts, each killed at its point (SIGKILL, SIGINT, SIGHUP)
just after a marker line of its output plus a seeded delay: while the twin starts, in stage 1, in
`terraform init`, in `terraform apply`. Each attempt is the re-run of the one before, so it must get
past where that one died (no lock error, no stale state). Then the same stages run to the end
(`raylab stage 1`, `raylab stage 2`: `up` without its stage 3), then `raylab down` killed in
`terraform destroy`, then `raylab down` again. Asserted:

- an interrupted attempt exits 130 with one "interrupted ..." line and no traceback, and leaves no
  process but the twin (adopted on purpose);
- the converging runs succeed; `down` succeeds and its leftover check is empty;
- no process that raylab started, and none whose cwd or arguments lie under the work dir, is alive.

Replay: the failure message prints ``RAYLAB_KILL_SEED=.. RAYLAB_KILL_POINTS=..``; set those to re-run
the same points (one point alone works too: its earlier points are skipped).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from raylab import leftovers, procs, proctable
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")]

LAB = "kt"


@dataclass(frozen=True)
class Point:
    command: tuple[str, ...]
    marker: str  # a line of the attempt's stderr that must appear before the kill
    sig: int
    max_delay: float  # seeded delay after the marker, in [0, max_delay)


POINTS = (
    Point(("up",), "starting the local AWS twin", signal.SIGKILL, 1.0),
    Point(("up",), "→ stage 1 network", signal.SIGINT, 2.0),
    Point(("up",), "terraform init", signal.SIGKILL, 3.0),
    Point(("stage", "2"), "terraform init", signal.SIGHUP, 3.0),
    Point(("up",), "  terraform: ", signal.SIGKILL, 1.0),  # in apply: the measured bug
    Point(("stage", "2"), "terraform init", signal.SIGINT, 6.0),
    # after the stages have converged: `down` killed in `terraform destroy`, then `down` again
    Point(("down",), "  terraform: ", signal.SIGKILL, 2.0),
)
DOWN_POINT = len(POINTS)  # 1-based number of the `down` point: it runs after the converging re-runs


def _cli(wd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "raylab", *args, "--yes", "--workdir", str(wd), "--lab", LAB]


def _lab_processes(wd: Path) -> list[str]:
    """Independent of raylab's own check: anything whose cwd or argv lies under the work dir's
    parent, or that carries its marker (this test process and its ancestors excluded)."""
    mine = proctable.self_and_ancestors()
    out = []
    for p in proctable.all_procs():
        if p.pid in mine:
            continue
        if (p.marker == str(wd) or proctable.under(p.cwd, wd.parent)
                or any(proctable.under(a, wd.parent) for a in p.argv)):
            out.append(f"{p.pid} {p.describe()}")
    return out


def _attempt(wd: Path, point: Point, delay: float, log: Path) -> dict[str, object]:
    t0 = time.monotonic()
    with open(log, "w") as err:
        p = subprocess.Popen(_cli(wd, *point.command), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 180
        while point.marker not in log.read_text() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        reached = point.marker in log.read_text()
        assert reached, (f"`raylab {' '.join(point.command)}` exited {p.poll()} before its kill point "
                         f"({point.marker!r}): {log.read_text()[-800:]}")
        time.sleep(delay)
        killed_at = time.monotonic() - t0
        p.send_signal(point.sig)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err_text = log.read_text()
    return {"command": " ".join(point.command), "signal": signal.Signals(point.sig).name,
            "after": point.marker.strip(), "delay_s": round(delay, 2), "killed_at_s": round(killed_at, 1),
            "rc": rc, "exit_s": round(time.monotonic() - t0 - killed_at, 1), "stderr": err_text,
            "said": [ln for ln in err_text.splitlines() if ln.startswith(("! ", "interrupted"))]}


def _timed(cmd: list[str]) -> tuple[int, str, list[tuple[float, str]]]:
    """Run a command; its stderr lines with the seconds at which each appeared."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None and p.stdout is not None
    lines = [(round(time.monotonic() - t0, 1), ln.rstrip()) for ln in p.stderr]
    out = p.stdout.read()
    return p.wait(timeout=600), out, lines


def _slowest(lines: list[tuple[float, str]], n: int = 3) -> list[str]:
    gaps = [(t - (lines[i - 1][0] if i else 0.0), ln) for i, (t, ln) in enumerate(lines)]
    return [f"+{g:.1f}s {ln[:100]}" for g, ln in sorted(gaps, reverse=True)[:n]]


def _check_interrupted(wd: Path, r: dict[str, object]) -> None:
    err = str(r["stderr"])
    if r["rc"] == 0:  # the run finished in the delay window: nothing to interrupt
        return
    assert r["rc"] == 130, err[-800:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({r['signal']}) during "), last
    assert "`raylab down` cleans up" in last
    state = json.loads((wd / "state.json").read_text())
    assert state["run"]["outcome"] == "interrupted" and state["run"]["signal"] == r["signal"]
    # its children stopped with it: what runs now is the twin (kept on purpose for the next command)
    left = [x for x in leftovers.find_leftovers(wd) if "twin" not in x.what]
    assert left == [], [x.line() for x in left]


def test_killed_at_seeded_points_then_rerun_converges_and_down_leaves_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("RAYLAB_KILL_SEED") or random.SystemRandom().randrange(10**6))
    chosen = [int(i) for i in os.environ.get("RAYLAB_KILL_POINTS", "").split(",") if i.strip()] \
        or list(range(1, len(POINTS) + 1))
    rng = random.Random(seed)
    delays = [rng.uniform(0, pt.max_delay) for pt in POINTS]  # drawn for all: a subset replays the same
    replay = (f"replay: RAYLAB_KILL_SEED={seed} RAYLAB_KILL_POINTS={{points}} PYTHONPATH=src "
              f"{sys.executable} -m pytest -q -s tests/integration/test_kill.py")
    wd = tmp_path / ".raylab"
    results: list[dict[str, object]] = []
    said: list[str] = []
    t_start = time.monotonic()
    current = ",".join(map(str, chosen))
    try:
        for i in [c for c in chosen if c != DOWN_POINT]:
            current = str(i)
            r = _attempt(wd, POINTS[i - 1], delays[i - 1], tmp_path / f"attempt-{i}.log")
            results.append({"point": i, **r})
            if POINTS[i - 1].sig != signal.SIGKILL:
                _check_interrupted(wd, r)
        current = ",".join(map(str, chosen))
        t_conv = time.monotonic()
        for stage in ("1", "2"):  # `raylab up` without its stage 3
            c = subprocess.run(_cli(wd, "stage", stage), cwd=ROOT, capture_output=True, text=True,
                               timeout=600)
            assert c.returncode == 0, f"re-run `raylab stage {stage}` failed:\n{c.stderr[-2000:]}"
            assert "Traceback" not in c.stderr
            said += [ln for ln in c.stderr.splitlines() if ln.startswith("! ")]
        converge_s = time.monotonic() - t_conv
        if DOWN_POINT in chosen:
            current = str(DOWN_POINT)
            r = _attempt(wd, POINTS[DOWN_POINT - 1], delays[DOWN_POINT - 1], tmp_path / "attempt-down.log")
            results.append({"point": DOWN_POINT, **r})
            current = ",".join(map(str, chosen))
        t_down = time.monotonic()
        rc, out, down_lines = _timed(_cli(wd, "down", "--json"))
        down_s = time.monotonic() - t_down
        assert rc == 0, down_lines[-20:]
        assert json.loads(out)["leftovers"] == []
        assert leftovers.find_leftovers(wd) == []
        assert _lab_processes(wd) == []
        assert procs.Records(wd).live() == []
    except AssertionError as e:
        summary = [{k: v for k, v in r.items() if k != "stderr"} for r in results]
        pytest.fail(f"{e}\nseed {seed}, points so far: {json.dumps(summary)}\n"
                    f"{replay.format(points=current)}", pytrace=False)
    finally:
        # whatever a failure left: raylab's own teardown, then only processes verified as this lab's
        if _lab_processes(wd):
            subprocess.run(_cli(wd, "down"), cwd=ROOT, capture_output=True, timeout=600)
            leftovers.stop_leftovers(wd)
        shutil.rmtree(tmp_path, ignore_errors=True)
    points = [{k: v for k, v in r.items() if k != "stderr"} for r in results]
    print(json.dumps({"seed": seed, "points": points, "converge_said": said,
                      "converge_s": round(converge_s, 1), "down_s": round(down_s, 1),
                      "down_slowest_steps": _slowest(down_lines),
                      "total_s": round(time.monotonic() - t_start, 1)}, indent=1))
