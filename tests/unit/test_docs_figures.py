"""The trainee guide's figures are the recorded runs' figures, and what it quotes is real.

Each number a chapter states in its prose (times, counts, costs) is read here from the record it comes
from (docs/lab/runs/*.json, raylab's offline price table), and each quotation (raylab's error lines,
the infrastructure code, the AWS rehearsal's outputs) is checked against its source. Editing a figure
by hand, or changing the source without the guide, fails a test. (test_docs_commands.py holds the
CLI parse check and the forecast/stress/scenario figures.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "lab" / "ko"
RUNS = ROOT / "docs" / "lab" / "runs"
OUTPUT_BLOCK = re.compile(r"<!-- raylab:output .*?<!-- /raylab:output -->", re.S)
TEXT_BLOCK = re.compile(r"```text\n.*?```", re.S)
KRW_PER_USD = 1400  # the rate aws-setup.md states


def page(name: str) -> str:
    return (GUIDE / name).read_text()


def prose(name: str) -> str:
    """A page without its captured outputs: what the guide says in its own words."""
    return TEXT_BLOCK.sub("", OUTPUT_BLOCK.sub("", page(name)))


def output(name: str, cmd: str) -> str:
    """The captured output block of `cmd` on a page (raylab's verbatim output)."""
    block = next((b for b in OUTPUT_BLOCK.findall(page(name)) if f'cmd="{cmd}"' in b), None)
    assert block is not None, f"{name}: no captured output of `{cmd}`"
    return block


def run(name: str) -> dict:
    return json.loads((RUNS / name).read_text())


def duration_ko(seconds: int) -> str:
    return f"{seconds}초" if seconds < 60 else f"{seconds // 60}분 {seconds % 60}초"


def won(usd: float) -> int:
    """Won as the guide rounds it: to 10 from 100 won up, else to 1 (half up)."""
    w = usd * KRW_PER_USD
    step = 10 if w >= 100 else 1
    return int((w / step) + 0.5) * step


# --- the prerequisites' times ----------------------------------------------------------------------

def test_prerequisites_times_are_the_recorded_run() -> None:
    rec = run("times-local.json")
    lines = prose("00-prerequisites.md").splitlines()
    total = 0
    for c in rec["commands"]:
        row = next((ln for ln in lines if ln.startswith(f"| `{c['command']}`")), None)
        assert row is not None, f"00-prerequisites.md: no row for `{c['command']}`"
        assert row.rstrip().endswith(f"| {duration_ko(c['seconds'])} |"), (row, c)
        assert c["seconds"] == c["ended"] - c["started"]
        total += c["seconds"]
    assert f"합이 약 {duration_ko(total)}" in prose("00-prerequisites.md")


# --- chapter 5: the second run and its downscale ----------------------------------------------------

def test_scaling_chapter_is_the_recorded_run() -> None:
    rec = run("scale-local.json")
    cmp_, r = rec["comparison"], rec["run"]
    out = output("05-scaling.md", "raylab scale --idle-timeout 0.5 --quota 224")
    for key, label in (("peak_workers", "peak workers"), ("makespan_s", "makespan (s)"),
                       ("quota_errors", "quota errors"), ("quota_vcpus", "quota (vCPU)")):
        c = cmp_[key]
        assert re.search(rf"{re.escape(label)}\s+{c['before']}\s+->\s+{c['after']}\s", out), (key, c)
    assert r["idle_removal_line"] in out
    assert f"{r['tasks_completed']}/{r['tasks_total']} tasks, peak {r['peak_workers']} workers" in out
    text = prose("05-scaling.md")
    before = rec["stress"]
    assert before["makespan_s"] == cmp_["makespan_s"]["before"]
    assert f"({before['makespan_s']}초, 할당량 오류 {before['quota_errors']})" in text
    stress = run("stress-local.json")
    assert f"({round(stress['makespan_s'])}초, {stress['quota_errors']})" in text, "chapter 4's run"
    pw = cmp_["peak_workers"]
    assert f"최대 워커는 {pw['before']} → {pw['after']}로" in text
    mk = cmp_["makespan_s"]
    assert f"({round(mk['before'])} → {round(mk['after'])}초)" in text
    delay, timeout = round(r["idle_removal"]["delay_s"]), round(r["idle_timeout_minutes"] * 60)
    assert f"`idle_timeout`({timeout}초) 무렵({delay}초 뒤)" in text and abs(delay - timeout) <= 2


def test_scaling_chapter_states_the_quota_224_forecast() -> None:
    out = subprocess.run([sys.executable, "-m", "raylab", "plan", "--compare", "quota=160,224", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, "NO_COLOR": "1"}).stdout
    q160, q224 = json.loads(out)["compare"]["results"]
    mm = lambda s: f"{int(round(s)) // 60}:{int(round(s)) % 60:02d}"  # noqa: E731
    text = prose("05-scaling.md")
    assert (f"makespan {mm(q160['makespan_s'])} → {mm(q224['makespan_s'])}, "
            f"워커 {q224['peak_workers']}대") in text
    assert (f"${q160['cost']['per_trainee']:.2f} → ${q224['cost']['per_trainee']:.2f}") in text


# --- chapter 7: the data job ------------------------------------------------------------------------

def test_data_chapter_is_the_recorded_run() -> None:
    d = run("data-local.json")
    out = output("07-data.md", "raylab stage 7")
    assert (f"{d['clips']} clips: {d['kept']} kept, {d['dropped']} dropped, {d['errors']} unreadable "
            f"({d['seconds']:.1f} s, {d['clips_per_s']:.1f} clips/s; cluster CPUs {d['cluster_cpus']} at the "
            f"start, {d['cluster_cpus_end']} at the end)") in out
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped_by_reason"].items()))
    assert f"dropped: {reasons}" in out
    text = prose("07-data.md")
    assert f"표본 {d['clips']}개 중 품질 필터를 통과한 {d['kept']}개" in text
    assert f"({d['clips']} = {d['kept']} + {d['dropped']} + {d['errors']})" in text
    assert f"초록은 보존된 {d['kept']}개, 빨강은 제외된 {d['dropped']}개" in text
    assert f"`mostly_silent {d['dropped_by_reason']['mostly_silent']}`" in text
    assert f"대 {d['seconds']:.1f}초)" in text
    assert d["clips"] == d["kept"] + d["dropped"] + d["errors"]


def test_data_chapter_worker_picture_is_the_status_samples() -> None:
    samples = run("data-status-local.json")["samples"]
    demand = next(s for s in samples if s["pending_cpu_demand"] > 0)
    launch = next(s for s in samples if s["pending_launches"] > 0)
    joined = next(s for s in samples if s["workers"] > 0)
    text = prose("07-data.md")
    assert f"약 {round(demand['t'])}초에 Ray Data의" in text
    assert f"(1 CPU × {demand['pending_cpu_demand']})" in text
    assert f"런치를 하나 요청해({round(launch['t'])}초)" in text
    assert f"약 {round(joined['t'])}초에 워커 한 대가" in text


# --- chapter 6: the drills of `raylab stage 6` ---------------------------------------------------------

def test_spot_chapter_is_the_recorded_run() -> None:
    """The drills' output, the captions of their two charts and the record are one run (mixed)."""
    d = run("spot-local.json")["drills"]
    nn, cap = d["reclaim_no_notice"], d["capacity"]
    out = output("06-spot.md", "raylab stage 6")
    assert f"{nn['tasks_completed']}/{nn['tasks_total']} tasks done, {nn['tasks_retried']} retried" in out
    # as stage 6 prints them (Python's own float formatting)
    assert (f"{cap['makespan_s']} s ({cap['makespan_ratio']}x the baseline's "
            f"{cap['baseline']['makespan_s']} s); {cap['capacity_errors']} capacity errors") in out
    text = prose("06-spot.md")
    n = nn["tasks_retried"]
    assert f"작업 {n}개가 다른 노드에서 다시 실행됩니다(출력의 `{n} retried`)" in text
    b = nn["workers_before"] - 2  # spot workers before the reclaim: mixed's floor is 2 on-demand workers
    assert f"스팟 선의 골({b} → {b - len(nn['reclaimed'])} → {b})" in text and nn["spot_workers"] == b
    assert f"(빨간 x, {cap['capacity_errors']}번)" in text
    assert f"파란 선 2 → {2 + cap['ondemand_launched_in_window']}" in text
    assert f"주황 0 → {cap['after']['spot_launched']}" in text
    assert f"`({cap['makespan_ratio']}x the baseline's {cap['baseline']['makespan_s']} s)`" in text
    assert f"같은 버스트의 {cap['makespan_ratio']:.2f}배" in text


def test_spot_hand_drill_prose_is_its_captured_output() -> None:
    """Chapter 6's hand drill: the capacity errors and terminations its prose counts are the ones its
    captured `raylab stress` output shows (the live view's per-sample events)."""
    text = page("06-spot.md")
    block = next(b for b in TEXT_BLOCK.findall(text) if "$ raylab stress --tasks 40 --duration 60" in b)
    caps = sum(int(n) for n in re.findall(r"capacity_error (\d+)", block))
    reclaims = sum(int(n) for n in re.findall(r"spot_reclaim (\d+)", block))
    terminated = max(int(n) for n in re.findall(r"terminated: spot (\d+)", block))
    words = prose("06-spot.md")
    assert f"모두 {caps}번" in words and caps > 0
    assert f"종료된 인스턴스(범례 {terminated}, 둘 다 회수)" in words and reclaims == terminated == 2
    assert f"`terminated: spot {terminated}`" in words
    assert "40/40 tasks" in block and "\nerror:" not in block  # every check of that run passed


def test_scenario_prose_reads_the_recorded_curves() -> None:
    """06-scenarios.md's late workers and makespans are the recorded timelines' (spot and mixed)."""
    runs = run("scenarios-local.json")["runs"]

    def joined(s: str, n: int) -> int:  # when the n-th worker was first up, rounded as the text says
        return round(next(t for t, w in zip(runs[s]["t"], runs[s]["workers"], strict=True) if w >= n))

    text = prose("06-scenarios.md")
    sp, mx = runs["spot"], runs["mixed"]
    assert (f"{sp['peak_workers']}번째 워커가 {joined('spot', sp['peak_workers'])}초에야 들어왔고(makespan "
            f"{round(sp['makespan_s'])}초)") in text
    assert (f"4번째 워커가 {joined('mixed', 4)}초, {mx['peak_workers']}번째가\n  {joined('mixed', 12)}초에 "
            f"들어왔습니다({round(mx['makespan_s'])}초)") in text
    slower = mx["makespan_s"] > max(sp["makespan_s"], runs["autoscale"]["makespan_s"])
    assert slower == ("mixed가 spot과 autoscale보다 느립니다" in text)


def test_scenario_table_local_cells_are_the_recorded_runs() -> None:
    """The table's local columns (peak workers, peak instances by market with the head, makespan, quota
    errors) are scenarios-local.json's, for every scenario."""
    runs = run("scenarios-local.json")["runs"]
    text = prose("06-scenarios.md")
    for s, r in runs.items():
        rows = [ln for ln in text.splitlines() if ln.startswith(f"| `{s}` | ") and "$" in ln]
        assert len(rows) == 1, s
        cells = [c.strip() for c in rows[0].strip().strip("|").split("|")]
        peak = r["peak_instances_running_by_market"]
        assert cells[5] == str(r["peak_workers"]), (s, cells[5])
        assert cells[6] == f"{peak['on-demand']} / {peak['spot']}", (s, cells[6])
        assert cells[7] == f"{round(r['makespan_s'])}초", (s, cells[7])
        assert cells[8] == str(r["quota_errors"]), (s, cells[8])


# --- costs: raylab's price table, in dollars and won --------------------------------------------------

def prices() -> dict[str, float]:
    types = json.loads((ROOT / "src" / "raylab" / "data" / "instance_types.json").read_text())["types"]
    from raylab.aws.quotas import NAT_GATEWAY_PER_HOUR

    return {"c7i.4xlarge": types["c7i.4xlarge"]["on_demand_usd_per_hour"],
            "t3.micro": types["t3.micro"]["on_demand_usd_per_hour"], "nat": NAT_GATEWAY_PER_HOUR}


def test_hourly_costs_are_raylabs_prices() -> None:
    p = prices()
    base = p["c7i.4xlarge"] + p["t3.micro"] + p["nat"]
    rows = {"c7i.4xlarge": (p["c7i.4xlarge"], "${:.3f}"), "t3.micro": (p["t3.micro"], "${:.4f}"),
            "NAT 게이트웨이": (p["nat"], "${:.3f}"), "**기반**": (base, "**${:.2f}**"),
            "**벽에서**": (base + 8 * p["c7i.4xlarge"], "**${:.2f}**"),
            "**전체 규모**": (base + 30 * p["c7i.4xlarge"], "**${:.2f}**")}
    lines = prose("aws-setup.md").splitlines()
    for label, (usd, fmt) in rows.items():
        row = next((ln for ln in lines if ln.startswith(f"| {label}")), None)
        assert row is not None, f"aws-setup.md: no cost row {label!r}"
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[1] == fmt.format(usd), (label, cells[1], usd)
        assert cells[2] == f"약 {won(usd):,}원", (label, cells[2], won(usd))
    full = base + 30 * p["c7i.4xlarge"]
    assert f"cost estimate: about ${full:.2f}/h at full scale" in page("aws-setup.md"), "preflight says"


def test_won_beside_each_forecast_cost() -> None:
    """Every `$x.yz (약 N원)` in the guide converts at the stated rate (to 100 won)."""
    pairs = [(n, m) for n in ("06-scenarios.md", "aws-setup.md")
             for m in re.finditer(r"\$(\d+\.\d\d)\**\s*\(약 ([\d,]+)원", prose(n))]
    assert len(pairs) >= 6
    for name, m in pairs:
        usd, krw = float(m.group(1)), int(m.group(2).replace(",", ""))
        assert krw == round(usd * KRW_PER_USD, -2), f"{name}: ${usd} is not 약 {krw:,}원"


# --- quotations: the AWS rehearsal, the infrastructure code, raylab's error lines ------------------------

REHEARSAL = re.compile(r"\[rehearsal\]|raylab-r\d+\b")


@pytest.mark.parametrize("name", sorted(p.name for p in GUIDE.glob("*.md")))
def test_rehearsal_outputs_say_where_they_come_from(name: str) -> None:
    """An output captured from the offline AWS rehearsal names the command that made it, above it."""
    text = page(name)
    for m in TEXT_BLOCK.finditer(text):
        if not REHEARSAL.search(m.group(0)):
            continue
        before = text[:m.start()]
        section = before[before.rfind("\n#"):]
        assert "raylab lab --target aws --rehearsal" in section and "리허설" in section, (
            f"{name}: an output of the AWS rehearsal without `raylab lab --target aws --rehearsal ...` "
            f"above it in its section: {m.group(0)[:120]!r}")


def rehearsal_sections(name: str) -> list[str]:
    """The page's sections that say they quote the AWS rehearsal (its command and the word 리허설)."""
    return [sec for sec in re.split(r"\n(?=#)", page(name))
            if "raylab lab --target aws --rehearsal" in sec and "리허설" in sec]


def test_every_aws_chapter_shows_a_rehearsal_output() -> None:
    for name in ("aws-setup.md", "01-network.md", "02-identity.md", "03-cluster.md", "04-stress.md",
                 "05-scaling.md", "06-spot.md", "08-teardown.md"):
        assert any(REHEARSAL.search(b) for b in TEXT_BLOCK.findall(page(name))), (
            f"{name}: no output of the AWS rehearsal")


def test_the_aws_data_output_is_the_rehearsals_stage_7() -> None:
    """Stage 7's AWS output has no `[rehearsal]` line (no machine boots then): its section names the run,
    and the figures the prose reads from it are in it."""
    blocks = [b for sec in rehearsal_sections("07-data.md") for b in TEXT_BLOCK.findall(sec)
              if "→ stage 7" in b]
    assert len(blocks) == 1, "07-data.md: the AWS rehearsal's stage 7 output, under its command"
    block = blocks[0]
    assert "local:///tmp/raylab-cv17" in block, "the AWS track's point: the output stays on the head"
    secs = re.search(r"\(([\d.]+) s, [\d.]+ clips/s; cluster CPUs (\d+) at the start, (\d+) at the end\)",
                     block)
    assert secs and f"시간({secs.group(1)}초)" in prose("07-data.md")
    assert f"`cluster CPUs {secs.group(2)} at the start, {secs.group(3)} at the end`" in prose("07-data.md")
    d = run("data-local.json")  # the same sample and filter as the local run
    assert f"{d['clips']} clips: {d['kept']} kept, {d['dropped']} dropped, {d['errors']} unreadable" in block


INFRA = re.compile(r"<!-- infra: (\S+) -->\n```\w*\n(.*?)```", re.S)


def test_infrastructure_excerpts_are_verbatim() -> None:
    """Each excerpt of infra/ in the guide is the file's text (chunks between `...` lines)."""
    seen = set()
    for p in sorted(GUIDE.glob("*.md")):
        for path, body in INFRA.findall(p.read_text()):
            source = (ROOT / path).read_text()
            chunks = re.split(r"^\s*\.\.\.\s*$\n?", body, flags=re.M)
            for chunk in filter(str.strip, chunks):
                assert chunk.strip("\n") in source, f"{p.name}: excerpt not in {path}:\n{chunk}"
            seen.add((p.name, path))
    assert ("01-network.md", "infra/cloudformation/vpc.yaml") in seen
    assert ("02-identity.md", "infra/terraform/policies/head-policy.json.tftpl") in seen


def test_the_network_chapter_lists_every_resource_type() -> None:
    template = (ROOT / "infra" / "cloudformation" / "vpc.yaml").read_text()
    resources = template[template.index("\nResources:"):]
    types = set(re.findall(r"^\s+Type: (AWS::[\w:]+)", resources, flags=re.M))
    text = prose("01-network.md")
    for t in sorted(types):
        short = t.rsplit("::", 1)[1]
        assert f"`{t}`" in text or f"`{short}`" in text, f"01-network.md: resource type {t} not in the table"


def test_the_identity_chapter_counts_the_terraform_resources() -> None:
    main_tf = (ROOT / "infra" / "terraform" / "main.tf").read_text()
    n = len(re.findall(r'^resource "aws_iam_', main_tf, flags=re.M))
    assert f"Resources: {n} added" in output("02-identity.md", "raylab stage 2")
    assert f"= 위 출력의 `Resources: {n} added`" in prose("02-identity.md")
    policy = json.loads((ROOT / "infra" / "terraform" / "policies" / "head-policy.json.tftpl").read_text())
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str)
                                                        else s["Action"])}
    assert f"exactly the {len(actions)} least-privilege actions" in output("02-identity.md", "raylab stage 2")
    for a in actions:
        assert a.split(":")[1] in prose("02-identity.md"), f"02-identity.md does not name {a}"


