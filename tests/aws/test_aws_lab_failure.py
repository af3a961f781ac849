"""`raylab lab --target aws` against the twin (a moto server on loopback): a stage that fails still
ends in teardown and the leftover check. Stage 1 runs for real (the stack, the key pair); stage 2's
apply is replaced by a failure, so nothing ever reaches for a bastion or a node."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from raylab.errors import RaylabError
from tests.aws.conftest import aws_env

pytestmark = pytest.mark.aws

MOTO_KEEPS = ("NAT gateway ", "VPC endpoint ", "route table ", "internet gateway ", "VPC vpc-",
              "elastic IP ", "subnet ", "security group ")


def test_failed_stage_tears_down_on_the_twin(moto_endpoint: str, ec2_quotas: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from raylab.cli import cmd_lab
    from raylab.stages import stage1_network, stage2_identity

    ec2_quotas.update({"L-1216C47A": 512, "L-34B43A08": 512})
    for k, v in aws_env(moto_endpoint).items():
        monkeypatch.setenv(k, v)

    def fail(self: object, ctx: object) -> None:
        raise RaylabError("terraform apply failed (injected)", "see .raylab/logs/terraform.log")

    monkeypatch.setattr(type(stage2_identity.STAGE), "apply", fail)
    created: list[str] = []
    real_apply = type(stage1_network.STAGE).apply

    def apply1(self: object, ctx: object) -> dict:
        out = real_apply(self, ctx)  # type: ignore[arg-type]
        created.append(out["action"])
        return out

    monkeypatch.setattr(type(stage1_network.STAGE), "apply", apply1)
    with pytest.raises(RaylabError) as exc:
        cmd_lab.lab(target="aws", lab="lf", scenario="autoscale", keep=False, region=None, yes=True,
                    json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    assert exc.value.message == "stage 2 identity failed: terraform apply failed (injected)"
    assert exc.value.exit_code == 1
    assert created == ["created"]  # stage 1 really created the stack before stage 2 failed
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] is False and out["failed_stage"] == "2 identity"
    td = out["teardown"]
    assert td["ran"] is True
    # moto cannot delete a stack's NAT/VPC (real AWS does): exactly those pieces are reported and
    # listed, nothing else (no stack, no key pair, no IAM object, no process)
    assert all(e.startswith("stage 1 network: network of lab lf not fully deleted") for e in td["errors"])
    assert td["leftovers"] and all(x.startswith(MOTO_KEEPS) for x in td["leftovers"]), td["leftovers"]
    n = len(td["leftovers"])
    assert exc.value.hint == f"torn down, but {n} resource(s) are left: re-run `raylab down`"
    kw = {"endpoint_url": moto_endpoint, "region_name": "us-west-2", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    stacks = boto3.client("cloudformation", **kw).list_stacks()["StackSummaries"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks)  # stage 1's stack: deleted
    assert boto3.client("ec2", **kw).describe_key_pairs()["KeyPairs"] == []
