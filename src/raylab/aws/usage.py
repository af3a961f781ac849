"""What a lab used, read from EC2 (the I/O edge of ``raylab.plan.bill``), and the prices to bill it at.

- Instances: ``describe_instances`` by the lab tag (``raylab-lab``: the bastion, the Ray nodes) and by
  the cluster tag (``ray-cluster-name``), terminated ones included. The start is ``LaunchTime``; the
  end of an instance that is stopping, stopped, shutting down or terminated is the time in its
  ``StateTransitionReason`` ("User initiated (2026-12-05 22:52:11 GMT)"; moto writes "UTC"). AWS
  forgets terminated instances about an hour later, so ``raylab down`` reads this before its teardown.
- NAT gateways: ``describe_nat_gateways`` in the lab's VPCs and by the lab tag (``CreateTime``,
  ``DeleteTime``). Data processed is not in EC2's API (CloudWatch has it): left unknown.
- Prices: on-demand from raylab's offline table (the one ``raylab plan`` uses), NAT from
  ``raylab.aws.quotas``; spot live from ``describe_spot_price_history`` when an EC2 client is given
  (the AWS target), else the table's estimate, and the note says which.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from raylab.aws.ec2 import LAB_TAG, lab_filter
from raylab.aws.quotas import NAT_GATEWAY_PER_HOUR
from raylab.plan.bill import BillPrices, Usage, UsedInstance, UsedNat

CLUSTER_TAG = "ray-cluster-name"
NAT_GATEWAY_PER_GB = 0.045  # us-west-2 list price of NAT data processing
ENDED_STATES = {"shutting-down", "terminated", "stopping", "stopped"}
_REASON_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


def ended_at(reason: str | None) -> datetime | None:
    """The time in a StateTransitionReason, e.g. "User initiated (2026-12-05 22:52:11 GMT)"."""
    m = _REASON_TIME.search(reason or "")
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if m else None


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _instances(ec2: Any, filters: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for r in page["Reservations"]:
            yield from r["Instances"]


def collect(ec2: Any, lab: str, cluster: str, now: datetime) -> Usage:
    """Every instance and NAT gateway of the lab that EC2 still knows, as bill records."""
    notes: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    for flt in (lab_filter(lab), [{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]}]):
        for i in _instances(ec2, flt):
            found[i["InstanceId"]] = i
    used = []
    for iid, i in sorted(found.items()):
        state = i.get("State", {}).get("Name", "")
        end = None
        if state in ENDED_STATES:
            end = ended_at(i.get("StateTransitionReason"))
            if end is None:
                end = now
                notes.append(f"{iid} is {state} with no time in its state reason: billed up to now")
        used.append(UsedInstance(iid, i["InstanceType"],
                                 "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
                                 _utc(i["LaunchTime"]), end))
    nats: dict[str, dict[str, Any]] = {}
    vpcs = [v["VpcId"] for v in ec2.describe_vpcs(Filters=lab_filter(lab))["Vpcs"]]
    flts = [lab_filter(lab)] + ([[{"Name": "vpc-id", "Values": vpcs}]] if vpcs else [])
    for flt in flts:
        with contextlib.suppress(Exception):  # a twin without the tag filter still has the VPC one
            for n in ec2.describe_nat_gateways(Filters=flt)["NatGateways"]:
                nats[n["NatGatewayId"]] = n
    used_nats = []
    for nid, n in sorted(nats.items()):
        gone = n.get("State") in ("deleted", "deleting", "failed")
        end = n.get("DeleteTime")
        if gone and end is None:
            end = now
            notes.append(f"NAT gateway {nid} is {n.get('State')} with no DeleteTime: billed up to now")
        used_nats.append(UsedNat(nid, _utc(n["CreateTime"]), _utc(end) if end else None))
    return Usage(tuple(used), tuple(used_nats), tuple(notes))


def merge(before: Usage, after: Usage) -> Usage:
    """``before`` (read before teardown) with what ``after`` knows better: end times, new records."""
    insts = {i.id: i for i in before.instances} | {i.id: i for i in after.instances}
    nats = {n.id: n for n in before.nat_gateways} | {n.id: n for n in after.nat_gateways}
    return Usage(tuple(insts[k] for k in sorted(insts)), tuple(nats[k] for k in sorted(nats)),
                 after.notes or before.notes)


def live_spot(ec2: Any, itype: str, now: datetime) -> float | None:
    """Mean of the latest Linux spot price per AZ over the last 24 h (None: no history)."""
    from raylab.plan.cost import latest_spot_prices

    prices = latest_spot_prices(ec2, itype, now, positive=True)  # moto answers 0.0: never a real price
    mean = sum(prices) / len(prices) if prices else 0.0
    return round(mean, 6) if mean > 0 else None


def prices_for(usage: Usage, now: datetime, ec2: Any = None) -> BillPrices:
    """The table's prices for the types used; spot live when ``ec2`` is given (falls back per type)."""
    from raylab.cluster import instance_types as it
    from raylab.plan.cost import SPOT_FRACTION

    info = it.table_info()
    types = sorted({i.type for i in usage.instances})
    od = {t: float(p) for t in types if (p := it.price(t)) is not None}
    spot = {t: round(p * SPOT_FRACTION, 4) for t, p in od.items()}
    note = (f"on-demand and NAT: raylab's list prices ({info.get('region', '?')}, {info.get('as_of', '?')})")
    spot_types = sorted({i.type for i in usage.instances if i.market == "spot"})
    estimated = list(spot_types)
    if ec2 is not None and spot_types:
        for t in spot_types:
            try:
                p = live_spot(ec2, t, now)
            except Exception:  # noqa: BLE001 - no permission, no network: the table's estimate
                p = None
            if p is not None:
                spot[t] = p
                estimated.remove(t)
        if len(estimated) < len(spot_types):
            note += "; spot: live, describe_spot_price_history (mean of the latest price per AZ, 24 h)"
    if estimated:
        note += (f"; spot ESTIMATE for {', '.join(estimated)}: {SPOT_FRACTION:.0%} of on-demand"
                 + (" (no live spot price)" if ec2 is not None else ""))
    return BillPrices(od, spot, NAT_GATEWAY_PER_HOUR, NAT_GATEWAY_PER_GB, note)


__all__ = ["LAB_TAG", "collect", "ended_at", "live_spot", "merge", "prices_for"]