# Codes and lines the troubleshooting page quotes from AWS or Ray, not from raylab.
NOT_RAYLABS = ("VcpuLimitExceeded", "LaunchFailed", "MaxSpotInstanceCountExceeded",
               "InsufficientInstanceCapacity", "Additional properties are not allowed")
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|\b[NM]\b")


def source_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "src" / "raylab").rglob("*.py")))


def test_troubleshooting_quotes_raylabs_own_lines() -> None:
    src = source_text()
    rows = [ln for ln in page("troubleshooting.md").splitlines() if ln.startswith("| `")]
    assert len(rows) >= 20
    for row in rows:
        first = row.strip("|").split(" | ")[0]
        for quote in re.findall(r"`+ ?(.+?) ?`+", first):
            if any(x in quote for x in NOT_RAYLABS):
                continue
            for frag in PLACEHOLDER.split(quote):
                frag = frag.strip(" ():'")
                if len(frag) >= 6:
                    assert frag in src, f"troubleshooting.md quotes {frag!r} ({quote!r}): not in src/"


def test_troubleshooting_hints_are_raylabs_current_ones() -> None:
    """Hints the page says are wrong must still be wrong in src (the first edition kept stale ones)."""
    text = prose("troubleshooting.md") + prose("06-spot.md")
    src = source_text()
    for stale in ("raylab stress --scenario", "raylab ssh"):
        if stale in text:
            assert stale in src, f"the guide still warns about {stale!r}, which raylab no longer prints"


