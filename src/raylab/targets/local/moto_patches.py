"""raylab's additions to moto's EC2 and Service Quotas, installed in the twin's process.

``install_moto_patches(twin)`` wraps moto's classes (nothing on disk changes): RunInstances asks
``Twin.decide_launch`` how many to launch (MaxCount honoured, quotas and injected capacity faults
raised with AWS's codes) and logs a ``launch`` event; Terminate/StopInstances log theirs; Service
Quotas serves the twin's vCPU quotas for EC2.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from raylab.targets.local import ec2rules

if TYPE_CHECKING:
    from raylab.targets.local.twin import Twin

ACCOUNT_ID = "123456789012"


def install_moto_patches(twin: Twin) -> None:
    """Wrap moto's RunInstances/TerminateInstances/StopInstances and Service Quotas (in memory)."""
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.responses.instances import InstanceResponse
    from moto.servicequotas.models import ServiceQuotasBackend

    tls = threading.local()
    orig_backend_run = InstanceBackend.run_instances
    orig_run = InstanceResponse.run_instances
    orig_terminate = InstanceResponse.terminate_instances
    orig_stop = InstanceResponse.stop_instances
    orig_get_quota = ServiceQuotasBackend.get_service_quota
    orig_list_default = ServiceQuotasBackend.list_aws_default_service_quotas

    def backend_run(self: Any, image_id: str, count: int, *args: Any, **kwargs: Any) -> Any:
        override = getattr(tls, "count", None)
        return orig_backend_run(self, image_id, override or count, *args, **kwargs)

    def run_instances(self: Any) -> Any:
        min_count = int(self._get_param("MinCount", if_none="1"))
        max_count = int(self._get_param("MaxCount", if_none=str(min_count)))
        itype = self._get_param("InstanceType", "m1.small")
        market = ec2rules.market_of(self._get_param("InstanceMarketOptions.MarketType", ""))
        az = self._get_param("Placement.AvailabilityZone") or ""
        subnet_id = self._get_param("SubnetId")
        if not az and subnet_id:
            with contextlib.suppress(Exception):
                az = self.ec2_backend.get_subnet(subnet_id).availability_zone
        with twin.lock:
            n = twin.decide_launch(region=self.region, itype=itype, market=market, az=az or self.region + "a",
                                   min_count=min_count, max_count=max_count)
            tls.count = n
            try:
                result = orig_run(self)
            finally:
                tls.count = None
            last = list(self.ec2_backend.reservations)[-1]
            ids = [i.id for i in self.ec2_backend.reservations[last].instances]
            tags = dict(self.ec2_backend.tags.get(ids[0], {})) if ids else {}
            twin.event("launch", instance_ids=ids, instance_type=itype, market=market, az=az,
                       requested=max_count, launched=len(ids), cluster=tags.get("ray-cluster-name"),
                       node_type=tags.get("ray-user-node-type"), node_kind=tags.get("ray-node-type"))
        return result

    def terminate_instances(self: Any) -> Any:
        ids = self._get_param("InstanceIds", [])
        result = orig_terminate(self)
        twin.event("terminate", instance_ids=list(ids), by="api")
        return result

    def stop_instances(self: Any) -> Any:
        ids = self._get_param("InstanceIds", [])
        result = orig_stop(self)
        twin.event("stop", instance_ids=list(ids), by="api")
        return result

    def quota_dict(code: str, region: str) -> dict[str, Any]:
        return {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT_ID}:ec2/{code}",
                "QuotaCode": code, "QuotaName": ec2rules.QUOTA_NAMES[code],
                "Value": float(twin.quotas[code]), "Unit": "None", "Adjustable": True, "GlobalQuota": False}

    def get_service_quota(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        if service_code == "ec2" and quota_code in twin.quotas:
            return quota_dict(quota_code, self.region_name)
        return orig_get_quota(self, service_code, quota_code)

    def list_default(self: Any, service_code: str) -> list[dict[str, Any]]:
        if service_code == "ec2":
            return [quota_dict(c, self.region_name) for c in twin.quotas]
        return orig_list_default(self, service_code)

    InstanceBackend.run_instances = backend_run  # type: ignore[method-assign]  # moto patched with the twin\'s rules
    InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]  # moto patched with the twin\'s rules
    InstanceResponse.terminate_instances = terminate_instances  # type: ignore[method-assign]  # moto patched with the twin\'s rules
    InstanceResponse.stop_instances = stop_instances  # type: ignore[method-assign]  # moto patched with the twin\'s rules
    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]  # moto patched with the twin\'s rules
    ServiceQuotasBackend.list_aws_default_service_quotas = list_default  # type: ignore[method-assign]  # moto patched with the twin\'s rules
