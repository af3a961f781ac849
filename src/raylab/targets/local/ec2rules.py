"""How the twin's EC2 decides a RunInstances call, as AWS does (pure functions, no moto here).

- vCPU quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" (L-1216C47A) and
  "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests" (L-34B43A08), in vCPUs.
  Running and pending instances count (the head too).
- MinCount/MaxCount: AWS launches as many as fit up to MaxCount, and nothing (an error) when not
  even MinCount fits. moto alone launches MinCount.
- Injected InsufficientInstanceCapacity: per market / instance type / AZ, for a time window.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from raylab.aws.ec2_texts import (  # AWS's own texts, shared with the rehearsal
    CAPACITY_CODE,
    CAPACITY_MESSAGE_OD,
    CAPACITY_MESSAGE_SPOT,
    SPOT_LIMIT_CODE,
    SPOT_LIMIT_MESSAGE,
    VCPU_LIMIT_CODE,
    VCPU_LIMIT_MESSAGE,
)
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA, Market

DEFAULT_VCPU_QUOTA = 160
STANDARD_FAMILIES = frozenset("acdhimrtz")
COUNTED_STATES = frozenset({"pending", "running"})

QUOTA_NAMES = {m.quota_code: m.quota_name for m in Market}
QUOTA_ALIASES = {**{spelling: m.quota_code for m in Market
                    for spelling in (m.value, m.key, m.value.replace("-", "_"))},
                 ON_DEMAND_QUOTA: ON_DEMAND_QUOTA, SPOT_QUOTA: SPOT_QUOTA}



def market_of(instance_market_options: Any) -> str:
    """'spot' or 'on-demand' from RunInstances' InstanceMarketOptions(.MarketType)."""
    return Market.of_market_options(instance_market_options).value


def quota_code_for(instance_type: str, market: str) -> str | None:
    """Which vCPU quota an instance type counts against (None: a family raylab does not model)."""
    family = instance_type.split(".", 1)[0]
    if not family or family[0].lower() not in STANDARD_FAMILIES:
        return None
    return Market.parse(market).quota_code


def vcpus_used(instances: list[dict[str, Any]], code: str) -> int:
    """vCPUs counted against quota ``code``; each item: {type, market, state, vcpus}."""
    return sum(
        int(i["vcpus"]) for i in instances
        if i["state"] in COUNTED_STATES and quota_code_for(i["type"], i["market"]) == code
    )


def launchable(min_count: int, max_count: int, vcpus_each: int, used: int, limit: int | None) -> int:
    """How many instances AWS launches: as many as fit up to MaxCount; 0 if not even MinCount fits."""
    max_count = max(max_count, min_count)
    if limit is None or vcpus_each <= 0:
        return max_count
    fit = max(0, (limit - used) // vcpus_each)
    n = min(max_count, fit)
    return n if n >= min_count else 0


def limit_error(code: str, limit: int) -> tuple[str, str]:
    if code == SPOT_QUOTA:
        return SPOT_LIMIT_CODE, SPOT_LIMIT_MESSAGE
    return VCPU_LIMIT_CODE, VCPU_LIMIT_MESSAGE.format(limit=limit)


@dataclass
class CapacityFault:
    """InsufficientInstanceCapacity for matching launches until ``until`` (epoch s; None = forever)."""

    market: str = "*"  # spot | on-demand | *
    instance_type: str = "*"
    az: str = "*"
    until: float | None = None
    id: int = 0
    created: float = field(default_factory=time.time)

    def matches(self, market: str, instance_type: str, az: str, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return all(want in ("*", "", None, got) for want, got in
                   ((self.market, market), (self.instance_type, instance_type), (self.az, az)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def capacity_error(market: str, instance_type: str, az: str) -> tuple[str, str]:
    if market == "spot":
        return CAPACITY_CODE, CAPACITY_MESSAGE_SPOT
    return CAPACITY_CODE, CAPACITY_MESSAGE_OD.format(itype=instance_type, az=az)


def active_faults(faults: list[CapacityFault], now: float) -> list[CapacityFault]:
    return [f for f in faults if f.until is None or now < f.until]