def test_ssh_commands_log_in_as_the_images_users() -> None:
    """`user@$HEAD` in the guide is the node image's ssh_user; the bastion (Amazon Linux) is ec2-user."""
    import yaml

    user = yaml.safe_load((ROOT / "configs" / "ray-cluster.yaml").read_text())["auth"]["ssh_user"]
    bastion_image = (ROOT / "infra" / "cloudformation" / "vpc.yaml").read_text()
    assert "Amazon Linux 2023" in bastion_image
    found = 0
    for p in sorted(GUIDE.glob("*.md")):
        for block in re.findall(r"```(?:bash|text)?\n(.*?)```", TEXT_BLOCK.sub("", p.read_text()), re.S):
            for who in re.findall(r"\b([a-z0-9_-]+)@\$HEAD\b", block):
                assert who == user, f"{p.name}: head login {who!r}, the image's ssh_user is {user!r}"
                found += 1
            for who in re.findall(r"\b([a-z0-9_-]+)@\$BASTION\b", block):
                assert who == "ec2-user", f"{p.name}: logs in to the bastion as {who!r}"
    assert found >= 4


def test_the_aws_stress_notes_are_the_rehearsals_output() -> None:
    """Chapter 4's AWS notes quote the rehearsal's stage 4 output: its failed launches and its wall."""
    text = page("04-stress.md")
    block = next(b for b in TEXT_BLOCK.findall(text) if "[rehearsal]" in b and "→ stage 4" in b)
    failed = re.search(r"quota error recorded: (\d+) failed launches at the wall", block)
    assert failed and f"`{failed.group(1)} failed launches`" in prose("04-stress.md")
    peak = re.search(r"peak (\d+) workers \(quota allows (\d+)\); 0 quota errors", block)
    assert peak and peak.group(1) == peak.group(2)
    assert f"로컬과 같은 자리(워커 {peak.group(1)}대)" in prose("04-stress.md")


