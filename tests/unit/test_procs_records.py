"""Process records: a process is stopped only after its pid AND start time match (tables + real sleeps)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raylab import leftovers, procs, proctable
from raylab.procs import Record, Records, decide, liveness
from raylab.proctable import ProcInfo


@pytest.mark.parametrize(
    ("recorded", "now", "expected"),
    [(100, 100, "alive"), (100, None, "gone"), (100, 250, "recycled"), (100, 99, "recycled")],
)
def test_liveness(recorded: int, now: int | None, expected: str) -> None:
    assert liveness(recorded, now) == expected


@pytest.mark.parametrize(
    ("proc", "run", "ephemeral", "expected"),
    [
        ("gone", "gone", True, "forget"),
        ("recycled", "gone", True, "forget"),  # a recycled PID is never signalled
        ("recycled", "alive", False, "forget"),
        ("alive", "alive", True, "leave"),  # its raylab run still owns it
        ("alive", "alive", False, "leave"),
        ("alive", "gone", True, "stop"),  # terraform of a killed run: an orphan
        ("alive", "recycled", True, "stop"),  # the run's PID now belongs to someone else
        ("alive", "gone", False, "adopt"),  # the twin or the head outlive the command on purpose
    ],
)
def test_decide(proc: str, run: str, ephemeral: bool, expected: str) -> None:
    assert decide(proc, run, ephemeral) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/w/.raylab", True),
        ("/w/.raylab/terraform/lab/module", True),
        ("-chdir=/w/.raylab/terraform/lab/module", True),
        ("--state-dir=/w/.raylab/twin", True),
        ("/w/.raylab/terraform/lab/module (deleted)", True),
        ("/w/.raylab2/x", False),
        ("/w", False),
        ("", False),
    ],
)
def test_under(path: str, expected: bool) -> None:
    assert proctable.under(path, Path("/w/.raylab")) is expected


def _p(pid: int, pgid: int, start: int, marker: str | None = None, argv: tuple[str, ...] = ("x",),
       cwd: str = "/", exe: str = "/usr/bin/x", ppid: int = 1) -> ProcInfo:
    return ProcInfo(pid, ppid, pgid, start, argv, cwd, exe, marker)


def _rec(pid: int = 10, start: int = 500, pgid: int = 10, ephemeral: bool = True) -> Record:
    return Record(pid=pid, start=start, pgid=pgid, owner="terraform", what="terraform apply", lab="l",
                  cmd=("terraform",), run_pid=1, run_start=1, ephemeral=ephemeral)


ROOT = "/w/.raylab"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # leader alive: itself and its group members started after it
        ([_p(10, 10, 500), _p(11, 10, 510)], [10, 11]),
        # leader's PID recycled (other start): not it; members only with our marker
        ([_p(10, 10, 900), _p(11, 10, 910)], []),
        ([_p(10, 10, 900), _p(11, 10, 910, marker=ROOT)], [11]),
        # leader gone: a provider left in its group, carrying the marker
        ([_p(11, 10, 510, marker=ROOT)], [11]),
        ([_p(11, 10, 510, marker="/other/.raylab")], []),
        # same group id but started before our leader: not ours
        ([_p(10, 10, 500), _p(9, 10, 400)], [10]),
        # another group
        ([_p(10, 10, 500), _p(12, 12, 520)], [10]),
    ],
)
def test_members(table: list[ProcInfo], expected: list[int]) -> None:
    assert sorted(p.pid for p in procs.members(_rec(), Path(ROOT), table)) == expected


def test_find_leftovers_by_record_marker_exe_cwd_argv(tmp_path: Path) -> None:
    root = tmp_path / ".raylab"
    Records(root).write(_rec(pid=10, start=500))
    table = [
        _p(10, 10, 500),  # recorded
        _p(11, 10, 510, argv=(".terraform/providers/terraform-provider-aws",)),  # its group
        _p(20, 20, 600, marker=str(root)),  # a Ray raylet: inherited the marker
        _p(21, 21, 600, exe=f"{root}/terraform/l/module/.terraform/providers/p"),  # program in the dir
        _p(22, 22, 600, cwd=f"{root}/logs"),  # someone's shell: listed, not ours
        _p(23, 23, 600, argv=("tail", "-f", f"{root}/logs/twin.log")),  # listed, not ours
        _p(24, 24, 600, marker=str(root)),  # this process (excluded)
        _p(30, 30, 600, argv=("sleep", "9"), cwd="/tmp"),  # unrelated
    ]
    found = {x.proc.pid: x for x in leftovers.find_leftovers(root, table, exclude={24})}
    assert sorted(found) == [10, 11, 20, 21, 22, 23]
    assert [p for p, x in found.items() if x.ours] == [10, 11, 20, 21]
    assert found[10].what == "terraform apply" and found[10].why == "recorded"
    assert found[11].what.startswith("terraform-provider-aws (of terraform apply")
    assert "not stopped" in found[22].line() and "not stopped" not in found[20].line()


def test_a_leftover_in_its_own_session_is_named_by_its_recorded_ancestor(tmp_path: Path) -> None:
    """Ray's workers (the job supervisor of an interrupted stress job) run in their own session
    under the head's raylet: listed as the head's, so one sees they go when the head goes."""
    root = tmp_path / ".raylab"
    Records(root).write(Record(pid=10, start=500, pgid=10, owner="local-target", what="ray-head", lab="l",
                               cmd=("ray",), run_pid=1, run_start=1, ephemeral=False))
    table = [
        _p(10, 10, 500),  # `ray start --head`
        _p(11, 10, 510, ppid=10, argv=("raylet",)),  # its group
        _p(12, 12, 520, ppid=11, marker=str(root), argv=("ray::JobSupervisor",)),  # own session
        _p(13, 13, 530, ppid=12, marker=str(root), argv=("python", "stress.py")),  # its child
        _p(14, 14, 540, ppid=1, marker=str(root), argv=("orphan",)),  # re-parented to init
    ]
    found = {x.proc.pid: x.what for x in leftovers.find_leftovers(root, table, exclude=set())}
    assert found == {10: "ray-head", 11: "raylet (of ray-head)", 12: "ray::JobSupervisor (of ray-head)",
                     13: "python (of ray-head)", 14: "orphan"}


def test_find_leftovers_ignores_a_recycled_recorded_pid(tmp_path: Path) -> None:
    root = tmp_path / ".raylab"
    Records(root).write(_rec(pid=10, start=500))
    assert leftovers.find_leftovers(root, [_p(10, 10, 777, argv=("vim",))], exclude=set()) == []


# --- real processes ---------------------------------------------------------------------------------
def _spawn_sleep(records: Records, ephemeral: bool = True, seconds: int = 60) -> subprocess.Popen[bytes]:
    return records.start(["sleep", str(seconds)], what="sleep", owner="test", lab="t", ephemeral=ephemeral,
                         stdout=subprocess.DEVNULL)


def test_child_records_itself_with_pid_start_time_and_marker(tmp_path: Path) -> None:
    records = Records(tmp_path / ".raylab")
    p = _spawn_sleep(records)
    try:
        rec = records.of(p.pid)
        assert rec is not None
        assert (rec.pid, rec.pgid, rec.start) == (p.pid, p.pid, proctable.start_time(p.pid))
        assert (rec.run_pid, rec.run_start) == procs.run_identity()
        assert rec.ephemeral and rec.what == "sleep" and rec.cmd == ("sleep", "60")
        info = proctable.read_proc(p.pid)
        assert info is not None and info.marker == str(records.root)
        assert [r for r, a in records.converge() if a != "leave"] == []  # its run (this test) is alive
        assert proctable.start_time(p.pid) is not None
    finally:
        p.kill()
        p.wait()
    assert records.converge() == [(rec, "forget")] and records.all() == []


@pytest.mark.parametrize(("ephemeral", "action", "survives"), [(True, "stop", False), (False, "adopt", True)])
def test_converge_stops_an_orphan_and_adopts_a_long_lived_process(
    tmp_path: Path, ephemeral: bool, action: str, survives: bool
) -> None:
    records = Records(tmp_path / ".raylab")
    p = _spawn_sleep(records, ephemeral=ephemeral)
    try:
        rec = records.of(p.pid)
        assert rec is not None
        # as if the raylab run that started it had died: its run identity no longer matches
        from dataclasses import replace

        records.write(replace(rec, run_start=rec.run_start + 1))
        steps = ((signal.SIGINT, 2.0), (signal.SIGKILL, 2.0))
        assert [a for _, a in records.converge(steps=steps)] == [action]
        assert (proctable.start_time(p.pid) is not None) is survives
        assert bool(records.all()) is survives
    finally:
        p.kill()
        p.wait()


def test_a_recycled_pid_is_forgotten_and_never_signalled(tmp_path: Path) -> None:
    records = Records(tmp_path / ".raylab")
    other = subprocess.Popen(["sleep", "60"])  # not started by raylab
    try:
        st = proctable.start_time(other.pid)
        assert st is not None
        records.write(_rec(pid=other.pid, start=st - 1, pgid=other.pid))  # same PID, other start time
        assert [a for _, a in records.converge(steps=((signal.SIGKILL, 1.0),))] == ["forget"]
        assert procs.signal_verified(other.pid, st - 1, signal.SIGKILL) is False
        assert proctable.start_time(other.pid) == st
    finally:
        other.kill()
        other.wait()


def test_stop_procs_escalates_from_sigint_to_sigkill(tmp_path: Path) -> None:
    # a child that ignores SIGINT and SIGTERM: only the last step stops it
    code = "import signal,time; [signal.signal(s, signal.SIG_IGN) for s in (2, 15)]; time.sleep(60)"
    records = Records(tmp_path / ".raylab")
    p = records.start([sys.executable, "-c", code], what="stubborn", owner="test", lab="t", ephemeral=True)
    time.sleep(0.5)
    rec = records.of(p.pid)
    assert rec is not None
    t0 = time.monotonic()
    assert procs.stop_record(rec, records.root, ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.5),
                                                 (signal.SIGKILL, 3.0)))
    assert 1.0 <= time.monotonic() - t0 < 5  # it waited out SIGINT and SIGTERM
    assert proctable.start_time(p.pid) is None  # (stop_procs reaped it, so Popen sees no status)
    p.wait(timeout=5)


def test_an_ephemeral_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL the starter: the parent-death signal takes its child (no orphan)."""
    root = tmp_path / ".raylab"
    starter = textwrap.dedent(f"""
        import subprocess, sys, time
        from raylab.procs import Records
        p = Records({str(root)!r}).start(["sleep", "60"], what="sleep", owner="t", lab="t", ephemeral=True,
                                         stdout=subprocess.DEVNULL)
        print(p.pid, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    s = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True, env=env)
    assert s.stdout is not None
    child = int(s.stdout.readline())
    assert proctable.start_time(child) is not None
    s.kill()
    s.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proctable.start_time(child) is not None:
        time.sleep(0.05)
    assert proctable.start_time(child) is None
    recs = [json.loads(f.read_text()) for f in (root / "procs").glob("*.json")]
    assert [r["pid"] for r in recs] == [child]  # recorded by the child before it ran
    assert Records(root).converge() and Records(root).all() == []


def test_stop_leftovers_stops_marked_processes_but_not_foreign_ones(tmp_path: Path) -> None:
    root = tmp_path / ".raylab"
    (root / "logs").mkdir(parents=True)
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, proctable.MARK_ENV: str(root)})
    foreign = subprocess.Popen(["sleep", "60"], cwd=root / "logs")  # e.g. a trainee's shell there
    try:
        found = {x.proc.pid: x.ours for x in leftovers.find_leftovers(root)}
        assert found.get(marked.pid) is True and found.get(foreign.pid) is False
        stopped = leftovers.stop_leftovers(root, ((signal.SIGINT, 2.0), (signal.SIGKILL, 2.0)))
        assert [x.proc.pid for x in stopped] == [marked.pid]
        assert marked.wait(timeout=5) is not None and foreign.poll() is None
    finally:
        for p in (marked, foreign):
            p.kill()
            p.wait()


def test_stop_leftovers_also_stops_what_a_stopped_process_starts_on_its_way_out(tmp_path: Path) -> None:
    """Ray's job watcher (`while kill -s 0 <pid>; do sleep 1; done`) leaves a `sleep 1` behind it when
    it is stopped; CI's kill test found one alive after `down`. Here a shell starts its orphan on SIGINT."""
    root = tmp_path / ".raylab"
    root.mkdir()
    script = "trap 'sleep 30 & exit 0' INT; while true; do sleep 0.1; done"
    watcher = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                               env={**os.environ, proctable.MARK_ENV: str(root)})
    try:
        time.sleep(0.3)
        leftovers.stop_leftovers(root, ((signal.SIGINT, 2.0), (signal.SIGKILL, 2.0)))
        watcher.wait(timeout=5)
        assert [x for x in leftovers.find_leftovers(root) if x.ours] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watcher.pid, signal.SIGKILL)
        watcher.wait()


