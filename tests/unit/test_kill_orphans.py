"""What a killed stage 4 or 6 leaves on the cluster is stopped by the next run (issue 16).

A stress job whose `raylab stress` was SIGKILLed keeps running on the head; stage 6's demo driver, a
local process, kept submitting tasks. Either would share the cluster with the re-run's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raylab import proctable
from raylab.observe import job as jobmod
from raylab.observe.job import orphaned_job, stop_orphaned_job
from raylab.observe.run import JOB_STATE
from raylab.phases import PhaseClock
from raylab.procs import Records, run_identity
from raylab.state import State

DASH = "http://127.0.0.1:8265"
REC = {"job_id": "raysubmit_1", "dashboard_url": DASH, "pid": 1, "pid_start": 1}


@pytest.mark.parametrize(
    ("rec", "dashboard", "run_alive", "expected"),
    [
        (REC, DASH, False, "raysubmit_1"),  # its run was killed: an orphan on this cluster
        (REC, DASH, True, None),  # its run still follows it (another command in this work dir)
        (REC, "http://127.0.0.1:9999", False, None),  # another head (restarted): the job died with it
        ({}, DASH, False, None),  # nothing recorded
        ({**REC, "job_id": ""}, DASH, False, None),
    ],
)
def test_orphaned_job(rec: dict[str, Any], dashboard: str, run_alive: bool, expected: str | None) -> None:
    assert orphaned_job(rec, dashboard, run_alive) == expected


class _UI:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, text: str) -> None:
        self.lines.append(text)


def _ctx(tmp_path: Path) -> Any:
    return SimpleNamespace(state=State(tmp_path / ".raylab"), ui=_UI())


def test_a_killed_runs_job_is_stopped_and_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[tuple[str, str]] = []
    monkeypatch.setattr(jobmod, "stop_job", lambda d, j: stopped.append((d, j)) or True)
    ctx = _ctx(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    ctx.state.put(JOB_STATE, {**REC, "pid": dead.pid, "pid_start": 12345})
    stop_orphaned_job(ctx.state, ctx.ui, JOB_STATE, DASH, "stress job")
    assert stopped == [(DASH, "raysubmit_1")]
    assert ctx.ui.lines == ["stopped the stress job raysubmit_1 that a killed run left running"]
    assert ctx.state.get(JOB_STATE) == {}


def test_a_running_commands_job_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[tuple[str, str]] = []
    monkeypatch.setattr(jobmod, "stop_job", lambda d, j: stopped.append((d, j)) or True)
    ctx = _ctx(tmp_path)
    pid, start = run_identity()  # this process: alive, so the job is still its run's
    ctx.state.put(JOB_STATE, {**REC, "pid": pid, "pid_start": start})
    stop_orphaned_job(ctx.state, ctx.ui, JOB_STATE, DASH, "stress job")
    assert stopped == [] and ctx.ui.lines == []
    assert ctx.state.get(JOB_STATE)["job_id"] == "raysubmit_1"


def test_stage6_demo_driver_is_recorded_and_dies_with_a_killed_run(tmp_path: Path) -> None:
    """start_demo from a run that is then SIGKILLed: the driver is recorded (ephemeral) before it
    runs and gets its parent-death signal, so it never keeps submitting beside the re-run's."""
    root = tmp_path / "proj"
    (root / "workloads").mkdir(parents=True)
    (root / "workloads" / "spot_demo.py").write_text("import time\ntime.sleep(60)\n")
    wd = tmp_path / ".raylab"
    starter = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from types import SimpleNamespace
        from raylab.stages.stage6_io import start_demo
        from raylab.state import State
        st = State(Path({str(wd)!r}))
        st.put("cluster", {{"gcs_address": "127.0.0.1:1"}})
        ctx = SimpleNamespace(root=Path({str(root)!r}), workdir=Path({str(wd)!r}), state=st, lab="t")
        p = start_demo(ctx, Path({str(tmp_path / "demo.json")!r}), 2, 1.0)
        print(p.pid, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    s = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True, env=env)
    assert s.stdout is not None
    child = int(s.stdout.readline())
    recs = [json.loads(f.read_text()) for f in (wd / "procs").glob("*.json")]
    assert [(r["pid"], r["what"], r["ephemeral"]) for r in recs] == [(child, "spot demo", True)]
    s.kill()
    s.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proctable.start_time(child) is not None:
        time.sleep(0.05)
    assert proctable.start_time(child) is None
    assert Records(wd).converge() and Records(wd).all() == []