def test_the_aws_scaling_notes_are_the_rehearsals_output() -> None:
    """Chapter 5's AWS notes read the rehearsal's stage 5 output: its comparison and its downscale."""
    text = page("05-scaling.md")
    block = next(b for b in TEXT_BLOCK.findall(text) if "[rehearsal]" in b and "→ stage 5" in b)
    mk = re.search(r"makespan \(s\)\s+([\d.]+) -> ([\d.]+)\s", block)
    assert mk and f"({mk.group(1)} → {mk.group(2)}초)" in prose("05-scaling.md")
    idle = re.search(r"down to 0 workers (\d+) s after going idle \(idle_timeout (\d+) s\)", block)
    late = f"`idle_timeout`({idle.group(2)}초)보다 조금 늦게({idle.group(1)}초)" if idle else None
    assert late and late in prose("05-scaling.md")
    assert "head kept running" in block and "BrokenPipeError" not in block


def test_the_glossary_states_the_recorded_wall() -> None:
    r = run("stress-local.json")
    head, worker = 16, 16  # c7i.4xlarge (configs/ray-cluster.yaml); the bastion is the rest of reserved_vcpus
    at = r["reserved_vcpus"] + r["peak_workers"] * worker
    assert at <= r["quota_vcpus"] < at + worker
    n, bastion = r["peak_workers"], r["reserved_vcpus"] - head
    wall = f"워커 {n}대({head} + {bastion} + {n} × {worker} = {at} ≤ {r['quota_vcpus']})"
    assert wall in prose("glossary.md")


