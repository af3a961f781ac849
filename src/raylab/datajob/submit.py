"""Run ``workloads/common_voice.py`` where the stage wants it: as a Ray Job on the lab's cluster
(JobSubmissionClient on the dashboard URL, a loopback address), or in a subprocess that starts
and stops its own isolated local Ray. Either way the summary comes back from the job's output
line ``RAYLAB_SUMMARY {json}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from raylab.errors import RaylabError

MARKER = "RAYLAB_SUMMARY "
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# What the data job needs on AWS nodes, installed by Ray (runtime_env ``pip``) into the job's env.
DATA_PIP = ["soundfile>=0.12", "soxr>=0.3", "pyarrow>=17", "numpy>=1.24", "pandas>=2.2.3", "matplotlib>=3.8"]


def parse_summary(text: str) -> dict[str, Any] | None:
    """The last ``RAYLAB_SUMMARY {json}`` line in ``text``, or None."""
    found = None
    for line in text.splitlines():
        i = line.find(MARKER)
        if i < 0:
            continue
        try:
            obj = json.loads(line[i + len(MARKER):])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found = obj
    return found


def job_args(source: str, out: str, blocks: int | None = None, limit: int | None = None,
             num_cpus: int | None = None) -> list[str]:
    args = ["--source", source, "--out", out, "--no-progress"]
    if blocks:
        args += ["--blocks", str(blocks)]
    if limit:
        args += ["--limit", str(limit)]
    if num_cpus:
        args += ["--num-cpus", str(num_cpus)]
    return args


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.")


def dashboard_up(url: str, timeout: float = 3.0) -> bool:
    """True if a Ray dashboard answers at ``url`` (loopback only: nothing else is ever contacted)."""
    import urllib.request

    if not is_loopback_url(url):
        return False
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/version", timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except OSError:
        return False


def run_isolated(script: Path, args: list[str], timeout: float = 900) -> tuple[dict[str, Any], str]:
    """Run the job in a subprocess that starts its own local Ray (RAY_ADDRESS removed)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                       timeout=timeout, env=env, check=False)
    summary = parse_summary(p.stdout)
    if p.returncode != 0 or summary is None:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-8:])
        last = tail.splitlines()[-1] if tail else ""
        raise RaylabError(f"the Common Voice job failed (exit {p.returncode}): {last}",
                          "run it by hand: python workloads/common_voice.py " + shlex.join(args))
    return summary, p.stderr


def _job_message(client: Any, job_id: str) -> str:
    """Ray's own word on a job that failed before its entrypoint printed anything (the runtime
    environment's setup, for one): the job info's message."""
    try:
        return str(getattr(client.get_job_info(job_id), "message", "") or "").strip()
    except Exception:  # noqa: BLE001 - the reason is a courtesy; the status is the verdict
        return ""


def _wait(client: Any, job_id: str, timeout: float, on_status: Callable[[str], None] | None) -> str:
    """Poll until the job ends (its status); stop it and raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    status = "PENDING"
    while True:
        try:
            status = str(getattr(client.get_job_status(job_id), "value", "PENDING"))
        except Exception:  # noqa: BLE001 - dashboard busy for a moment: poll again
            status = status or "PENDING"
        if on_status:
            on_status(status)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise RaylabError(f"data job {job_id} did not finish within {timeout:.0f} s (stopped it)",
                              f"see its logs: ray job logs {job_id}")
        time.sleep(1.0)


def new_submission_id() -> str:
    """A data job's id, chosen by raylab (not Ray) so the state can name it before it is submitted."""
    import uuid

    return f"raylab-data-{uuid.uuid4().hex[:12]}"


STOP_WAIT_S = 10.0  # a Ctrl-C waits this long for the stopped job's driver to end


def job_entrypoint(argv: list[str]) -> str:
    """A Ray job's entrypoint that makes the driver the process Ray started (pure).

    Ray runs an entrypoint with ``/bin/sh -c`` in a new session, and stops a job by signalling that
    shell and the children it sees at that moment, then marks the job STOPPED. dash (Ubuntu's
    ``/bin/sh``) forks the command: a stop that comes before the fork, or finds only the shell, kills
    the shell and leaves the driver running, re-parented to init, until Ray's watcher kills the group
    (the kill test found ``python stress.py`` alive after an interrupted ``raylab stress``). With
    ``exec`` the shell becomes the driver, so Ray's signal always reaches it."""
    return "exec " + shlex.join(argv)


