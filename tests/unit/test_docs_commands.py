"""The docs cannot drift from the code: every `raylab ...` command in the trainee guide, the
runbook and the README must parse against the real CLI (its subcommands and options), and the
figures the guide states (the quota wall, the vCPUs to request, the scenario table, the stress run's
numbers) must be the ones `raylab plan` and the recorded run (docs/lab/runs/*.json) give."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.exceptions
import typer.main

from raylab.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs" / "lab" / "ko").glob("*.md")),
        ROOT / "docs" / "runbook.md", ROOT / "README.md"]
# Typer >= 0.19 vendors click as typer._click; use whichever click the CLI really runs on.
try:
    from typer._click.core import Context
    from typer._click.exceptions import ClickException
except ImportError:  # older typer on upstream click
    from click import ClickException, Context  # type: ignore[assignment]
try:
    from typer._click.exceptions import Exit as _ClickExit
except ImportError:
    from click.exceptions import Exit as _ClickExit  # type: ignore[assignment]

EXITS = tuple({_ClickExit, getattr(typer.exceptions, "Exit", _ClickExit)})  # --help ends with one of them
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        if not path.exists():
            continue
        for block in FENCE.findall(path.read_text()):
            for line in block.replace("\\\n", " ").splitlines():  # join `\` continuations
                line = line.split("  #")[0].split(" # ")[0].strip().removeprefix("$ ")
                if line.startswith("raylab "):
                    found.append((path.name, line))
    return found


def parse(line: str) -> None:
    """Resolve subcommands, then let click parse the options exactly as a run would."""
    cmd = typer.main.get_command(app)
    args = shlex.split(line)[1:]
    ctx = Context(cmd, info_name="raylab")
    while hasattr(cmd, "get_command") and args and not args[0].startswith("-"):
        sub = cmd.get_command(ctx, args[0])
        if sub is None:
            raise ClickException(f"no command {args[0]!r}")
        cmd, args = sub, args[1:]
        ctx = Context(cmd, info_name=cmd.name, parent=ctx)
    try:
        cmd.make_context(cmd.name, list(args), parent=ctx.parent)
    except EXITS as e:  # --help: click prints the help and exits 0
        if getattr(e, "exit_code", 0) != 0:
            raise ClickException(f"exit {e.exit_code}") from None


COMMANDS = doc_commands()


def test_docs_have_commands() -> None:
    assert len(COMMANDS) >= 20
    guide = {d for d, _ in COMMANDS}
    for page in ("04-stress.md", "05-scaling.md", "06-spot.md", "aws-setup.md"):
        assert page in guide, f"{page}: no `raylab ...` command found"


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_doc_command_parses(doc: str, line: str) -> None:
    try:
        parse(line)
    except ClickException as e:
        pytest.fail(f"{doc}: `{line}` does not parse: {e.format_message()}")


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(ClickException):
        parse("raylab stage 3 --no-such-option")
    with pytest.raises(ClickException):
        parse("raylab no-such-command")


# --- figures in the text against `raylab plan` and the recorded run -------------------------------
GUIDE = ROOT / "docs" / "lab" / "ko"
OUTPUT_BLOCK = re.compile(r"<!-- raylab:output .*?<!-- /raylab:output -->", re.S)
TEXT_BLOCK = re.compile(r"```text\n.*?```", re.S)  # other real outputs, pasted verbatim


def prose(path: Path) -> str:
    """A page without its captured outputs (those quote raylab verbatim and are checked apart)."""
    return TEXT_BLOCK.sub("", OUTPUT_BLOCK.sub("", path.read_text()))


def mmss(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


_PLANS: dict[str, dict] = {}


def plan(scenario: str = "autoscale") -> dict:
    """`raylab plan --scenario S --json` with the defaults the guide uses (offline, a few seconds)."""
    if scenario not in _PLANS:
        out = subprocess.run([sys.executable, "-m", "raylab", "plan", "--scenario", scenario, "--json"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
                             env={**os.environ, "NO_COLOR": "1"}).stdout
        _PLANS[scenario] = json.loads(out)
    return _PLANS[scenario]


def wall() -> dict[str, int]:
    p = plan()
    q = p["quota"]
    head, worker = 16, 16  # c7i.4xlarge head and workers (configs/ray-cluster.yaml)
    return {"peak": p["peak_workers"], "other": q["other_vcpus"], "quota": q["quota_vcpus"],
            "need": q["needed_vcpus"], "head": head, "worker": worker}


def test_the_wall_in_the_text_is_the_forecasts() -> None:
    w = wall()
    at = w["head"] + w["other"] + w["peak"] * w["worker"]
    assert at <= w["quota"] < at + w["worker"], "the forecast's wall is not where the arithmetic puts it"
    assert w["need"] == w["head"] + w["other"] + 30 * w["worker"]
    stress = prose(GUIDE / "04-stress.md")
    assert f"{w['head']} + {w['other']} + {w['peak']} × {w['worker']} = **{at}**" in stress
    assert f"{at} + {w['worker']} = **{at + w['worker']}** > {w['quota']}" in stress
    assert f"**{w['need']}** vCPU" in stress
    assert f"워커 {w['peak']}대" in prose(GUIDE / "00-start.md")
    assert f"{w['need']} vCPU" in prose(GUIDE / "aws-setup.md")
    assert f"{w['need']} vCPU" in (ROOT / "docs" / "runbook.md").read_text()


@pytest.mark.parametrize("path", sorted(GUIDE.glob("*.md")) + [ROOT / "docs" / "runbook.md"],
                         ids=lambda p: p.name)
def test_no_page_puts_the_wall_one_worker_higher(path: Path) -> None:
    """The first edition said 9 workers; the bastion's 2 vCPUs make it 8 (the forecast's figure)."""
    w = wall()
    wrong = w["peak"] + 1
    text = prose(path)
    for bad in (f"워커 {wrong}대", f"워커는 {wrong}대", f"{wrong} workers", f"+ {wrong} workers",
                f"{w['head'] + w['other'] - 2 + 30 * w['worker']} vCPU"):  # 496: the bastion forgotten
        assert bad not in text, (
            f"{path.name} says {bad!r}; raylab plan says {w['peak']} workers, {w['need']} vCPUs")


def scenario_row(text: str, scenario: str) -> list[str]:
    """The cells of the scenario's row in 06-scenarios.md's one table (forecast, then local run)."""
    rows = [ln for ln in text.splitlines() if ln.startswith(f"| `{scenario}` | ") and "$" in ln]
    assert len(rows) == 1, f"06-scenarios.md: {len(rows)} result rows for {scenario}, want one table"
    return [c.strip() for c in rows[0].strip().strip("|").split("|")]


def test_the_scenario_table_is_the_forecasts() -> None:
    text = prose(GUIDE / "06-scenarios.md")
    for s in ("static", "autoscale", "spot", "mixed"):
        p = plan(s)
        cells = scenario_row(text, s)
        assert cells[1].startswith(str(p["peak_workers"])), (s, cells[1], p["peak_workers"])
        assert cells[2] == mmss(p["makespan_s"]), (s, cells[2], mmss(p["makespan_s"]))
        assert cells[3] == str(p["failed_launch_calls"]), (s, cells[3], p["failed_launch_calls"])
        assert cells[4].startswith(f"${p['cost']['per_trainee']:.2f}"), (s, cells[4], p["cost"])


def test_the_stress_chapter_states_the_recorded_run() -> None:
    """04-stress.md's text, its captured output and docs/lab/runs/stress-local.json agree."""
    run = json.loads((ROOT / "docs" / "lab" / "runs" / "stress-local.json").read_text())
    page = (GUIDE / "04-stress.md").read_text()
    out = next(b for b in OUTPUT_BLOCK.findall(page) if 'cmd="raylab stress"' in b)
    mk = round(run["makespan_s"])
    assert (f"{run['tasks_completed']}/{run['tasks_total']} tasks in {mk} s = {run['makespan_ratio']:.2f}x "
            f"the ideal {round(run['ideal_makespan_s'])} s; peak {run['peak_workers']} workers "
            f"(quota allows {run['quota_cap_workers']}); {run['quota_errors']} quota errors") in out
    text = prose(GUIDE / "04-stress.md")
    assert f"{run['quota_errors']}번" in text
    assert f"{mk}초" in text and f"{run['makespan_ratio']:.2f}배" in text
    assert run["peak_workers"] == wall()["peak"], "the local run's wall differs from the forecast's"


