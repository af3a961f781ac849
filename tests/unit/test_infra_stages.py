"""Stages 1-2 decisions: operator CIDR, stack parameters, the verify checks, Terraform variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raylab.context import Context
from raylab.errors import RaylabError
from raylab.options import Detected, LabOptions
from raylab.stages import stage1_network as S1
from raylab.stages import stage2_identity as S2
from raylab.targets import get_target
from raylab.ui import UI


def _ctx(target: str = "local", allow_ssh_from: str | None = None, operator_ip: str | None = None) -> Context:
    return Context(
        target_name=target, lab="kim", ui=UI(), workdir=Path("/nonexistent/.raylab"),
        options=LabOptions(allow_ssh_from=allow_ssh_from), detected=Detected(operator_ip=operator_ip),
        make_target=get_target,
    )


def test_operator_cidr_local_default_is_loopback() -> None:
    assert S1.operator_cidr(_ctx()) == "127.0.0.1/32"


def test_operator_cidr_explicit_is_normalised() -> None:
    assert S1.operator_cidr(_ctx("aws", allow_ssh_from="203.0.113.7")) == "203.0.113.7/32"


@pytest.mark.parametrize("world", ["0.0.0.0/0", "203.0.113.7/0"])
def test_operator_cidr_the_whole_internet_is_refused(world: str) -> None:
    """SSH to the bastion only from the operator's address (or a classroom's NAT), never the world."""
    with pytest.raises(RaylabError) as e:
        S1.operator_cidr(_ctx("aws", allow_ssh_from=world))
    assert e.value.one_line() == (f"--allow-ssh-from {world!r} opens the bastion's SSH to the whole internet "
                                  "(give the address you connect from, e.g. your classroom NAT's "
                                  "198.51.100.7/32)")


def test_operator_cidr_aws_uses_the_detected_ip() -> None:
    assert S1.operator_cidr(_ctx("aws", operator_ip="198.51.100.4")) == "198.51.100.4/32"


def test_operator_cidr_aws_without_ip_is_refused() -> None:
    with pytest.raises(RaylabError) as e:
        S1.operator_cidr(_ctx("aws"))
    assert "--allow-ssh-from" in (e.value.hint or "")


@pytest.mark.parametrize("bad", ["not-a-cidr", "300.1.1.1/32", "::1/128"])
def test_bad_cidr_is_refused(bad: str) -> None:
    with pytest.raises(RaylabError) as e:
        S1.operator_cidr(_ctx("aws", allow_ssh_from=bad))
    assert repr(bad) in e.value.message


def test_stack_parameters_need_two_distinct_azs() -> None:
    p = S1.stack_parameters(lab="kim", operator="127.0.0.1/32", azs=["us-west-2a", "us-west-2b"], ami="ami-1")
    assert p == {
        "LabId": "kim",
        "OperatorCidr": "127.0.0.1/32",
        "AvailabilityZone1": "us-west-2a",
        "AvailabilityZone2": "us-west-2b",
        "BastionAmiId": "ami-1",
    }
    with pytest.raises(RaylabError):
        S1.stack_parameters(lab="kim", operator="127.0.0.1/32", azs=["us-west-2a", "us-west-2a"], ami="ami-1")


def test_check_outputs_names_what_is_missing() -> None:
    c = S1.check_outputs({"VpcId": "vpc-1"})
    assert not c.ok and "BastionPublicIp" in c.detail
    assert S1.check_outputs({k: "x" for k in S1.OUTPUT_KEYS}).ok


def _subnet(sid: str, az: str, vpc: str = "vpc-1", public: bool = False) -> dict[str, Any]:
    return {"SubnetId": sid, "AvailabilityZone": az, "VpcId": vpc, "MapPublicIpOnLaunch": public}


@pytest.mark.parametrize(
    ("subnets", "ok", "words"),
    [
        ([_subnet("s1", "a"), _subnet("s2", "b")], True, "2 subnets in a, b"),
        ([_subnet("s1", "a"), _subnet("s2", "a")], False, "need 2 AZs"),
        ([_subnet("s1", "a")], False, "need 2 AZs"),
        ([_subnet("s1", "a"), _subnet("s2", "b", vpc="vpc-9")], False, "not in vpc-1"),
        ([_subnet("s1", "a"), _subnet("s2", "b", public=True)], False, "public IPs"),
    ],
)
def test_check_private_subnets(subnets: list[dict[str, Any]], ok: bool, words: str) -> None:
    c = S1.check_private_subnets(subnets, "vpc-1")
    assert c.ok is ok and words in c.detail


def _perm(
    proto: str,
    lo: int | None = None,
    hi: int | None = None,
    cidr: str | None = None,
    group: str | None = None,
    cidr6: str | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "IpProtocol": proto,
        "IpRanges": [{"CidrIp": cidr}] if cidr else [],
        "Ipv6Ranges": [{"CidrIpv6": cidr6}] if cidr6 else [],
        "UserIdGroupPairs": [{"GroupId": group}] if group else [],
    }
    if lo is not None:
        p.update(FromPort=lo, ToPort=hi)
    return p


GOOD_RAY = [_perm("-1", group="sg-ray"), _perm("tcp", 22, 22, group="sg-bastion")]


@pytest.mark.parametrize(
    ("perms", "ok", "words"),
    [
        (GOOD_RAY, True, "all traffic only from itself"),
        ([*GOOD_RAY, _perm("tcp", 8265, 8265, cidr="0.0.0.0/0")], False, "8265"),
        ([*GOOD_RAY, _perm("tcp", 6379, 6379, cidr6="::/0")], False, "::/0"),
        ([*GOOD_RAY, _perm("-1", group="sg-bastion")], False, "from sg-bastion"),
        ([*GOOD_RAY, _perm("tcp", 10001, 10001, cidr="10.0.0.0/8")], False, "10.0.0.0/8"),
    ],
)
def test_check_ray_sg(perms: list[dict[str, Any]], ok: bool, words: str) -> None:
    c = S1.check_ray_sg({"GroupId": "sg-ray", "IpPermissions": perms}, "sg-bastion")
    assert c.ok is ok and words in c.detail


@pytest.mark.parametrize(
    ("perms", "ok"),
    [
        ([_perm("tcp", 22, 22, cidr="127.0.0.1/32")], True),
        ([_perm("tcp", 22, 22, cidr="0.0.0.0/0")], False),
        ([_perm("tcp", 22, 22, cidr="127.0.0.1/32"), _perm("tcp", 8265, 8265, cidr="127.0.0.1/32")], False),
        ([_perm("-1", cidr="127.0.0.1/32")], False),
    ],
)
def test_check_bastion_sg(perms: list[dict[str, Any]], ok: bool) -> None:
    assert S1.check_bastion_sg({"GroupId": "sg-b", "IpPermissions": perms}, "127.0.0.1/32").ok is ok


def test_tf_variables_local_points_at_the_twin_and_aws_leaves_it_empty() -> None:
    local = S2.tf_variables(
        lab="kim",
        cluster_name="raylab-kim",
        env={"AWS_DEFAULT_REGION": "us-west-2", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
    )
    assert local == {
        "lab_id": "kim",
        "cluster_name": "raylab-kim",
        "region": "us-west-2",
        "endpoint_url": "http://127.0.0.1:5000",
    }
    aws = S2.tf_variables(lab="kim", cluster_name="raylab-kim", env={"AWS_REGION": "eu-west-1"})
    assert aws["endpoint_url"] == "" and aws["region"] == "eu-west-1"


class _InProcessMoto:
    name = "local"

    def aws_env(self, ctx: Context) -> dict[str, str]:
        return {
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }


@pytest.fixture
def moto_iam_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield Context(
            target_name="local", lab="kim", ui=UI(), workdir=tmp_path / ".raylab", _target=_InProcessMoto()
        )


def test_identity_destroy_without_state_or_objects_is_a_noop_even_without_terraform(
    moto_iam_ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no terraform binary reachable
    S2.STAGE.destroy(moto_iam_ctx)
    assert "noop: no Terraform state for this lab" in capsys.readouterr().err


def test_orphans_are_what_the_cloud_has_and_the_state_lacks(moto_iam_ctx: Context) -> None:
    from raylab.aws.session import client

    iam = client(moto_iam_ctx, "iam")
    iam.create_role(RoleName="raylab-kim-ray-head", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="ray-instance-profile-kim")
    names = moto_iam_ctx.names
    exists = lambda a, rid: S2.cloud_has(iam, a, rid)  # noqa: E731
    assert S2.orphans(set(), names, exists) == {
        "aws_iam_role.head": "raylab-kim-ray-head",
        "aws_iam_instance_profile.head": "ray-instance-profile-kim",
    }
    assert S2.orphans({"aws_iam_role.head"}, names, exists) == {
        "aws_iam_instance_profile.head": "ray-instance-profile-kim"
    }


def test_adoptable_ids_follow_the_terraform_names() -> None:
    from raylab.labid import names

    ids = S2.adoptable(names("kim"))
    assert ids["aws_iam_role_policy.head"] == "raylab-kim-ray-head:raylab-kim-ray-head-autoscaler"
    tf = (Path(__file__).resolve().parents[2] / "infra" / "terraform" / "main.tf").read_text()
    assert '"${local.head_role}-autoscaler"' in tf and '"${local.worker_role}-s3-read"' in tf
    assert {a.split(".")[0] + '" "' + a.split(".")[1] for a in ids} <= {
        m for m in __import__("re").findall(r'resource "(\w+" "\w+)"', tf)
    }


def test_stage_objects_match_the_stage_table() -> None:
    from raylab.stages import BY_NAME

    for stage, name in ((S1.STAGE, "network"), (S2.STAGE, "identity")):
        info = BY_NAME[name]
        assert (stage.number, stage.name, stage.summary, stage.verified_by) == (
            info.number,
            info.name,
            info.summary,
            info.verified_by,
        )
        assert callable(stage.destroy)


class _TfWhoseRetryMet409:
    """Terraform whose first apply created the head role in IAM, lost the answer, retried and got 409."""

    def __init__(self, iam: Any) -> None:
        self.iam, self.calls, self.state_file = iam, [], Path("/nonexistent/terraform.tfstate")

    def init(self) -> None:
        self.calls.append("init")

    def apply(self, variables: Any) -> bool:
        self.calls.append("apply")
        if self.calls.count("apply") == 1:
            self.iam.create_role(RoleName="raylab-kim-ray-head", AssumeRolePolicyDocument="{}")
            raise RaylabError("terraform apply failed: Error: creating IAM Role (raylab-kim-ray-head): "
                              "operation error IAM: CreateRole, https response error StatusCode: 409, "
                              "EntityAlreadyExists: Role with name raylab-kim-ray-head already exists.")
        return True

    def import_resource(self, address: str, rid: str, variables: Any) -> bool:
        self.calls.append(f"import {address} {rid}")
        return True

    def output(self) -> dict[str, str]:
        return {}


def test_an_apply_that_met_its_own_create_adopts_it_and_applies_again(
        moto_iam_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on a loaded machine: IAM created the role, Terraform's SDK retried CreateRole and got
    EntityAlreadyExists. Stage 2 adopts what is its own by name and applies once more."""
    from raylab.aws.session import client

    tf = _TfWhoseRetryMet409(client(moto_iam_ctx, "iam"))
    monkeypatch.setattr(S2, "terraform_for", lambda ctx: (tf, {}))
    monkeypatch.setattr("raylab.iac.terraform.state_addresses", lambda path: set())
    out = S2.STAGE.apply(moto_iam_ctx)
    assert tf.calls == ["init", "apply", "import aws_iam_role.head raylab-kim-ray-head", "apply"]
    assert out["action"] == "applied"


def test_another_apply_error_is_not_retried(moto_iam_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(_TfWhoseRetryMet409):
        def apply(self, variables: Any) -> bool:
            self.calls.append("apply")
            raise RaylabError("terraform apply failed: Error: AccessDenied")

    from raylab.aws.session import client

    tf = Broken(client(moto_iam_ctx, "iam"))
    monkeypatch.setattr(S2, "terraform_for", lambda ctx: (tf, {}))
    monkeypatch.setattr("raylab.iac.terraform.state_addresses", lambda path: set())
    with pytest.raises(RaylabError, match="AccessDenied"):
        S2.STAGE.apply(moto_iam_ctx)
    assert tf.calls == ["init", "apply"]