def stop_and_wait(client: Any, job_id: str, wait_s: float) -> None:
    """Stop a Ray job and wait up to ``wait_s`` for a terminal status (its driver gone); never raises.
    Ray stops a driver with SIGTERM, then SIGKILL: a raylab that exits at once can leave it running."""
    with contextlib.suppress(Exception):
        client.stop_job(job_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if str(getattr(client.get_job_status(job_id), "value", "")) in TERMINAL:
                return
            time.sleep(0.25)


AGENT_NOT_READY = "No available agent to submit job"  # Ray's 500 right after a head starts
AGENT_WAIT_S = 30.0


def submit_when_ready(client: Any, wait_s: float = AGENT_WAIT_S, **job: Any) -> str:
    """``client.submit_job(**job)``, asked again for up to ``wait_s`` while Ray answers that no agent
    can take jobs yet ("please try again later": the head's dashboard agent is still registering).
    Any other error is raised at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return str(client.submit_job(**job))
        except Exception as e:
            if AGENT_NOT_READY not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def run_as_job(dashboard_url: str, script: Path, args: list[str], *, runtime_env: dict[str, Any] | None,
               python: str, timeout: float, on_status: Callable[[str], None] | None = None,
               submission_id: str | None = None, save_to: Path | None = None,
               on_submit: Callable[[str], None] | None = None) -> tuple[dict[str, Any], str, str]:
    """Submit, wait for a terminal status, return (summary, job id, logs). Stops the job on timeout
    and on Ctrl-C; ``on_submit(job_id)`` runs as soon as the job is accepted."""
    from ray.job_submission import JobSubmissionClient

    if not is_loopback_url(dashboard_url):
        raise RaylabError(f"dashboard URL {dashboard_url!r} is not a loopback address",
                          "raylab reaches the dashboard only through 127.0.0.1 (a tunnel on aws)")
    entry = job_entrypoint([python, script.name if runtime_env else str(script), *args])
    client: Any = None
    try:
        client = JobSubmissionClient(dashboard_url)
        job_id = submit_when_ready(client, entrypoint=entry, runtime_env=runtime_env,
                                   submission_id=submission_id)
    except KeyboardInterrupt:  # Ctrl-C while Ray accepts it: a job named beforehand may run already
        if client is not None and submission_id:
            stop_and_wait(client, submission_id, STOP_WAIT_S)
        raise
    except Exception as e:  # noqa: BLE001 - any failure to submit is one user-facing error
        raise RaylabError(f"could not submit the data job to {dashboard_url}: {str(e).splitlines()[0]}",
                          "check the cluster with `raylab status`") from None
    if on_submit:
        on_submit(job_id)
    try:
        status = _wait(client, job_id, timeout, on_status)
    except KeyboardInterrupt:  # a re-run must not find this one still writing the same output
        stop_and_wait(client, job_id, STOP_WAIT_S)
        raise
    logs = client.get_job_logs(job_id)
    summary = parse_summary(logs)
    if status != "SUCCEEDED" or summary is None:
        tail = [ln for ln in logs.strip().splitlines() if ln.strip()][-1:]
        message = _job_message(client, job_id)
        why = tail[0] if tail else message.splitlines()[-1] if message else status  # e.g. runtime_env setup
        saved = ""
        if save_to is not None:  # the cluster may be gone by the time anyone reads `ray job logs`
            save_to.parent.mkdir(parents=True, exist_ok=True)
            save_to.write_text(f"job {job_id}: {status}\n--- Ray's message\n{message}\n--- logs\n{logs}")
            saved = f"; its logs and Ray's message: {save_to}"
        raise RaylabError(f"data job {job_id} ended {status}: {why[:400]}",
                          f"see its logs: ray job logs {job_id}{saved}")
    return summary, job_id, logs
