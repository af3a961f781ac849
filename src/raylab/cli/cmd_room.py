"""`raylab room plan`: what a room of trainees needs before class (quotas, cost, stage 4's stagger)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from raylab.cli.options import JsonOpt, QuietOpt, TargetOpt, YesOpt

room_app = typer.Typer(
    help="The room: an instructor's plan and view of every lab in one account and region.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text)


@room_app.command("plan")
def plan(
    trainees: Annotated[str, _opt("--trainees", "Trainees in the room, each with their own lab (1-100).")],
    stagger: Annotated[str | None, _opt("--stagger", "Trainees running stage 4 at once (default: what "
                                        "--quota-ondemand holds, else everyone).")] = None,
    hours: Annotated[str, _opt("--hours", "Hours every lab stays up (the class day).")] = "8",
    quota_ondemand: Annotated[str | None, _opt(
        "--quota-ondemand", "The account's on-demand vCPU quota now (L-1216C47A), to say what fits and what "
        "to request.")] = None,
    quota_spot: Annotated[str | None, _opt("--quota-spot", "The account's spot vCPU quota now "
                                           "(L-34B43A08).")] = None,
    config: Annotated[Path | None, _opt("--config",
                                        "Ray cluster YAML (default configs/ray-cluster.yaml).")] = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Quota requests, the cost of the day and how many trainees can run stage 4 at once, from the
    same forecast as `raylab plan` (Ray's own autoscaler code on a simulated cloud). Offline."""
    from raylab.room import plan as rp
    from raylab.ui import UI

    ui = UI(json_mode=json_mode, quiet=quiet)
    n = rp.parse_count(trainees, "--trainees", hi=rp.MAX_TRAINEES) or 0  # required: never None
    k = rp.parse_count(stagger, "--stagger", hi=n)
    h = rp.parse_hours(hours)
    q_od = rp.parse_count(quota_ondemand, "--quota-ondemand", lo=0)
    q_spot = rp.parse_count(quota_spot, "--quota-spot", lo=0)

    from raylab.cluster import instance_types
    from raylab.context import project_root
    from raylab.plan import cost, inputs
    from raylab.plan.forecast import simulate

    cfg_path = config or project_root() / "configs" / "ray-cluster.yaml"
    fallback = project_root() / "configs" / "scenarios"
    bastion = instance_types.lookup(rp.BASTION_TYPE)
    bastion_vcpus = bastion.vcpus if bastion else 2
    p4, p6 = rp.stage_plans(inputs.load_config(cfg_path, "autoscale", fallback_scenarios=fallback),
                            inputs.load_config(cfg_path, "mixed", fallback_scenarios=fallback), bastion_vcpus)
    prices = cost.offline_prices([s.instance_type for p in (p4, p6) for s in (p.head, *p.workers)]
                                 + [rp.BASTION_TYPE])
    with ui.waiting("forecasting one trainee's stage 4 and stage 6 with Ray's autoscaler"):
        load = rp.trainee_load((p4, simulate(p4)), (p6, simulate(p6)), prices, bastion_vcpus)
    result = rp.room_plan(n, load, stagger=k, hours=h, quota_ondemand=q_od, quota_spot=q_spot)
    result.update(config=str(cfg_path), price_source=prices.source, price_date=prices.date,
                  price_note=prices.note)
    if json_mode:
        ui.result(result)
        return
    _show(ui, result)


def _show(ui: Any, r: dict[str, Any]) -> None:
    t, s, c = r["per_trainee"], r["stagger"], r["cost"]
    ui.step(f"room of {r['trainees']}: each lab holds {t['baseline_vcpus']} on-demand vCPUs all day "
            f"(head {t['head_type']} + bastion); stage 4 adds {t['burst_ondemand_vcpus']} vCPUs "
            f"({t['burst_workers']} of {t['wanted_workers']} wanted workers, wall at "
            f"{t['lesson_quota_vcpus']} vCPUs) for {s['slot_minutes']:g} min")
    fits = s["fits_quota_now"]
    if fits is not None:
        line = (f"the on-demand quota now holds {fits} stage-4 run(s) at once next to every lab"
                if fits else "the on-demand quota now cannot hold the labs plus one stage-4 run")
        (ui.info if fits else ui.warning)(line)
    ui.info(f"stagger: {s['at_once']} of {r['trainees']} at once ({s['source']}): {s['waves']} wave(s), "
            f"stage 4 takes about {s['stage4_minutes']:g} min for the room")
    rows = [(q["code"], q["market"], q["vcpus"], "-" if q["current"] is None else q["current"],
             {None: "?", True: "REQUEST", False: "ok"}[q["increase_needed"]], q["why"])
            for q in r["quota_requests"]]
    ui.table("vCPU quotas the room needs", ["code", "market", "need", "now", "", "why"], rows)
    ui.info(f"lead time: {r['lead_time']}")
    ui.info(f"note: {r['note']}")
    ui.info(f"cost of the day: ${c['total_usd']:,.2f} (${c['per_trainee_usd']:,.2f} per trainee): labs "
            f"{c['hours']:g} h x ${c['baseline_usd_per_lab_hour']}/h = ${c['baseline_usd']:,.2f}, stage 4 "
            f"workers ${c['stage4_usd']:,.2f}, stage 6 workers ${c['stage6_usd']:,.2f}")
    ui.info(f"prices: {r['price_note']}")


