"""Quota arithmetic for the AWS preflight: what a config can launch and what each vCPU quota must allow.

Pure functions only (no boto3): the node shapes a config launches at full scale (head plus every
worker type at its max_workers, cut to the global cap, the largest types first), the vCPUs each
Standard-family quota must allow for them (the bastion counted on-demand), where stage 4's autoscaler
meets the quota's wall, and the preflight ``Check`` that compares demand with a quota: above it passes
and names the wall; only below head + bastion + one worker does it refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from raylab.aws.quotas import QUOTA_NAMES, quota_code_for
from raylab.checks import Check
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA


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


def workers_that_fit(
    quota: int, head_vcpus: int, vcpus_each: int, in_use: int = 0, bastion_vcpus: int = 0
) -> int:
    """How many workers of ``vcpus_each`` fit beside the head and the bastion (the README's
    planning rule)."""
    return max(math.floor((quota - in_use - head_vcpus - bastion_vcpus) / vcpus_each), 0)
