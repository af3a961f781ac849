"""Preflight for the AWS target: everything checked before anything is created.

Pure decision functions (which AZs fit, cost, the operator's CIDR; what the config can launch and
the quota arithmetic live in ``quota_math.py``) sit apart from the boto3 edges (STS, EC2, Service
Quotas, IAM) and from the operator's public-IP lookup, which is injected so tests never reach the
internet. Every check returns a ``Check``;
a check that cannot run is a failed check that says why and what to do, never a pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raylab.aws.quotas import (  # noqa: F401 - the quota vocabulary, re-exported for the preflight's readers
    NAT_GATEWAY_PER_HOUR,
    QUOTA_NAMES,
    STANDARD_FAMILIES,
    quota_code_for,
    quota_value,
)
from raylab.aws.quotas import error_code as _code
from raylab.checks import Check
from raylab.targets.aws.quota_math import (
    NodeShape,
    capped,
    global_cap,
    instance_types_of,
    launch_shapes,
    quota_check,
    quota_demands,
)

SPOT_ROLE = "AWSServiceRoleForEC2Spot"
CHECKIP_URL = "https://checkip.amazonaws.com"
BASTION_TYPE = "t3.micro"  # infra/cloudformation/vpc.yaml's default BastionInstanceType


# --- which AZs fit, cost, the operator's IP (pure) -----------------------------------------------
def choose_azs(offered: Mapping[str, set[str]], wanted: Iterable[str], need: int = 2) -> list[str]:
    """The AZs (sorted) that offer every wanted instance type; the caller needs ``need`` of them."""
    sets = [offered.get(t, set()) for t in wanted]
    common = set.intersection(*sets) if sets else set()
    return sorted(common)[: max(need, len(common))] if common else []


def az_check(offered: Mapping[str, set[str]], wanted: list[str], region: str) -> tuple[Check, list[str]]:
    azs = choose_azs(offered, wanted)
    if len(azs) >= 2:
        return Check("availability zones", True, f"{', '.join(wanted)} offered in {', '.join(azs)}"), azs[:2]
    missing = [t for t in wanted if not offered.get(t)]
    if missing:
        return Check(
            "availability zones",
            False,
            f"{', '.join(missing)} not offered in {region}",
            "pick another region (--region) or instance type in the cluster config",
        ), azs
    return Check(
        "availability zones",
        False,
        f"only {len(azs)} AZ(s) in {region} offer all of {', '.join(wanted)} "
        f"({', '.join(azs) or 'none'}); the private subnets need 2",
        "use instance types offered in two AZs, or another region",
    ), azs


def cost_per_hour(
    shapes: Iterable[NodeShape], price: Callable[[str, str], float | None], fixed: float = 0.0
) -> tuple[float | None, list[str]]:
    """USD per hour with every node up: sum of count x price(type, market) plus fixed costs.

    Returns (total or None when a price is unknown, the lines that make it up).
    """
    total = fixed
    lines: list[str] = []
    unknown = False
    for s in shapes:
        n = 1 if s.is_head else s.count
        if not n:
            continue
        p = price(s.instance_type, s.market)
        if p is None:
            unknown = True
            lines.append(f"{s.node_type}: {n} x {s.instance_type} {s.market} (price unknown)")
            continue
        total += n * p
        note = " (spot: at most this)" if s.market == "spot" else ""
        lines.append(f"{s.node_type}: {n} x {s.instance_type} {s.market} @ ${p:.4f}/h = ${n * p:.2f}/h{note}")
    return (None if unknown else round(total, 2)), lines


def operator_cidr(ip: str) -> str:
    """The bastion's SSH ingress: the operator's public IPv4 as a /32 (refuse anything else)."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise ValueError(f"{ip.strip()!r} is not an IP address") from None
    if addr.version != 4:
        raise ValueError(f"{addr} is IPv6; the bastion's ingress rule takes an IPv4 /32")
    if not addr.is_global:
        raise ValueError(f"{addr} is not a public address (private, loopback or reserved)")
    return f"{addr}/32"


def checkip_lookup(timeout: float = 5.0) -> str:
    """The real lookup (AWS's checkip service). Never used by tests: they inject the IP."""
    import urllib.request

    with urllib.request.urlopen(CHECKIP_URL, timeout=timeout) as r:  # noqa: S310 - fixed https URL
        return r.read().decode().strip()


