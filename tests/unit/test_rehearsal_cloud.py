"""The rehearsal's cloud rules, through boto3, against a moto server on 127.0.0.1 in this process.

One rule per test; each test shows moto's behaviour changed (uninstalled, the same calls succeed).
"""

from __future__ import annotations

import base64
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from raylab.rehearsal import catalog
from raylab.rehearsal.catalog import AL2023, CATALOG, DEBIAN_12, DLAMI_UBUNTU1804_V71, REGIONS, by_id, by_key
from raylab.rehearsal.cloud import CloudRules, install

RULES = CloudRules(iam_profile_delay_s=8.0, shutdown_hold_s=5.0)  # short delays: tests move the clock
PAST = 9.0  # seconds past both delays: tests move the rules' clock, they do not sleep
REGION = "us-west-2"


# ---- the catalog (pure) -------------------------------------------------------------------------


def test_catalog_ids_are_unique_and_shaped_like_ami_ids() -> None:
    ids = [i for a in CATALOG for i in a.ids.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"ami-[0-9a-f]{17}", i) for i in ids)
    assert len({a.key for a in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize("ami", CATALOG, ids=lambda a: a.key)
def test_every_catalog_ami_exists_in_every_region(ami: catalog.Ami) -> None:
    assert set(REGIONS) <= set(ami.ids)


@pytest.mark.parametrize(("key", "region", "root", "gb", "user", "python"), [
    ("debian-12", "us-west-2", "/dev/xvda", 8, "admin", "3.11"),
    ("dlami-ubuntu1804-v71", "us-west-2", "/dev/sda1", 140, "ubuntu", "3.6"),
    ("al2023", "ap-northeast-2", "/dev/xvda", 8, "ec2-user", "3.9"),
])
def test_by_id_finds_what_by_key_names(key: str, region: str, root: str, gb: int, user: str,
                                       python: str) -> None:
    ami = by_key(key)
    assert by_id(ami.ids[region]) is ami
    assert (ami.root_device, ami.snapshot_gb, ami.user, ami.python) == (root, gb, user, python)


def test_catalog_lookups_of_unknown_images() -> None:
    assert by_id("ami-00000000000000000") is None
    with pytest.raises(KeyError, match="known: debian-12"):
        by_key("ubuntu-24.04")


def test_the_dlami_is_rays_default_image() -> None:
    from ray.autoscaler._private.aws.config import DEFAULT_AMI

    assert dict(DLAMI_UBUNTU1804_V71.ids) == DEFAULT_AMI


# ---- moto with the rules ------------------------------------------------------------------------


def _reset(moto_endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))


@pytest.fixture
def client(moto_endpoint: str) -> Callable[..., Any]:
    import boto3

    _reset(moto_endpoint)

    def make(service: str, region: str = REGION) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name=region,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    return make


@pytest.fixture
def advance(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move the rules' clock forward by that many seconds."""
    from raylab.rehearsal import cloud

    skew = [0.0]
    monkeypatch.setattr(cloud, "_now", lambda: time.time() + skew[0])

    def move(seconds: float) -> None:
        skew[0] += seconds

    return move


@pytest.fixture
def rules(client: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """The rules installed; tests set ``console`` in the dict."""
    holder: dict[str, Any] = {"console": None}
    uninstall = install(RULES, console=lambda i: holder["console"](i) if holder["console"] else None)
    yield holder
    uninstall()


def _code_and_message(excinfo: pytest.ExceptionInfo[Any]) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def _run(ec2: Any, ami: str, **kw: Any) -> dict[str, Any]:
    inst: dict[str, Any] = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, **kw)["Instances"][0]
    return inst


def _state(ec2: Any, instance_id: str) -> str:
    res = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(res[0]["Instances"][0]["State"]["Name"])


@pytest.mark.usefixtures("rules")
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("ami", CATALOG, ids=lambda a: a.key)
def test_catalog_images_are_described_as_aws_describes_them(client: Any, ami: catalog.Ami,
                                                            region: str) -> None:
    img = client("ec2", region).describe_images(ImageIds=[ami.ids[region]])["Images"][0]
    assert (img["Name"], img["RootDeviceName"], img["RootDeviceType"]) == (ami.name, ami.root_device, "ebs")
    root = [m["Ebs"] for m in img["BlockDeviceMappings"] if m["DeviceName"] == ami.root_device]
    assert root and root[0]["VolumeSize"] == ami.snapshot_gb and root[0]["SnapshotId"].startswith("snap-")


@pytest.mark.usefixtures("rules")
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("ami", [DEBIAN_12, AL2023], ids=lambda a: a.key)
def test_catalog_ssm_parameters_name_the_regions_image(client: Any, ami: catalog.Ami, region: str) -> None:
    assert ami.ssm_parameter
    value = client("ssm", region).get_parameter(Name=ami.ssm_parameter)["Parameter"]["Value"]
    assert value == ami.ids[region]


@pytest.mark.usefixtures("rules")
@pytest.mark.parametrize(("ami", "gb", "refused"), [
    (DLAMI_UBUNTU1804_V71, 100, True),  # Ray's pre-2.0 default root size on its default AMI
    (DLAMI_UBUNTU1804_V71, 140, False),
    (DLAMI_UBUNTU1804_V71, 200, False),
    (DEBIAN_12, 4, True),
    (DEBIAN_12, 8, False),
], ids=lambda v: getattr(v, "key", str(v)))
def test_root_volume_smaller_than_the_snapshot_is_refused(client: Any, ami: catalog.Ami, gb: int,
                                                         refused: bool) -> None:
    from botocore.exceptions import ClientError

    ec2 = client("ec2")
    bdm = [{"DeviceName": ami.root_device, "Ebs": {"VolumeSize": gb}}]
    if not refused:
        assert _run(ec2, ami.ids[REGION], BlockDeviceMappings=bdm)["InstanceId"]
        return
    snap = ec2.describe_images(ImageIds=[ami.ids[REGION]])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]
    with pytest.raises(ClientError) as e:
        _run(ec2, ami.ids[REGION], BlockDeviceMappings=bdm)
    assert _code_and_message(e) == (
        "InvalidBlockDeviceMapping",
        f"Volume of size {gb}GB is smaller than  snapshot '{snap['SnapshotId']}', "
        f"expect size >= {ami.snapshot_gb}GB")


@pytest.mark.usefixtures("rules")
def test_a_launch_without_mappings_gets_the_images_root_volume(client: Any) -> None:
    ec2 = client("ec2")
    inst = _run(ec2, DLAMI_UBUNTU1804_V71.ids[REGION])
    assert inst["RootDeviceName"] == "/dev/sda1"
    [root] = [m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sda1"]
    assert ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]["Size"] == 140


@pytest.mark.usefixtures("rules")
@pytest.mark.parametrize("by", ["Arn", "Name"])
def test_a_new_profile_is_refused_until_iam_has_propagated(client: Any, advance: Any, by: str) -> None:
    from botocore.exceptions import ClientError

    ec2, iam = client("ec2"), client("iam")
    profile = iam.create_instance_profile(InstanceProfileName="ray-head")["InstanceProfile"]
    ref = {"Arn": profile["Arn"]} if by == "Arn" else {"Name": "ray-head"}
    with pytest.raises(ClientError) as e:
        _run(ec2, DEBIAN_12.ids[REGION], IamInstanceProfile=ref)
    value, field, what = (profile["Arn"], "arn", "ARN") if by == "Arn" else ("ray-head", "name", "name")
    assert _code_and_message(e) == (
        "InvalidParameterValue",
        f"Value ({value}) for parameter iamInstanceProfile.{field} is invalid. "
        f"Invalid IAM Instance Profile {what}")
    advance(PAST)
    launched = _run(ec2, DEBIAN_12.ids[REGION], IamInstanceProfile=ref)
    assert launched["IamInstanceProfile"]["Arn"] == profile["Arn"]


def test_the_default_profile_delay_outlasts_a_labs_way_to_the_heads_launch(client: Any, advance: Any) -> None:
    """A lab's head launch comes about 20 s after Terraform created the profile (measured in the
    rehearsal): a shorter delay let a `ray up` with no wait for IAM pass unnoticed (finding 13)."""
    from botocore.exceptions import ClientError

    rules = CloudRules()
    uninstall = install(rules)
    try:
        ec2, iam = client("ec2"), client("iam")
        iam.create_instance_profile(InstanceProfileName="ray-head")
        advance(25.0)
        with pytest.raises(ClientError, match="InvalidParameterValue|Invalid IAM Instance Profile"):
            _run(ec2, DEBIAN_12.ids[REGION], IamInstanceProfile={"Name": "ray-head"})
        advance(rules.iam_profile_delay_s - 25.0 + 1.0)
        assert _run(ec2, DEBIAN_12.ids[REGION], IamInstanceProfile={"Name": "ray-head"})["InstanceId"]
    finally:
        uninstall()


@pytest.mark.usefixtures("rules")
def test_terminate_holds_shutting_down_then_terminates(client: Any, advance: Any) -> None:
    ec2 = client("ec2")
    iid = _run(ec2, DEBIAN_12.ids[REGION])["InstanceId"]
    [t] = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
    assert t["CurrentState"]["Name"] == "shutting-down"
    assert _state(ec2, iid) == "shutting-down"
    advance(4.0)
    ec2.terminate_instances(InstanceIds=[iid])  # a second terminate neither ends the hold nor restarts it
    assert _state(ec2, iid) == "shutting-down"
    advance(2.0)  # 6 s after the first terminate, 2 s after the second: the 5 s hold counts from the first
    assert _state(ec2, iid) == "terminated"


def _vpc_with_instance(ec2: Any) -> tuple[str, str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="ray-nodes", Description="nodes", VpcId=vpc)["GroupId"]
    iid = _run(ec2, DEBIAN_12.ids[REGION], SubnetId=subnet, SecurityGroupIds=[sg])["InstanceId"]
    return iid, subnet, sg


@pytest.mark.usefixtures("rules")
def test_group_and_subnet_cannot_be_deleted_while_an_instance_shuts_down(client: Any, advance: Any) -> None:
    from botocore.exceptions import ClientError

    ec2 = client("ec2")
    iid, subnet, sg = _vpc_with_instance(ec2)
    ec2.terminate_instances(InstanceIds=[iid])
    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupId=sg)
    assert _code_and_message(e) == ("DependencyViolation", f"resource {sg} has a dependent object")
    with pytest.raises(ClientError) as e:
        ec2.delete_subnet(SubnetId=subnet)
    assert _code_and_message(e) == (
        "DependencyViolation", f"The subnet '{subnet}' has dependencies and cannot be deleted.")
    advance(PAST)
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=subnet)


