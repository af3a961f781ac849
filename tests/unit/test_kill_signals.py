"""Ctrl-C/SIGTERM/SIGHUP stop cleanly, and a held Terraform lock is named in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raylab import procs, proctable
from raylab.iac.terraform import LOCK_TIMEOUT, Terraform, describe_lock, lock_holders
from raylab.signals import command_words, interrupted_line, previous_run


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["raylab", "up", "--workdir", "/x"], "raylab up"),
        (["raylab", "stage", "2", "-y"], "raylab stage 2"),
        (["raylab", "down"], "raylab down"),
        (["raylab"], "raylab"),
    ],
)
def test_command_words(argv: list[str], expected: str) -> None:
    assert command_words(argv) == expected


def _run(**kw: object) -> dict[str, object]:
    return {"command": "raylab up", "stage": "stage 2 identity", "since": 0, **kw}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ({}, None),
        (_run(outcome="exited"), None),
        (_run(outcome="interrupted", signal="SIGINT"), "(SIGINT)"),
        (_run(outcome="running", pid=2**22 + 7, pid_start=1), "(killed: pid"),
        (_run(outcome="running", pid=os.getpid(), pid_start=proctable.start_time(os.getpid())), None),
    ],
)
def test_previous_run(run: dict[str, object], expected: str | None) -> None:
    line = previous_run(run)
    if expected is None:
        assert line is None
    else:
        assert line is not None and "`raylab up` stopped during stage 2 identity" in line and expected in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_children_records_the_stage_and_prints_one_line(tmp_path: Path, sig: int) -> None:
    wd = tmp_path / ".raylab"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        from pathlib import Path
        from raylab import signals
        from raylab.procs import Records
        signals.install()
        signals.note_stage(Path({str(wd)!r}), "stage 9 test")
        p = Records(Path({str(wd)!r})).start(["sleep", "60"], what="sleep", owner="t", lab="t",
                                             ephemeral=True, stdout=subprocess.DEVNULL)
        try:
            print(p.pid, flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", script, "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout is not None
    child = int(p.stdout.readline())
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130
    assert err.strip().splitlines() == [
        f"interrupted ({signal.Signals(sig).name}) during stage 9 test: `raylab up` resumes "
        "(a re-run converges), `raylab down` cleans up"
    ]
    assert proctable.start_time(child) is None
    run = json.loads((wd / "state.json").read_text())["run"]
    assert (run["stage"], run["outcome"], run["signal"]) == ("stage 9 test", "interrupted",
                                                             signal.Signals(sig).name)
    assert run["stopped_children"] == [child]
    assert procs.Records(wd).all() == []


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ("raylab up", "`raylab up` resumes (a re-run converges), `raylab down` cleans up"),
        ("raylab stress", "`raylab stress` resumes (a re-run converges), `raylab down` cleans up"),
        ("raylab down", "`raylab down` again finishes the cleanup"),  # down's next step, said once
    ],
)
def test_interrupted_line(cmd: str, expected: str) -> None:
    line = interrupted_line("SIGINT", "stage 3 cluster", cmd)
    assert line == f"interrupted (SIGINT) during stage 3 cluster: {expected}"


def test_down_notes_where_it_is_before_it_stops_anything(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`raylab down` runs the teardown without the stage runner: a kill while it stops the Ray head
    must still be recorded as during the teardown, by this run (not as the previous run's exit)."""
    from types import SimpleNamespace

    from raylab.phases import PhaseClock
    from raylab.stages import teardown
    from raylab.state import State

    seen: list[dict[str, object]] = []
    wd = tmp_path / ".raylab"
    st = State(wd)
    st.put("run", {"command": "raylab stress", "stage": "stage 4 stress", "pid": 1, "outcome": "exited"})
    monkeypatch.setattr(teardown, "STAGES", ())
    target = SimpleNamespace(stop=lambda c: seen.append(st.get("run")))
    ctx = SimpleNamespace(workdir=wd, state=st, target=target, target_name="local", clock=PhaseClock())
    assert teardown.Teardown().apply(ctx) == {"errors": []}  # type: ignore[arg-type]
    assert [(r["stage"], r["pid"], r["outcome"]) for r in seen] == [("teardown", os.getpid(), "running")]


