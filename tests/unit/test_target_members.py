"""The target interface owns every difference (issue 13): each member of ``base.Target`` is on both
targets, what each declares, and the stages' decisions that now come from those members."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import pytest

from raylab.cli.options import make_context
from raylab.context import Context
from raylab.errors import RaylabError
from raylab.target import Target
from raylab.targets.aws import AwsTarget
from raylab.targets.local import LocalTarget
from raylab.ui import UI

MEMBERS = sorted({*Target.__annotations__,
                  *(n for n, _ in inspect.getmembers(Target, inspect.isfunction) if not n.startswith("_"))})


@pytest.mark.parametrize("cls", [LocalTarget, AwsTarget])
@pytest.mark.parametrize("member", MEMBERS)
def test_every_member_of_the_contract_is_on_both_targets(cls: type, member: str) -> None:
    assert hasattr(cls, member), f"{cls.__name__} lacks Target.{member}"


def test_the_moto_only_target_declares_what_the_local_target_declares() -> None:
    """tests/integration's MotoTarget inherits LocalDeclared: a member added to the contract (and to
    LocalDeclared) is there too; only what LocalTarget itself declares for the twin and Ray is not."""
    from tests.integration.conftest import MotoTarget

    missing = {m for m in Target.__annotations__ if not hasattr(MotoTarget, m)}
    assert missing <= {"faults", "default_scale"}


@pytest.mark.parametrize(
    ("member", "local", "aws"),
    [
        ("fixed_operator_cidr", "127.0.0.1/32", None),
        ("network_teardown", "sweep", "explain"),
        ("terraform_mirror_required", True, False),
        ("node_setup_s", 60.0, 600.0),
        ("loopback_only", True, False),
        ("gcs_reachable", True, False),
        ("data_source", "sample", "s3"),
        ("ships_code", False, True),
        ("quota_settable", True, False),
        ("picks_node_python", False, True),
        ("request_timeout_s", 15.0, 600.0),  # the heads' autoscaler env; `raylab plan` forecasts with it
        ("tick_s", 1.0, 5.0),  # the autoscaler's loop: the lab's time scale locally, Ray's own on AWS
        ("faults", "twin", "fis"),
        ("fixed_region", "us-west-2", None),
        ("spends_money", False, True),
        ("rehearsable", False, True),
        ("preflight_shown", False, True),
        ("live_prices", False, True),
        ("time_scale", "local", "aws"),
        ("boot_slots", max(2, min(16, os.cpu_count() or 1)), None),  # the twin's; EC2: all at once
    ],
)
def test_what_each_target_declares(member: str, local: Any, aws: Any) -> None:
    assert (getattr(LocalTarget(), member), getattr(AwsTarget(), member)) == (local, aws)


def test_the_local_head_runs_the_loop_the_local_target_declares() -> None:
    """Stage 4's forecast steps with ``tick_s``: the monitor must run with that very loop."""
    from raylab.targets.local.head import head_env

    env = head_env({}, "i-0123", "ray.head.default", base={})
    assert float(env["AUTOSCALER_UPDATE_INTERVAL_S"]) == LocalTarget().tick_s
    assert env["RAY_AUTOSCALER_RECONCILE_REQUEST_STATUS_TIMEOUT_S"] == "15"


def _ctx(tmp_path: Path, target: str) -> Context:
    return make_context(target, "t", workdir=tmp_path / ".raylab", quiet=True)


class FakeTwin:
    def __init__(self) -> None:
        self.asked: list[dict[str, int]] = []

    def set_quotas(self, **vcpus: int) -> dict[str, int]:
        self.asked.append(vcpus)
        return {"L-1216C47A": 160, **vcpus}


def test_local_sets_a_quota_through_its_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    twin = FakeTwin()
    monkeypatch.setattr(LocalTarget, "twin", lambda self, ctx: twin)
    assert LocalTarget().set_quota(_ctx(tmp_path, "local"), "L-34B43A08", 96) == 96
    assert twin.asked == [{"L-34B43A08": 96}]


def test_aws_refuses_to_set_a_quota_and_says_where_it_is_raised(tmp_path: Path) -> None:
    with pytest.raises(RaylabError) as e:
        AwsTarget().set_quota(_ctx(tmp_path, "aws"), "L-1216C47A", 224)
    assert "Service Quotas" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("target", "twin", "want"),
    [
        ("local", {"endpoint_url": "http://127.0.0.1:5123", "pid": 1}, "http://127.0.0.1:5123"),
        ("local", None, None),  # no twin recorded
        ("aws", {"endpoint_url": "http://127.0.0.1:5123"}, None),  # a twin's record is not AWS's
    ],
)
def test_rendered_endpoint(tmp_path: Path, target: str, twin: dict[str, Any] | None,
                           want: str | None) -> None:
    ctx = _ctx(tmp_path, target)
    if twin:
        ctx.state.put("twin", twin)
    assert ctx.target.rendered_endpoint(ctx) == want


