"""`raylab room status` and `raylab room sweep`: read the room, then tear labs down from their tags.

The decisions are pure (``raylab.room.status``, ``raylab.room.sweep``); this module reads the account
through the target's endpoint and runs `raylab down`'s own teardown per lab, on a ``TagsOnly`` target
and a scratch work dir (``.raylab/room/<lab>/``: Terraform's state of the destroy, its logs), so
nothing of the trainee's ``.raylab/`` is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from raylab.context import Context
from raylab.errors import RaylabError


def read_room(ctx: Context) -> dict[str, Any]:
    """`room status`'s record: every lab of the target's account and region (see docs/runbook.md)."""
    from raylab.aws.session import client
    from raylab.aws.usage import prices_for
    from raylab.cluster import instance_types
    from raylab.plan.bill import Usage, UsedInstance
    from raylab.room import inventory
    from raylab.room.status import room_status

    now = datetime.now(UTC)
    ec2 = client(ctx, "ec2")
    quotas, notes = inventory.quotas(client(ctx, "service-quotas"))
    instances = inventory.instances(ec2)

    def vcpus_of(itype: str) -> int | None:
        it = instance_types.lookup(itype)
        return it.vcpus if it else None

    used = Usage(tuple(UsedInstance(i.id, i.type, "spot" if i.market == "spot" else "on-demand", now)
                       for i in instances if i.lab is not None))
    prices = prices_for(used, now, ec2 if ctx.target.live_prices else None)
    try:
        nats = inventory.nat_gateways(ec2)
    except Exception as e:  # noqa: BLE001 - a cost without NAT is still worth showing, with why
        nats = []
        notes.append(f"NAT gateways unreadable ({type(e).__name__}): left out of the cost")
    result = room_status(instances, inventory.stacks(client(ctx, "cloudformation")), now=now, quotas=quotas,
                         vcpus_of=vcpus_of, vpcs=inventory.vpcs(ec2), nats=nats, prices=prices)
    result.update(region=ec2.meta.region_name, target=ctx.target_name, notes=notes)
    return result


def sweep_one(room_ctx: Context, lab: str, env: dict[str, str]) -> dict[str, Any]:
    """`raylab down` for one lab from its tags: teardown 7 -> 1 under the lab's busy lease, then the
    leftover check. Never raises: what failed is in ``errors``, what is left in ``leftovers``."""
    from raylab.aws.session import client
    from raylab.room.busy import Heartbeat
    from raylab.stages import BY_NAME, load
    from raylab.targets.tags_only import TagsOnly

    ctx = Context(target_name=room_ctx.target_name, lab=lab, ui=room_ctx.ui,
                  workdir=room_ctx.workdir / "room" / lab, yes=True, options=room_ctx.options,
                  _target=TagsOnly(room_ctx.target, env))
    room_ctx.ui.step(f"sweeping lab {lab} (the teardown of `raylab down`, from its tags)")
    out: dict[str, Any] = {"lab": lab, "errors": [], "leftovers": []}
    try:
        with ctx.state.lock("room sweep"), Heartbeat(lambda: client(ctx, "ec2"), lab, "room sweep"):
            out["errors"] = (load(BY_NAME["teardown"]).apply(ctx) or {}).get("errors", [])
    except Exception as e:  # noqa: BLE001 - still check what is left
        out["errors"].append(e.one_line() if isinstance(e, RaylabError) else f"{type(e).__name__}: {e}")
    try:
        out["leftovers"] = ctx.target.leftovers(ctx)
    except Exception as e:  # noqa: BLE001 - a check that cannot run is not a pass
        out["leftovers"] = [f"could not list what is left: {type(e).__name__}: {e}"]
    out["ok"] = not out["leftovers"]
    for item in out["leftovers"]:
        room_ctx.ui.error(f"lab {lab}: left behind: {item}")
    if out["ok"]:
        room_ctx.ui.success(f"lab {lab}: nothing left (no instance, stack, network piece or profile)")
    return out


def run_sweep(ctx: Context, *, expired: bool, names: list[str], all_labs: bool, force: bool) -> None:
    from raylab.room.sweep import choose

    room = read_room(ctx)
    choice = choose(room["labs"], region=room["region"], expired=expired, names=names, all_labs=all_labs,
                    force=force)
    for line in choice.skipped:
        ctx.ui.warning(line)
    for line in choice.busy:
        ctx.ui.error(line)
    result: dict[str, Any] = {"region": room["region"], "target": ctx.target_name, "swept": [],
                              "busy": choice.busy, "skipped": choice.skipped}
    if not choice.sweep:
        why = "no raylab lab in this region" if not room["labs"] else "no lab to sweep"
        ctx.ui.info(f"{why} ({room['region']}): nothing was deleted")
    elif ctx.target.spends_money and not ctx.ui.confirm(
            f"Destroy every resource of lab(s) {', '.join(choice.sweep)}?", ctx.yes):
        raise RaylabError("not confirmed: nothing was deleted", "re-run with --yes")
    else:
        env = ctx.target.aws_env(ctx)
        result["swept"] = [sweep_one(ctx, lab, env) for lab in choice.sweep]
    left = [s for s in result["swept"] if not s["ok"]]
    result["ok"] = not left and not choice.busy
    ctx.ui.result(result)
    if left:
        raise RaylabError(f"{len(left)} lab(s) left resources after the sweep: "
                          f"{', '.join(s['lab'] for s in left)}", "re-run `raylab room sweep --lab NAME`",
                          exit_code=1)
    if choice.busy:
        raise RaylabError(f"{len(choice.busy)} lab(s) mid-command were not swept",
                          "wait for their command to end, or add --force", exit_code=1)