# --- boto3 edges ------------------------------------------------------------------------------
# botocore's "the endpoint could not be reached" family: no network, DNS, proxy, a dead endpoint.
UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "SSLError",
    }
)


# temporary credentials or an SSO session past their expiry (STS's codes and botocore's SSO errors)
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRetrievalError",
                     "UnauthorizedSSOTokenError", "SSOTokenLoadError"})


def credentials_failure(e: Exception) -> Check:
    """STS GetCallerIdentity failed: tell "no credentials", "cannot reach AWS" and "AWS said no" apart."""
    code = _code(e)
    fix = "run `aws configure` or `aws sso login`, or export AWS_PROFILE=<profile>"
    if code in ("NoCredentialsError", "PartialCredentialsError"):
        return Check("credentials", False, "no AWS credentials found", fix)
    if code == "ProfileNotFound":
        name = getattr(e, "kwargs", {}).get("profile", "?")
        return Check("credentials", False, f"AWS profile {name!r} is not configured",
                     f"run `aws configure --profile {name}` (or `aws configure sso`), or unset AWS_PROFILE")
    if code in EXPIRED:
        return Check("credentials", False, f"your AWS session has expired ({code})",
                     "run `aws sso login` (or refresh your temporary credentials), then run this again")
    if code in UNREACHABLE or isinstance(e, ConnectionError):
        where = getattr(e, "kwargs", {}).get("endpoint_url") or "the STS endpoint"
        return Check(
            "credentials",
            False,
            f"could not reach AWS at {where} ({code}): the credentials were not checked",
            "check your network connection or proxy (HTTPS_PROXY), and AWS_ENDPOINT_URL if set",
        )
    return Check("credentials", False, f"AWS rejected the credentials ({code})", fix)


def caller_identity(sts: Any) -> dict[str, str]:
    r = sts.get_caller_identity()
    return {"account": r["Account"], "arn": r["Arn"]}


def vcpus_of(ec2: Any, instance_types: list[str]) -> dict[str, int]:
    r = ec2.describe_instance_types(InstanceTypes=instance_types)
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in r["InstanceTypes"]}


def offerings(ec2: Any, instance_types: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {t: set() for t in instance_types}
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": instance_types}]
    )
    for page in pages:
        for o in page["InstanceTypeOfferings"]:
            out.setdefault(o["InstanceType"], set()).add(o["Location"])
    return out


def vcpus_in_use(ec2: Any, exclude_cluster: str, exclude_lab: str | None = None) -> dict[str, int]:
    """vCPUs of pending/running instances in the region by quota code, except this cluster's own
    and this lab's bastion (both are already in the demand)."""
    used: dict[str, int] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    for page in pages:
        for res in page["Reservations"]:
            for i in res["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                if tags.get("ray-cluster-name") == exclude_cluster or (
                    exclude_lab and tags.get("raylab-lab") == exclude_lab
                ):
                    continue
                market = "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand"
                code = quota_code_for(i["InstanceType"], market)
                if code is None:
                    continue
                cpu = i.get("CpuOptions") or {}
                v = int(cpu.get("CoreCount", 0)) * int(cpu.get("ThreadsPerCore", 1))
                used[code] = used.get(code, 0) + v
    return used


def spot_role_exists(iam: Any) -> bool:
    try:
        iam.get_role(RoleName=SPOT_ROLE)
        return True
    except Exception as e:
        if _code(e) == "NoSuchEntity":
            return False
        raise


