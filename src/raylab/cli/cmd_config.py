"""`raylab config check FILE` and `raylab config render`: the cluster YAML before `ray up` sees it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from raylab.cli.options import JsonOpt, LabOpt, QuietOpt, ScenarioOpt, TargetOpt, WorkdirOpt, make_context
from raylab.errors import RaylabError
from raylab.ui import UI

if TYPE_CHECKING:
    from raylab.cluster.validate import Finding

config_app = typer.Typer(
    help="Check a Ray cluster YAML, or render the lab's cluster YAML for a target and scenario.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _print_findings(ui: UI, findings: list[Finding]) -> None:
    """One line per finding on stderr: `ERROR|WARN <key path>: <what is wrong> (<what to do>)`."""
    for f in findings:
        if f.level == "ERROR":  # errors explain a non-zero exit: shown even with --quiet
            ui.err.print(f.line(), style="red", markup=False, emoji=False, highlight=False)
        elif not ui.quiet:
            ui.err.print(f.line(), style="yellow", markup=False, emoji=False, highlight=False)


def _region_of(path: Path) -> str:
    """provider.region of a cluster YAML, read leniently (the checks report what is wrong)."""
    from raylab.aws.session import DEFAULT_REGION
    from raylab.cluster.config import parse_yaml
    from raylab.cluster.validate import is_placeholder

    try:
        region = parse_yaml(path.read_text(encoding="utf-8"))["provider"]["region"]
    except Exception:  # noqa: BLE001
        return DEFAULT_REGION
    return region if isinstance(region, str) and region and not is_placeholder(region) else DEFAULT_REGION


@config_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The cluster YAML to check.", show_default=False)],
    target: TargetOpt = "local",
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Validate a Ray cluster YAML with Ray 2.60's own schema validator and raylab's rules
    (removed keys, typos, numbers, min/max, resources, EC2 instance types, security).

    Prints one line per finding, `ERROR|WARN <key path>: <what is wrong> (<what to do>)`, and exits
    0 when there is no ERROR, 2 otherwise. With --target aws it also asks EC2 (describe_instance_types)
    whether the instance types exist in the file's region."""
    from raylab.cluster.validate import ERROR, WARN, check_file

    ui = UI(json_mode=json_mode, quiet=quiet)
    t = target.lower()
    if t not in ("local", "aws"):
        raise RaylabError(f"unknown target {target!r}", "use --target local (default) or --target aws")
    describe = None
    if t == "aws":
        from raylab.cluster.instance_types import ec2_describer

        describe = ec2_describer(_region_of(file))
    findings = check_file(file, describe=describe)
    errors = sum(f.level == ERROR for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    _print_findings(ui, findings)
    ui.result({"ok": errors == 0, "file": str(file), "target": t, "errors": errors, "warnings": warnings,
               "findings": [f.as_dict() for f in findings]})
    if not findings:
        ui.success(f"{file}: no findings")
    else:
        ui.info(f"{file}: {errors} error(s), {warnings} warning(s)")
    if errors:
        raise typer.Exit(2)


def _read_outputs(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RaylabError(f"--outputs {path}: no such file", "pass a JSON file of the stage outputs") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RaylabError(f"--outputs {path}: cannot read it: {e}", "pass a readable JSON file") from e
    except json.JSONDecodeError as e:
        raise RaylabError(f"--outputs {path}: not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}",
                          'write one JSON object, e.g. {"PrivateSubnetIds": "subnet-a,subnet-b", ...}') from e
    if not isinstance(data, dict):
        raise RaylabError(f"--outputs {path}: the top level is not a JSON object",
                          'write one JSON object, e.g. {"PrivateSubnetIds": "subnet-a,subnet-b", ...}')
    return _flat(data)


def _flat(data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, list):
            out[str(k)] = ",".join(str(x) for x in v)
        elif isinstance(v, str | int | float) and not isinstance(v, bool):
            out[str(k)] = str(v)
    return out


@config_app.command("render")
def render_cmd(
    target: TargetOpt = "local",
    scenario: ScenarioOpt = "autoscale",
    lab: LabOpt = None,
    outputs: Annotated[
        Path | None,
        typer.Option("--outputs", help="JSON object of stage outputs (CloudFormation + Terraform). "
                     "Default: the outputs stages 1-2 stored under --workdir."),
    ] = None,
    scale: Annotated[int | None, typer.Option(
        "--scale", min=1, help="Local target: vCPUs per local CPU (default: the target's; 8 locally).",
    )] = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Print the final cluster YAML that `ray up` (aws) or the local Ray head (local) gets:
    configs/ray-cluster.yaml + configs/scenarios/<scenario>.yaml, every placeholder filled."""
    from raylab.cluster.config import dump_yaml, render
    from raylab.cluster.validate import ERROR, validate

    ctx = make_context(target, lab, json_mode, False, scenario, workdir, quiet)
    state = ctx.state.load()
    if outputs is not None:
        outs = _read_outputs(outputs)
    else:
        outs = _flat({**state.get("network", {}), **state.get("identity", {})})
    cfg = render(target=ctx.target_name, scenario=ctx.scenario, lab=ctx.lab, outputs=outs,
                 scale=scale or ctx.target.default_scale, endpoint_url=ctx.target.rendered_endpoint(ctx))
    findings = validate(cfg)
    _print_findings(ctx.ui, findings)
    errors = sum(f.level == ERROR for f in findings)
    ctx.ui.result({"ok": errors == 0, "target": ctx.target_name, "scenario": ctx.scenario, "lab": ctx.lab,
                   "config": cfg, "findings": [f.as_dict() for f in findings]})
    if errors:  # never hand out a config `ray up` would reject
        raise RaylabError(f"the rendered config has {errors} error(s); nothing printed",
                          "see the ERROR lines above")
    if not json_mode:
        sys.stdout.write(dump_yaml(cfg))
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
