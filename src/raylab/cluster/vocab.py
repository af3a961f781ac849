"""The cluster's small vocabulary, spelled once: markets, their EC2 vCPU quota codes, and the
autoscaler defaults of Ray 2.60 (what a cluster YAML means when it leaves a key out).

Dependency-free (standard library only), so every layer may import it. The capacity guard and the
IMDS watcher run on the nodes as single files and keep their own one-line market test.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class Market(enum.StrEnum):
    """Where an EC2 instance's vCPUs are counted. The value is AWS's spelling ("on-demand", "spot")."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"

    @classmethod
    def parse(cls, text: object) -> Market:
        """"on-demand", "ondemand", "on_demand", "On-Demand", "spot", "SPOT" ... -> a Market;
        anything else is a ValueError naming the choices."""
        if isinstance(text, Market):
            return text
        key = str(text).strip().lower().replace("-", "").replace("_", "")
        if key == "ondemand":
            return cls.ON_DEMAND
        if key == "spot":
            return cls.SPOT
        raise ValueError(f"unknown market {text!r}: use on-demand or spot")

    @classmethod
    def of_market_options(cls, options: object) -> Market:
        """RunInstances' ``InstanceMarketOptions`` (a mapping) or its ``MarketType`` (a string): spot
        when the type is spot (any case), else on-demand (EC2's default)."""
        kind = options.get("MarketType", "") if isinstance(options, Mapping) else options
        return cls.SPOT if str(kind or "").strip().lower() == "spot" else cls.ON_DEMAND

    @classmethod
    def of_node_config(cls, node_config: Mapping[str, Any] | None) -> Market:
        """A node type's market from its ``node_config`` (its InstanceMarketOptions)."""
        return cls.of_market_options((node_config or {}).get("InstanceMarketOptions"))

    @property
    def key(self) -> str:
        """The identifier form ("ondemand", "spot") used in the plan's JSON keys."""
        return self.value.replace("-", "")

    @property
    def quota_code(self) -> str:
        return QUOTA_CODES[self]

    @property
    def quota_name(self) -> str:
        return QUOTA_NAMES[self]


# EC2's Service Quotas for standard (A, C, D, H, I, M, R, T, Z) instances, in vCPUs.
ON_DEMAND_QUOTA = "L-1216C47A"
SPOT_QUOTA = "L-34B43A08"
QUOTA_CODES: dict[Market, str] = {Market.ON_DEMAND: ON_DEMAND_QUOTA, Market.SPOT: SPOT_QUOTA}
QUOTA_NAMES: dict[Market, str] = {
    Market.ON_DEMAND: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    Market.SPOT: "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
}

# Ray 2.60's autoscaler defaults for keys a cluster YAML leaves out (ray/autoscaler/aws/defaults.yaml).
RAY_DEFAULTS: dict[str, float] = {
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5.0,
}
UPSCALING_SPEED = RAY_DEFAULTS["upscaling_speed"]
IDLE_TIMEOUT_MINUTES = RAY_DEFAULTS["idle_timeout_minutes"]
# Autoscaler v2 asks the cloud again for an instance REQUESTED but not yet seen after this long (the
# rest of a partly filled RunInstances at the quota wall), even when nothing waits for it any more
# (ray/autoscaler/v2/instance_manager/config.py, RAY_AUTOSCALER_RECONCILE_REQUEST_STATUS_TIMEOUT_S).
REQUEST_STATUS_TIMEOUT_ENV = "RAY_AUTOSCALER_RECONCILE_REQUEST_STATUS_TIMEOUT_S"
REQUEST_STATUS_TIMEOUT_S = 600.0
# The autoscaler's loop ("tick"): v2's monitor reconciles once, then sleeps this long
# (ray/autoscaler/_private/constants.py, AUTOSCALER_UPDATE_INTERVAL_S, read as whole seconds).
TICK_ENV = "AUTOSCALER_UPDATE_INTERVAL_S"
TICK_S = 5.0
