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


def over_quota(running_vcpus: int, asked_vcpus: int, quota: float) -> bool:
    """RunInstances is refused when the market's running vCPUs plus the request exceed its quota (pure)."""
    return running_vcpus + asked_vcpus > quota


def install_vcpu_limits(quotas: Mapping[str, float] = LAB_QUOTAS) -> Callable[[], None]:
    """EC2 enforces the vCPU quotas at RunInstances, per market, as AWS does: on-demand over its quota
    gets ``VcpuLimitExceeded``, spot over its quota ``MaxSpotInstanceCountExceeded``; moto enforces none.
    Running means pending or running (AWS counts an instance until it is terminated; a shutting-down
    one still counts). Returns the uninstall."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend

    from raylab.aws.ec2_texts import (
        SPOT_LIMIT_CODE,
        SPOT_LIMIT_MESSAGE,
        VCPU_LIMIT_CODE,
        VCPU_LIMIT_MESSAGE,
    )
    from raylab.cluster.instance_types import lookup

    def vcpus_of(itype: str) -> int | None:
        it = lookup(itype)
        return it.vcpus if it else None

    orig = EC2Backend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: Any,
                      **kwargs: Any) -> Any:
        spot = bool(kwargs.get("instance_market_options"))
        itype = str(kwargs.get("instance_type") or "m1.small")
        running = sum(vcpus_of(i.instance_type) or 1 for i in self.all_instances()
                      if i._state.name in ("pending", "running", "shutting-down")  # noqa: SLF001 - moto's model
                      and (i.lifecycle == "spot") == spot)
        quota = quotas[SPOT_QUOTA if spot else ON_DEMAND_QUOTA]
        if over_quota(running, (vcpus_of(itype) or 1) * int(count), quota):
            if spot:
                raise EC2ClientError(SPOT_LIMIT_CODE, SPOT_LIMIT_MESSAGE)
            raise EC2ClientError(VCPU_LIMIT_CODE, VCPU_LIMIT_MESSAGE.format(limit=int(quota)))
        return orig(self, image_id, count, user_data, security_group_names, **kwargs)

    EC2Backend.run_instances = run_instances  # type: ignore[method-assign]  # moto's model, in its own process

    def uninstall() -> None:
        EC2Backend.run_instances = orig  # type: ignore[method-assign]  # restored

    return uninstall
