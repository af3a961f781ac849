"""Quotas counted per market (issue 13): spot workers use the spot vCPU quota (L-34B43A08), on-demand
workers and the head the on-demand one (L-1216C47A). Measured before the fix, after `raylab up
--scenario spot|mixed`: "peak 10 <= 9" (spot) and "peak 12 <= 8" (mixed), a failed check on a run
where every quota held."""

from __future__ import annotations

from dataclasses import replace

import pytest

from raylab.cluster.config import render
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA, Market
from raylab.observe import timeline as tl
from raylab.observe.run import limits_from_config
from raylab.stages.results import StressRecord
from raylab.stages.stage4_stress import checks_for
from tests.unit.test_config_rules import OUTPUTS


@pytest.mark.parametrize(("markets", "expected"), [
    # market -> (max_workers, worker vCPUs, quota vCPUs, reserved vCPUs)
    ({"on-demand": (30, 16, 160, 16)}, {"on-demand": 9}),                  # head on the same quota
    ({"on-demand": (30, 16, 160, 18)}, {"on-demand": 8}),                  # head + t3.micro bastion
    ({"spot": (30, 16, 160, 0)}, {"spot": 10}),                            # the head is on-demand
    ({"on-demand": (30, 16, 160, 18), "spot": (28, 16, 160, 0)}, {"on-demand": 8, "spot": 10}),
    ({"on-demand": (2, 16, 160, 18), "spot": (28, 16, 64, 0)}, {"on-demand": 2, "spot": 4}),  # max_workers
    ({"spot": (30, 16, None, 0)}, {"spot": 30}),                           # quota unknown: no cap
    ({"spot": (30, 16, 8, 0)}, {"spot": 0}),                               # not one worker fits
])
def test_workers_allowed_per_market(markets: dict, expected: dict) -> None:
    given = {m: {"max_workers": mx, "worker_vcpus": v, "quota_vcpus": q, "reserved_vcpus": r}
             for m, (mx, v, q, r) in markets.items()}
    assert tl.workers_allowed(given) == expected


def test_quota_cap_is_the_markets_sum_within_max_workers() -> None:
    markets = {"on-demand": {"max_workers": 30, "worker_vcpus": 16, "quota_vcpus": 160, "reserved_vcpus": 18},
               "spot": {"max_workers": 28, "worker_vcpus": 16, "quota_vcpus": 160, "reserved_vcpus": 0}}
    assert tl.quota_cap({"max_workers": 30, "markets": markets}) == 18
    assert tl.quota_cap({"max_workers": 12, "markets": markets}) == 12
    # a timeline written before markets were recorded: one market, as then
    old = {"max_workers": 30, "quota_vcpus": 160, "reserved_vcpus": 16, "worker_vcpus": 16}
    assert tl.quota_cap(old) == 9


def _stress_summary(scenario: str, peak: int) -> StressRecord:
    """What `raylab stress` computes after `raylab up --scenario <scenario>` on the local target:
    the rendered config's limits, the twin's quotas (160 vCPU each), the head and bastion on-demand."""
    cfg = render(target="local", scenario=scenario, lab="kim", outputs=OUTPUTS, scale=4,
                 endpoint_url="http://127.0.0.1:4599")
    lim = limits_from_config(cfg, scale=4)
    reserved = {"on-demand": lim.head_vcpus + 2, "spot": 0}  # + the bastion's t3.micro
    markets = {m: {**v, "quota_vcpus": 160, "reserved_vcpus": reserved[m]} for m, v in lim.markets.items()}
    meta = {**lim.as_meta(), "markets": markets, "tasks": 120, "duration_s": 30.0,
            "quota_vcpus": 160, "reserved_vcpus": markets[lim.market]["reserved_vcpus"]}
    samples = [{"t": 1.0, "workers": peak, "tasks": {"finished": 120, "total": 120}, "events": []}]
    job = {"tasks_total": 120, "tasks_completed": 120, "tasks_failed": 0}
    return StressRecord.from_run(tl.summarize(meta, samples, job))


@pytest.mark.parametrize(("scenario", "peak", "cap", "by_market"), [
    ("autoscale", 8, 8, {"on-demand": 8}),
    ("spot", 10, 10, {"spot": 10}),
    ("mixed", 12, 18, {"on-demand": 8, "spot": 10}),
])
def test_stress_check_counts_each_market_against_its_quota(scenario: str, peak: int, cap: int,
                                                            by_market: dict) -> None:
    s = _stress_summary(scenario, peak)
    assert (s.quota_cap_workers, s.quota_cap_by_market) == (cap, by_market)
    check = next(c for c in checks_for(s) if c.name == "peak workers within the quota")
    assert check.ok, check.detail
    assert check.detail.startswith(f"peak {peak} <= {cap} workers allowed")


def test_stress_check_still_fails_above_the_quotas() -> None:
    s = _stress_summary("mixed", 19)
    check = next(c for c in checks_for(s) if c.name == "peak workers within the quota")
    assert not check.ok
    assert check.detail == ("peak 19 <= 18 workers allowed: 8 on-demand (quota 160 vCPU) + 10 spot "
                            "(quota 160 vCPU), max_workers 30")


@pytest.mark.parametrize(("text", "market"), [
    ("on-demand", Market.ON_DEMAND), ("ondemand", Market.ON_DEMAND), ("On-Demand", Market.ON_DEMAND),
    ("ON_DEMAND", Market.ON_DEMAND), (" spot ", Market.SPOT), ("SPOT", Market.SPOT),
    (Market.SPOT, Market.SPOT),
])
def test_market_parse(text: object, market: Market) -> None:
    assert Market.parse(text) is market


def test_market_parse_refuses_other_words_and_names_the_quota() -> None:
    with pytest.raises(ValueError, match="unknown market 'reserved'"):
        Market.parse("reserved")
    assert (Market.ON_DEMAND.quota_code, Market.SPOT.quota_code) == (ON_DEMAND_QUOTA, SPOT_QUOTA)
    assert (Market.ON_DEMAND.key, str(Market.ON_DEMAND)) == ("ondemand", "on-demand")
    assert Market.of_node_config({"InstanceMarketOptions": {"MarketType": "Spot"}}) is Market.SPOT
    assert Market.of_node_config({"InstanceType": "c7i.4xlarge"}) is Market.ON_DEMAND
    assert Market.of_node_config(None) is Market.ON_DEMAND


@pytest.mark.parametrize(("scenario", "peak", "quota_line", "codes"), [
    ("autoscale", 8, "peak 8 <= 8 workers allowed by on-demand quota 160 vCPU (18 taken by head/bastion) "
                     "and max_workers 30", "VcpuLimitExceeded"),
    # the head and the bastion are on-demand: nothing of the spot quota is taken (a run said "16 taken")
    ("spot", 10, "peak 10 <= 10 workers allowed by spot quota 160 vCPU and max_workers 30",
     "MaxSpotInstanceCountExceeded"),
    ("mixed", 12, None, "VcpuLimitExceeded or MaxSpotInstanceCountExceeded"),
])
def test_the_quota_lines_name_the_markets_quota_and_its_aws_code(scenario: str, peak: int,
                                                                 quota_line: str | None, codes: str) -> None:
    s = _stress_summary(scenario, peak)
    s = replace(s, quota_errors=150, demand_exceeds_quota=True)
    checks = {c.name: c for c in checks_for(s)}
    if quota_line is not None:
        assert checks["peak workers within the quota"].detail == quota_line
    assert checks["quota error recorded"].detail == f"150 {codes} launch errors at the wall"
