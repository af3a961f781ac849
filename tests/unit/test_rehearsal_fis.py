"""The rehearsal's FIS: stage 6's own experiment templates (``raylab.spot.fis``), started through boto3
against a moto server in this process, act on the account: spot notices then reclaims, and
InsufficientInstanceCapacity for the head role's launches in the window. Durations are scaled so
that AWS's PT2M lasts a couple of seconds; the tests wait on conditions, with deadlines."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from raylab.aws.ec2_texts import CAPACITY_CODE, CAPACITY_MESSAGE_OD, CAPACITY_MESSAGE_SPOT
from raylab.rehearsal import cloud
from raylab.rehearsal.fis import FisHooks, install, iso_seconds, time_scale
from raylab.rehearsal.metadata import moto_assume_role
from raylab.spot.fis import RECLAIM_NOTICE_S, TERMINAL, capacity_template, instance_arn, reclaim_template

ACCOUNT, REGION = "123456789012", "us-west-2"
KEYS = {"aws_access_key_id": "operator", "aws_secret_access_key": "operator"}
FIS_ROLE = f"arn:aws:iam::{ACCOUNT}:role/raylab-fis"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


# ---- pure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT2M", 120), ("PT2M30S", 150), ("PT90S", 90), ("PT1H", 3600), ("PT5M", 300), ("P1DT1S", 86401)])
def test_iso_durations(text: str, seconds: float) -> None:
    assert iso_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "2M", "PT2X", "120"])
def test_not_iso_durations(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        iso_seconds(text)


def test_time_scale_from_the_environment() -> None:
    assert time_scale({}) == 1.0
    assert time_scale({"RAYLAB_REHEARSAL_FIS_SCALE": "0.02"}) == 0.02
    with pytest.raises(ValueError, match="positive"):
        time_scale({"RAYLAB_REHEARSAL_FIS_SCALE": "0"})


# ---- moto with the rehearsal's FIS --------------------------------------------------------------


@dataclass
class Hooks:
    """What the world would publish in IMDS, recorded with the time it happened."""

    notices: list[tuple[str, float, float]] = field(default_factory=list)  # (iid, seconds, at)
    rebalances: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hooks(self) -> FisHooks:
        def notice(iid: str, seconds: float) -> None:
            with self.lock:
                self.notices.append((iid, seconds, time.monotonic()))

        return FisHooks(notice=notice, rebalance=self.rebalances.append)


@pytest.fixture
def scale() -> float:
    """FIS's time scale; a test parametrizes ``scale`` for another (default: PT2M in 2 s)."""
    return 2 / RECLAIM_NOTICE_S