def test_the_stages_table_is_raylabs_output_today() -> None:
    """Chapter 0's `raylab stages` is what the CLI prints now (offline, instant), not an old capture."""
    p = subprocess.run([sys.executable, "-m", "raylab", "stages"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100"})
    block = output("00-start.md", "raylab stages")
    shown = block.split("$ raylab stages\n", 1)[1].rsplit("```", 1)[0]
    assert shown.strip() == (p.stderr + p.stdout).strip()


PLAN_BLOCKS = [(p.name, m.group(1), m.group(2)) for p in sorted(GUIDE.glob("*.md")) for m in re.finditer(
    r'<!-- raylab:output cmd="(raylab plan[^"]*)".*?```text\n\$ [^\n]*\n(.*?)```', p.read_text(), re.S)]


@pytest.mark.parametrize(("name", "cmd", "shown"), PLAN_BLOCKS, ids=[f"{n}:{c}" for n, c, _ in PLAN_BLOCKS])
def test_plan_outputs_are_todays_forecasts(name: str, cmd: str, shown: str) -> None:
    """A forecast is offline and deterministic: the guide shows exactly what `raylab plan` prints now."""
    import shlex

    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    p = subprocess.run([sys.executable, "-m", "raylab", *shlex.split(cmd)[1:]], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, check=True, env=env)
    now, was = (p.stderr + p.stdout).strip().splitlines(), shown.strip().splitlines()
    if was and was[-1] == "...":  # cut by refresh_docs at the block's line budget
        now, was = now[:len(was) - 1], was[:-1]
    assert was == now, f"{name}: `{cmd}` prints something else now (scripts/refresh_docs.py)"


def test_every_forecast_chapter_has_its_plan_output() -> None:
    assert {n for n, _, _ in PLAN_BLOCKS} >= {"04-stress.md", "05-scaling.md", "06-scenarios.md"}


def test_the_guides_aws_filters_use_rays_tags() -> None:
    """`aws ec2 describe-instances --filters Name=tag:...` in the guide names the tags Ray really sets."""
    from raylab.spot.chaos import RAY_NODE_KIND_TAG

    tags = {m for p in GUIDE.glob("*.md") for m in re.findall(r"Name=tag:([\w-]+)", p.read_text())}
    assert tags, "the guide's head lookup (chapter 3) is gone"
    assert tags <= {RAY_NODE_KIND_TAG, "ray-cluster-name", "raylab-lab"}, tags


def test_the_stack_outputs_the_guide_reads_exist() -> None:
    template = (ROOT / "infra" / "cloudformation" / "vpc.yaml").read_text()
    outputs = set(re.findall(r"^  (\w+):", template[template.index("\nOutputs:"):], flags=re.M))
    named = {m for p in GUIDE.glob("*.md") for m in re.findall(r"OutputKey=='(\w+)'", p.read_text())}
    assert named and named <= outputs, named - outputs
    assert len(outputs) == 8 and "all 8 outputs present" in output("01-network.md", "raylab stage 1")


# --- the whole lab's time: the prerequisites page and the recorded `raylab lab` run ---------------------

def test_prerequisites_state_the_recorded_lab_time() -> None:
    """The page's `raylab lab` time and per-chapter seconds are the recorded run's (lab-local.json)."""
    r = run("lab-local.json")
    st = r["stage_seconds"]
    text = prose("00-prerequisites.md")
    assert f"**{r['wall_s'] // 60}분 {r['wall_s'] % 60}초**" in text
    assert f"4장 {round(st['stress'])}초, 5장 {round(st['scaling'])}초, 6장 {round(st['spot'])}초" in text
    rest = sum(v for k, v in st.items() if k not in ("stress", "scaling", "spot"))
    assert f"합쳐 약 {round(rest)}초" in text
    assert abs(sum(p["seconds"] for p in r["phases"]) - sum(st.values())) < 5  # the phases add up


def test_stress_chapter_states_the_recorded_forecast() -> None:
    """Chapter 4's forecast sentence is the recorded lab run's stage 4 (lab-local.json)."""
    s = run("lab-local.json")["stress"]
    f = s["forecast"]
    assert (f"{round(s['makespan_s'])}초 대 예측 {round(f['makespan_s'])}초, "
            f"{f['measured_over_forecast']:.2f}배") in prose("04-stress.md")