def test_lock_holder_is_found_and_named(tmp_path: Path) -> None:
    module = tmp_path / "module"
    module.mkdir()
    state = module / "terraform.tfstate"
    state.write_text("{}")
    (module / ".terraform.tfstate.lock.info").write_text(json.dumps({
        "ID": "7166418c", "Operation": "OperationTypeApply", "Who": "ana@laptop",
        "Created": "2026-12-05T22:52:11.21903674Z", "Path": "terraform.tfstate"}))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        f = open({str(state)!r}, "r+")
        fcntl.lockf(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert lock_holders(state) == [holder.pid]
        tf = Terraform(source=tmp_path, workdir=tmp_path, env={})
        object.__setattr__(tf, "workdir", tmp_path)
        line = describe_lock(json.loads((module / ".terraform.tfstate.lock.info").read_text()), [holder.pid])
        assert line.startswith("ana@laptop, apply since 2026-12-05 22:52:11 UTC (id 7166418c; pid ")
        assert tf._foreign_lock() == line
    finally:
        holder.kill()
        holder.wait()
    assert lock_holders(state) == []


def test_lock_holders_reads_proc_locks_lines(tmp_path: Path) -> None:
    f = tmp_path / "terraform.tfstate"
    f.write_text("{}")
    ino = f.stat().st_ino
    text = "\n".join([
        f"1: POSIX  ADVISORY  WRITE 10996 fe:00:{ino} 0 EOF",
        f"2: FLOCK  ADVISORY  WRITE 10152 fe:00:{ino} 0 EOF",  # flock: not terraform's kind of lock
        f"3: POSIX  ADVISORY  WRITE 777 fe:00:{ino + 1} 0 EOF",
        f"4: -> POSIX  ADVISORY  WRITE 555 fe:00:{ino} 0 EOF",  # a waiter
    ])
    assert lock_holders(f, text) == [10996]


def _fake_terraform(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "terraform"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_locking_commands_wait_for_the_lock_and_the_run_is_recorded_then_forgotten(tmp_path: Path) -> None:
    env = _fake_terraform(tmp_path, 'echo "args: $*"; env | grep -c RAYLAB_STARTED_BY\n')
    tf = Terraform(source=tmp_path, workdir=tmp_path / "tf" / "lab", env=env, lab="lab",
                   records_root=tmp_path / ".raylab")
    tf.apply({"lab_id": "lab"})
    assert f"apply -lock-timeout={LOCK_TIMEOUT} -input=false" in tf.last_output[0]
    assert tf.last_output[1] == "1"  # the work dir marker reached terraform (and so its providers)
    tf.validate()  # `validate` takes no lock flag
    assert "-lock-timeout" not in tf.last_output[0]
    assert procs.Records(tmp_path / ".raylab").all() == []


def test_a_lock_held_by_someone_else_is_one_line_naming_them(tmp_path: Path) -> None:
    from raylab.errors import RaylabError

    env = _fake_terraform(tmp_path, 'echo "Error: Error acquiring the state lock"; exit 1\n')
    tf = Terraform(source=tmp_path, workdir=tmp_path / "tf" / "lab", env=env, lab="lab",
                   records_root=tmp_path / ".raylab")
    tf.module_dir.mkdir(parents=True)
    (tf.module_dir / ".terraform.tfstate.lock.info").write_text(json.dumps({
        "ID": "abc", "Operation": "OperationTypeDestroy", "Who": "ana@laptop",
        "Created": "2026-12-05T22:52:11Z"}))
    with pytest.raises(RaylabError) as e:
        tf.destroy({})
    msg = e.value.one_line()
    assert "\n" not in msg
    assert "state of lab 'lab' is locked by ana@laptop, destroy since 2026-12-05 22:52:11 UTC (id abc)" in msg
    assert "force-unlock" in msg
