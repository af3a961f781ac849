"""`raylab preflight --target aws` against a moto server on loopback: the real CLI, real boto3 calls."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from tests.aws.conftest import aws_env
from tests.conftest import run_cli

pytestmark = pytest.mark.aws

OD, SPOT = "L-1216C47A", "L-34B43A08"


def _env_without(env: dict[str, str], *keys: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **{k: v for k, v in env.items() if k not in keys}}


def _run(args: list[str], env: dict[str, str], cwd: Path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "raylab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _nothing_created(endpoint: str) -> None:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    cfn = boto3.client(
        "cloudformation",
        endpoint_url=endpoint,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert cfn.list_stacks()["StackSummaries"] == []
    running = ec2.describe_instances()["Reservations"]
    assert running == []


def test_sane_config_passes(moto_endpoint: str, ec2_quotas: dict, tmp_path: Path) -> None:
    ec2_quotas.update({OD: 512, SPOT: 512})
    r = run_cli(
        "preflight",
        "--target",
        "aws",
        "--lab",
        "pf",
        "--json",
        "--workdir",
        str(tmp_path / ".raylab"),
        env=aws_env(moto_endpoint),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True
    names = [c["name"] for c in out["checks"]]
    assert names == [
        "region",
        "credentials",
        "availability zones",
        "on-demand vCPU quota",
        "spot service-linked role",
        "operator IP",
        "cost estimate",
    ]
    quota = next(c for c in out["checks"] if c["name"] == "on-demand vCPU quota")
    assert quota["detail"] == "max_workers 30 x 16 vCPU + head 16 + bastion 2 = 498 <= quota 512 (L-1216C47A)"
    assert out["facts"]["availability_zones"] == ["us-west-2a", "us-west-2b"]
    assert out["facts"]["operator_cidr"] == "52.95.110.1/32"
    assert out["facts"]["cost_per_hour_usd"] > 0
    assert "preflight passed: nothing was created" in r.stderr
    assert not (tmp_path / ".raylab").exists()
    assert "testing" not in r.stdout + r.stderr  # never a credential in the output
    _nothing_created(moto_endpoint)


def test_quota_wall_passes_and_says_where_it_stands(
    moto_endpoint: str, ec2_quotas: dict, tmp_path: Path
) -> None:
    ec2_quotas.update({OD: 160, SPOT: 160})
    r = run_cli(
        "preflight", "--target", "aws", "--lab", "pf", "--workdir", str(tmp_path / ".raylab"),
        env=aws_env(moto_endpoint),
    )
    assert r.returncode == 0, r.stderr
    assert (
        "on-demand vCPU quota: max_workers 30 x 16 vCPU + head 16 + bastion 2 = 498 > quota 160: "
        "the wall stands at about 8 worker(s)"
    ) in r.stderr
    _nothing_created(moto_endpoint)


def test_quota_below_head_bastion_and_one_worker_names_the_fix(
    moto_endpoint: str, ec2_quotas: dict, tmp_path: Path
) -> None:
    ec2_quotas.update({OD: 33, SPOT: 160})
    r = run_cli(
        "preflight", "--target", "aws", "--lab", "pf", "--workdir", str(tmp_path / ".raylab"),
        env=aws_env(moto_endpoint),
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        "error: preflight: on-demand vCPU quota: "
        "max_workers 30 x 16 vCPU + head 16 + bastion 2 = 498 > quota 33, "
        "below head 16 + bastion 2 + one worker 16 = 34: the lab cannot start "
        "(request an increase of Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances "
        "(L-1216C47A) to >= 34 (better >= 498), or use smaller instance types)"
    )
    _nothing_created(moto_endpoint)


def test_spot_scenario_checks_spot_quota_and_role(
    moto_endpoint: str, ec2_quotas: dict, tmp_path: Path
) -> None:
    ec2_quotas.update({OD: 512, SPOT: 512})
    env = aws_env(moto_endpoint)
    r = run_cli(
        "preflight", "--target", "aws", "--lab", "pf", "--scenario", "spot", "--json", env=env, cwd=tmp_path
    )
    assert r.returncode == 2
    out = json.loads(r.stdout)
    spot = next(c for c in out["checks"] if c["name"] == "spot vCPU quota")
    assert spot["ok"] and spot["detail"].startswith("max_workers 30 x 16 vCPU = 480 <= quota 512")
    role = next(c for c in out["checks"] if c["name"] == "spot service-linked role")
    assert not role["ok"]
    assert role["hint"] == "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
    iam = boto3.client(
        "iam",
        endpoint_url=moto_endpoint,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    iam.create_role(
        RoleName="AWSServiceRoleForEC2Spot",
        Path="/aws-service-role/spot.amazonaws.com/",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    r = run_cli(
        "preflight", "--target", "aws", "--lab", "pf", "--scenario", "spot", "--json", env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr


def test_missing_region_is_one_line(moto_endpoint: str, tmp_path: Path) -> None:
    env = _env_without(aws_env(moto_endpoint), "AWS_DEFAULT_REGION")
    r = _run(["preflight", "--target", "aws", "--lab", "pf"], env, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: preflight: region: no AWS region is set "
        "(pass --region us-west-2 or export AWS_DEFAULT_REGION=us-west-2)"
    )
    assert "Traceback" not in r.stderr
    assert not (tmp_path / ".raylab").exists()
    _nothing_created(moto_endpoint)


def test_missing_credentials_is_one_line(moto_endpoint: str, tmp_path: Path) -> None:
    env = _env_without(aws_env(moto_endpoint), "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env["HOME"] = str(tmp_path)
    r = _run(["preflight", "--target", "aws", "--lab", "pf"], env, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: preflight: credentials: no AWS credentials found "
        "(run `aws configure` or `aws sso login`, or export AWS_PROFILE=<profile>)"
    )
    assert "Traceback" not in r.stderr
    assert not (tmp_path / ".raylab").exists()


def test_region_option_wins(moto_endpoint: str, ec2_quotas: dict, tmp_path: Path) -> None:
    ec2_quotas.update({OD: 512, SPOT: 512})
    env = _env_without(aws_env(moto_endpoint), "AWS_DEFAULT_REGION")
    r = _run(
        ["preflight", "--target", "aws", "--lab", "pf", "--region", "eu-west-1", "--json"], env, tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["facts"]["availability_zones"] == ["eu-west-1a", "eu-west-1b"]


def test_no_network_is_not_rejected_credentials(tmp_path: Path) -> None:
    # a closed port on loopback stands for "no network": botocore's EndpointConnectionError
    env = _env_without(aws_env("http://127.0.0.1:9"))
    r = _run(["preflight", "--target", "aws", "--lab", "pf"], env, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: preflight: credentials: could not reach AWS at http://127.0.0.1:9")
    assert "(EndpointConnectionError)" in last and "rejected" not in last
    assert not (tmp_path / ".raylab").exists()


@pytest.mark.parametrize("region", [None, "us-west-2"])
def test_missing_profile_is_one_line(tmp_path: Path, region: str | None) -> None:
    env = _env_without(aws_env("http://127.0.0.1:9"), "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                       *(["AWS_DEFAULT_REGION"] if region is None else []))
    env["AWS_PROFILE"] = "nope"
    r = _run(["preflight", "--target", "aws", "--lab", "pf"], env, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "AWS profile 'nope' is not configured" in last
    assert last.endswith(
        "(run `aws configure --profile nope` (or `aws configure sso`), or unset AWS_PROFILE)"
    )
