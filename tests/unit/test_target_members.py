"""The target interface owns every difference (issue 13): each member of ``base.Target`` is on both
targets, what each declares, and the stages' decisions that now come from those members."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from raylab.cli.options import make_context
from raylab.context import Context
from raylab.errors import RaylabError
from raylab.targets.aws import AwsTarget
from raylab.targets.base import Target
from raylab.targets.local import LocalTarget

MEMBERS = sorted({*Target.__annotations__,
                  *(n for n, _ in inspect.getmembers(Target, inspect.isfunction) if not n.startswith("_"))})


@pytest.mark.parametrize("cls", [LocalTarget, AwsTarget])
@pytest.mark.parametrize("member", MEMBERS)
def test_every_member_of_the_contract_is_on_both_targets(cls: type, member: str) -> None:
    assert hasattr(cls, member), f"{cls.__name__} lacks Target.{member}"


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
    ],
)
def test_what_each_target_declares(member: str, local: Any, aws: Any) -> None:
    assert (getattr(LocalTarget(), member), getattr(AwsTarget(), member)) == (local, aws)


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
