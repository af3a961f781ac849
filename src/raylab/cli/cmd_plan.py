"""`raylab plan`: forecast the autoscaler (rounds, peak, quota wall, makespan) and the cost, before launch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from raylab.cli.options import JsonOpt, QuietOpt, TargetOpt
from raylab.errors import RaylabError


def _num(raw: str | None, flag: str, *, integer: bool = False, allow_none: bool = False,
         positive: bool = False) -> Any:
    if raw is None:
        return None
    if allow_none and raw.strip().lower() in ("none", "unlimited", "inf"):
        return None
    try:
        x = float(raw)
    except ValueError as e:
        raise RaylabError(f"{flag} {raw!r} is not a number", f"give {flag} a number") from e
    if x == float("inf"):
        raise RaylabError(f"{flag} {raw!r} must be a finite number", f"fix {flag}")
    if x != x or x < 0 or (positive and x == 0):
        raise RaylabError(f"{flag} {raw!r} must be {'> 0' if positive else '>= 0'}", f"fix {flag}")
    if integer:
        if x != int(x):
            raise RaylabError(f"{flag} {raw!r} must be a whole number", f"fix {flag}")
        return int(x)
    return x


def _prices(target: str, instance_types: list[str], region: str, ui: Any) -> Any:
    from raylab.plan import cost
    from raylab.targets import get_target

    if get_target(target).live_prices:
        try:
            import boto3

            from raylab.aws.session import client
            from raylab.cli.options import make_context

            ctx = make_context(target=target, quiet=True, one_lab=False)
            pricing = boto3.client("pricing", region_name="us-east-1")
            return cost.live_prices(pricing, client(ctx, "ec2"), instance_types, region)
        except RaylabError:
            raise
        except Exception as e:  # noqa: BLE001 - no credentials/network: say so, use the offline table
            ui.warning(f"live AWS prices unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                       "using the offline table")
    return cost.offline_prices(instance_types)


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text)


ConfigOpt = Annotated[Path | None, _opt("--config", "Ray cluster YAML (default configs/ray-cluster.yaml).")]
CompareOpt = Annotated[str | None, _opt(
    "--compare", "PARAM=V1,V2 with PARAM one of upscaling_speed, idle_timeout_minutes, max_workers, "
    "min_workers (first worker type), quota (on-demand vCPUs), boot_seconds.")]


def plan(
    config: ConfigOpt = None,
    scenario: Annotated[str | None, typer.Option(
        "--scenario", "-s", help="Scenario overlay: static | autoscale | spot | mixed "
        "(default: autoscale with the default config, none with --config).")] = None,
    tasks: Annotated[str, _opt("--tasks", "Number of tasks submitted at once.")] = "480",
    cpus: Annotated[str, _opt("--cpus", "CPUs per task.")] = "1",
    duration: Annotated[str, _opt("--duration", "Seconds each task runs.")] = "300",
    quota_ondemand: Annotated[str, _opt("--quota-ondemand",
                                        "On-demand vCPU quota, head included ('none': no limit).")] = "160",
    quota_spot: Annotated[str, _opt("--quota-spot",
                                    "Spot vCPU quota, separate from on-demand ('none': no limit).")] = "none",
    other_vcpus: Annotated[str, _opt("--other-vcpus", "vCPUs of other on-demand instances counting toward "
                                     "the same quota (default 2: the lab's t3.micro bastion).")] = "2",
    boot_seconds: Annotated[str, _opt("--boot-seconds", "Launch call -> Ray node registered (s).")] = "120",
    trainees: Annotated[str, _opt("--trainees", "Trainees each running this (cost x K).")] = "1",
    compare: CompareOpt = None,
    scale: Annotated[str, _opt("--scale", "Ray CPUs per node = vCPUs / SCALE (local target's scale).")] = "1",
    boots: Annotated[str, _opt("--max-concurrent-boots",
                               "Nodes booting at once ('none': all, as on AWS; local twin: 2 per "
                               "core).")] = "none",
    worker_start: Annotated[str, _opt("--worker-start-seconds", "Seconds Ray takes to start a task's "
                                      "worker process on a fresh CPU slot.")] = "0",
    tick: Annotated[str, _opt("--tick-seconds", "The autoscaler's loop (s): Ray's 5 at the plan's time; "
                              "the local head runs 1, its time scale (stage 4 forecasts with it).")] = "5",
    png: Annotated[Path | None, _opt("--png", "Also write a chart of workers over time (PNG).")] = None,
    target: TargetOpt = "local",
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Predict what Ray 2.60's autoscaler will do (launch rounds, peak workers, the quota wall,
    makespan, idle scale-down) and what the run costs, before anything is launched. The forecast runs
    Ray's own autoscaler code against a simulated cloud."""
    from raylab.context import SCENARIOS, TARGETS, project_root
    from raylab.ui import UI

    ui = UI(json_mode=json_mode, quiet=quiet)
    if target.lower() not in TARGETS:
        raise RaylabError(f"unknown target {target!r}", "use --target local (default) or --target aws")
    if scenario is None and config is None:
        scenario = "autoscale"
    if scenario is not None and scenario.lower() not in SCENARIOS:
        raise RaylabError(f"unknown scenario {scenario!r}", f"use one of: {', '.join(SCENARIOS)}")
    from raylab.plan import inputs
    from raylab.plan.forecast import simulate
    from raylab.plan.model import Workload
    from raylab.targets import get_target

    workload = Workload(tasks=_num(tasks, "--tasks", integer=True, positive=True),
                        cpus=_num(cpus, "--cpus", integer=True, positive=True),
                        duration_s=_num(duration, "--duration", positive=True))
    k = _num(trainees, "--trainees", integer=True, positive=True)
    comp = inputs.parse_compare(compare) if compare else None
    cfg_path = config or project_root() / "configs" / "ray-cluster.yaml"
    scen = scenario.lower() if scenario else None
    cfg = inputs.load_config(cfg_path, scen, fallback_scenarios=project_root() / "configs" / "scenarios")
    base = inputs.plan_input(
        cfg, workload=workload,
        quota_ondemand=_num(quota_ondemand, "--quota-ondemand", integer=True, allow_none=True),
        quota_spot=_num(quota_spot, "--quota-spot", integer=True, allow_none=True),
        boot_seconds=_num(boot_seconds, "--boot-seconds"),
        other_vcpus=_num(other_vcpus, "--other-vcpus", integer=True),
        scale=_num(scale, "--scale", integer=True, positive=True),
        worker_start_s=_num(worker_start, "--worker-start-seconds"),
        max_concurrent_boots=_num(boots, "--max-concurrent-boots", integer=True, allow_none=True,
                                  positive=True),
        request_timeout_s=get_target(target.lower()).request_timeout_s,  # as the target's head runs
        tick_s=float(_num(tick, "--tick-seconds", integer=True, positive=True)),  # Ray: whole seconds
    )
    from raylab.plan import cost as costmod
    from raylab.plan import render
    from raylab.plan.summary import forecast_dict

    region = str((cfg.get("provider") or {}).get("region", "us-west-2"))
    prices = _prices(target.lower(), [s.instance_type for s in (base.head, *base.workers)], region, ui)

    def one(p: Any) -> dict[str, Any]:
        try:
            fc = simulate(p)
        except (ValueError, AssertionError) as e:  # Ray's own config checks (e.g. min_workers > max)
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RaylabError(f"Ray rejects this cluster setting: {detail}",
                              "fix min_workers/max_workers in the config or the --compare values") from None
        return forecast_dict(p, fc, costmod.run_cost(p, fc, prices, k))

    if comp is None:
        with ui.waiting("running Ray's autoscaler against a simulated cloud"):
            result = one(base)
        result.update(config=str(cfg_path), scenario=scen)
        if png:
            render.write_png(png, [("forecast", result)])
        if json_mode:
            ui.result(result)
            return
        render.show(ui, result)
    else:
        param, values = comp
        with ui.waiting(f"running {len(values)} forecasts"):
            results = [one(inputs.vary(base, param, v)) for v in values]
        for v, r in zip(values, results, strict=True):
            r["setting"] = {param: v}
        if png:
            render.write_png(png, [(f"{param}={v:g}", r) for v, r in zip(values, results, strict=True)])
        if json_mode:
            ui.result({"compare": {"param": param, "values": values, "results": results},
                       "config": str(cfg_path), "scenario": scen})
            return
        render.show_compare(ui, param, values, results)
    if png:
        ui.success(f"chart written to {png}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
