"""raylab.aws.cfn: create / update / noop decisions and the stack runner (moto in-process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raylab.aws import cfn as C
from raylab.errors import RaylabError
from raylab.ui import UI

ROOT = Path(__file__).resolve().parents[2]
VPC = (ROOT / "infra" / "cloudformation" / "vpc.yaml").read_text()
PARAMS = {
    "LabId": "kim",
    "OperatorCidr": "127.0.0.1/32",
    "AvailabilityZone1": "us-west-2a",
    "AvailabilityZone2": "us-west-2b",
    "BastionAmiId": "ami-12345678",
}


@pytest.mark.parametrize(
    ("status", "same_t", "same_p", "action"),
    [
        (None, False, False, "create"),
        ("DELETE_COMPLETE", False, False, "create"),
        ("CREATE_IN_PROGRESS", True, True, "wait"),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", True, True, "wait"),
        ("DELETE_IN_PROGRESS", True, True, "wait"),
        ("CREATE_COMPLETE", True, True, "noop"),
        ("UPDATE_COMPLETE", True, False, "update"),
        ("UPDATE_COMPLETE", False, True, "update"),
        ("UPDATE_ROLLBACK_COMPLETE", True, True, "noop"),
        ("ROLLBACK_COMPLETE", True, True, "recreate"),
        ("CREATE_FAILED", True, True, "recreate"),
        ("DELETE_FAILED", True, True, "recreate"),
    ],
)
def test_plan_deploy(status: str | None, same_t: bool, same_p: bool, action: str) -> None:
    assert C.plan_deploy(status, same_t, same_p) == action


def test_same_params_ignores_template_defaults() -> None:
    assert C.same_params({**PARAMS, "VpcCidr": "10.42.0.0/16"}, PARAMS)
    assert not C.same_params(PARAMS, {**PARAMS, "OperatorCidr": "203.0.113.7/32"})


def test_format_event_includes_the_reason() -> None:
    ev = {
        "LogicalResourceId": "NatGateway",
        "ResourceType": "AWS::EC2::NatGateway",
        "ResourceStatus": "CREATE_FAILED",
        "ResourceStatusReason": "quota",
    }
    assert C.format_event(ev) == "  NatGateway (AWS::EC2::NatGateway): CREATE_FAILED - quota"


@pytest.fixture
def cfn(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        yield boto3.client("cloudformation", region_name="us-west-2")


def _deploy(cfn: Any, params: dict[str, str]) -> tuple[str, dict[str, str]]:
    return C.deploy_stack(
        cfn,
        name="raylab-kim-network",
        template_body=VPC,
        parameters=params,
        tags={"raylab-lab": "kim"},
        ui=UI(),
        poll_s=0.05,
        timeout_s=30,
    )


def test_create_then_noop_then_update(cfn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    action, out = _deploy(cfn, PARAMS)
    assert action == "created"
    assert set(out) == {
        "VpcId",
        "PublicSubnetIds",
        "PrivateSubnetIds",
        "AvailabilityZones",
        "RaySecurityGroupId",
        "BastionSecurityGroupId",
        "BastionInstanceId",
        "BastionPublicIp",
    }
    err = capsys.readouterr().err
    assert "creating stack raylab-kim-network" in err and "CREATE_COMPLETE" in err  # live events

    action2, out2 = _deploy(cfn, PARAMS)
    assert (action2, out2) == ("noop", out)
    assert "noop: stack raylab-kim-network already CREATE_COMPLETE" in capsys.readouterr().err

    action3, _ = _deploy(cfn, {**PARAMS, "OperatorCidr": "203.0.113.7/32"})
    assert action3 == "updated"
    stack = C.describe(cfn, "raylab-kim-network")
    assert stack is not None and C.params_of(stack)["OperatorCidr"] == "203.0.113.7/32"
    assert {"Key": "raylab-lab", "Value": "kim"} in stack["Tags"]


def test_describe_missing_stack_is_none(cfn: Any) -> None:
    assert C.describe(cfn, "raylab-nobody-network") is None


class _NoUpdatesCfn:
    """AWS answers an update that changes nothing with a ValidationError (moto accepts it)."""

    def __init__(self) -> None:
        self.stack = {
            "StackId": "arn:stack/x",
            "StackName": "x",
            "StackStatus": "UPDATE_COMPLETE",
            "Parameters": [{"ParameterKey": "LabId", "ParameterValue": "old"}],
            "Outputs": [{"OutputKey": "VpcId", "OutputValue": "vpc-1"}],
        }

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"Stacks": [self.stack]}

    def get_template(self, **_: Any) -> dict[str, Any]:
        return {"TemplateBody": "other"}

    def describe_stack_events(self, **_: Any) -> dict[str, Any]:
        return {"StackEvents": []}

    def update_stack(self, **_: Any) -> None:
        raise RuntimeError(
            "An error occurred (ValidationError) when calling the UpdateStack operation: "
            "No updates are to be performed."
        )


def test_no_updates_to_be_performed_is_a_noop(capsys: pytest.CaptureFixture[str]) -> None:
    action, out = C.deploy_stack(
        _NoUpdatesCfn(), name="x", template_body="t", parameters={"LabId": "new"}, tags={}, ui=UI()
    )
    assert (action, out) == ("noop", {"VpcId": "vpc-1"})
    assert "no updates are to be performed" in capsys.readouterr().err


def test_a_stack_stuck_in_progress_times_out_with_a_hint() -> None:
    fake = _NoUpdatesCfn()
    fake.stack["StackStatus"] = "UPDATE_IN_PROGRESS"
    with pytest.raises(RaylabError) as e:
        C.wait_terminal(fake, "arn:stack/x", None, timeout_s=0.1, poll_s=0.02)
    assert "still UPDATE_IN_PROGRESS" in e.value.message and "re-run" in (e.value.hint or "")