@pytest.mark.parametrize(("target", "shown"), [("local", True), ("aws", False)])
def test_ray_cli_hint(tmp_path: Path, target: str, shown: bool) -> None:
    ctx = _ctx(tmp_path, target)
    hint = ctx.target.ray_cli_hint(ctx, "127.0.0.1:6379")
    assert (hint is not None) == shown
    if hint:
        assert "RAYLAB_LOOPBACK_ONLY=1" in hint and hint.endswith("ray status --address 127.0.0.1:6379")


def test_aws_leaves_a_config_to_ray_up_and_local_refuses_what_ray_rejects() -> None:
    bad: dict[str, Any] = {"cluster_name": "x", "provider": {"type": "nonsense"}}
    AwsTarget().validate_config(bad)
    with pytest.raises(RaylabError, match="not valid"):
        LocalTarget().validate_config(bad)


# --- the stages' decisions, now from the members ----------------------------------------------------
@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("local", {"idle_timeout_minutes": 0.5, "quota": 224}),  # no twin: the default quota 160 + 64
        ("aws", {"upscaling_speed": 2.0, "idle_timeout_minutes": 1.0}),
    ],
)
def test_stage5_default_drill(tmp_path: Path, target: str, want: dict[str, Any]) -> None:
    from raylab.stages.stage5_scaling import default_scaling

    assert default_scaling(_ctx(tmp_path, target)).as_dict() == want


@pytest.mark.parametrize(("target", "sample_rows", "timeout_s"), [("local", 40, 600), ("aws", None, 3600)])
def test_stage7_plan(tmp_path: Path, target: str, sample_rows: int | None, timeout_s: int) -> None:
    from raylab.stages.stage7_data import job_plan

    plan = job_plan(_ctx(tmp_path, target))
    assert (plan["sample_rows"], plan["timeout_s"]) == (sample_rows, timeout_s)


def test_stage7_without_a_cluster_runs_isolated_only_on_a_sample(tmp_path: Path) -> None:
    from raylab.stages.stage7_data import cluster_dashboard

    assert cluster_dashboard(_ctx(tmp_path, "local")) is None
    with pytest.raises(RaylabError, match="no cluster is up"):
        cluster_dashboard(_ctx(tmp_path, "aws"))