def test_the_default_hold_outlasts_a_teardowns_terraform_destroy(client: Any, advance: Any) -> None:
    """Between `ray down` and the stack delete a teardown runs `terraform destroy` (13-56 s measured in
    the rehearsal): a shorter hold let a sweep that takes shutting-down for gone pass unnoticed."""
    from botocore.exceptions import ClientError

    rules = CloudRules()
    assert rules.shutdown_hold_s >= 60.0
    uninstall = install(rules)
    try:
        ec2 = client("ec2")
        iid, subnet, sg = _vpc_with_instance(ec2)
        ec2.terminate_instances(InstanceIds=[iid])
        advance(56.0)
        assert _state(ec2, iid) == "shutting-down"
        with pytest.raises(ClientError, match="DependencyViolation|dependent object"):
            ec2.delete_security_group(GroupId=sg)
        advance(rules.shutdown_hold_s - 56.0 + 1.0)
        assert _state(ec2, iid) == "terminated"
        ec2.delete_security_group(GroupId=sg)
        ec2.delete_subnet(SubnetId=subnet)
    finally:
        uninstall()


@pytest.mark.usefixtures("rules")
def test_a_running_instance_holds_its_group(client: Any) -> None:
    from botocore.exceptions import ClientError

    ec2 = client("ec2")
    _, _, sg = _vpc_with_instance(ec2)
    with pytest.raises(ClientError, match="has a dependent object"):
        ec2.delete_security_group(GroupId=sg)


