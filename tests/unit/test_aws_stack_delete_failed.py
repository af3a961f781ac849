"""A stack stuck in DELETE_FAILED gets one clear line naming what holds it (CloudFormation's own
reasons), both when `up` meets it (deploy deletes it to create it again) and when `down` deletes it."""

from __future__ import annotations

from typing import Any

import pytest

from raylab.aws import cfn
from raylab.errors import RaylabError
from raylab.ui import UI

NAME = "raylab-t1-network"
SG_REASON = "resource sg-0abc has a dependent object (Service: Ec2, Status Code: 400, DependencyViolation)"


def ev(i: int, lid: str, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"EventId": str(i), "LogicalResourceId": lid, "ResourceStatus": status,
            "ResourceStatusReason": reason, "ResourceType": "x"}


# newest first, as describe_stack_events returns them
EVENTS = [
    ev(9, NAME, "DELETE_FAILED", "The following resource(s) failed to delete: [RaySecurityGroup]."),
    ev(8, "RaySecurityGroup", "DELETE_FAILED", SG_REASON),
    ev(7, "PrivateSubnet1", "DELETE_COMPLETE"),
    ev(6, NAME, "DELETE_IN_PROGRESS"),
    ev(5, "OldThing", "DELETE_FAILED", "from an older delete: not this one"),
]


def test_delete_failed_resources_are_the_newest_deletes() -> None:
    assert cfn.delete_failed_resources(EVENTS, NAME) == [f"RaySecurityGroup: {SG_REASON}"]


class StuckCfn:
    def __init__(self) -> None:
        self.deletes = 0

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        return {"Stacks": [{"StackName": NAME, "StackId": "arn:stack/1", "StackStatus": "DELETE_FAILED"}]}

    def delete_stack(self, StackName: str) -> None:  # noqa: N803
        self.deletes += 1

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        return {"StackEvents": EVENTS}


LINE = (f"stack {NAME} is stuck in DELETE_FAILED: RaySecurityGroup: {SG_REASON} (remove what still uses "
        "those resources (e.g. instances or network interfaces left in the VPC), then re-run `raylab down`)")


def test_up_meeting_a_stuck_stack_says_so_in_one_line() -> None:
    c = StuckCfn()
    with pytest.raises(RaylabError) as exc:
        cfn.deploy_stack(c, name=NAME, template_body="x", parameters={}, tags={}, ui=UI(quiet=True),
                         poll_s=0)
    assert exc.value.one_line() == LINE
    assert c.deletes == 1  # one try, not three rounds of "did not settle"


def test_down_meeting_a_stuck_stack_says_so_in_one_line() -> None:
    with pytest.raises(RaylabError) as exc:
        cfn.delete_or_explain(StuckCfn(), "arn:stack/1", NAME, UI(quiet=True), poll_s=0)
    assert exc.value.one_line() == LINE
