"""The lab's cost from what ran, for `raylab down` and `raylab status` (``raylab.plan.bill``).

`down` reads the usage BEFORE its teardown (AWS forgets terminated instances within about an hour, and
the local twin stops with the teardown), reads again after it where it still can (AWS: the real
termination and NAT deletion times), then bills up to the end of the teardown: an instance whose end
is not known is billed to then, an upper bound by the teardown's length.
On the local target the same code reads the twin: the figure is what the same instances would have
cost on AWS at list prices for the twin's real launch and termination times, at local time scale
(stress tasks run 30 s there, not the plan's 300 s), not AWS time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.plan.bill import Usage

LOCAL_SCALE_NOTE = ("local target: priced as on AWS at list prices, for the twin's real launch and "
                    "termination times at local time scale (stress tasks run 30 s, not the plan's 300 s), "
                    "not AWS time")


def measure(ctx: Context, quiet: bool = False) -> Usage | None:
    """What ran, read from EC2 (or the twin); None (with a warning unless ``quiet``) if it cannot be read."""
    from raylab.aws.session import client
    from raylab.aws.usage import collect

    try:
        return collect(client(ctx, "ec2"), ctx.lab, ctx.names["cluster"], datetime.now(UTC))
    except Exception as e:  # noqa: BLE001 - the cost is a report; it never stops a teardown
        if not quiet:
            ctx.ui.warning(f"cost: could not read what ran ({type(e).__name__}: {e})")
        return None


def report(ctx: Context, usage: Usage | None, scope: str, table: bool = True) -> dict[str, Any] | None:
    """Bill ``usage`` up to now, print the line (and the table), return the ``cost`` JSON object."""
    from raylab.aws.usage import prices_for
    from raylab.plan.bill import COLUMNS, bill, rows, summary

    if usage is None:
        return None
    now = datetime.now(UTC)
    ec2 = None
    if ctx.target.live_prices:  # the market's spot prices (the twin's are not AWS's)
        from raylab.aws.session import client

        try:
            ec2 = client(ctx, "ec2")
        except Exception:  # noqa: BLE001 - the table's estimate, and the note says so
            ec2 = None
    prices = prices_for(usage, now, ec2)
    b = bill(usage, prices, now)
    out = b.as_dict() | {"at": now.isoformat(timespec="seconds"), "price_note": prices.note,
                         "target": ctx.target_name, "time_scale": ctx.target.time_scale}
    scaled = ctx.target.time_scale == "local"  # the twin's times at local time scale, AWS's list prices
    local = " (on AWS at list prices, local time scale)" if scaled else ""
    ctx.ui.info(summary(b, f"{scope}{local}"))
    if table:
        ctx.ui.table(None, COLUMNS, rows(b))
    ctx.ui.info(f"prices: {prices.note}")
    if scaled:
        ctx.ui.info(LOCAL_SCALE_NOTE)
    for n in b.notes:
        ctx.ui.warning(f"cost: {n}")
    return out


def down_cost(ctx: Context, before: Usage | None) -> dict[str, Any] | None:
    """After the teardown: merge what EC2 still knows, bill, print, record in state section ``cost``."""
    from raylab.aws.usage import merge

    if before is None:
        return None
    after = measure(ctx, quiet=True)  # local: the twin has stopped; AWS: real end times
    out = report(ctx, merge(before, after) if after else before, "this lab cost")
    if out is not None:
        ctx.state.put("cost", out)
    return out