def test_console_output_comes_from_the_callback_base64_on_the_wire(client: Any,
                                                                   rules: dict[str, Any]) -> None:
    from botocore.handlers import decode_console_output

    ec2 = client("ec2")
    iid = _run(ec2, DEBIAN_12.ids[REGION])["InstanceId"]
    rules["console"] = lambda i: f"cloud-init: {i} up\n" if i == iid else None
    assert ec2.get_console_output(InstanceId=iid)["Output"] == f"cloud-init: {iid} up\n"  # boto3 decodes
    ec2.meta.events.unregister("after-call.ec2.GetConsoleOutput", decode_console_output)
    wire = ec2.get_console_output(InstanceId=iid)["Output"]
    assert base64.b64decode(wire).decode() == f"cloud-init: {iid} up\n"
    rules["console"] = lambda i: None
    assert "Linux version" in client("ec2").get_console_output(InstanceId=iid)["Output"]  # moto's own text


def test_a_second_install_is_refused(client: Any) -> None:
    uninstall = install(RULES)
    try:
        with pytest.raises(RuntimeError, match="already installed"):
            install(RULES)
    finally:
        uninstall()
    uninstall()  # a second uninstall does nothing
    install(RULES)()  # and the rules can come back


def test_uninstall_restores_moto(client: Any) -> None:
    from botocore.exceptions import ClientError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.amis import Ami
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses import EC2Response
    from moto.ssm.models import ParameterDict

    before = {c: dict(vars(c)) for c in (EC2Backend, Ami, Instance, EC2Response, ParameterDict)}
    ec2, ssm = client("ec2"), client("ssm")
    uninstall = install(RULES, console=lambda i: "mine")
    held = _run(ec2, DEBIAN_12.ids[REGION])["InstanceId"]
    ec2.terminate_instances(InstanceIds=[held])
    assert ssm.get_parameter(Name=DEBIAN_12.ssm_parameter)["Parameter"]["Value"] == DEBIAN_12.ids[REGION]
    uninstall()

    assert {c: dict(vars(c)) for c in before} == before
    assert _state(ec2, held) == "terminated"  # a hold in progress ends with the rules
    with pytest.raises(ClientError, match="InvalidAMIID"):
        ec2.describe_images(ImageIds=[DEBIAN_12.ids[REGION]])
    with pytest.raises(ClientError, match="ParameterNotFound"):
        ssm.get_parameter(Name=DEBIAN_12.ssm_parameter)
    al = ec2.describe_images(ImageIds=[AL2023.ids[REGION]])["Images"][0]  # moto's own record is back
    assert al["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 15
    iid = _run(ec2, DLAMI_UBUNTU1804_V71.ids[REGION],
               BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 100}}])["InstanceId"]
    ec2.terminate_instances(InstanceIds=[iid])
    assert _state(ec2, iid) == "terminated"
    assert "Linux version" in ec2.get_console_output(InstanceId=iid)["Output"]


@pytest.mark.usefixtures("rules")
def test_the_projects_resolver_reads_the_catalogs_debian(client: Any) -> None:
    from raylab.cluster.node_image import DEBIAN_12 as DEBIAN_12_REF
    from raylab.targets.aws.image import resolve

    img = resolve(client("ssm"), client("ec2"), DEBIAN_12_REF)
    assert DEBIAN_12_REF == "resolve:ssm:/aws/service/debian/release/12/latest/amd64"
    assert (img.image_id, img.name, img.root_device, img.root_gb) == (
        DEBIAN_12.ids[REGION], DEBIAN_12.name, "/dev/xvda", 8)
