"""A lab's expiry and its "busy" lease, as tags (pure): what `room status` shows and `room sweep` obeys.

- ``raylab-expires`` (ISO 8601 UTC, e.g. ``2026-12-06T21:00:00Z``) and ``raylab-owner`` are tagged on
  the lab's CloudFormation stack when stage 1 creates it (CloudFormation passes stack tags on to the
  VPC, subnets, NAT gateway and bastion it creates). ``--ttl`` sets the expiry (default 10 h); a re-run
  keeps the expiry the stack already has.
- ``raylab-busy`` on the lab's VPC is a lease: ``<command> pid <pid> on <host> until <ISO time>``. A
  running `raylab lab/up/stage/down` renews it every minute for three minutes ahead
  (``raylab.room.busy.Heartbeat``) and writes ``idle`` when it ends. A lease whose time has passed is a
  command that was killed: not busy. Without a VPC yet (stage 1 creating), a stack ``*_IN_PROGRESS``
  says the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from raylab.errors import RaylabError

EXPIRES_TAG = "raylab-expires"
OWNER_TAG = "raylab-owner"
BUSY_TAG = "raylab-busy"
PROGRESS_TAG = "raylab-progress"  # on the VPC: "passed 3 cluster", "failed 4 stress: check ..."
IDLE = "idle"
DEFAULT_TTL_S = 10 * 3600
MIN_TTL_S, MAX_TTL_S = 60, 7 * 24 * 3600
LEASE_S, BEAT_S = 180.0, 60.0

_PART = re.compile(r"(\d+)([dhm])")
_UNIT = {"d": 86400, "h": 3600, "m": 60}
_BUSY = re.compile(r"^(?P<what>.+) until (?P<until>\S+)$")


def parse_ttl(text: str) -> int:
    """``10h``, ``90m``, ``1h30m``, ``2d`` -> seconds (1 minute to 7 days); else one clear error."""
    s = text.strip().lower()
    hint = "use e.g. --ttl 10h, 90m or 1h30m (1 minute to 7 days)"
    if not s or _PART.sub("", s) != "":
        raise RaylabError(f"--ttl {text!r} is not a duration", hint)
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(s))
    if not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise RaylabError(f"--ttl {text!r} is out of range", hint)
    return seconds


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """An ISO time as raylab writes it (``...Z``); None when missing or not a time (edited by hand)."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def default_owner() -> str:
    """Who creates the lab: the OS user at this host (``raylab-owner``)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def stack_tags(lab: str, existing: Mapping[str, str], ttl_s: int | None, now: datetime,
               owner: str) -> dict[str, str]:
    """The tags stage 1 gives the lab's stack: the lab, its owner, its expiry. An existing stack's
    valid expiry is kept unless ``--ttl`` was given again (then it counts from now)."""
    kept = parse_time(existing.get(EXPIRES_TAG)) if ttl_s is None else None
    expires = kept or now + timedelta(seconds=ttl_s or DEFAULT_TTL_S)
    return {"raylab-lab": lab, OWNER_TAG: existing.get(OWNER_TAG) or owner, EXPIRES_TAG: iso(expires)}


@dataclass(frozen=True)
class Expiry:
    expires: str | None  # the tag as written
    expired: bool | None  # None: no readable expiry
    finding: str | None = None


def expiry_of(tags: Mapping[str, str], now: datetime) -> Expiry:
    raw = tags.get(EXPIRES_TAG)
    if raw is None:
        return Expiry(None, None)
    t = parse_time(raw)
    if t is None:
        return Expiry(raw, None, f"tag {EXPIRES_TAG}={raw!r} is not a time (edited by hand?): "
                                 "never swept as expired")
    return Expiry(raw, now >= t)


def busy_value(command: str, pid: int, host: str, until: datetime) -> str:
    return f"`raylab {command}` pid {pid} on {host} until {iso(until)}"


@dataclass(frozen=True)
class Busy:
    busy: bool
    by: str | None = None  # what holds the lease, or the stack in progress


def busy_of(vpc_tags: Mapping[str, str], stack_statuses: list[str], now: datetime) -> Busy:
    """Mid-command? A live lease on the lab's VPC, or its stack being created/updated/deleted."""
    raw = vpc_tags.get(BUSY_TAG, IDLE)
    m = _BUSY.match(raw)
    until = parse_time(m.group("until")) if m else None
    if m and until and until > now:
        return Busy(True, m.group("what"))
    moving = [s for s in stack_statuses if s.split()[-1].endswith("_IN_PROGRESS")]
    if moving:
        return Busy(True, f"stack {moving[0]}")
    return Busy(False)