def test_ctrl_c_stops_the_data_job_and_its_id_was_handed_over_first(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 7 on the cluster: the job is named as soon as it is accepted (the state keeps it for a
    SIGKILL), and Ctrl-C stops it (a re-run would find it writing the same output)."""
    from raylab.datajob import submit

    calls: list[str] = []

    class Client:
        def __init__(self, url: str) -> None:
            pass

        def submit_job(self, **kw: Any) -> str:
            return "raysubmit_data"

        def get_job_status(self, job_id: str) -> Any:
            if not any(c.startswith("stop") for c in calls):
                raise KeyboardInterrupt  # Ctrl-C while raylab waits
            calls.append("status")  # after the stop: waited for until it ended, as the stress job is
            return SimpleNamespace(value="STOPPED")

        def stop_job(self, job_id: str) -> bool:
            calls.append(f"stop {job_id}")
            return True

    monkeypatch.setitem(sys.modules, "ray.job_submission", SimpleNamespace(JobSubmissionClient=Client))
    with pytest.raises(KeyboardInterrupt):
        submit.run_as_job(DASH, tmp_path / "job.py", [], runtime_env=None, python="python", timeout=60,
                          on_submit=lambda j: calls.append(f"submitted {j}"))
    assert calls == ["submitted raysubmit_data", "stop raysubmit_data", "status"]



def interrupted_client(calls: list[str]) -> type:
    """A JobSubmissionClient whose submit_job is interrupted (SIGINT) while Ray accepts the job."""

    class Client:
        def __init__(self, url: str) -> None:
            pass

        def submit_job(self, submission_id: str | None = None, **kw: Any) -> str:
            calls.append(f"submit {submission_id}")
            raise KeyboardInterrupt

        def stop_job(self, job_id: str) -> bool:
            calls.append(f"stop {job_id}")
            return True

    return Client


def test_ctrl_c_while_ray_accepts_the_data_job_stops_it_by_the_id_chosen_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT inside submit_job: Ray may have accepted the job, and no id came back; the id raylab
    chose beforehand is the one stopped (else its driver ran on, writing the re-run's output)."""
    from raylab.datajob import submit

    calls: list[str] = []

    monkeypatch.setitem(sys.modules, "ray.job_submission",
                        SimpleNamespace(JobSubmissionClient=interrupted_client(calls)))
    with pytest.raises(KeyboardInterrupt):
        submit.run_as_job(DASH, tmp_path / "job.py", [], runtime_env=None, python="python", timeout=60,
                          submission_id="raylab-data-1")
    assert calls == ["submit raylab-data-1", "stop raylab-data-1"]


def test_stage7_names_its_job_in_the_state_before_submitting_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL while Ray accepts the data job must leave a job the next run can name (state
    ``data_job``), as the stress job's does (the kill test's point 9)."""
    import contextlib

    from raylab.datajob import submit
    from raylab.stages import stage7_data

    seen: list[tuple[str | None, dict[str, Any]]] = []
    state = State(tmp_path / ".raylab")

    def run_as_job(url: str, script: Path, args: list[str], **kw: Any) -> Any:
        seen.append((kw.get("submission_id"), dict(state.get(stage7_data.JOB_STATE))))
        raise KeyboardInterrupt  # the run stops here (a SIGINT)

    monkeypatch.setattr(submit, "run_as_job", run_as_job)
    monkeypatch.setattr(submit, "dashboard_up", lambda url: True)
    monkeypatch.setattr(stage7_data, "_ensure_sample", lambda ctx, folder: None)
    monkeypatch.setattr(stage7_data, "cluster_dashboard", lambda ctx: DASH)
    ui = SimpleNamespace(info=lambda t: None, noop=lambda t: None, warning=lambda t: None,
                         waiting=lambda t: contextlib.nullcontext())
    ctx = SimpleNamespace(state=state, ui=ui, workdir=tmp_path / ".raylab", root=tmp_path,
                          target=SimpleNamespace(data_source="local", ships_code=False), clock=PhaseClock())
    with pytest.raises(KeyboardInterrupt):
        stage7_data.STAGE.apply(ctx)
    (sub_id, named), = seen
    assert sub_id and sub_id.startswith("raylab-data-")
    assert named["job_id"] == sub_id and named["dashboard_url"] == DASH
    assert named["pid"] == os.getpid()


def test_ctrl_c_while_ray_accepts_the_stress_job_stops_it_by_its_submission_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The kill test's point 9 (SIGINT 3.8 s into `stress`): the interrupt came inside submit_job,
    the run exited, and the job's driver (`python stress.py`) ran on until the next run."""
    calls: list[str] = []

    monkeypatch.setitem(sys.modules, "ray.job_submission",
                        SimpleNamespace(JobSubmissionClient=interrupted_client(calls)))
    with pytest.raises(KeyboardInterrupt):
        jobmod.StressJob.submit(DASH, Path("workloads"), 4, 4.0, 1, submission_id="raylab-stress-1")
    assert calls == ["submit raylab-stress-1", "stop raylab-stress-1"]


