"""`raylab dashboard`: the Ray dashboard's URL on 127.0.0.1 (aws: opens an SSH tunnel via the bastion)."""

from __future__ import annotations

from typing import Annotated

import typer

from raylab.cli.options import Shared, takes_shared

CloseOpt = Annotated[bool, typer.Option("--close", help="Close the dashboard's SSH tunnel (aws).")]


@takes_shared("target", "lab", ..., "json_mode", "quiet", "workdir")
def dashboard(shared: Shared, close: CloseOpt = False) -> None:
    """Print the Ray dashboard's URL. On aws the tunnel (bound to 127.0.0.1) stays open until
    `raylab dashboard --close` or `raylab down`; it is recorded by PID under .raylab/."""
    ctx = shared.context()
    if close:
        stop = getattr(ctx.target, "stop_tunnel", None)
        if stop is not None:
            stop(ctx)
        ctx.ui.result({"ok": True, "closed": True})
        ctx.ui.success("dashboard tunnel closed")
        return
    url = ctx.target.dashboard_url(ctx)
    ctx.ui.result({"ok": True, "url": url, "target": ctx.target_name})
    if not shared.json_mode:
        typer.echo(url)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