def compare(spec: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "raylab", "plan", "--compare", spec, "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, "NO_COLOR": "1"}).stdout
    return json.loads(out)["compare"]["results"]


def test_the_scaling_chapter_states_the_forecasts() -> None:
    """Chapter 5's sentences about speed 1 vs 10 and quota 160 vs 498 are the forecasts' numbers."""
    text = prose(GUIDE / "05-scaling.md")
    s1, s10 = compare("upscaling_speed=1,10")
    assert s1["peak_workers"] == s10["peak_workers"] == wall()["peak"], "at the wall speed changes nothing"
    assert f"({mmss(s1['makespan_s'])} → {mmss(s10['makespan_s'])})" in text
    assert f"({s1['failed_launch_calls']} → {s10['failed_launch_calls']})" in text
    q160, q498 = compare("quota=160,498")
    assert q498["peak_workers"] == 30 and q498["failed_launch_calls"] == 0
    assert f"{mmss(q160['makespan_s'])} → {mmss(q498['makespan_s'])}" in text
    assert f"${q160['cost']['per_trainee']:.2f} → ${q498['cost']['per_trainee']:.2f}" in text


def test_the_speed_runs_in_chapter_5_are_the_recorded_ones() -> None:
    """The local speed 1 vs 10 runs: makespans and launches in the text = docs/lab/runs/speed-local.json."""
    runs = json.loads((ROOT / "docs" / "lab" / "runs" / "speed-local.json").read_text())["runs"]
    by = {r["upscaling_speed"]: r for r in runs}
    text = prose(GUIDE / "05-scaling.md")
    m1, m10 = round(by[1.0]["makespan_s"]), round(by[10.0]["makespan_s"])
    assert f"makespan은 {m10}초로 속도 1의 {m1}초보다" in text
    first10 = sorted(set(by[10.0]["launch_t"]))[0]
    n_first = by[10.0]["launch_t"].count(first10)
    assert n_first >= 10 and f"첫 샘플({first10:g}초)까지 {n_first}대" in text
    # both asked for the 12 workers the job needs, and one more (a starting task counted twice)
    assert len(by[1.0]["launch_t"]) == len(by[10.0]["launch_t"]) == 13
    assert f"속도 1은 {by[1.0]['launch_t'][-1]:g}초, 속도 10은 {by[10.0]['launch_t'][-1]:g}초" in text
    twelfth = sorted(by[1.0]["launch_t"])[11]
    assert f"{twelfth:g}초에야 12대를 채웁니다" in text


def test_the_local_scenario_table_is_the_recorded_runs() -> None:
    runs = json.loads((ROOT / "docs" / "lab" / "runs" / "scenarios-local.json").read_text())["runs"]
    text = prose(GUIDE / "06-scenarios.md")
    for s, r in runs.items():
        cells = scenario_row(text, s)[5:]  # the forecast's four columns first, then the local run's
        m = r["peak_instances_running_by_market"]
        assert cells[0] == str(r["peak_workers"]), (s, cells[0])
        assert cells[1] == f"{m['on-demand']} / {m['spot']}", (s, cells[1])
        assert cells[2] == f"{round(r['makespan_s'])}초", (s, cells[2])
        assert cells[3] == str(r["quota_errors"]), (s, cells[3])
        assert r["tasks_completed"] == r["tasks_total"]


def inline_commands() -> list[tuple[str, str]]:
    """`raylab ...` named inside the prose (outside code blocks), skipping placeholders like <N>."""
    found = []
    for path in DOCS:
        text = re.sub(r"```.*?```|<!--.*?-->", "", path.read_text(), flags=re.S).replace("\n", " ")
        for m in re.finditer(r"`(raylab [^`]+)`", text):
            if not re.search(r"[<\[…]|\.\.\.| / ", m.group(1)):
                found.append((path.name, m.group(1).strip()))
    return found


INLINE = inline_commands()


@pytest.mark.parametrize(("doc", "line"), INLINE, ids=[f"{d}:{c}" for d, c in INLINE])
def test_commands_named_in_the_prose_exist(doc: str, line: str) -> None:
    """Prose may name a command without its arguments (`raylab data run`), never an option or a
    subcommand that does not exist (the first edition's `raylab stress --scenario`)."""
    try:
        parse(line)
    except ClickException as e:
        text = e.format_message()
        if "No such option" in text or "no command" in text or "unexpected extra argument" in text:
            pytest.fail(f"{doc}: `{line}`: {text}")
    except Exception:  # click's usage errors for a missing argument: a reference, not a run
        pass
