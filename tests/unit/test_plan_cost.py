"""Prices and the cost of a forecast run: offline table, live AWS answers (injected), the arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from raylab.errors import RaylabError
from raylab.plan.cost import Prices, live_prices, offline_prices, run_cost
from raylab.plan.model import Forecast, NodeTypeSpec, PlanInput

HEAD = NodeTypeSpec("ray.head.default", "c7i.4xlarge", 16, 0)
OD = NodeTypeSpec("ray.worker.ondemand", "c7i.4xlarge", 16, 16, "ondemand", max_workers=30)
SPOT = NodeTypeSpec("ray.worker.spot", "c7i.4xlarge", 16, 16, "spot", max_workers=30)


def fc(seconds: dict[str, float]) -> Forecast:
    return Forecast(peak_workers=0, peak_by_type={}, desired_by_type={}, rounds=[], makespan_s=0.0,
                    scale_down_s=0.0, job_start_s=0.0, failed_launch_calls=0, instance_seconds=seconds,
                    timeline=[], ticks=0, tasks_done=0)


def test_offline_prices_come_from_the_table_with_date_and_region() -> None:
    p = offline_prices(["c7i.4xlarge"])
    assert p.source == "offline" and p.region == "us-west-2" and p.date
    assert p.ondemand["c7i.4xlarge"] > 0
    assert p.spot["c7i.4xlarge"] < p.ondemand["c7i.4xlarge"]
    assert "ESTIMATE" in p.note  # the offline spot price is not data and says so


def test_offline_price_of_an_unknown_type_is_an_error() -> None:
    with pytest.raises(RaylabError, match="no offline price"):
        offline_prices(["c7i.4xlarg"])


def test_cost_prices_each_node_type_at_its_market() -> None:
    prices = Prices(ondemand={"c7i.4xlarge": 1.0}, spot={"c7i.4xlarge": 0.25}, source="offline",
                    date="d", region="r")
    plan = PlanInput(head=HEAD, workers=(OD, SPOT))
    c = run_cost(plan, fc({"ray.head.default": 3600, "ray.worker.ondemand": 7200, "ray.worker.spot": 3600}),
                 prices, trainees=10)
    assert c["ondemand_usd"] == pytest.approx(1 + 2 + 1)
    assert c["spot_usd"] == pytest.approx(1 + 0.5 + 0.25)  # head stays on-demand
    assert c["per_trainee"] == pytest.approx(1 + 2 + 0.25)  # as configured
    assert c["total"] == pytest.approx(32.5)


class _Pricing:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get_products(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        dim = {"pricePerUnit": {"USD": "0.7140000000"}}
        doc = {"terms": {"OnDemand": {"X": {"priceDimensions": {"Y": dim}}}}}
        return {"PriceList": [json.dumps(doc)]}


class _EC2:
    def describe_spot_price_history(self, **kw: Any) -> dict[str, Any]:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        return {"SpotPriceHistory": [
            {"AvailabilityZone": "us-west-2a", "Timestamp": now - timedelta(hours=2), "SpotPrice": "0.50"},
            {"AvailabilityZone": "us-west-2a", "Timestamp": now, "SpotPrice": "0.30"},
            {"AvailabilityZone": "us-west-2b", "Timestamp": now, "SpotPrice": "0.20"},
        ]}


def test_live_prices_use_pricing_api_and_latest_spot_per_az() -> None:
    pricing = _Pricing()
    p = live_prices(pricing, _EC2(), ["c7i.4xlarge"], "us-west-2", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert p.source == "aws" and p.date == "2026-01-01"
    assert p.ondemand["c7i.4xlarge"] == pytest.approx(0.714)
    assert p.spot["c7i.4xlarge"] == pytest.approx(0.25)  # mean of the latest 0.30 and 0.20
    filters = {f["Field"]: f["Value"] for f in pricing.calls[0]["Filters"]}
    assert filters["instanceType"] == "c7i.4xlarge" and filters["location"] == "US West (Oregon)"
