"""EC2 vCPU quotas and the lab's fixed network prices: which quota an instance counts against, and
the account's value of a quota (Service Quotas, AWS's default when none was applied)."""

from __future__ import annotations

from typing import Any

from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA

QUOTA_NAMES = {
    ON_DEMAND_QUOTA: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    SPOT_QUOTA: "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
}
STANDARD_FAMILIES = frozenset("acdhimrtz")
# Fixed costs of the lab's network while it exists (us-west-2 list prices, USD/h): NAT gateway
# hourly charge (data processing extra); the bastion is priced from the instance table.
NAT_GATEWAY_PER_HOUR = 0.045


def quota_code_for(instance_type: str, market: str) -> str | None:
    """The standard-family vCPU quota an instance counts against (None: another family's quota)."""
    family = instance_type.split(".", 1)[0].lower()
    if not family or family[0] not in STANDARD_FAMILIES:
        return None
    return SPOT_QUOTA if market == "spot" else ON_DEMAND_QUOTA


def error_code(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", type(e).__name__))


def quota_value(sq: Any, code: str) -> float:
    """The account's applied quota, or AWS's default when none was ever applied."""
    try:
        return float(sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except Exception as e:
        if error_code(e) != "NoSuchResourceException":
            raise
    return float(sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
