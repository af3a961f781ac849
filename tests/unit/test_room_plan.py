"""`raylab room plan`: the pure decisions as tables, one trainee from the real forecast, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from raylab.errors import RaylabError
from raylab.room import plan as rp
from tests.conftest import run_cli

# One trainee of the default lab (the numbers `raylab room plan` forecasts, see test_forecast_...).
LOAD = rp.TraineeLoad(
    head_type="c7i.4xlarge", head_vcpus=16, bastion_vcpus=2, burst_workers=8, wanted_workers=30,
    burst_ondemand_vcpus=128, burst_spot_vcpus=160, slot_s=1650.0, stage4_usd=2.5, stage6_usd=1.8,
    baseline_usd_per_hour=0.7694,
)


# --- input parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "kw", "expected"), [
    ("20", {"hi": 100}, 20),
    (" 1 ", {"hi": 100}, 1),
    ("100", {"hi": 100}, 100),
    ("30.0", {}, 30),
    ("0", {"lo": 0}, 0),
    (None, {}, None),
])
def test_parse_count_accepts(raw: str | None, kw: dict, expected: int | None) -> None:
    assert rp.parse_count(raw, "--trainees", **kw) == expected


@pytest.mark.parametrize(("raw", "kw", "message"), [
    ("0", {"hi": 100}, "--trainees '0' is out of range (give --trainees a whole number between 1 and 100)"),
    ("101", {"hi": 100}, "--trainees '101' is out of range (give --trainees a whole number between 1 and 100)"),  # noqa: E501
    ("-3", {}, "--trainees '-3' is out of range (give --trainees a whole number >= 1)"),
    ("abc", {}, "--trainees 'abc' is not a number (give --trainees a whole number)"),
    ("", {}, "--trainees '' is not a number (give --trainees a whole number)"),
    ("2.5", {}, "--trainees '2.5' is not a whole number (give --trainees a whole number)"),
    ("nan", {}, "--trainees 'nan' is not a whole number (give --trainees a whole number)"),
    ("inf", {}, "--trainees 'inf' is not a whole number (give --trainees a whole number)"),
])
def test_parse_count_refuses_with_one_line(raw: str, kw: dict, message: str) -> None:
    with pytest.raises(RaylabError) as e:
        rp.parse_count(raw, "--trainees", **kw)
    assert e.value.one_line() == message


@pytest.mark.parametrize(("raw", "ok"), [("8", 8.0), ("0.5", 0.5), ("24", 24.0), ("0", None), ("25", None),
                                         ("-1", None), ("x", None), ("nan", None)])
def test_parse_hours(raw: str, ok: float | None) -> None:
    if ok is None:
        with pytest.raises(RaylabError, match="--hours"):
            rp.parse_hours(raw)
    else:
        assert rp.parse_hours(raw) == ok


# --- the stagger and the quotas -----------------------------------------------------------------------
@pytest.mark.parametrize(("quota", "trainees", "expected"), [
    (1000, 20, 5),  # 1000 - 20 x 18 = 640 free = 5 bursts of 128
    (999, 20, 4),
    (360 + 128, 20, 1),  # exactly the labs and one burst
    (360 + 127, 20, 0),  # the labs fit, not one burst
    (100, 20, 0),  # not even the labs
    (160, 1, 1),  # one trainee at the lesson's quota: head + bastion + 8 workers = 146
    (100_000, 20, 20),  # never more than the room
])
def test_fitting_stagger(quota: int, trainees: int, expected: int) -> None:
    assert rp.fitting_stagger(quota, trainees, LOAD) == expected


def test_fitting_stagger_without_a_burst_is_everyone() -> None:
    assert rp.fitting_stagger(400, 20, replace(LOAD, burst_ondemand_vcpus=0)) == 20


@pytest.mark.parametrize(("trainees", "at_once", "od", "spot"), [
    (20, 20, 20 * 18 + 20 * 128, 20 * 160),
    (20, 5, 20 * 18 + 5 * 128, 5 * 160),
    (1, 1, 146, 160),
])
def test_quota_requests_count_every_lab_and_the_wave(trainees: int, at_once: int, od: int, spot: int) -> None:
    reqs = rp.quota_requests(trainees, at_once, LOAD)
    assert [(r.code, r.market, r.vcpus) for r in reqs] == [("L-1216C47A", "ondemand", od),
                                                             ("L-34B43A08", "spot", spot)]
    assert all(r.increase_needed is None for r in reqs)


def test_quota_request_says_whether_the_current_quota_is_enough() -> None:
    od, spot = rp.quota_requests(20, 5, LOAD, current_ondemand=1000, current_spot=640)
    assert (od.increase_needed, spot.increase_needed) == (False, True)
    assert od.as_dict()["name"].startswith("Running On-Demand Standard")
    assert "20 x 18" in od.why and "5 x 128" in od.why


def test_no_spot_request_without_spot_workers() -> None:
    assert [r.market for r in rp.quota_requests(3, 3, replace(LOAD, burst_spot_vcpus=0))] == ["ondemand"]


def test_day_cost() -> None:
    c = rp.day_cost(20, 8.0, LOAD)
    assert c["baseline_usd"] == pytest.approx(20 * 8 * 0.7694, abs=0.01)
    assert (c["stage4_usd"], c["stage6_usd"]) == (50.0, 36.0)
    assert c["total_usd"] == pytest.approx(c["baseline_usd"] + 86.0, abs=0.01)
    assert c["per_trainee_usd"] == pytest.approx(c["total_usd"] / 20, abs=0.01)


@pytest.mark.parametrize(("kw", "at_once", "waves", "source"), [
    ({}, 20, 1, "everyone"),
    ({"stagger": 6}, 6, 4, "--stagger"),
    ({"quota_ondemand": 1000}, 5, 4, "quota 1000"),
    ({"quota_ondemand": 1000, "stagger": 10}, 10, 2, "--stagger"),
    ({"quota_ondemand": 100}, 1, 20, "quota 100"),  # nothing fits: plan one at a time and request
])
def test_room_plan_stagger(kw: dict, at_once: int, waves: int, source: str) -> None:
    r = rp.room_plan(20, LOAD, **kw)
    s = r["stagger"]
    assert (s["at_once"], s["waves"]) == (at_once, waves)
    assert source in s["source"]
    assert s["stage4_minutes"] == pytest.approx(waves * 1650 / 60, abs=0.1)
    assert r["quota_requests"][0]["vcpus"] == 20 * 18 + at_once * 128


def test_room_plan_reports_what_the_current_quota_holds() -> None:
    r = rp.room_plan(20, LOAD, stagger=10, quota_ondemand=1000)
    assert r["stagger"]["fits_quota_now"] == 5
    assert r["quota_requests"][0]["increase_needed"] is True


@pytest.mark.parametrize(("trainees", "kw", "message"), [
    (0, {}, "--trainees 0 is out of range"),
    (101, {}, "--trainees 101 is out of range"),
    (5, {"stagger": 6}, "--stagger 6 is out of range"),
    (5, {"stagger": 0}, "--stagger 0 is out of range"),
])
def test_room_plan_refuses_bad_input(trainees: int, kw: dict, message: str) -> None:
    with pytest.raises(RaylabError) as e:
        rp.room_plan(trainees, LOAD, **kw)
    assert e.value.message == message


# --- one trainee from the real forecast (Ray's own autoscaler, as `raylab plan`) ----------------------
@pytest.fixture(scope="module")
def forecast_load() -> rp.TraineeLoad:
    from raylab.context import project_root
    from raylab.plan import cost, inputs
    from raylab.plan.forecast import simulate

    root = project_root()
    cfg = root / "configs" / "ray-cluster.yaml"
    p4, p6 = rp.stage_plans(inputs.load_config(cfg, "autoscale"), inputs.load_config(cfg, "mixed"), 2)
    prices = cost.offline_prices(["c7i.4xlarge", rp.BASTION_TYPE])
    return rp.trainee_load((p4, simulate(p4)), (p6, simulate(p6)), prices, 2)


def test_forecast_puts_one_trainee_at_the_lessons_wall(forecast_load: rp.TraineeLoad) -> None:
    t = forecast_load
    # quota 160 with head (16) and bastion (2) in it: 8 workers of 16 vCPUs, as `raylab plan` says
    assert (t.baseline_vcpus, t.burst_workers, t.burst_ondemand_vcpus, t.wanted_workers) == (18, 8, 128, 30)
    assert t.burst_spot_vcpus == 160  # stage 6 (mixed): the spot quota is a separate 160
    assert 20 * 60 < t.slot_s < 40 * 60  # the job (~22 min at the wall) and the idle scale-down
    assert t.baseline_usd_per_hour == pytest.approx(0.77, abs=0.01)  # the "about $0.77/h"
    assert 0 < t.stage6_usd < 2 * t.stage4_usd


# --- the CLI ------------------------------------------------------------------------------------------
def test_cli_json(forecast_load: rp.TraineeLoad) -> None:
    from raylab.cli.main import app

    r = CliRunner().invoke(app, ["room", "plan", "--trainees", "20", "--quota-ondemand", "1000", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["trainees"] == 20
    assert out["stagger"]["at_once"] == 5 and out["stagger"]["waves"] == 4
    assert [(q["code"], q["vcpus"], q["increase_needed"]) for q in out["quota_requests"]] == [
        ("L-1216C47A", 1000, False), ("L-34B43A08", 800, None)]
    assert out["per_trainee"]["burst_ondemand_vcpus"] == forecast_load.burst_ondemand_vcpus
    assert out["price_source"] == "offline" and "week" in out["lead_time"]
    assert out["cost"]["total_usd"] > out["cost"]["baseline_usd"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--trainees", "0"], "--trainees '0' is out of range"),
    (["--trainees", "101"], "--trainees '101' is out of range"),
    (["--trainees", "ten"], "--trainees 'ten' is not a number"),
    (["--trainees", "5", "--stagger", "9"], "--stagger '9' is out of range"),
    (["--trainees", "5", "--hours", "30"], "--hours '30' is out of range"),
])
def test_cli_bad_input_is_refused_before_any_forecast(args: list[str], message: str) -> None:
    from raylab.cli.main import app

    r = CliRunner().invoke(app, ["room", "plan", *args])
    assert r.exit_code != 0
    assert isinstance(r.exception, RaylabError) and r.exception.message == message


def test_cli_bad_input_is_one_line_without_traceback() -> None:
    p = run_cli("room", "plan", "--trainees", "0", timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "error: --trainees '0' is out of range (give --trainees a whole number between 1 and 100)"]
