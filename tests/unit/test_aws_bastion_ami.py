"""Stage 1 pins the bastion AMI: resolved from SSM when the stack is first created, then kept from the
stack's own parameter, so a newer AMI never makes CloudFormation replace the bastion (new host key,
the operator locked out by the pinned one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raylab.context import Context
from raylab.options import Detected
from raylab.stages import stage1_network
from raylab.targets import get_target
from raylab.ui import UI

NEW, OLD = "ami-0new2026", "ami-0old2025"


@pytest.mark.parametrize(
    ("option", "pinned", "ami", "why"),
    [
        (None, None, None, "latest"),  # first create: SSM
        (None, OLD, OLD, "pinned"),  # every later run: the stack's own value
        ("ami-0given", OLD, "ami-0given", "given"),  # only an explicit --bastion-ami replaces it
    ],
)
def test_choose_bastion_ami(option: str | None, pinned: str | None, ami: str | None, why: str) -> None:
    assert stage1_network.choose_bastion_ami(option, pinned) == (ami, why)


class Fakes:
    def __init__(self, stack_ami: str | None) -> None:
        self.stack_ami = stack_ami
        self.ssm_calls = 0
        self.deployed: dict[str, str] = {}

    def client(self, ctx: Any, service: str) -> Any:
        me = self

        class Cfn:
            def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803
                if me.stack_ami is None:
                    raise Exception(f"Stack with id {StackName} does not exist")
                return {"Stacks": [{"StackName": StackName, "StackId": "id", "StackStatus": "CREATE_COMPLETE",
                                    "Parameters": [{"ParameterKey": "BastionAmiId",
                                                    "ParameterValue": me.stack_ami}]}]}

        class Ssm:
            def get_parameter(self, Name: str) -> dict[str, Any]:  # noqa: N803
                me.ssm_calls += 1
                return {"Parameter": {"Value": NEW}}

        return {"cloudformation": Cfn(), "ssm": Ssm()}[service]

    def deploy_stack(self, cfn: Any, *, parameters: dict[str, str], **kw: Any) -> tuple[str, dict[str, str]]:
        self.deployed = dict(parameters)
        return "noop", {}


@pytest.mark.parametrize(("stack_ami", "deployed", "ssm_calls"), [(None, NEW, 1), (OLD, OLD, 0)])
def test_apply_keeps_the_stacks_ami(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    stack_ami: str | None, deployed: str, ssm_calls: int) -> None:
    import raylab.aws.cfn
    import raylab.aws.session

    f = Fakes(stack_ami)
    monkeypatch.setattr(raylab.aws.session, "client", f.client)
    monkeypatch.setattr(raylab.aws.cfn, "deploy_stack", f.deploy_stack)
    monkeypatch.setattr(stage1_network, "template_path", lambda ctx: tmp_path / "vpc.yaml")
    (tmp_path / "vpc.yaml").write_text("Resources: {}\n")
    ctx = Context(target_name="aws", lab="t1", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                  detected=Detected(operator_ip="52.95.110.1",
                                    availability_zones=["us-west-2a", "us-west-2b"]),
                  make_target=get_target)
    stage1_network.STAGE.apply(ctx)
    assert f.deployed["BastionAmiId"] == deployed
    assert f.ssm_calls == ssm_calls  # a newer AMI in SSM is not even looked up on a re-run