# --- the CLI's decisions, now from the members (issue 13: no branch on the target's name) -----------
class AskingUI(UI):
    """Records each question (answered as a non-interactive stdin does: no, unless --yes) and line."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.asked: list[str] = []
        self.said: list[str] = []

    def confirm(self, question: str, assume_yes: bool) -> bool:
        self.asked.append(question)
        return assume_yes

    def success(self, text: str) -> None:
        self.said.append(text)

    def info(self, text: str) -> None:
        self.said.append(text)

    def warning(self, text: str) -> None:
        self.said.append(text)


def _asking(tmp_path: Path, target: str) -> tuple[Context, AskingUI]:
    ctx = _ctx(tmp_path, target)
    ui = AskingUI()
    ctx.ui = ui
    return ctx, ui


@pytest.mark.parametrize(("target", "asks"), [("local", False), ("aws", True)])
def test_spending_is_confirmed_where_the_target_spends_money(tmp_path: Path, target: str, asks: bool) -> None:
    from raylab.cli import cmd_lab

    ctx, ui = _asking(tmp_path, target)
    if asks:
        with pytest.raises(RaylabError, match="not confirmed: nothing was created"):
            cmd_lab._confirm_spend(ctx, "VPC")
        assert ui.asked == ["This creates billable AWS resources (VPC) for lab 't'. Continue?"]
    else:
        cmd_lab._confirm_spend(ctx, "VPC")
        assert ui.asked == []


@pytest.mark.parametrize(("target", "asks"), [("local", False), ("aws", True)])
def test_down_asks_before_destroying_where_the_target_spends_money(
    tmp_path: Path, target: str, asks: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from raylab.cli import cmd_lab, options

    ctx, ui = _asking(tmp_path, target)
    monkeypatch.setattr(options, "make_context", lambda *a, **k: ctx)

    class Stop(Exception):
        pass

    def no_lock(self: Any, command: str) -> Any:
        raise Stop  # past the question: nothing to tear down here

    monkeypatch.setattr("raylab.state.State.lock", no_lock)
    want = RaylabError if asks else Stop
    with pytest.raises(want):
        cmd_lab.down(target=target, lab="t", yes=False, json_mode=False, quiet=True, workdir=tmp_path)
    assert ui.asked == (["Destroy every resource of lab 't'?"] if asks else [])


@pytest.mark.parametrize(
    ("target", "region", "cidr", "error"),
    [
        ("local", "eu-west-1", None,
         "--region applies to --target aws only (drop --region on the local target)"),
        ("local", None, "198.51.100.7/32", "--allow-ssh-from applies to --target aws only (the local bastion "
                                           "takes SSH from 127.0.0.1 only; drop the option)"),
        ("aws", "eu-west-1", "198.51.100.7", None),
    ],
)
def test_region_and_ssh_cidr_only_where_the_target_does_not_fix_them(
    tmp_path: Path, target: str, region: str | None, cidr: str | None, error: str | None,
) -> None:
    from raylab.cli import cmd_lab

    ctx = _ctx(tmp_path, target)
    if error:
        with pytest.raises(RaylabError) as e:
            cmd_lab._set_region(ctx, region, cidr)
        assert e.value.one_line() == error
    else:
        cmd_lab._set_region(ctx, region, cidr)
        assert (ctx.options.region, ctx.options.allow_ssh_from) == ("eu-west-1", "198.51.100.7/32")


def test_the_rehearsal_is_refused_where_the_target_is_not_rehearsable(tmp_path: Path) -> None:
    from raylab.cli import cmd_lab

    with pytest.raises(RaylabError) as e:
        cmd_lab._rehearse(_ctx(tmp_path, "local"), True, 6.0)
    assert e.value.one_line() == ("--rehearsal applies to --target aws only (the local target needs no "
                                  "rehearsal: drop --rehearsal, or add --target aws)")


@pytest.mark.parametrize(("target", "cls", "shown"),
                         [("local", LocalTarget, False), ("aws", AwsTarget, True)])
def test_passing_preflight_checks_are_printed_where_the_target_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, cls: type, shown: bool,
) -> None:
    from raylab.checks import Check
    from raylab.cli import cmd_lab

    monkeypatch.setattr(cls, "preflight", lambda self, ctx: [Check("vCPU quota", True, "160 vCPU")])
    ctx, ui = _asking(tmp_path, target)
    cmd_lab._preflight(ctx)
    assert ui.said == (["preflight · vCPU quota: 160 vCPU"] if shown else [])


@pytest.mark.parametrize(("target", "asks_ec2", "scale_note"), [("local", False, True), ("aws", True, False)])
def test_the_cost_report_reads_live_prices_and_notes_the_time_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, asks_ec2: bool, scale_note: bool,
) -> None:
    from datetime import UTC, datetime, timedelta

    from raylab.aws import session, usage
    from raylab.aws.usage import UsedInstance
    from raylab.cli.cost_report import LOCAL_SCALE_NOTE, report
    from raylab.plan.bill import Usage

    asked: list[str] = []

    def client(ctx: Context, svc: str) -> None:
        asked.append(svc)  # None: no client, so the table's estimate (only the question is tested)

    monkeypatch.setattr(session, "client", client)
    real = usage.prices_for
    monkeypatch.setattr(usage, "prices_for", lambda u, now, ec2: real(u, now, None))
    ctx, ui = _asking(tmp_path, target)
    began = datetime.now(UTC) - timedelta(hours=1)
    u = Usage(instances=(UsedInstance("i-1", "c7i.4xlarge", "on-demand", began),))
    out = report(ctx, u, "this lab cost", table=False)
    assert out is not None and out["time_scale"] == target
    assert asked == (["ec2"] if asks_ec2 else [])
    assert (LOCAL_SCALE_NOTE in ui.said) == scale_note
    assert ui.said[0].startswith("this lab cost (on AWS at list prices, local time scale)") == scale_note


def test_a_capacity_window_is_refused_where_faults_are_not_the_twins(tmp_path: Path) -> None:
    from raylab.spot import chaos

    with pytest.raises(RaylabError, match="a capacity window cannot be injected into a real AWS account"):
        chaos.capacity(_ctx(tmp_path, "aws"), market="spot")


@pytest.mark.parametrize(("target", "via"), [("local", "twin"), ("aws", "fis")])
def test_reclaims_go_where_the_target_injects_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      target: str, via: str) -> None:
    from raylab.spot import chaos

    class Took(Exception):
        pass

    def took(name: str) -> Any:
        def f(*a: Any, **k: Any) -> Any:
            raise Took(name)
        return f

    monkeypatch.setattr(chaos, "aws_reclaim", took("fis"))
    monkeypatch.setattr(chaos, "_twin", took("twin"))
    with pytest.raises(Took) as e:
        chaos.reclaim(_ctx(tmp_path, target), count=1, notice_s=30)
    assert str(e.value) == via


@pytest.mark.parametrize(("target", "settable"), [("local", True), ("aws", False), ("nonsense", False)])
def test_scale_quota_is_refused_before_the_context_where_the_target_cannot_set_it(target: str,
                                                                                  settable: bool) -> None:
    from raylab.cli.cmd_scale import _quota_settable

    assert _quota_settable(target) is settable


@pytest.mark.parametrize(("target", "live"), [("local", False), ("aws", True)])
def test_plan_asks_for_live_prices_where_they_are_the_markets(monkeypatch: pytest.MonkeyPatch, target: str,
                                                             live: bool) -> None:
    from raylab.cli import cmd_plan
    from raylab.plan import cost

    monkeypatch.setattr(cost, "live_prices", lambda *a: "live")
    monkeypatch.setattr("raylab.aws.session.client", lambda ctx, svc: None)
    monkeypatch.setattr("boto3.client", lambda *a, **k: None)
    got = cmd_plan._prices(target, ["c7i.4xlarge"], "us-west-2", AskingUI())
    assert (got == "live") is live
