"""Run ``workloads/stress.py`` as a Ray Job on the cluster's dashboard and follow its progress.

The script runs ON THE HEAD (Ray's job runner sets ``RAY_ADDRESS``), the same on both targets:
local, the dashboard is on 127.0.0.1; aws, it is reached through the target's tunnel.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The job client's helpers, shared with the data job: terminal statuses, the submit that waits for the
# head's agent, the stop that waits for the driver.
from raylab.datajob.submit import STOP_WAIT_S, TERMINAL, job_entrypoint, stop_and_wait, submit_when_ready

PROGRESS_KEY = "raylab_progress"
SUMMARY_KEY = "raylab_stress_summary"


def parse_job_output(text: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(last progress, summary) found in the job's log text; other lines are ignored."""
    progress = summary = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and PROGRESS_KEY in obj:
            progress = obj[PROGRESS_KEY]
        elif isinstance(obj, dict) and SUMMARY_KEY in obj:
            summary = obj[SUMMARY_KEY]
    return progress, summary


def entrypoint(tasks: int, duration: float, scale: int) -> str:
    return job_entrypoint(["python", "stress.py", "--tasks", str(tasks), "--duration", f"{duration:g}",
                           "--scale", str(scale)])


def listed_jobs(dashboard_url: str) -> list[str] | None:
    """The submission ids of every job the cluster's GCS remembers (None if the dashboard cannot say).

    A head whose Ray was restarted (`ray stop`; `ray start`) has a new GCS and an empty list."""
    try:
        from ray.job_submission import JobSubmissionClient

        return [j.submission_id or j.job_id or "" for j in JobSubmissionClient(dashboard_url).list_jobs()]
    except Exception:  # noqa: BLE001 - the caller reports "unknown", never "restarted"
        return None


def orphaned_job(rec: dict[str, Any], dashboard_url: str, run_alive: bool) -> str | None:
    """The job a killed run left running on this cluster, to stop before a new one (pure).

    ``rec`` is the state's ``stress_job`` (job id, dashboard, the submitting run's pid and start
    time); ``run_alive``: that run still runs (then the job is its own, not an orphan)."""
    if not rec.get("job_id") or run_alive or rec.get("dashboard_url") != dashboard_url:
        return None
    return str(rec["job_id"])


def note_job(state: Any, section: str, job_id: str, dashboard_url: str) -> None:
    """Name a submitted job in the state with the run that follows it (pid + start time), so a
    run killed while it waits leaves a job the next run can stop (``stop_orphaned_job``)."""
    from raylab.procs import run_identity

    pid, start = run_identity()
    state.put(section, {"job_id": job_id, "dashboard_url": dashboard_url, "pid": pid, "pid_start": start})


def stop_orphaned_job(state: Any, ui: Any, section: str, dashboard_url: str, what: str) -> None:
    """Stop the job a killed run left running on this cluster (it would share the cluster, or the
    output, with the new one): the state names it, and the run that submitted it is gone."""
    from raylab.procs import liveness
    from raylab.proctable import start_time

    rec = state.get(section)
    alive = liveness(int(rec.get("pid_start") or 0), start_time(int(rec.get("pid") or 0))) == "alive"
    job_id = orphaned_job(rec, dashboard_url, alive)
    if job_id and stop_job(dashboard_url, job_id):
        ui.warning(f"stopped the {what} {job_id} that a killed run left running")
    if rec and not alive:
        state.drop(section)


def stop_job(dashboard_url: str, job_id: str) -> bool:
    """Stop a job if it still runs; True if it was running (False: done, unknown, or no answer)."""
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(dashboard_url)
        status = str(getattr(client.get_job_status(job_id), "value", ""))
        return status not in TERMINAL and bool(client.stop_job(job_id))
    except Exception:  # noqa: BLE001 - a head without that job: nothing to stop
        return False


@dataclass
class StressJob:
    """A submitted stress job; ``poll()`` refreshes status, progress and (at the end) the summary."""

    dashboard_url: str
    job_id: str
    status: str = "PENDING"
    progress: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    message: str = ""
    _client: Any = field(default=None, repr=False)

    def task_attempts(self) -> list[dict[str, Any]] | None:
        """Every attempt of this job's `heavy_task`s from Ray's state API (None if Ray cannot say).

        Ray's state API serves at most 10,000 rows (RAY_MAX_LIMIT_FROM_API_SERVER); the lab's job
        has 480 tasks."""
        try:
            from ray.util.state import list_tasks

            ray_job_id = self._client.get_job_info(self.job_id).job_id
            rows = list_tasks(address=self.dashboard_url, limit=10_000, timeout=15, detail=False,
                              raise_on_missing_output=False,
                              filters=[("job_id", "=", ray_job_id), ("name", "=", "heavy_task")])
            return [{"task_id": r.task_id, "attempt_number": r.attempt_number} for r in rows]
        except Exception as e:  # noqa: BLE001 - retries are then reported as unknown (null), never as 0
            import sys

            print(f"note: task retries unknown ({type(e).__name__}: {e})"[:300], file=sys.stderr)
            return None

    @classmethod
    def submit(cls, dashboard_url: str, workloads_dir: Path, tasks: int, duration: float, scale: int,
               submission_id: str | None = None) -> StressJob:
        from ray.job_submission import JobSubmissionClient

        from raylab.errors import RaylabError

        client: Any = None
        try:
            client = JobSubmissionClient(dashboard_url)
            job_id = submit_when_ready(
                client, entrypoint=entrypoint(tasks, duration, scale),
                runtime_env={"working_dir": str(workloads_dir)},
                submission_id=submission_id,
            )
        except KeyboardInterrupt:  # Ctrl-C while Ray accepts it: its driver may start anyway
            if client is not None and submission_id:
                stop_and_wait(client, submission_id, STOP_WAIT_S)
            raise
        except Exception as e:
            raise RaylabError(f"could not submit the stress job to {dashboard_url}: {str(e).splitlines()[0]}",
                              "check the cluster with `raylab status`; stage 3 must be up") from None
        return cls(dashboard_url, job_id, _client=client)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def poll(self) -> None:
        try:
            info = self._client.get_job_info(self.job_id)
            self.status = str(getattr(info.status, "value", info.status))
            self.message = info.message or ""
            logs = self._client.get_job_logs(self.job_id)
        except Exception as e:  # the dashboard busy for a moment: keep the last known values
            self.message = f"dashboard unreachable: {str(e).splitlines()[0][:120]}"
            return
        progress, summary = parse_job_output(logs)
        self.progress = progress or self.progress
        self.summary = summary or self.summary

    def logs_tail(self, lines: int = 20) -> str:
        try:
            text = self._client.get_job_logs(self.job_id)
        except Exception:
            return ""
        keep = [ln for ln in text.splitlines() if not ln.startswith('{"raylab_')]
        return "\n".join(keep[-lines:])

    def stop(self, wait_s: float = 0.0) -> None:
        """Ask Ray to stop the job; with ``wait_s``, wait that long for it to end (its driver gone)."""
        stop_and_wait(self._client, self.job_id, wait_s)

    def describe(self) -> str:
        return f"job {shlex.quote(self.job_id)} {self.status}"
