"""What a lab cost, measured from what ran (pure): instance-seconds by type and market from launch
and end times, NAT gateway hours, priced from the same table as ``raylab plan``.

Rules (AWS's, for Linux): per-second billing with a 60 s minimum per instance run; an instance still
running is billed up to ``now``; spot instances at the spot price, on-demand at the on-demand price;
a NAT gateway by the hour it exists (partial hours as fractions here: an "about" figure) plus data
processed per GB when known. A type without a price is a note, never a crash. ``bill`` has no I/O:
``raylab.aws.usage`` collects the records, the CLI prints the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MIN_BILLED_S = 60.0  # EC2 Linux: per-second billing, 60 s minimum each time an instance starts


@dataclass(frozen=True)
class UsedInstance:
    id: str
    type: str
    market: str  # "spot" | "on-demand" (raylab.cluster.vocab.Market)
    launched_at: datetime
    ended_at: datetime | None = None  # None: still running


@dataclass(frozen=True)
class UsedNat:
    id: str
    created_at: datetime
    deleted_at: datetime | None = None  # None: still there
    data_gb: float | None = None  # None: not known (EC2's API does not say; CloudWatch would)


@dataclass(frozen=True)
class Usage:
    instances: tuple[UsedInstance, ...] = ()
    nat_gateways: tuple[UsedNat, ...] = ()
    notes: tuple[str, ...] = ()  # what the collector could not see


@dataclass(frozen=True)
class BillPrices:
    ondemand: Mapping[str, float]  # instance type -> USD per hour
    spot: Mapping[str, float]
    nat_per_hour: float
    nat_per_gb: float
    note: str = ""  # where the prices come from


@dataclass(frozen=True)
class BillLine:
    type: str
    market: str
    count: int
    hours: float
    usd: float | None  # None: no price for this type
    usd_per_hour: float | None
    running: int  # how many still run at ``now``


@dataclass(frozen=True)
class Bill:
    lines: tuple[BillLine, ...]
    nat_hours: float
    nat_usd: float
    total_usd: float
    per_hour_now: float  # what runs at ``now`` costs per hour
    notes: tuple[str, ...] = field(default=())

    @property
    def instance_hours(self) -> float:
        return sum(ln.hours for ln in self.lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_usd": round(self.total_usd, 2),
            "per_hour_now_usd": round(self.per_hour_now, 4),
            "instances": [{"type": ln.type, "market": ln.market, "count": ln.count, "running": ln.running,
                           "hours": round(ln.hours, 4), "usd_per_hour": ln.usd_per_hour,
                           "usd": None if ln.usd is None else round(ln.usd, 4)} for ln in self.lines],
            "instance_hours": round(self.instance_hours, 4),
            "nat_gateway": {"hours": round(self.nat_hours, 4), "usd": round(self.nat_usd, 4)},
            "notes": list(self.notes),
        }


def billed_seconds(start: datetime, end: datetime) -> float:
    """Whole seconds from start to end, at least AWS's 60 s minimum."""
    return max(MIN_BILLED_S, float(int((end - start).total_seconds())))


def bill(usage: Usage, prices: BillPrices, now: datetime) -> Bill:
    notes = list(usage.notes)
    groups: dict[tuple[str, str], list[UsedInstance]] = {}
    for inst in usage.instances:
        groups.setdefault((inst.type, inst.market), []).append(inst)
    lines: list[BillLine] = []
    per_hour_now = 0.0
    for (itype, market), insts in sorted(groups.items()):
        table = prices.spot if market == "spot" else prices.ondemand
        rate = table.get(itype)
        secs = sum(billed_seconds(i.launched_at, i.ended_at or now) for i in insts)
        running = sum(1 for i in insts if i.ended_at is None)
        if rate is None:
            notes.append(f"no price for {itype} ({market}): its {secs / 3600:.2f} instance-hours are left "
                         "out of the total")
        else:
            per_hour_now += running * rate
        lines.append(BillLine(itype, market, len(insts), secs / 3600.0,
                              None if rate is None else secs / 3600.0 * rate, rate, running))
    nat_hours = sum(max(0.0, ((n.deleted_at or now) - n.created_at).total_seconds()) / 3600.0
                    for n in usage.nat_gateways)
    nat_usd = nat_hours * prices.nat_per_hour
    per_hour_now += prices.nat_per_hour * sum(1 for n in usage.nat_gateways if n.deleted_at is None)
    known_gb = [n.data_gb for n in usage.nat_gateways if n.data_gb is not None]
    nat_usd += sum(known_gb) * prices.nat_per_gb
    if usage.nat_gateways and len(known_gb) < len(usage.nat_gateways):
        notes.append(f"NAT gateway data processing (${prices.nat_per_gb}/GB) not included: "
                     "the data volume is not known")
    total = sum(ln.usd or 0.0 for ln in lines) + nat_usd
    return Bill(tuple(lines), nat_hours, nat_usd, total, per_hour_now, tuple(notes))


def summary(b: Bill, scope: str = "this lab cost") -> str:
    """One line: "this lab cost about $1.23: 4.5 instance-hours (...), NAT gateway 1.5 h ($0.07)"."""
    parts = [f"{ln.count} x {ln.type} {ln.market} {ln.hours:.2f} h" for ln in b.lines]
    inst = f"{b.instance_hours:.2f} instance-hours ({', '.join(parts)})" if parts else "no instances"
    return (f"{scope} about ${b.total_usd:.2f}: {inst}, NAT gateway {b.nat_hours:.2f} h "
            f"(${b.nat_usd:.2f}); now ${b.per_hour_now:.2f}/h")


def rows(b: Bill) -> Sequence[Sequence[Any]]:
    """The table under the line: type, market, count, running, hours, $/h, $."""
    out: list[list[Any]] = [[ln.type, ln.market, ln.count, ln.running, f"{ln.hours:.3f}",
                             "?" if ln.usd_per_hour is None else f"{ln.usd_per_hour:.4f}",
                             "?" if ln.usd is None else f"{ln.usd:.2f}"] for ln in b.lines]
    if b.nat_hours:
        out.append(["NAT gateway", "-", "", "", f"{b.nat_hours:.3f}", "", f"{b.nat_usd:.2f}"])
    out.append(["total", "", "", "", "", f"{b.per_hour_now:.4f}", f"{b.total_usd:.2f}"])
    return out


COLUMNS = ("type", "market", "count", "running", "hours", "$/h", "$")
