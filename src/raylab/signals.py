"""Ctrl-C, SIGTERM and SIGHUP stop raylab cleanly: children stop, the state says where, one line says how on.

``install()`` (one call from the CLI's ``main``) turns SIGTERM and SIGHUP into the same
``KeyboardInterrupt`` as Ctrl-C, so one code path handles a closed terminal, a CI timeout and
Ctrl-C: terraform stops its group SIGINT first (``raylab.iac.terraform``), every other ephemeral
child this run started is stopped on the way out, the state records ``run`` = where the run was
(stage, time, signal), and stderr gets one line naming the commands that resume or clean up. The
exit code is 130 (the CLI maps the interrupt to it). SIGKILL cannot be caught: then children get
their parent-death signal, and the next run finds ``run`` still marked running by a dead PID.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

_CAUGHT = (signal.SIGTERM, signal.SIGHUP)
_received: int | None = None
_installed = False
_where: dict[str, Any] = {"workdir": None, "stage": "preflight (before the first stage)"}


def _interrupt(signum: int, frame: Any) -> None:
    global _received
    if _received is None:
        _received = signum
    raise KeyboardInterrupt


def install() -> None:
    """Handlers for SIGTERM/SIGHUP (and Ctrl-C, unless it was set to be ignored) + the exit hook."""
    global _installed
    if _installed:
        return
    _installed = True
    for sig in _CAUGHT:
        signal.signal(sig, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    atexit.register(_on_exit)


def command_words(argv: list[str]) -> str:
    """``raylab stage 2 --workdir x`` -> ``raylab stage 2`` (the command, without its options)."""
    words = []
    for a in argv[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    return " ".join(["raylab", *words])


def note_stage(workdir: Path, stage: str) -> None:
    """Called as each stage starts: the state's ``run`` says where this run is (kept if it dies)."""
    from raylab.procs import mark, run_identity
    from raylab.state import State

    _where.update(workdir=Path(workdir), stage=stage)
    mark(Path(workdir))
    pid, start = run_identity()
    with contextlib.suppress(Exception):  # progress notes never break a run
        State(Path(workdir)).put("run", {"command": command_words(sys.argv), "stage": stage, "pid": pid,
                                         "pid_start": start, "since": time.time(), "outcome": "running"})


def interrupted_line(signame: str, stage: str, cmd: str) -> str:
    """The one line an interrupted run ends with: where it stopped and what to run next (pure)."""
    if cmd == "raylab down":
        return f"interrupted ({signame}) during {stage}: `raylab down` again finishes the cleanup"
    return f"interrupted ({signame}) during {stage}: `{cmd}` resumes (a re-run converges), " \
        "`raylab down` cleans up"


def previous_run(run: dict[str, Any]) -> str | None:
    """One line about how the previous run ended, if it did not finish (pure but for /proc)."""
    from raylab.procs import liveness
    from raylab.proctable import start_time

    if not run or run.get("outcome") == "exited":
        return None
    when = time.strftime("%H:%M:%S", time.localtime(float(run.get("at") or run.get("since") or 0)))
    what = f"`{run.get('command', 'raylab')}` stopped during {run.get('stage', '?')} at {when}"
    if run.get("outcome") == "interrupted":
        return f"{what} ({run.get('signal', 'interrupted')})"
    if liveness(int(run.get("pid_start", 0)), start_time(int(run.get("pid", 0)))) == "alive":
        return None  # still running (another command in this work dir)
    return f"{what} (killed: pid {run.get('pid')} ended without a word)"


def passed_on() -> None:
    """The signal this run received was passed on to a child that reports it itself (the rehearsal's
    operator): the exit hook then adds no line of its own."""
    global _received
    _received = None


def _on_exit() -> None:
    try:
        procs = sys.modules.get("raylab.procs")  # never imported: this run started no child to stop
        stopped = procs.stop_own_children() if procs is not None else []
        wd = _where["workdir"]
        if wd is not None:
            from raylab.state import State

            st = State(wd)
            with contextlib.suppress(Exception):
                run = st.get("run")
                if run.get("pid") == os.getpid():
                    extra = {"outcome": "interrupted", "signal": signal.Signals(_received).name,
                             "at": time.time(), "stopped_children": [r.pid for r in stopped]} \
                        if _received is not None else {"outcome": "exited", "at": time.time()}
                    st.put("run", {**run, **extra})
        if _received is not None:
            print(interrupted_line(signal.Signals(_received).name, _where["stage"], command_words(sys.argv)),
                  file=sys.stderr)
    except KeyboardInterrupt:  # a further signal while stopping: leave, children have death signals
        pass
