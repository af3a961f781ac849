"""Killed at a seeded point, the AWS rehearsal converges: `raylab lab --target aws --rehearsal --through 3`
is killed (SIGKILL, or SIGTERM as a closed terminal or a CI timeout sends it) during stage 2 or 3,
then the same command runs again and passes, and the host keeps no process, address or route of it.

A SIGTERM is passed on to the world's operator as Ctrl-C: it tears down while the account answers and
exits 130 with nothing left. A SIGKILL ends the world at once (its machines and operator die with it);
the re-run starts a new account and converges from the state the killed run left (terraform's state
names resources that no longer exist; the pinned host keys are another account's).

One point per run (each costs a rehearsal): RAYLAB_KILL_SEED picks it, and a failure prints the replay."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raylab.leftovers import find_leftovers
from tests.aws.test_rehearsal_lab import host_network, need_world

pytestmark = [pytest.mark.aws, pytest.mark.rehearsal]

RAYLAB = [sys.executable, "-m", "raylab"]
# (signal, the stderr line that starts the countdown, the most seconds after it)
POINTS = [
    (signal.SIGKILL, "→ stage 2 identity", 8.0),
    (signal.SIGKILL, "… ray up", 30.0),
    (signal.SIGTERM, "→ stage 2 identity", 8.0),
    (signal.SIGTERM, "… ray up", 30.0),
]


def pick(seed: int) -> tuple[signal.Signals, str, float]:
    """The seed's kill point: which signal, after which line, how many seconds after it (pure)."""
    rng = random.Random(seed)
    sig, after, most = POINTS[rng.randrange(len(POINTS))]
    return sig, after, round(rng.uniform(0.0, most), 1)


def test_a_seed_picks_every_kind_of_point() -> None:
    picked = {pick(seed)[:2] for seed in range(40)}
    assert picked == {(s, a) for s, a, _ in POINTS}
    assert pick(7) == pick(7)


def _kill_at(cmd: list[str], env: dict[str, str], cwd: Path, sig: signal.Signals, after: str,
             delay: float) -> tuple[int, str, str, float | None]:
    """Run ``cmd``, send ``sig`` ``delay`` s after the stderr line starting with ``after``; wait for it."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            lines.append(line)
            if line.startswith(after):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed_at = None
    if seen.wait(timeout=600):
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(sig)
            killed_at = time.monotonic()
    assert p.stdout is not None
    out = p.stdout.read()
    rc = p.wait(timeout=900)
    reader.join(timeout=10)
    return rc, out, "".join(lines), killed_at


def _settled_leftovers(wd: Path, within: float = 30.0) -> list[str]:
    """What is still running of this work dir once the death signals have had ``within`` s to act
    (and Ray's SSH ControlMaster, ``ControlPersist=10s``, its idle time to leave by itself)."""
    deadline = time.monotonic() + within
    while True:
        left = [x.line() for x in find_leftovers(wd)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_killed_rehearsal_then_rerun_converges_and_leaves_nothing(tmp_path: Path) -> None:
    need_world()
    seed = int(os.environ.get("RAYLAB_KILL_SEED") or random.randrange(1_000_000))
    sig, after, delay = pick(seed)
    replay = (f"replay: RAYLAB_KILL_SEED={seed} PYTHONPATH=src {sys.executable} -m pytest -q -s "
              f"tests/aws/test_rehearsal_kill.py  ({sig.name} {delay:g} s after {after!r})")
    before = host_network()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    wd = tmp_path / ".raylab"
    # --boot-delay 2: the machines' modelled boot (default 6 s) teaches nothing here; CI's time does count
    cmd = [*RAYLAB, "lab", "--target", "aws", "--rehearsal", "--boot-delay", "2", "--through", "3",
           "--scale", "8", "--lab", "rk", "--yes", "--json", "--workdir", str(wd)]
    try:
        rc, out, err, killed_at = _kill_at(cmd, env, tmp_path, sig, after, delay)
        assert killed_at is not None, f"the run ended (rc {rc}) before the kill point\n{err[-3000:]}"
        if sig == signal.SIGTERM:  # passed on as Ctrl-C: torn down in the live account
            assert rc == 130, err[-3000:]
            res = json.loads(out.strip().splitlines()[-1])
            assert res["ok"] is False and res["teardown"]["leftovers"] == [], res
            assert "nothing left" in err
        else:
            assert rc == -signal.SIGKILL
        assert _settled_leftovers(wd) == []
        assert host_network() == before
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-5000:]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["ok"] is True and [s["name"] for s in res["stages"]] == [
            "network", "identity", "cluster", "teardown"]
        assert "nothing left" in r.stderr
        assert _settled_leftovers(wd) == []
        assert host_network() == before
        print(f"seed {seed}: {sig.name} {delay:g} s after {after!r}; the killed run exited {rc}; "
              f"the re-run passed in {time.monotonic() - t0:.0f} s")
    except AssertionError as e:
        pytest.fail(f"{e}\n{replay}", pytrace=False)
