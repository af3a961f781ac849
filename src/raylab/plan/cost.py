"""What a forecast run costs: offline prices (raylab's table), or live AWS prices on the AWS target.

- Offline on-demand: ``raylab.cluster.instance_types`` (its region and date are reported).
- Offline spot: there is no offline spot history, so it is an ESTIMATE: on-demand x ``SPOT_FRACTION``,
  and the output says so.
- Live (``--target aws``): on-demand from the Pricing API (``get_products``), spot from EC2's
  ``describe_spot_price_history`` (the mean of the latest price per availability zone, last 24 h).
  Clients are passed in, so tests inject stubs.
EC2 bills Linux instances per second with a 60 s minimum; the forecast's instance-seconds already
apply it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from raylab.errors import RaylabError
from raylab.plan.model import Forecast, PlanInput

SPOT_FRACTION = 0.35  # offline spot estimate as a fraction of on-demand (c7i-class, us-west-2, typical)

# AWS Pricing API "location" names for the regions a lab may use
_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)", "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)", "eu-central-1": "EU (Frankfurt)",
    "ap-northeast-1": "Asia Pacific (Tokyo)", "ap-northeast-2": "Asia Pacific (Seoul)",
}


@dataclass(frozen=True)
class Prices:
    ondemand: dict[str, float]  # instance type -> USD per hour
    spot: dict[str, float]
    source: str  # "offline" | "aws"
    date: str
    region: str
    note: str = ""


def offline_prices(instance_types: Iterable[str]) -> Prices:
    from raylab.cluster import instance_types as it

    info = it.table_info()
    od: dict[str, float] = {}
    for name in set(instance_types):
        p = it.price(name)
        if p is None:
            raise RaylabError(f"no offline price for instance type {name!r}",
                              "use an instance type from raylab's table, or --target aws for live prices")
        od[name] = float(p)
    return Prices(
        ondemand=od, spot={k: round(v * SPOT_FRACTION, 4) for k, v in od.items()}, source="offline",
        date=info.get("as_of", "?"), region=info.get("region", "?"),
        note=(f"on-demand: raylab's offline table ({info.get('region', '?')}, {info.get('as_of', '?')}); "
              f"spot: ESTIMATE = {SPOT_FRACTION:.0%} of on-demand (no offline spot history; "
              "use --target aws for live spot prices)"),
    )


def live_prices(pricing: Any, ec2: Any, instance_types: Iterable[str], region: str,
                now: datetime | None = None) -> Prices:
    """Live prices: ``pricing`` is a boto3 Pricing client (us-east-1), ``ec2`` an EC2 client in ``region``."""
    now = now or datetime.now(UTC)
    location = _LOCATIONS.get(region)
    od: dict[str, float] = {}
    spot: dict[str, float] = {}
    for name in sorted(set(instance_types)):
        filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in (
            ("instanceType", name), ("operatingSystem", "Linux"), ("tenancy", "Shared"),
            ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
            ("location", location) if location else ("regionCode", region))]
        resp = pricing.get_products(ServiceCode="AmazonEC2", Filters=filters, MaxResults=10)
        od_price = _first_usd(resp.get("PriceList", []))
        if od_price is None:
            raise RaylabError(f"the AWS Pricing API has no Linux on-demand price for {name} in {region}",
                              "check the instance type and region")
        od[name] = od_price
        latest = latest_spot_prices(ec2, name, now)
        spot[name] = round(sum(latest) / len(latest), 4) if latest else od_price
    return Prices(ondemand=od, spot=spot, source="aws", date=now.strftime("%Y-%m-%d"), region=region,
                  note="on-demand: AWS Pricing API; spot: describe_spot_price_history "
                       "(mean of the latest price per AZ)")


def latest_spot_prices(ec2: Any, itype: str, now: datetime, *, positive: bool = False) -> list[float]:
    """The latest Linux spot price of each AZ over the last 24 h (describe_spot_price_history);
    ``positive``: a price of 0 or less is passed over."""
    hist = ec2.describe_spot_price_history(
        InstanceTypes=[itype], ProductDescriptions=["Linux/UNIX"], StartTime=now - timedelta(hours=24),
        EndTime=now, MaxResults=100)
    latest: dict[str, tuple[datetime, float]] = {}
    for h in hist.get("SpotPriceHistory", []):
        az, ts, p = h.get("AvailabilityZone", "?"), h["Timestamp"], float(h["SpotPrice"])
        if (p > 0 or not positive) and (az not in latest or ts > latest[az][0]):
            latest[az] = (ts, p)
    return [p for _, p in latest.values()]


def _first_usd(price_list: list[Any]) -> float | None:
    for item in price_list:
        doc = json.loads(item) if isinstance(item, str) else item
        for term in (doc.get("terms", {}).get("OnDemand") or {}).values():
            for dim in (term.get("priceDimensions") or {}).values():
                usd = dim.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def run_cost(plan: PlanInput, fc: Forecast, prices: Prices, trainees: int) -> dict[str, Any]:
    """The run's cost: as configured (each node type at its market's price), all on-demand, and with
    every worker on spot (the head stays on-demand), per trainee and for ``trainees`` trainees."""
    specs = {s.name: s for s in (plan.head, *plan.workers)}

    def usd(market_of: Any) -> float:
        total = 0.0
        for name, secs in fc.instance_seconds.items():
            s = specs[name]
            table = prices.spot if market_of(s) == "spot" else prices.ondemand
            total += secs / 3600.0 * table[s.instance_type]
        return round(total, 4)

    as_configured = usd(lambda s: s.market)
    return {
        "ondemand_usd": usd(lambda s: "ondemand"),
        "spot_usd": usd(lambda s: "ondemand" if s is plan.head else "spot"),
        "per_trainee": as_configured,
        "trainees": trainees,
        "total": round(as_configured * trainees, 2),
        "price_source": prices.source,
        "price_date": prices.date,
        "price_region": prices.region,
        "price_note": prices.note,
        "usd_per_hour": {"ondemand": prices.ondemand, "spot": prices.spot},
        "instance_hours": {k: round(v / 3600.0, 3) for k, v in fc.instance_seconds.items()},
    }
