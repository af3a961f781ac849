"""The rehearsal account's own facts that moto does not model: its EC2 vCPU quotas.

A new AWS account's applied "Running On-Demand Standard instances" and "All Standard Spot Instance
Requests" quotas are what the lab's stage 4 meets (160 vCPU in the lab plan). moto 5.2.6 has no EC2
quotas (GetServiceQuota: NoSuchResource; GetAWSDefaultServiceQuota: not implemented), so the
rehearsal answers both for the EC2 codes, as an applied quota.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA

LAB_QUOTAS: Mapping[str, float] = {ON_DEMAND_QUOTA: 160.0, SPOT_QUOTA: 160.0}


def quota_record(code: str, value: float) -> dict[str, Any]:
    """GetServiceQuota's ``Quota`` as AWS shapes it (pure)."""
    return {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaCode": code, "QuotaName": code, "Value": float(value), "Unit": "None",
            "Adjustable": True, "GlobalQuota": False}


def install_quotas(quotas: Mapping[str, float] = LAB_QUOTAS) -> Callable[[], None]:
    """Answer the EC2 vCPU quotas in this process's moto; returns the uninstall."""
    from moto.servicequotas.models import ServiceQuotasBackend

    orig = ServiceQuotasBackend.get_service_quota

    def get_service_quota(self: Any, service_code: str, quota_code: str) -> Any:
        if service_code == "ec2" and quota_code in quotas:
            return quota_record(quota_code, quotas[quota_code])
        return orig(self, service_code, quota_code)

    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]  # moto's model, patched in its own process

    def uninstall() -> None:
        ServiceQuotasBackend.get_service_quota = orig  # type: ignore[method-assign]  # restored

    return uninstall