def test_a_stopped_job_is_waited_for_until_ray_says_it_ended() -> None:
    """Ctrl-C stops the job and waits for its end: Ray stops a driver with SIGTERM, then SIGKILL, and
    an interrupted run that exits at once left `python stress.py` alive (the kill test's point 9)."""
    statuses = iter(["RUNNING", "RUNNING", "STOPPED"])
    asked: list[str] = []

    class Client:
        def stop_job(self, job_id: str) -> bool:
            asked.append(f"stop {job_id}")
            return True

        def get_job_status(self, job_id: str) -> Any:
            asked.append("status")
            return SimpleNamespace(value=next(statuses))

    t0 = time.monotonic()
    jobmod.stop_and_wait(Client(), "raylab-stress-1", 10.0)
    assert asked == ["stop raylab-stress-1", "status", "status", "status"]
    assert time.monotonic() - t0 < 5

    class Gone:
        def stop_job(self, job_id: str) -> bool:
            raise RuntimeError("no such job")

    jobmod.stop_and_wait(Gone(), "raylab-stress-1", 10.0)  # never raises


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("entry, driver_left", [
    (jobmod.entrypoint, False),  # raylab's: `exec python ...`, the shell becomes the driver
    (lambda *a: jobmod.entrypoint(*a).removeprefix("exec "), True),  # before: dash forks the driver
])
def test_a_stopped_jobs_driver_is_the_process_ray_signals(entry: Any, driver_left: bool) -> None:
    """Ray runs an entrypoint as `/bin/sh -c ...` in a new session and stops it by signalling that
    shell and the children it saw. A stop that finds only the shell (CI's kill test, point 9) left
    `python stress.py` alive, re-parented to init: the entrypoint execs the driver instead."""
    cmd = entry(4, 4.0, 1).replace("python stress.py", f"{sys.executable} -c 'import time; time.sleep(30)'")
    p = subprocess.Popen(cmd, shell=True, start_new_session=True)  # as Ray's JobSupervisor does
    try:
        time.sleep(0.5)  # the shell has started what it runs
        os.kill(p.pid, 15)  # Ray's SIGTERM, when its snapshot of the children was empty
        p.wait(timeout=10)
        deadline = time.monotonic() + 3
        while _group_alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group_alive(p.pid) is driver_left
    finally:
        if _group_alive(p.pid):
            os.killpg(p.pid, 9)
