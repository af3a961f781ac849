"""The rehearsal's instance metadata, over real HTTP on 127.0.0.1, with moto's EC2, IAM and STS in this
process: tokens, the instance's facts, the instance role's credentials (botocore's own chain finds
them) and spot notices."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from raylab.rehearsal.metadata import (
    REFRESH_BEFORE_S,
    CannotAssume,
    InstanceFacts,
    Metadata,
    moto_assume_role,
    moto_lookup,
)

ACCOUNT, REGION = "123456789012", "us-west-2"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
KEYS = {"aws_access_key_id": "operator", "aws_secret_access_key": "operator"}


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[str]:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    yield moto_endpoint
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))


def _client(moto_endpoint: str, service: str, **keys: str) -> Any:
    return boto3.client(service, endpoint_url=moto_endpoint, region_name=REGION, **(keys or KEYS))


def _instance(moto_endpoint: str, *, role: str | None = "lab-head", trust: dict[str, Any] = EC2_TRUST,
              spot: bool = True, tokens: str | None = "required") -> dict[str, Any]:
    """A VPC subnet in us-west-2b and one instance in it (the role's profile attached, if any)."""
    ec2, iam = _client(moto_endpoint, "ec2"), _client(moto_endpoint, "iam")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-west-2b")
    kw: dict[str, Any] = {"SubnetId": subnet["Subnet"]["SubnetId"], "InstanceType": "c7i.4xlarge",
                          "ImageId": ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
                          "MinCount": 1, "MaxCount": 1}
    if role:
        iam.create_role(RoleName=role, Path="/raylab/", AssumeRolePolicyDocument=json.dumps(trust))
        iam.create_instance_profile(InstanceProfileName=role)
        iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
        kw["IamInstanceProfile"] = {"Name": role}
    if spot:
        kw["InstanceMarketOptions"] = {"MarketType": "spot"}
    if tokens:
        kw["MetadataOptions"] = {"HttpTokens": tokens, "HttpEndpoint": "enabled"}
    return dict(ec2.run_instances(**kw)["Instances"][0])


@dataclass
class Node:
    md: Metadata
    inst: dict[str, Any]
    moto_endpoint: str  # the account's


@pytest.fixture
def imds(aws: str) -> Iterator[Node]:
    """The metadata server on 127.0.0.1: this test's requests come from the instance's address."""
    inst = _instance(aws)
    account = moto_lookup(ACCOUNT, REGION)
    md = Metadata(lambda ip: account(inst["PrivateIpAddress"]) if ip == "127.0.0.1" else None,
                  moto_assume_role(ACCOUNT, REGION), host="127.0.0.1", port=0).start()
    yield Node(md, inst, aws)
    md.stop()


def _http(md: Metadata, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{md.port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _token(md: Metadata) -> dict[str, str]:
    status, tok = _http(md, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200 and tok
    return {"X-aws-ec2-metadata-token": tok}


def test_imdsv2_answers_the_instance_behind_the_address(imds: Node) -> None:
    md, inst = imds.md, imds.inst
    tok = _token(md)
    answers = {p: _http(md, "GET", f"/latest/meta-data/{p}", tok) for p in (
        "instance-id", "instance-type", "instance-life-cycle", "placement/availability-zone", "local-ipv4")}
    assert answers == {"instance-id": (200, inst["InstanceId"]), "instance-type": (200, "c7i.4xlarge"),
                       "instance-life-cycle": (200, "spot"),
                       "placement/availability-zone": (200, "us-west-2b"),
                       "local-ipv4": (200, inst["PrivateIpAddress"])}


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),  # HttpTokens=required: no token, no answer
    ({"X-aws-ec2-metadata-token": "made-up"}, 401),
])
def test_a_get_without_a_valid_token_is_refused(imds: Node,
                                                headers: dict[str, str], status: int) -> None:
    md = imds.md
    assert _http(md, "GET", "/latest/meta-data/instance-id", headers)[0] == status
    assert _http(md, "GET", "/latest/meta-data/iam/security-credentials/", headers)[0] == status


def test_tokens_optional_when_the_instance_says_so(aws: str) -> None:
    inst = _instance(aws, tokens="optional", spot=False)
    facts = moto_lookup(ACCOUNT, REGION)(inst["PrivateIpAddress"])
    assert facts is not None and facts.lifecycle == "on-demand"
    md = Metadata(lambda ip: facts, moto_assume_role(ACCOUNT, REGION), host="127.0.0.1", port=0)
    r = md.answer("10.0.1.9", "GET", "/latest/meta-data/instance-id", {})
    md.stop()  # never started: only its socket closes
    assert (r.status, r.body) == (200, inst["InstanceId"])


def test_an_address_the_account_does_not_know_gets_404(aws: str) -> None:
    lookup = moto_lookup(ACCOUNT, REGION)
    _instance(aws)
    assert lookup("10.9.9.9") is None
    md = Metadata(lookup, moto_assume_role(ACCOUNT, REGION), host="127.0.0.1", port=0).start()
    try:  # this test's requests come from 127.0.0.1, which no instance has
        assert _http(md, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 404
    finally:
        md.stop()


def test_the_role_credentials_are_the_instance_roles_assumed_by_sts(imds: Node
                                                                     ) -> None:
    md, inst = imds.md, imds.inst
    tok = _token(md)
    assert _http(md, "GET", "/latest/meta-data/iam/security-credentials/", tok) == (200, "lab-head")
    assert _http(md, "GET", "/latest/meta-data/iam/security-credentials/other", tok)[0] == 404
    status, body = _http(md, "GET", "/latest/meta-data/iam/security-credentials/lab-head", tok)
    creds = json.loads(body)
    assert status == 200 and creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    expires = datetime.strptime(creds["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (expires - datetime.now(UTC)).total_seconds() > REFRESH_BEFORE_S
    sts = _client(imds.moto_endpoint, "sts", aws_access_key_id=creds["AccessKeyId"],
                  aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["Token"])
    who = sts.get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/lab-head/{inst['InstanceId']}"
    info = json.loads(_http(md, "GET", "/latest/meta-data/iam/info", tok)[1])
    assert info["InstanceProfileArn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/lab-head"


def test_botocore_on_a_node_finds_the_role_through_imds(imds: Node,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's boto3 with no keys anywhere: the default chain reaches IMDS and calls as the role."""
    md, inst = imds.md, imds.inst
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_EC2_METADATA_DISABLED", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/raylab-test")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/raylab-test")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{md.port}/")
    session = boto3.Session(region_name=REGION)
    creds = session.get_credentials()
    assert creds is not None and creds.method == "iam-role"
    who = session.client("sts", endpoint_url=imds.moto_endpoint).get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/lab-head/{inst['InstanceId']}"


def test_a_role_ec2_may_not_assume_gets_a_code_not_credentials(aws: str) -> None:
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    inst = _instance(aws, role="not-for-ec2", trust=trust)
    facts = moto_lookup(ACCOUNT, REGION)(inst["PrivateIpAddress"])
    md = Metadata(lambda ip: facts, moto_assume_role(ACCOUNT, REGION), host="127.0.0.1", port=0)
    r = md.answer("10.0.1.9", "GET", "/latest/meta-data/iam/security-credentials/not-for-ec2", {})
    assert r.status == 401  # no token first
    tok = md.answer("10.0.1.9", "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    r = md.answer("10.0.1.9", "GET", "/latest/meta-data/iam/security-credentials/not-for-ec2",
                  {"X-aws-ec2-metadata-token": tok.body})
    md.stop()
    assert r.status == 200 and json.loads(r.body)["Code"] == "AssumeRoleUnauthorizedAccess"
    with pytest.raises(CannotAssume, match="cannot find"):
        moto_assume_role(ACCOUNT, REGION)("no-such-role", inst["InstanceId"])


def test_an_instance_without_profile_has_no_credentials(aws: str) -> None:
    inst = _instance(aws, role=None)
    facts = moto_lookup(ACCOUNT, REGION)(inst["PrivateIpAddress"])
    assert facts is not None and facts.role is None
    md = Metadata(lambda ip: facts, moto_assume_role(ACCOUNT, REGION), host="127.0.0.1", port=0)
    tok = md.answer("10.0.1.9", "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    r = md.answer("10.0.1.9", "GET", "/latest/meta-data/iam/security-credentials/",
                  {"X-aws-ec2-metadata-token": tok.body})
    md.stop()
    assert r.status == 404


def test_credentials_are_reissued_before_they_expire() -> None:
    clock = [1_000_000.0]
    issued: list[str] = []

    def assume(role: str, iid: str) -> dict[str, str]:
        issued.append(f"key{len(issued)}")
        exp = datetime.fromtimestamp(clock[0] + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"AccessKeyId": issued[-1], "SecretAccessKey": "s", "Token": "t", "Expiration": exp}

    facts = InstanceFacts("i-0abc", "m7i.large", "us-west-2a", "on-demand", "10.0.0.5", role="r")
    md = Metadata(lambda ip: facts, assume, host="127.0.0.1", port=0, now=lambda: clock[0])
    tok = md.answer("x", "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}).body

    def key() -> str:
        r = md.answer("x", "GET", "/latest/meta-data/iam/security-credentials/r",
                      {"X-aws-ec2-metadata-token": tok})
        return str(json.loads(r.body)["AccessKeyId"])

    assert key() == "key0"
    clock[0] += 3600 - REFRESH_BEFORE_S - 1
    assert key() == "key0"
    clock[0] += 2
    assert key() == "key1"
    md.stop()


def test_a_spot_notice_appears_in_the_instances_metadata(imds: Node) -> None:
    md, inst = imds.md, imds.inst
    tok = _token(md)
    assert _http(md, "GET", "/latest/meta-data/spot/instance-action", tok)[0] == 404
    assert _http(md, "GET", "/latest/meta-data/events/recommendations/rebalance", tok)[0] == 404
    md.rebalance(inst["InstanceId"])
    md.notice(inst["InstanceId"], 120)
    status, body = _http(md, "GET", "/latest/meta-data/spot/instance-action", tok)
    notice = json.loads(body)
    when = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert status == 200 and notice["action"] == "terminate"
    assert 115 <= (when - datetime.now(UTC)).total_seconds() <= 121
    assert _http(md, "GET", "/latest/meta-data/events/recommendations/rebalance", tok)[0] == 200
