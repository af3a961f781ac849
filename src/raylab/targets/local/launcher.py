"""The twin's node launcher: Ray's own `ray start` CLI, imported once, forked for every node.

A worker node of the twin is `ray start --address=<gcs> --block` (``machines.node_command``). Run as a
new process, about 1 CPU-second of its boot is Python importing Ray's CLI before the raylet even
starts (bench/node_boot.py), and nodes launched in one autoscaler tick pay it together on the
machine's shared cores. On EC2 each instance pays it on its own cores, in parallel.

The launcher is one long-lived process of the twin that imports ``ray.scripts.scripts`` once and
then, for each node, forks a child that runs Ray's unmodified CLI (``ray.scripts.scripts.main``) with
the node's arguments and environment: in its own session (the twin stops it by its group), recorded
by pid and start time before it runs anything (``raylab.procs.record_self``), its output in the
node's log. What the CLI starts (raylet, agents) is exec'd as always, with the node's environment.

Tripwire: forking is only safe while the launcher has a single thread. If importing Ray's CLI ever
starts one (a future Ray), the launcher refuses to serve and the twin starts nodes as processes.

Protocol, JSON lines. The twin writes ``{"id", "argv", "env", "log", "records", "body"}`` to the
launcher's stdin; the launcher answers ``{"id", "pid"}`` (or ``{"id", "error"}``), and
``{"exit": pid, "code": rc}`` when a node's process ends (``rc`` as ``subprocess`` gives it: negative
for a signal). End of stdin: the launcher exits; its nodes run on, and the twin stops them by pid.

  python <this file> <launcher log>      (started by ``Launcher``; not a user command)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

READY = "ready"
LAUNCH_TIMEOUT_S = 30.0


# --- the twin's side ------------------------------------------------------------------------------
class LaunchedNode:
    """A node process the launcher forked: what ``Machines`` uses of ``subprocess.Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"ray node {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def ended(self, code: int) -> None:
        self.returncode = code
        self._done.set()


class LauncherError(Exception):
    pass


class Launcher:
    """The twin's handle on the launcher process (start it, launch nodes, stop it)."""

    def __init__(self, log: Path, env: Mapping[str, str], records: Any = None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), str(log)]
        log.parent.mkdir(parents=True, exist_ok=True)
        if records is not None:
            self.proc = records.start(cmd, what="ray node launcher", owner="twin", lab="", ephemeral=True,
                                      env=dict(env), stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=dict(env), start_new_session=True)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, dict[str, Any]]] = {}
        self._nodes: dict[int, LaunchedNode] = {}
        self._ready = threading.Event()
        self.failed = ""
        threading.Thread(target=self._read, name="launcher-read", daemon=True).start()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Has the launcher imported Ray's CLI (and found itself safe to fork)?"""
        return self._ready.wait(timeout) and not self.failed

    def launch(self, key: str, argv: Sequence[str], env: Mapping[str, str], log: str,
               records_dir: str = "", body: bytes = b"") -> LaunchedNode:
        """Fork a node running ``ray <argv>``; its pid once the child exists (it records itself first)."""
        if not self.wait_ready(LAUNCH_TIMEOUT_S):
            raise LauncherError(self.failed or "the node launcher is not ready")
        done = threading.Event()
        answer: dict[str, Any] = {}
        req = {"id": key, "argv": list(argv), "env": dict(env), "log": log, "records": records_dir,
               "body": body.decode()}
        with self._lock:
            self._pending[key] = (done, answer)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(req) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                self._pending.pop(key, None)
                raise LauncherError(f"the node launcher is gone: {e}") from e
        if not done.wait(LAUNCH_TIMEOUT_S) or "pid" not in answer:
            with self._lock:
                self._pending.pop(key, None)
            raise LauncherError(answer.get("error") or self.failed or "the node launcher did not answer")
        with self._lock:
            node = self._nodes.setdefault(int(answer["pid"]), LaunchedNode(int(answer["pid"])))
        return node

    def close(self) -> None:
        """End the launcher (its nodes run on: the twin stops them by pid)."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get(READY) is not None:
                self.failed = str(msg.get("error") or "")
                self._ready.set()
            elif "exit" in msg:
                with self._lock:
                    node = self._nodes.setdefault(int(msg["exit"]), LaunchedNode(int(msg["exit"])))
                node.ended(int(msg["code"]))
            elif "id" in msg:
                with self._lock:
                    waiting = self._pending.pop(str(msg["id"]), None)
                if waiting is not None:
                    waiting[1].update(msg)
                    waiting[0].set()
        # the launcher ended: nodes it still had run on, orphaned; their end is seen by pid from now on
        self.failed = self.failed or f"the node launcher exited ({self.proc.wait()})"
        self._ready.set()
        with self._lock:
            for done, _ in self._pending.values():
                done.set()
            orphans = [n for n in self._nodes.values() if n.returncode is None]
        threading.Thread(target=_watch_orphans, args=(orphans,), daemon=True).start()


def _watch_orphans(nodes: list[LaunchedNode]) -> None:
    from raylab.state import pid_alive

    while nodes:
        for n in list(nodes):
            if not pid_alive(n.pid):
                n.ended(-1)
                nodes.remove(n)
        time.sleep(0.5)


# --- the launcher process --------------------------------------------------------------------------
def _send(msg: Mapping[str, Any]) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _run_node(req: Mapping[str, Any], cli: Any, record_self: Any) -> None:
    """In the forked child: become the node (session, record, log, environment), run Ray's CLI, exit."""
    code = 1
    try:
        os.setsid()
        if req.get("records"):
            record_self(str(req["records"]), str(req["body"]).encode())
        fd = os.open(str(req["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(req["env"]).items()})
        sys.argv = ["ray", *[str(a) for a in req["argv"]]]
        try:
            cli()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        import atexit

        atexit._run_exitfuncs()  # what the interpreter would run at exit (os._exit skips it)
    except BaseException:  # noqa: BLE001 - the child must never return into the launcher's loop
        import traceback

        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def serve(stdin: IO[bytes]) -> int:
    """The launcher's loop: read requests, fork nodes, report pids and exits."""
    import select

    try:
        from ray.scripts.scripts import main as cli

        from raylab.procs import record_self
    except Exception as e:  # noqa: BLE001 - reported to the twin, which falls back to processes
        _send({READY: False, "error": f"importing Ray's CLI failed: {e}"})
        return 1
    if _threads() != 1:
        _send({READY: False,
               "error": f"importing Ray's CLI started {_threads() - 1} thread(s): forking is unsafe"})
        return 1
    _send({READY: True})
    fd = stdin.fileno()
    buf = b""
    live = 0
    while True:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    req = json.loads(line)
                    pid = os.fork()
                except Exception as e:  # noqa: BLE001 - a bad request or a failed fork is the twin's to handle
                    with contextlib.suppress(Exception):
                        _send({"id": json.loads(line).get("id", ""), "error": str(e)})
                    continue
                if pid == 0:
                    _run_node(req, cli, record_self)
                live += 1
                _send({"id": req["id"], "pid": pid})
        while live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                live = 0
                break
            if pid == 0:
                break
            live -= 1
            _send({"exit": pid, "code": _exit_code(status)})


def main(argv: list[str]) -> int:
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run by path: this directory's modules must not shadow anything
    if argv:
        log = os.open(argv[0], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)  # stdout is the protocol
        os.close(log)
    return serve(sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
