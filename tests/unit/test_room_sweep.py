"""The room's expiry, busy lease and sweep choice (pure tables), `room status --json`'s schema pinned,
and `room sweep`'s refusals through the real CLI against moto (nothing deleted)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from raylab.errors import RaylabError
from raylab.room.expiry import busy_of, busy_value, expiry_of, parse_ttl, stack_tags
from raylab.room.status import Instance, Stack, Vpc, room_status
from raylab.room.sweep import choose
from tests.unit.test_room_status import account  # noqa: F401 - the moto account fixture

NOW = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("10h", 36000), ("90m", 5400), ("1h30m", 5400), ("2d", 172800),
                                               ("1m", 60), (" 7D ", 604800)])
def test_ttl_parses(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(("text", "message"), [("", "is not a duration"), ("10", "is not a duration"),
                                               ("10x", "is not a duration"), ("-1h", "is not a duration"),
                                               ("0m", "out of range"), ("8d", "out of range")])
def test_bad_ttl_is_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(RaylabError) as e:
        parse_ttl(text)
    assert message in e.value.message and "--ttl 10h" in (e.value.hint or "")


def test_stack_tags_set_at_creation_and_kept_on_rerun() -> None:
    new = stack_tags("kim", {}, None, NOW, "kim@pc")
    assert new == {"raylab-lab": "kim", "raylab-owner": "kim@pc", "raylab-expires": "2026-12-07T04:00:00Z"}
    later = NOW + timedelta(hours=3)
    assert stack_tags("kim", new, None, later, "lee@pc") == new  # a re-run keeps expiry and owner
    assert stack_tags("kim", new, 3600, later, "lee@pc")["raylab-expires"] == "2026-12-06T22:00:00Z"
    assert stack_tags("kim", {"raylab-expires": "soon"}, None, NOW, "x")["raylab-expires"] == \
        "2026-12-07T04:00:00Z"  # a hand-edited expiry is replaced by a valid one at the next stage 1


@pytest.mark.parametrize(("value", "expired", "finding"), [
    (None, None, None), ("2026-12-06T17:59:59Z", True, None), ("2026-12-06T18:00:01Z", False, None),
    ("tomorrow", None, "tag raylab-expires='tomorrow' is not a time (edited by hand?)"),
])
def test_expiry(value: str | None, expired: bool | None, finding: str | None) -> None:
    e = expiry_of({"raylab-expires": value} if value else {}, NOW)
    assert e.expired is expired
    assert (e.finding or "").startswith(finding or "")


@pytest.mark.parametrize(("tag", "stacks", "busy", "by"), [
    (None, [], False, None),
    ("idle", ["raylab-kim-network CREATE_COMPLETE"], False, None),
    (busy_value("stage 4", 7, "pc", NOW + timedelta(minutes=2)), [], True, "`raylab stage 4` pid 7 on pc"),
    (busy_value("stage 4", 7, "pc", NOW - timedelta(seconds=1)), [], False, None),  # killed: lease ran out
    ("garbage", ["raylab-kim-network DELETE_IN_PROGRESS"], True,
     "stack raylab-kim-network DELETE_IN_PROGRESS"),
])
def test_busy(tag: str | None, stacks: list[str], busy: bool, by: str | None) -> None:
    b = busy_of({"raylab-busy": tag} if tag else {}, stacks, NOW)
    assert (b.busy, b.by) == (busy, by)


def _row(lab: str, expired: bool | None = False, busy: bool = False, findings: list[str] | None = None
         ) -> dict[str, Any]:
    return {"lab": lab, "expired": expired, "busy": busy, "busy_by": "`raylab stage 4` pid 7 on pc" if busy
            else None, "findings": findings or []}


ROOM = [_row("ann", expired=True), _row("bob", expired=True, busy=True), _row("cat"),
        _row("dan", expired=None), _row("Eve!", expired=True),
        _row("fay", expired=None, findings=["tag raylab-expires='x' is not a time"])]


@pytest.mark.parametrize(("kw", "sweep", "busy", "skipped"), [
    ({"expired": True}, ["ann"], ["bob"], ["Eve!", "dan", "fay"]),
    ({"expired": True, "force": True}, ["ann", "bob"], [], ["Eve!", "dan", "fay"]),
    ({"names": ["cat", "dan"]}, ["cat", "dan"], [], []),
    ({"names": ["bob"]}, [], ["bob"], []),
    ({"all_labs": True}, ["ann", "cat", "dan", "fay"], ["bob"], ["Eve!"]),
])
def test_choose(kw: dict[str, Any], sweep: list[str], busy: list[str], skipped: list[str]) -> None:
    c = choose(ROOM, region="us-west-2", **kw)
    assert c.sweep == sweep
    assert [line.split()[1] for line in c.busy] == busy
    assert len(c.skipped) == len(skipped)
    for lab, line in zip(skipped, sorted(c.skipped, key=lambda x: x.replace("tag raylab-lab='", "lab ")),
                         strict=True):
        assert f"'{lab}'" in line or line.startswith((f"lab {lab} ", f"lab {lab}:")), (lab, line)
    assert all("mid-command (`raylab stage 4` pid 7 on pc): not swept; --force" in line for line in c.busy)


@pytest.mark.parametrize(("kw", "message"), [
    ({}, "say which labs to sweep"),
    ({"expired": True, "all_labs": True}, "say which labs to sweep"),
    ({"names": ["zed"]}, "lab 'zed' is not in us-west-2: nothing there is tagged raylab-lab=zed"),
    ({"names": ["Eve!"]}, "lab id 'Eve!' is not valid"),
    ({"names": ["ann", "zed"]}, "lab 'zed' is not in us-west-2"),  # refused as a whole: ann not swept either
])
def test_choose_refuses_before_anything_is_deleted(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(RaylabError) as e:
        choose(ROOM, region="us-west-2", **kw)
    assert message in e.value.message


# --- `room status --json`: the schema the runbook documents, pinned ----------------------------------
TOP = {"now", "labs", "totals", "cost", "expired", "busy", "unknown_instance_types", "region", "target",
       "notes"}
LAB = {"lab", "owner", "created", "age_s", "stacks", "last_stage", "instances", "ray_workers",
       "vcpus_by_quota", "cost", "nat_gateways", "expires", "expired", "busy", "busy_by", "findings"}
TOTAL = {"quota_code", "market", "labs_vcpus", "other_vcpus", "used_vcpus", "quota_vcpus", "free_vcpus",
         "used_pct"}
COST = {"so_far_usd", "per_hour_usd"}


def test_status_json_schema_is_the_runbooks(account: dict[str, Any], tmp_path: Any,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from raylab.cli.main import app

    monkeypatch.chdir(tmp_path)
    ec2 = account["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "raylab-lab", "Value": "kim"},
                                           {"Key": "raylab-progress", "Value": "passed 3 cluster"}])
    r = CliRunner().invoke(app, ["room", "status", "--target", "aws", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == TOP
    assert set(out["cost"]) == COST | {"prices"}
    kim = out["labs"][0]
    assert set(kim) == LAB and set(kim["cost"]) == COST
    assert kim["last_stage"] == "passed 3 cluster" and kim["expired"] is None and kim["busy"] is False
    assert kim["cost"]["per_hour_usd"] > 0 and out["cost"]["so_far_usd"] >= 0
    assert all(set(t) == TOTAL for t in out["totals"])
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "runbook.md").read_text()
    section = runbook.split("## `raylab room status --json`", 1)[1].split("\n## ", 1)[0]
    documented = {k for line in section.splitlines() if line.startswith("| `")
                  for k in re.findall(r"`([^`]+)`", line.split("|")[1])}
    assert documented == {f"labs[].{k}" for k in LAB} | set(TOP) | {f"totals[].{k}" for k in TOTAL} | {
        f"cost.{k}" for k in COST | {"prices"}} | {f"labs[].cost.{k}" for k in COST}


def _sweep(*args: str) -> Any:
    from raylab.cli.main import app

    return CliRunner().invoke(app, ["room", "sweep", "--target", "aws", "--yes", *args])


REFUSALS = [
    (["--lab", "nobody"], "lab 'nobody' is not in us-west-2: nothing there is tagged raylab-lab=nobody"),
    (["--lab", "kim", "--lab", "nobody"], "lab 'nobody' is not in us-west-2"),  # kim is not swept either
    (["--lab", "Kim!"], "lab id 'Kim!' is not valid"),
    ([], "say which labs to sweep"),
]


def test_sweep_refusals_delete_nothing(account: dict[str, Any], tmp_path: Any,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = account["ec2"].describe_instances()["Reservations"]
    for args, line in REFUSALS:
        r = _sweep(*args)
        assert isinstance(r.exception, RaylabError) and r.exception.exit_code == 2  # main(): one line, exit 2
        assert line in r.exception.one_line()
    assert account["ec2"].describe_instances()["Reservations"] == before


def test_sweep_expired_with_no_expired_lab_deletes_nothing(account: dict[str, Any], tmp_path: Any,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = _sweep("--expired", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["swept"] == [] and out["ok"] is True
    assert "lab kim has no raylab-expires tag" in r.stderr and "nothing was deleted" in r.stderr


def test_room_status_rows_carry_expiry_busy_and_cost() -> None:
    tags = {"raylab-lab": "kim", "raylab-expires": "2026-12-06T17:00:00Z", "raylab-owner": "kim@pc"}
    r = room_status([Instance("i-1", "c7i.4xlarge", "running", "ondemand", {"raylab-lab": "kim"},
                              NOW - timedelta(hours=2))],
                    [Stack("raylab-kim-network", "CREATE_COMPLETE", tags, NOW - timedelta(hours=3))],
                    now=NOW, quotas={}, vcpus_of=lambda t: 16,
                    vpcs=[Vpc("vpc-1", {"raylab-lab": "kim", "raylab-busy": busy_value(
                        "up", 1, "pc", NOW + timedelta(minutes=1))})],
                    prices=_prices())
    (kim,) = r["labs"]
    assert (kim["owner"], kim["expired"], kim["busy"], kim["busy_by"]) == ("kim@pc", True, True,
                                                                           "`raylab up` pid 1 on pc")
    assert kim["cost"] == {"so_far_usd": 2.0, "per_hour_usd": 1.0}
    assert r["expired"] == ["kim"] and r["busy"] == ["kim"] and r["cost"]["so_far_usd"] == 2.0


def _prices() -> Any:
    from raylab.plan.bill import BillPrices

    return BillPrices({"c7i.4xlarge": 1.0}, {}, 0.0, 0.0, "test")


@pytest.mark.parametrize("command", [["up"], ["lab"], ["stage", "1"]])
def test_bad_ttl_creates_nothing(tmp_path: Any, command: list[str]) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    r = subprocess.run([sys.executable, "-m", "raylab", *command, "--ttl", "10x", "--lab", "kim"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --ttl '10x' is not a duration (use e.g. --ttl 10h, 90m or 1h30m (1 minute to 7 days))"]
    assert list(tmp_path.iterdir()) == []  # no .raylab/, no twin


def test_watch_reads_the_room_again_and_again(capsys: pytest.CaptureFixture[str]) -> None:
    from raylab.cli.cmd_room import watch_room
    from raylab.ui import UI

    reads: list[int] = []

    def read() -> dict[str, Any]:
        reads.append(1)
        kim = Instance("i-1", "c7i.4xlarge", "running", "ondemand", {"raylab-lab": "kim"}, NOW)
        r = room_status([kim], [], now=NOW + timedelta(minutes=len(reads)), quotas={}, vcpus_of=lambda t: 16)
        return {**r, "region": "us-west-2", "notes": []}

    watch_room(UI(), read, 0.01, rounds=2)  # not a terminal: the whole status again, each with its time
    err = capsys.readouterr().err
    assert len(reads) == 2
    assert "room at 2026-12-06T18:01:00Z" in err and "room at 2026-12-06T18:02:00Z" in err
    assert err.count("labs in us-west-2") == 2


def test_watch_and_json_do_not_mix(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from raylab.cli.main import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["room", "status", "--watch", "5", "--json"])
    assert isinstance(r.exception, RaylabError)
    assert r.exception.message == "--watch is a view for people; --json prints one record"
    assert list(tmp_path.iterdir()) == []
