"""EC2 instance types: raylab's offline table (shape and on-demand price) and EC2's own answer.

The offline table (``raylab/data/instance_types.json``) covers the families a lab uses (c7i, c6i,
c5, m7i, m6i, m5, r7i, r6i, c7g, m7g, t3, g5) with vCPUs, memory, architecture, GPUs and the
us-west-2 on-demand price as of the table's date (``table_info()``). The planner reuses the prices.

Whether a name exists at all is answered more widely: every instance type name botocore's EC2
model knows (offline, shipped with botocore) counts as real, so ``p4d.24xlarge`` is accepted
while ``c7i.4xlarg`` is not. On the AWS target ``describe_with_ec2`` asks EC2 itself, which also
knows whether the type is offered in the region.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    arch: str = "x86_64"
    gpus: int = 0
    on_demand_usd_per_hour: float | None = None  # us-west-2, Linux; None when unknown


# names -> the InstanceType EC2 offers for each (a name missing from the answer is not offered)
Describer = Callable[[list[str]], Mapping[str, InstanceType]]


@lru_cache(maxsize=1)
def _doc() -> dict[str, Any]:
    text = resources.files("raylab").joinpath("data/instance_types.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def table() -> dict[str, InstanceType]:
    """The offline table: name -> InstanceType (with the us-west-2 on-demand price)."""
    return {
        name: InstanceType(
            name=name,
            vcpus=int(row["vcpus"]),
            memory_gib=float(row["memory_gib"]),
            arch=str(row["arch"]),
            gpus=int(row.get("gpus", 0)),
            on_demand_usd_per_hour=row.get("on_demand_usd_per_hour"),
        )
        for name, row in _doc()["types"].items()
    }


def table_info() -> dict[str, str]:
    """Region, date and source of the offline prices."""
    return {k: str(v) for k, v in _doc().items() if k != "types"}


def lookup(name: str) -> InstanceType | None:
    return table().get(name)


def price(name: str) -> float | None:
    """On-demand USD per hour in us-west-2 from the offline table (None if not in the table)."""
    it = lookup(name)
    return it.on_demand_usd_per_hour if it else None


@lru_cache(maxsize=1)
def known_names() -> frozenset[str]:
    """Every instance type name EC2 has (botocore's offline EC2 model) plus the table's."""
    names: set[str] = set(table())
    try:
        import botocore.session

        model = botocore.session.get_session().get_service_model("ec2")
        names.update(model.shape_for("InstanceType").enum)
    except Exception:  # noqa: BLE001 - botocore missing or changed: the table alone still works
        pass
    return frozenset(names)


def closest(name: str, candidates: Iterable[str] | None = None, n: int = 1) -> list[str]:
    """The closest real instance type names (for "did you mean")."""
    pool = sorted(candidates if candidates is not None else known_names())
    return difflib.get_close_matches(name, pool, n=n, cutoff=0.6)


def from_ec2(info: Mapping[str, Any]) -> InstanceType:
    """An InstanceType from one entry of EC2's DescribeInstanceTypes answer."""
    name = str(info["InstanceType"])
    gpus = sum(int(g.get("Count", 0)) for g in info.get("GpuInfo", {}).get("Gpus", []))
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
    return InstanceType(
        name=name,
        vcpus=int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gib=round(int(info.get("MemoryInfo", {}).get("SizeInMiB", 0)) / 1024, 2),
        arch=str(archs[0]) if archs else "x86_64",
        gpus=gpus,
        on_demand_usd_per_hour=price(name),
    )


def describe_with_ec2(client: Any, names: Iterable[str]) -> dict[str, InstanceType]:
    """Ask EC2 (``describe_instance_types``) which of ``names`` it offers in the client's region.

    One call per name, so a single unknown name (EC2 answers ``InvalidInstanceType`` for the
    whole request) does not hide the others. Other errors (credentials, network) propagate:
    the caller turns them into a finding.
    """
    from botocore.exceptions import ClientError

    found: dict[str, InstanceType] = {}
    for name in sorted(set(names)):
        try:
            resp = client.describe_instance_types(InstanceTypes=[name])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidInstanceType":
                continue
            raise
        for info in resp.get("InstanceTypes", []):
            found[str(info["InstanceType"])] = from_ec2(info)
    return found


def ec2_describer(region: str, endpoint_url: str | None = None) -> Describer:
    """A Describer backed by a boto3 EC2 client (default credential chain, the given region)."""

    def describe(names: list[str]) -> Mapping[str, InstanceType]:
        import boto3
        from botocore.config import Config

        cfg = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
        kwargs: dict[str, Any] = {"region_name": region, "config": cfg}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        return describe_with_ec2(boto3.client("ec2", **kwargs), names)

    return describe