@pytest.fixture
def world(moto_endpoint: str, scale: float) -> Iterator[Hooks]:
    """The cloud rules and the rehearsal's FIS, at ``scale``."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    rec = Hooks()
    undo_cloud = cloud.install(cloud.CloudRules(iam_profile_delay_s=0, shutdown_hold_s=0.3))
    undo_fis = install(rec.hooks(), scale=scale)
    try:
        yield rec
    finally:
        undo_fis()
        undo_cloud()
        urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))


def _client(moto_endpoint: str, service: str, **keys: str) -> Any:
    return boto3.client(service, endpoint_url=moto_endpoint, region_name=REGION, **(keys or KEYS))


def _until(what: Callable[[], Any], timeout: float, why: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {why}")


@dataclass
class Account:
    ec2: Any
    fis: Any
    subnets: dict[str, str]  # AZ -> subnet id
    image: str


def _account(moto_endpoint: str) -> Account:
    ec2 = _client(moto_endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = {az: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
               for az, cidr in (("us-west-2a", "10.0.1.0/24"), ("us-west-2b", "10.0.2.0/24"))}
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return Account(ec2, _client(moto_endpoint, "fis"), subnets, image)


def _run(ec2: Any, a: Account, az: str = "us-west-2a", spot: bool = False, n: int = 1) -> list[str]:
    kw: dict[str, Any] = {"ImageId": a.image, "InstanceType": "c7i.4xlarge", "MinCount": n, "MaxCount": n,
                          "SubnetId": a.subnets[az]}
    if spot:
        kw["InstanceMarketOptions"] = {"MarketType": "spot"}
    return [i["InstanceId"] for i in ec2.run_instances(**kw)["Instances"]]


def _state(a: Account, iid: str) -> dict[str, Any]:
    return dict(a.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0])


def _start(a: Account, request: dict[str, Any]) -> str:
    tpl = a.fis.create_experiment_template(**request)["experimentTemplate"]["id"]
    return str(a.fis.start_experiment(experimentTemplateId=tpl)["experiment"]["id"])


def _status(a: Account, exp: str) -> dict[str, str]:
    return dict(a.fis.get_experiment(id=exp)["experiment"]["state"])


def _ended(a: Account, exp: str, timeout: float) -> dict[str, str]:
    return dict(_until(lambda: (st := _status(a, exp))["status"] in TERMINAL and st, timeout,
                       "the experiment's end"))


# ---- reclaim ------------------------------------------------------------------------------------


def test_reclaim_notices_then_terminates_the_targeted_spot_instance(moto_endpoint: str, world: Hooks) -> None:
    a = _account(moto_endpoint)
    spot = _run(a.ec2, a, spot=True, n=3)
    arns = [instance_arn(REGION, ACCOUNT, i) for i in spot]
    request = reclaim_template(lab="t", role_arn=FIS_ROLE, spot_arns=arns)  # a third: the first
    target = sorted(spot)[0]
    t0 = time.monotonic()
    exp = _start(a, request)
    assert _status(a, exp)["status"] in ("initiating", "running")
    iid, seconds, at = _until(lambda: world.notices, 5, "the interruption notice")[0]
    assert iid == target and world.rebalances == [target]
    assert 1.5 <= seconds <= 2.0 and at - t0 < 1.0  # PT2M: the notice at once, two (scaled) minutes ahead
    assert _state(a, target)["State"]["Name"] == "running"  # noticed, not yet reclaimed
    assert _ended(a, exp, 10)["status"] == "completed"
    assert time.monotonic() - t0 >= 2.0
    gone = _state(a, target)
    assert gone["State"]["Name"] in ("shutting-down", "terminated")
    assert gone["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    _until(lambda: _state(a, target)["State"]["Name"] == "terminated", 5, "the cloud rules' shutdown")
    assert {_state(a, i)["State"]["Name"] for i in spot if i != target} == {"running"}


@pytest.mark.parametrize("scale", [1 / RECLAIM_NOTICE_S])  # PT3M in 1.5 s: the notice (2 min ahead) at 0.5 s
def test_a_longer_notice_sends_the_rebalance_first(moto_endpoint: str, world: Hooks) -> None:
    a = _account(moto_endpoint)
    target = _run(a.ec2, a, spot=True)[0]
    request = reclaim_template(lab="t", role_arn=FIS_ROLE, spot_arns=[instance_arn(REGION, ACCOUNT, target)],
                               notice_s=180)
    t0 = time.monotonic()
    exp = _start(a, request)
    _until(lambda: world.rebalances, 2, "the rebalance recommendation")
    assert not world.notices
    _, seconds, at = _until(lambda: world.notices, 5, "the interruption notice")[0]
    assert at - t0 >= 0.45 and 0.9 <= seconds <= 1.0
    assert _ended(a, exp, 10)["status"] == "completed"
    assert _state(a, target)["State"]["Name"] in ("shutting-down", "terminated")


def test_reclaim_of_an_on_demand_instance_fails_and_touches_nothing(moto_endpoint: str, world: Hooks) -> None:
    a = _account(moto_endpoint)
    od = _run(a.ec2, a)[0]
    exp = _start(a, reclaim_template(lab="t", role_arn=FIS_ROLE,
                                     spot_arns=[instance_arn(REGION, ACCOUNT, od)]))
    st = _ended(a, exp, 5)
    assert st["status"] == "failed" and "not a running spot instance" in st["reason"]
    assert not world.notices and _state(a, od)["State"]["Name"] == "running"


@pytest.mark.parametrize("scale", [1 / RECLAIM_NOTICE_S])  # PT2M in 1 s
def test_a_stopped_reclaim_reclaims_nothing_more(moto_endpoint: str, world: Hooks) -> None:
    a = _account(moto_endpoint)
    target = _run(a.ec2, a, spot=True)[0]
    exp = _start(a, reclaim_template(lab="t", role_arn=FIS_ROLE,
                                     spot_arns=[instance_arn(REGION, ACCOUNT, target)]))
    _until(lambda: world.notices, 2, "the interruption notice")
    a.fis.stop_experiment(id=exp)
    assert _ended(a, exp, 5)["status"] == "stopped"
    deadline = world.notices[0][2] + world.notices[0][1] + 0.5  # past when it would have been reclaimed
    _until(lambda: time.monotonic() > deadline, 3, "the reclaim's deadline")
    assert _state(a, target)["State"]["Name"] == "running"


# ---- capacity -----------------------------------------------------------------------------------


def _head(moto_endpoint: str) -> tuple[str, Any]:
    """The head role's ARN and an EC2 client signed with its instance credentials (moto's STS)."""
    iam = _client(moto_endpoint, "iam")
    arn = iam.create_role(RoleName="lab-head", Path="/raylab/",
                          AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
    c = moto_assume_role(ACCOUNT, REGION)("lab-head", "i-0head")
    return arn, _client(moto_endpoint, "ec2", aws_access_key_id=c["AccessKeyId"],
                        aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["Token"])


def _refused(ec2: Any, a: Account, **kw: Any) -> str | None:
    try:
        _run(ec2, a, **kw)
    except ClientError as e:
        assert e.response["Error"]["Code"] == CAPACITY_CODE
        return str(e.response["Error"]["Message"])
    return None


@pytest.mark.parametrize("scale", [6 / 120])  # a 120 s window lasts 6 s
@pytest.mark.parametrize("by", ["name", "id"])
def test_capacity_refuses_the_roles_launches_in_the_zone_for_the_window(moto_endpoint: str, world: Hooks,
                                                                         by: str) -> None:
    a = _account(moto_endpoint)
    role_arn, head_ec2 = _head(moto_endpoint)
    zone = "us-west-2a" if by == "name" else next(
        z["ZoneId"] for z in a.ec2.describe_availability_zones()["AvailabilityZones"]
        if z["ZoneName"] == "us-west-2a")
    exp = _start(a, capacity_template(lab="t", role_arn=FIS_ROLE, head_role_arn=role_arn, azs=[zone],
                                      duration_s=120))
    _until(lambda: _status(a, exp)["status"] == "running", 2, "the window opens")
    assert _refused(head_ec2, a) == CAPACITY_MESSAGE_OD.format(itype="c7i.4xlarge", az="us-west-2a")
    assert _refused(head_ec2, a, spot=True) == CAPACITY_MESSAGE_SPOT
    assert _refused(head_ec2, a, az="us-west-2b") is None  # another zone
    assert _refused(a.ec2, a) is None  # other credentials
    assert _status(a, exp)["status"] == "running"  # all of that inside the window
    assert _ended(a, exp, 10)["status"] == "completed"
    assert _refused(head_ec2, a) is None  # after the window


@pytest.mark.parametrize("scale", [6 / 120])
def test_capacity_percentage_refuses_that_share_of_calls(moto_endpoint: str, world: Hooks) -> None:
    a = _account(moto_endpoint)
    role_arn, head_ec2 = _head(moto_endpoint)
    exp = _start(a, capacity_template(lab="t", role_arn=FIS_ROLE, head_role_arn=role_arn,
                                      azs=["us-west-2a"], duration_s=120, percentage=50))
    _until(lambda: _status(a, exp)["status"] == "running", 2, "the window opens")
    refused = [_refused(head_ec2, a) is not None for _ in range(4)]
    assert _status(a, exp)["status"] == "running"
    assert refused == [False, True, False, True]
    a.fis.stop_experiment(id=exp)
    assert _ended(a, exp, 5)["status"] == "stopped"
    assert _refused(head_ec2, a) is None and _refused(head_ec2, a) is None  # the stop closed the window


def test_uninstalled_moto_acts_on_nothing_again(moto_endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    world_notices: list[str] = []
    undo = install(FisHooks(notice=lambda iid, s: world_notices.append(iid)), scale=0.01)
    undo()
    a = _account(moto_endpoint)
    target = _run(a.ec2, a, spot=True)[0]
    exp = _start(a, reclaim_template(lab="t", role_arn=FIS_ROLE,
                                     spot_arns=[instance_arn(REGION, ACCOUNT, target)]))
    # moto's own: one state further at every GetExperiment, completed having done nothing
    assert _ended(a, exp, 5)["status"] == "completed"
    assert _state(a, target)["State"]["Name"] == "running" and not world_notices
    with pytest.raises(RuntimeError, match="already installed"):
        undo2 = install(FisHooks(notice=lambda iid, s: None))
        try:
            install(FisHooks(notice=lambda iid, s: None))
        finally:
            undo2()
