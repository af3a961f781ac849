"""`raylab preflight`: what the AWS target checks before anything is created."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raylab.cli.options import Shared, takes_shared
from raylab.errors import RaylabError
from raylab.options import LabOptions

RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region (default: AWS_DEFAULT_REGION).")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Check this cluster YAML instead of the lab's config + scenario."),
]
IpOpt = Annotated[
    str | None,
    typer.Option(
        "--operator-ip",
        help="Your public IPv4 for the bastion's SSH rule (default: detected).",
        envvar="RAYLAB_OPERATOR_IP",
    ),
]


@takes_shared("target", "lab", "scenario", ..., "json_mode", "quiet", "workdir")
def preflight(shared: Shared, region: RegionOpt = None, config: ConfigOpt = None,
              operator_ip: IpOpt = None) -> None:
    """Check credentials, region, AZs, vCPU quotas, the spot role, your public IP and the cost per hour
    before anything is created. Creates nothing. Each failed check says how to fix it."""
    opts = LabOptions(region=region or None, config=config, operator_ip=operator_ip or None)
    ctx = shared.context(opts)
    checks, facts = ctx.target.preflight_report(ctx)  # aws: read-only, nothing written to .raylab/
    for c in checks:
        (ctx.ui.success if c.ok else ctx.ui.error)(
            f"{c.name}: {c.detail}" + (f" ({c.hint})" if c.hint and not c.ok else "")
        )
    for line in facts.get("cost_lines", []):
        ctx.ui.info(f"  {line}")
    ok = all(c.ok for c in checks)
    ctx.ui.result(
        {
            "ok": ok,
            "target": ctx.target_name,
            "lab": ctx.lab,
            "checks": [c.as_dict() for c in checks],
            "facts": facts,
        }
    )
    if not ok:
        bad = next(c for c in checks if not c.ok)
        raise RaylabError(f"preflight: {bad.name}: {bad.detail}", bad.hint)
    ctx.ui.success("preflight passed: nothing was created")


def register(app: typer.Typer) -> None:
    app.command("preflight")(preflight)
