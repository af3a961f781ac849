"""What the lab cost, measured (raylab.plan.bill): one billing rule per row, then the line and the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from raylab.plan.bill import Bill, BillPrices, Usage, UsedInstance, UsedNat, bill, rows, summary

T0 = datetime(2026, 12, 5, 20, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)
PRICES = BillPrices(ondemand={"c7i.4xlarge": 0.714, "t3.micro": 0.0104}, spot={"c7i.4xlarge": 0.25},
                    nat_per_hour=0.045, nat_per_gb=0.045, note="test")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def one(itype: str = "c7i.4xlarge", market: str = "on-demand", start: float = 0,
        end: float | None = None) -> Usage:
    return Usage(instances=(UsedInstance("i-1", itype, market, at(start), None if end is None else at(end)),))


@pytest.mark.parametrize(
    ("rule", "usage", "hours", "usd"),
    [
        ("a running instance is billed up to now", one(start=60), 1.0, 0.714),
        ("a terminated instance is billed up to its termination", one(end=30), 0.5, 0.357),
        ("spot is priced at the spot price", one(market="spot", end=60), 1.0, 0.25),
        ("per second: 90 s are 90 s", one(end=1.5), 90 / 3600, 90 / 3600 * 0.714),
        ("AWS's 60 s minimum for Linux: 10 s are billed as 60 s", one(end=10 / 60), 60 / 3600,
         60 / 3600 * 0.714),
        ("a fraction of a second is not billed", one(end=(3600.9) / 60), 1.0, 0.714),
    ],
)
def test_billing_rules(rule: str, usage: Usage, hours: float, usd: float) -> None:
    b = bill(usage, PRICES, NOW)
    (line,) = b.lines
    assert line.hours == pytest.approx(hours), rule
    assert line.usd == pytest.approx(usd), rule
    assert b.total_usd == pytest.approx(usd), rule


def test_an_unknown_type_is_a_note_not_a_crash() -> None:
    b = bill(one(itype="x9z.metal", end=60), PRICES, NOW)
    (line,) = b.lines
    assert line.usd is None and line.hours == pytest.approx(1.0)
    assert b.total_usd == 0
    assert any("no price for x9z.metal" in n for n in b.notes)
    assert "?" in rows(b)[0]


def test_lines_by_type_and_market_with_the_nat_gateway_and_the_rate_now() -> None:
    usage = Usage(
        instances=(
            UsedInstance("i-head", "c7i.4xlarge", "on-demand", at(0)),             # 2 h, running
            UsedInstance("i-w1", "c7i.4xlarge", "spot", at(0), at(60)),           # 1 h
            UsedInstance("i-w2", "c7i.4xlarge", "spot", at(60)),                  # 1 h, running
            UsedInstance("i-bastion", "t3.micro", "on-demand", at(0), at(120)),   # 2 h
        ),
        nat_gateways=(UsedNat("nat-1", at(0), at(90)),),
    )
    b = bill(usage, PRICES, NOW)
    by = {(ln.type, ln.market): ln for ln in b.lines}
    assert by["c7i.4xlarge", "spot"].count == 2 and by["c7i.4xlarge", "spot"].running == 1
    assert by["c7i.4xlarge", "spot"].hours == pytest.approx(2.0)
    assert by["c7i.4xlarge", "on-demand"].usd == pytest.approx(2 * 0.714)
    assert b.nat_hours == pytest.approx(1.5) and b.nat_usd == pytest.approx(1.5 * 0.045)
    assert b.total_usd == pytest.approx(2 * 0.714 + 2 * 0.25 + 2 * 0.0104 + 1.5 * 0.045)
    assert b.per_hour_now == pytest.approx(0.714 + 0.25)  # the NAT gateway is deleted, the bastion gone
    assert any("data processing" in n for n in b.notes)  # data volume unknown: said, not guessed
    line = summary(b)
    assert line.startswith(f"this lab cost about ${b.total_usd:.2f}: 6.00 instance-hours (")
    assert "NAT gateway 1.50 h" in line
    d = b.as_dict()
    assert d["total_usd"] == round(b.total_usd, 2) and d["nat_gateway"]["hours"] == 1.5


def test_nat_data_is_billed_when_known_and_a_running_nat_counts_per_hour() -> None:
    b = bill(Usage(nat_gateways=(UsedNat("nat-1", at(0), None, data_gb=10.0),)), PRICES, NOW)
    assert b.nat_usd == pytest.approx(2 * 0.045 + 10 * 0.045)
    assert b.per_hour_now == pytest.approx(0.045)
    assert not b.notes


def test_nothing_ran_costs_nothing() -> None:
    b = bill(Usage(), PRICES, NOW)
    assert b == Bill((), 0.0, 0.0, 0.0, 0.0, ())
    assert summary(b).startswith("this lab cost about $0.00: no instances")
