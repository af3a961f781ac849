"""Preflight for the AWS target: everything checked before anything is created.

Pure decision functions (what the config can launch, quota arithmetic, cost, which AZs fit) sit
apart from the boto3 edges (STS, EC2, Service Quotas, IAM) and from the operator's public-IP
lookup, which is injected so tests never reach the internet. Every check returns a ``Check``;
a check that cannot run is a failed check that says why and what to do, never a pass.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
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
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA

SPOT_ROLE = "AWSServiceRoleForEC2Spot"
CHECKIP_URL = "https://checkip.amazonaws.com"
BASTION_TYPE = "t3.micro"  # infra/cloudformation/vpc.yaml's default BastionInstanceType


# --- what the config can launch (pure) ---------------------------------------------------------
@dataclass(frozen=True)
class NodeShape:
    """One node type at its maximum: ``count`` instances of ``instance_type`` in ``market``."""

    node_type: str
    instance_type: str
    market: str  # "on-demand" | "spot"
    count: int
    is_head: bool = False


def market_of(node_config: Mapping[str, Any]) -> str:
    imo = node_config.get("InstanceMarketOptions") or {}
    return "spot" if str(imo.get("MarketType", "")).lower() == "spot" else "on-demand"


def launch_shapes(cfg: Mapping[str, Any]) -> list[NodeShape]:
    """The head plus every worker type at its own max_workers (not yet capped by the global one)."""
    types = cfg.get("available_node_types") or {}
    head = cfg.get("head_node_type")
    shapes: list[NodeShape] = []
    for name, nt in types.items():
        nc = nt.get("node_config") or {}
        itype = str(nc.get("InstanceType", ""))
        if name == head:
            shapes.insert(0, NodeShape(name, itype, market_of(nc), 1, is_head=True))
        else:
            shapes.append(NodeShape(name, itype, market_of(nc), int(nt.get("max_workers", 0) or 0)))
    return shapes


def global_cap(cfg: Mapping[str, Any]) -> int | None:
    cap = cfg.get("max_workers")
    return int(cap) if cap is not None else None


def capped(
    shapes: Iterable[NodeShape], cap: int | None, rank: Callable[[NodeShape], float]
) -> list[NodeShape]:
    """Worker shapes cut down to the global max_workers, keeping the highest ``rank`` first (the
    worst case for a quota or a bill). The head is kept as is."""
    out: list[NodeShape] = []
    left = cap
    for s in sorted(shapes, key=lambda x: (not x.is_head, -rank(x))):
        if s.is_head or left is None:
            out.append(s)
            continue
        n = min(s.count, max(left, 0))
        left -= n
        out.append(NodeShape(s.node_type, s.instance_type, s.market, n))
    return out


def instance_types_of(cfg: Mapping[str, Any]) -> list[str]:
    types = cfg.get("available_node_types") or {}
    return sorted(
        {str((nt.get("node_config") or {}).get("InstanceType", "")) for nt in types.values()} - {""}
    )


@dataclass(frozen=True)
class QuotaDemand:
    code: str
    market: str
    head_vcpus: int
    terms: tuple[tuple[str, int, int], ...]  # (node type, count, vCPUs each) for workers
    bastion_vcpus: int = 0  # the lab's bastion (on-demand) counts against the same quota

    @property
    def total(self) -> int:
        return self.head_vcpus + self.bastion_vcpus + sum(n * v for _, n, v in self.terms)

    @property
    def floor(self) -> int:
        """The least the lab can run with: head + bastion + one worker of the smallest type."""
        return self.head_vcpus + self.bastion_vcpus + min((v for _, n, v in self.terms if n), default=0)


def quota_demands(
    shapes: Iterable[NodeShape],
    vcpus: Mapping[str, int],
    cap: int | None = None,
    bastion_vcpus: int = 0,
) -> dict[str, QuotaDemand]:
    """vCPUs each quota must allow at full scale, keyed by quota code (unknown families skipped).

    Each quota is checked at its own worst case: as many workers of its market as the per-type
    and global max_workers allow, the largest instance types first. The bastion (on-demand,
    a Standard family) is added to the on-demand quota.
    """
    shapes = list(shapes)
    out: dict[str, QuotaDemand] = {}
    codes = {quota_code_for(s.instance_type, s.market) for s in shapes} - {None}
    if bastion_vcpus:
        codes.add(ON_DEMAND_QUOTA)
    for code in sorted(c for c in codes if c):
        mine = [s for s in shapes if quota_code_for(s.instance_type, s.market) == code]
        market = "spot" if code == SPOT_QUOTA else "on-demand"
        d = QuotaDemand(code, market, 0, (), bastion_vcpus if code == ON_DEMAND_QUOTA else 0)
        for s in capped(mine, cap, lambda x: vcpus[x.instance_type]):
            v = int(vcpus[s.instance_type])
            if s.is_head:
                d = replace(d, head_vcpus=d.head_vcpus + v)
            elif s.count:
                d = replace(d, terms=(*d.terms, (s.node_type, s.count, v)))
        if d.total:
            out[code] = d
    return out


def wall_at(d: QuotaDemand, quota: int, in_use: int = 0) -> str:
    """How many workers fit under the quota beside the head and bastion ("8", or "8-17" when the
    worker types differ in size): where stage 4's autoscaler meets the wall."""
    room = max(quota - in_use - d.head_vcpus - d.bastion_vcpus, 0)
    sizes = [v for _, n, v in d.terms if n]
    lo, hi = room // max(sizes), room // min(sizes)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def quota_check(d: QuotaDemand, quota: float, in_use: int = 0) -> Check:
    """Compare what the config can launch with the quota.

    Demand above the quota passes: that wall is what stage 4 shows, and the detail says where it
    stands. Only a quota below head + bastion + one worker refuses (the lab cannot run at all).
    ``in_use``: vCPUs already running in the region against the same quota (other labs in a
    shared account) - they count too.
    """
    q = int(quota)
    name = f"{d.market} vCPU quota"
    if len(d.terms) == 1:
        lhs = f"max_workers {d.terms[0][1]} x {d.terms[0][2]} vCPU"
    else:
        lhs = " + ".join(f"{t} {n} x {v} vCPU" for t, n, v in d.terms) or "no workers"
    if d.head_vcpus:
        lhs += f" + head {d.head_vcpus}"
    if d.bastion_vcpus:
        lhs += f" + bastion {d.bastion_vcpus}"
    used = f" + {in_use} in use" if in_use else ""
    need = d.total + in_use
    detail = f"{lhs}{used} = {need} {'<=' if need <= q else '>'} quota {q}"
    if need <= q:
        return Check(name, True, f"{detail} ({d.code})")
    raise_to = f"request an increase of {QUOTA_NAMES[d.code]} ({d.code})"
    floor = d.floor + in_use
    if d.terms and q >= floor:
        return Check(
            name,
            True,
            f"{detail}: the wall stands at about {wall_at(d, q, in_use)} worker(s) "
            f"(stage 4 shows it) ({d.code})",
            f"to lift the wall, {raise_to} to >= {need}",
        )
    parts = [f"head {d.head_vcpus}"] if d.head_vcpus else []
    parts += [f"bastion {d.bastion_vcpus}"] if d.bastion_vcpus else []
    parts += [f"one worker {d.floor - d.head_vcpus - d.bastion_vcpus}"] if d.terms else []
    parts += [f"{in_use} in use"] if in_use else []
    return Check(
        name,
        False,
        f"{detail}, below {' + '.join(parts)} = {floor}: the lab cannot start",
        f"{raise_to} to >= {floor} (better >= {need}), or use smaller instance types",
    )


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


def workers_that_fit(
    quota: int, head_vcpus: int, vcpus_each: int, in_use: int = 0, bastion_vcpus: int = 0
) -> int:
    """How many workers of ``vcpus_each`` fit beside the head and the bastion (the README's
    planning rule)."""
    return max(math.floor((quota - in_use - head_vcpus - bastion_vcpus) / vcpus_each), 0)