@room_app.command("status")
def status(
    target: TargetOpt = "local",
    watch: Annotated[float | None, typer.Option(
        "--watch", min=2, max=3600, metavar="SECONDS",
        help="Read the room again every SECONDS: a live view on a terminal, the table again elsewhere; "
             "Ctrl-C ends it.")] = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Every lab in the account and region, found by raylab's tag: id, owner, age, stack, last stage,
    instances and Ray workers by market, vCPUs against each quota, cost so far and per hour, expiry,
    whether a command is running on it, and the room's totals. Reads only. JSON: docs/runbook.md."""
    from raylab.cli.options import make_context
    from raylab.cli.room_sweep import read_room
    from raylab.errors import RaylabError

    ctx = make_context(target=target, json_mode=json_mode, quiet=quiet, one_lab=False)
    if watch is not None and json_mode:
        raise RaylabError("--watch is a view for people; --json prints one record",
                          "drop --watch (or poll `raylab room status --json` yourself)")
    if watch is not None:
        watch_room(ctx.ui, lambda: read_room(ctx), watch)
        return
    result = read_room(ctx)
    if json_mode:
        ctx.ui.result(result)
        return
    show_status(ctx.ui, result)


def watch_room(ui: Any, read: Any, every_s: float, rounds: int | None = None) -> None:
    """The room again every ``every_s``: a Rich Live view on a terminal, the whole status again elsewhere
    (``rounds``: stop after that many reads; None: until Ctrl-C, which ends it with exit 0)."""
    import time

    from rich.text import Text

    live = None
    n = 0
    try:
        if ui.interactive and not ui.quiet:
            from rich.live import Live

            live = Live(console=ui.err, refresh_per_second=1, transient=False)
            live.__enter__()
        while rounds is None or n < rounds:
            r = read()
            n += 1
            if live is None:
                ui.step(f"room at {r['now'][:19]}Z (every {every_s:g} s; Ctrl-C ends)")
                show_status(ui, r)
            else:
                with ui.err.capture() as cap:
                    show_status(ui, r)
                live.update(Text.from_ansi(f"room at {r['now'][:19]}Z (every {every_s:g} s; Ctrl-C ends)\n"
                                           + cap.get()))
            if rounds is None or n < rounds:
                time.sleep(every_s)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.__exit__(None, None, None)


def _usd(v: float | None, fmt: str = "{:,.2f}") -> str:
    return "?" if v is None else "$" + fmt.format(v)


def _expiry(x: dict[str, Any]) -> str:
    word = {True: "EXPIRED", False: "no", None: "?"}[x["expired"]]
    return f"{word} ({x['expires']})" if x["expires"] else word


def show_status(ui: Any, r: dict[str, Any]) -> None:
    from raylab.room.status import age_text

    for n in r["notes"]:
        ui.warning(n)
    if not r["labs"]:
        ui.info(f"no raylab lab in {r['region']} (nothing tagged raylab-lab)")
    else:
        rows = [(x["lab"], x["owner"] or "-", age_text(x["age_s"]), ", ".join(x["stacks"]) or "-",
                 x["last_stage"] or "-",
                 f"{x['instances']['ondemand']} / {x['instances']['spot']}",
                 f"{x['ray_workers']['ondemand']} / {x['ray_workers']['spot']}",
                 " / ".join(str(v) for v in x["vcpus_by_quota"].values()),
                 f"{_usd(x['cost']['so_far_usd'])} ({_usd(x['cost']['per_hour_usd'])}/h)",
                 _expiry(x),
                 f"yes: {x['busy_by']}" if x["busy"] else "no", "; ".join(x["findings"]))
                for x in r["labs"]]
        ui.table(f"labs in {r['region']}", ["lab", "owner", "age", "stack", "last stage", "instances od/spot",
                                           "ray workers od/spot", "vCPUs od/spot", "cost (now)", "expired",
                                           "busy", "notes"], rows)
    for t in r["totals"]:
        quota = "unknown quota" if t["quota_vcpus"] is None else (
            f"quota {t['quota_vcpus']:g} ({t['used_pct']}% used, {t['free_vcpus']} free)")
        ui.info(f"{t['market']} vCPUs ({t['quota_code']}): labs {t['labs_vcpus']} + other {t['other_vcpus']} "
                f"= {t['used_vcpus']} of {quota}")
    c = r["cost"]
    if c["so_far_usd"] is not None:
        ui.info(f"room cost so far about {_usd(c['so_far_usd'])} (what runs now, since its launch, and the "
                f"NAT gateways); now {_usd(c['per_hour_usd'], '{:,.4f}')}/h. Prices: {c['prices']}")
    if r["expired"]:
        ui.warning(f"expired: {', '.join(r['expired'])} (`raylab room sweep --expired` removes them)")


@room_app.command("sweep")
def sweep(
    expired: Annotated[bool, typer.Option("--expired", help="Every lab whose TTL has passed.")] = False,
    lab: Annotated[list[str] | None, typer.Option("--lab", help="This lab (repeat for more).")] = None,
    all_labs: Annotated[bool, typer.Option("--all", help="Every raylab lab in the region.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Sweep a lab even while a command runs on it "
                                        "(its busy lease is live).")] = False,
    target: TargetOpt = "local",
    yes: YesOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Tear labs down from their tags alone, without the trainee's .raylab/: the same teardown as
    `raylab down` (stages 7 -> 1), then the leftover check per lab. A lab mid-command is refused unless
    --force; nothing raylab did not tag or name is touched."""
    from raylab.cli.options import make_context
    from raylab.cli.room_sweep import run_sweep

    ctx = make_context(target=target, json_mode=json_mode, quiet=quiet, yes=yes, one_lab=False)
    run_sweep(ctx, expired=expired, names=lab or [], all_labs=all_labs, force=force)


def register(app: typer.Typer) -> None:
    app.add_typer(room_app, name="room")