def test_a_child_started_from_a_worker_thread_outlives_that_thread(tmp_path: Path) -> None:
    """The parent-death signal is per thread: the twin starts nodes from boot threads that end."""
    import threading

    records = Records(tmp_path / ".raylab")
    box: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(target=lambda: box.append(_spawn_sleep(records)))
    t.start()
    t.join()
    p = box[0]
    try:
        time.sleep(0.3)
        assert proctable.start_time(p.pid) is not None
        assert records.of(p.pid) is not None
    finally:
        p.kill()
        p.wait()


def test_a_child_started_with_death_signal_dies_with_its_parent(tmp_path: Path) -> None:
    """``procs.death_signal`` (the rehearsal's world, machines and operator use it): the parent exits,
    the child gets the signal."""
    pidfile = tmp_path / "pid"
    code = textwrap.dedent(f"""
        import signal, subprocess
        from pathlib import Path
        from raylab.procs import death_signal
        p = subprocess.Popen(["sleep", "30"], preexec_fn=death_signal(signal.SIGKILL))
        Path({str(pidfile)!r}).write_text(str(p.pid))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while proctable.start_time(child) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proctable.start_time(child) is None


def test_the_record_of_a_child_that_already_exited_is_found_until_it_is_reaped(tmp_path: Path) -> None:
    """A quick child (a terraform that fails at once) can be a zombie by the time its starter looks up
    its record: no start time then, but its PID is still its own until reaped, so its starter finds
    the record and forgets it (a unit run under load once left one behind)."""
    records = Records(tmp_path / ".raylab")
    p = procs.spawn(["true"], tmp_path / "true.log", records=records, what="true", owner="test", lab="",
                    ephemeral=True)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert records.of(p.pid) is None  # a zombie has no start time
    rec = records.of(p.pid, child=True)
    assert rec is not None and rec.pid == p.pid and rec.what == "true"
    p.wait()
    records.forget(rec)
    assert records.all() == []
