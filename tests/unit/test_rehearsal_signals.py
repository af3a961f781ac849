"""Signals across the rehearsal's world: a Ctrl-C, SIGTERM or SIGHUP on the operator's machine reaches
the operator inside the world once, as Ctrl-C, so it tears down while the account still answers.

Played without namespaces: a stand-in for ``unshare --fork`` (it blocks SIGINT and SIGTERM, as
util-linux 2.38's does, and forks one child) and a stand-in world that records each SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from raylab.rehearsal import enter, world

UNSHARE = textwrap.dedent("""
    import signal, subprocess, sys
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    sys.exit(child.wait())
""")
WORLD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    got = []
    signal.signal(signal.SIGTERM, lambda *a: got.append(1))
    Path(sys.argv[1]).write_text("ready")
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a second SIGTERM would be counted
    Path(sys.argv[1]).write_text(str(len(got)))
    sys.exit(130 if got else 0)
""")


def _interrupt_when(ready: Path, timeout: float = 20) -> threading.Thread:
    """Ctrl-C this process's main thread (what signals.install makes of SIGTERM/SIGHUP too) once
    ``ready`` exists: a real signal, so that a wait in progress is interrupted."""
    main = threading.main_thread().ident
    assert main is not None

    def run() -> None:
        deadline = time.monotonic() + timeout
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_signal_to_raylab_reaches_the_world_once_and_its_exit_code_comes_back(tmp_path: Path) -> None:
    ready = tmp_path / "world"
    world_code = WORLD.replace("sys.argv[1]", repr(str(ready)))
    t = _interrupt_when(ready)
    rc = enter.run_world([sys.executable, "-c", UNSHARE, world_code])
    t.join()
    assert rc == 130
    assert ready.read_text() == "1"  # one SIGTERM, to the world (unshare blocks it: it would be lost)


def test_the_world_is_found_as_unshares_only_child() -> None:
    p = subprocess.Popen([sys.executable, "-c", UNSHARE, "import time; time.sleep(30)"])
    kid = None
    try:
        deadline = time.monotonic() + 10
        argv: list[bytes] = []
        while time.monotonic() < deadline:  # found, and past its exec (forked, it shows unshare's argv)
            kid = enter.world_pid(p.pid)
            argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0") if kid else []
            if argv[1:3] == [b"-c", b"import time; time.sleep(30)"]:
                break
            time.sleep(0.02)
        assert kid is not None
        assert argv[1:3] == [b"-c", b"import time; time.sleep(30)"]
    finally:
        if kid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
        p.kill()
        p.wait()
    assert enter.world_pid(p.pid) is None  # gone: nothing to pass a signal on to


def test_the_world_hands_a_sigterm_to_its_operator_as_ctrl_c(tmp_path: Path) -> None:
    ready = tmp_path / "operator"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        Path({str(ready)!r}).write_text("ready")
        try:
            time.sleep(20)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    op = subprocess.Popen([sys.executable, "-c", code], preexec_fn=world._operator_setup())  # noqa: PLW1509
    t = _interrupt_when(ready)
    assert world.wait_operator(op) == 130
    t.join()