@dataclass
class Findings:
    checks: list[Check]
    facts: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_checks(
    *,
    cfg: Mapping[str, Any],
    region: str | None,
    client: Callable[[str], Any],
    cluster_name: str,
    ip_lookup: Callable[[], str],
    price: Callable[[str, str], float | None],
    bastion_price: float | None = None,
    bastion_type: str | None = BASTION_TYPE,
    lab: str | None = None,
) -> Findings:
    """Every preflight check, in order. Stops early only when nothing else can run
    (no region, no credentials); otherwise each check stands alone."""
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    if not region:
        checks.append(
            Check(
                "region",
                False,
                "no AWS region is set",
                "pass --region us-west-2 or export AWS_DEFAULT_REGION=us-west-2",
            )
        )
        return Findings(checks, facts)
    checks.append(Check("region", True, region))
    facts["region"] = region

    try:
        ident = caller_identity(client("sts"))
    except Exception as e:  # noqa: BLE001 - reported as a finding
        checks.append(credentials_failure(e))
        return Findings(checks, facts)
    checks.append(Check("credentials", True, f"account {ident['account']} as {ident['arn']}"))
    facts["account"] = ident["account"]

    def guarded(name: str, fn: Callable[[], list[Check]]) -> None:
        try:
            checks.extend(fn())
        except Exception as e:  # noqa: BLE001 - a check that cannot run is a failure, never a pass
            checks.append(
                Check(
                    name,
                    False,
                    f"could not check: {_code(e)}: {e}",
                    "check the IAM permissions of your credentials (see README: On AWS)",
                )
            )

    wanted = instance_types_of(cfg)
    shapes = launch_shapes(cfg)
    cap = global_cap(cfg)
    vcpus: dict[str, int] = {}

    def _azs() -> list[Check]:
        c, azs = az_check(offerings(client("ec2"), wanted), wanted, region)
        facts["availability_zones"] = azs[:2]
        return [c]

    def _quotas() -> list[Check]:
        vcpus.update(vcpus_of(client("ec2"), sorted({*wanted, *([bastion_type] if bastion_type else [])})))
        out = []
        demands = quota_demands(shapes, vcpus, cap, vcpus.get(bastion_type, 0) if bastion_type else 0)
        unknown = sorted(
            {s.instance_type for s in shapes if quota_code_for(s.instance_type, s.market) is None}
        )
        if unknown:
            out.append(
                Check(
                    "vCPU quota",
                    False,
                    f"raylab only checks Standard-family quotas, not {unknown}",
                    "check that family's vCPU quota in the Service Quotas console, "
                    "or use a Standard type (c, m, r, t...)",
                )
            )
        ec2 = client("ec2")
        in_use = vcpus_in_use(ec2, cluster_name, lab)
        sq = client("service-quotas")
        for code, d in sorted(demands.items()):
            q = quota_value(sq, code)
            facts.setdefault("quotas", {})[code] = {
                "quota": q,
                "need": d.total,
                "in_use": in_use.get(code, 0),
            }
            out.append(quota_check(d, q, in_use.get(code, 0)))
        return out

    def _spot() -> list[Check]:
        if not any(s.market == "spot" and (s.is_head or (s.count and cap != 0)) for s in shapes):
            return [Check("spot service-linked role", True, "not needed: the config launches no spot")]
        if spot_role_exists(client("iam")):
            return [Check("spot service-linked role", True, f"{SPOT_ROLE} exists")]
        return [
            Check(
                "spot service-linked role",
                False,
                f"{SPOT_ROLE} is missing in this account",
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com",
            )
        ]

    def _ip() -> list[Check]:
        try:
            cidr = operator_cidr(ip_lookup())
        except ValueError as e:
            return [
                Check(
                    "operator IP",
                    False,
                    str(e),
                    "set RAYLAB_OPERATOR_IP=<your public IPv4> (bastion SSH is allowed only from it)",
                )
            ]
        facts["operator_cidr"] = cidr
        return [Check("operator IP", True, f"bastion SSH allowed only from {cidr}")]

    def _cost() -> list[Check]:
        fixed = NAT_GATEWAY_PER_HOUR + (bastion_price or 0.0)
        worst = capped(shapes, cap, lambda x: price(x.instance_type, x.market) or 0.0)
        total, lines = cost_per_hour(worst, price, fixed=fixed)
        facts["cost_lines"] = lines
        facts["cost_per_hour_usd"] = total
        if total is None:
            return [
                Check(
                    "cost estimate",
                    False,
                    "; ".join(lines),
                    "add the instance type's price to src/raylab/cluster/instance_types.py",
                )
            ]
        return [
            Check(
                "cost estimate",
                True,
                f"about ${total:.2f}/h at full scale (all max_workers up; NAT + bastion included)",
            )
        ]

    guarded("availability zones", _azs)
    guarded("vCPU quota", _quotas)
    guarded("spot service-linked role", _spot)
    guarded("operator IP", _ip)
    guarded("cost estimate", _cost)
    facts["vcpus"] = vcpus
    return Findings(checks, facts)
