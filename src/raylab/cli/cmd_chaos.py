"""`raylab chaos capacity` and `raylab chaos reclaim`: spot drills on the running cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from raylab.cli.options import Shared, takes_shared

chaos = typer.Typer(help="Spot drills: capacity errors and reclaims on the running cluster.",
                    no_args_is_help=True, rich_markup_mode=None)


@chaos.command("capacity")
@takes_shared(..., "target", "lab", "json_mode", "quiet", "workdir")
def capacity(
    shared: Shared,
    market: Annotated[str, typer.Option("--market", help="Which launches fail: spot | on-demand.")] = "spot",
    for_s: Annotated[float | None, typer.Option(
        "--for", help="Seconds the window lasts (default: until `--clear`).", min=1)] = None,
    instance_type: Annotated[str, typer.Option("--instance-type", help="Only this type.")] = "*",
    az: Annotated[str, typer.Option("--az", help="Only this Availability Zone (default: all).")] = "*",
    clear: Annotated[bool, typer.Option("--clear", help="End every capacity window now.")] = False,
) -> None:
    """Make RunInstances fail with InsufficientInstanceCapacity (local target) for a window,
    as when EC2 has no spot capacity left for a type in an AZ."""
    from raylab.spot.chaos import capacity as do

    ctx = shared.context(yes=True)
    r = do(ctx, market=market.lower(), instance_type=instance_type, az=az, seconds=for_s, clear=clear)
    if clear:
        ctx.ui.success("capacity windows cleared: launches succeed again")
    else:
        f = r["fault"]
        span = f"for {int(for_s)} s" if for_s else "until `raylab chaos capacity --clear`"
        ctx.ui.success(f"{f['market']} launches of {f['instance_type']} in AZ {f['az']} now fail with "
                       f"InsufficientInstanceCapacity {span}")
    ctx.ui.result({"ok": True, **r})


@chaos.command("reclaim")
@takes_shared(..., "target", "lab", "json_mode", "quiet", "workdir")
def reclaim(
    shared: Shared,
    count: Annotated[int, typer.Option("--count", "-n", help="How many running spot instances.")] = 1,
    notice: Annotated[float, typer.Option(
        "--notice", help="Seconds of notice before termination (AWS FIS: 120..900).")] = 20.0,
    no_notice: Annotated[bool, typer.Option("--no-notice", help="Terminate at once, no notice.")] = False,
    node_type: Annotated[str | None, typer.Option("--node-type", help="Only this Ray node type.")] = None,
) -> None:
    """EC2 takes back N spot instances: an interruption notice in each instance's metadata, then
    termination when it expires (--no-notice: at once). Local: the twin does it; AWS: an FIS experiment."""
    from raylab.spot.chaos import reclaim as do

    ctx = shared.context(yes=True)
    how = "without notice" if no_notice else f"with a {notice:g} s notice"
    with ctx.ui.waiting(f"reclaiming {count} spot instance(s) {how}"):
        r = do(ctx, count=count, notice_s=notice, no_notice=no_notice, node_type=node_type)
    ctx.ui.success(f"reclaimed {', '.join(r['instance_ids'])} {how}")
    ctx.ui.result({"ok": True, **r})


def register(app: typer.Typer) -> None:
    app.add_typer(chaos, name="chaos")
