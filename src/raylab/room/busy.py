"""The "busy" lease a running command keeps on its lab's VPC (see ``raylab.room.expiry``).

``Heartbeat`` renews it from a daemon thread every ``BEAT_S`` for ``LEASE_S`` ahead, and writes
``idle`` when the command ends; a killed command's lease simply runs out. Writing it never fails the
command: a lab without a VPC yet, a twin that is gone or a missing permission only skip a beat.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from raylab.aws.ec2 import lab_filter
from raylab.room.expiry import BEAT_S, BUSY_TAG, IDLE, LEASE_S, PROGRESS_TAG, busy_value

if TYPE_CHECKING:
    from raylab.context import Context

T = TypeVar("T")


def tag_lab_vpcs(ec2: Any, lab: str, value: str, key: str = BUSY_TAG) -> int:
    """Write ``key=value`` on the lab's VPCs (found by the lab tag); how many were tagged."""
    ids = [v["VpcId"] for v in ec2.describe_vpcs(Filters=lab_filter(lab))["Vpcs"]]
    if ids:
        ec2.create_tags(Resources=ids, Tags=[{"Key": key, "Value": value[:255]}])
    return len(ids)


class Heartbeat:
    """``with Heartbeat(lambda: client(ctx, "ec2"), lab, "stage 4"):`` holds the lab's lease."""

    def __init__(self, ec2: Callable[[], Any], lab: str, command: str, beat_s: float = BEAT_S,
                 lease_s: float = LEASE_S) -> None:
        self._ec2, self.lab, self.command = ec2, lab, command
        self.beat_s, self.lease_s = beat_s, lease_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Renew now (also called between stages, so stage 1's new VPC is marked at once); nothing
        before ``__enter__`` or after ``__exit__`` (a `--verify-only` run holds no lease)."""
        if self._thread is None or self._stop.is_set():
            return
        until = datetime.now(UTC) + timedelta(seconds=self.lease_s)
        with contextlib.suppress(Exception):  # noqa: BLE001 - a lease is a courtesy, never a failure
            tag_lab_vpcs(self._ec2(), self.lab, busy_value(self.command, os.getpid(), socket.gethostname(),
                                                           until))

    def progress(self, text: str) -> None:
        """The lab's last stage, for `room status` (``raylab-progress``: "passed 3 cluster")."""
        if self._thread is None:
            return
        with contextlib.suppress(Exception):  # noqa: BLE001 - as beat()
            tag_lab_vpcs(self._ec2(), self.lab, text, PROGRESS_TAG)

    def stage(self, label: str, run: Callable[[], T]) -> T:
        """Run one stage (``label``: "4 stress") and tag how it ended: "passed 4 stress", or "failed 4
        stress: check '...'" (a failed check), or "failed 4 stress" (an error, Ctrl-C)."""
        try:
            out = run()
        except BaseException as e:
            check = getattr(e, "check", None)
            self.progress(f"failed {label}" + (f": check '{check}'" if check else ""))
            raise
        self.progress(f"passed {label}")
        self.beat()  # stage 1's new VPC carries the lease at once
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.beat_s):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="raylab-busy-lease", daemon=True)
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # noqa: BLE001 - e.g. `down` removed the VPC: nothing to free
            tag_lab_vpcs(self._ec2(), self.lab, IDLE)


def lab_lease(ctx: Context, command: str) -> Heartbeat:
    """The lease of ``ctx``'s lab for `raylab <command>`, written through the target's endpoint."""
    from raylab.aws.session import client

    return Heartbeat(lambda: client(ctx, "ec2"), ctx.lab, command)
