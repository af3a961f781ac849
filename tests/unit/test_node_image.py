"""Finding 1: every node type names a chosen image, pinned to one AMI per `ray up`, root volume fits."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from raylab.cluster.config import render
from raylab.cluster.node_image import DEBIAN_12, NodeImage, image_refs, pin
from raylab.errors import RaylabError
from raylab.targets.aws.image import pin_node_images
from raylab.targets.local.render import PLACEHOLDER_AMI
from tests.unit.test_config_rules import OUTPUTS

NT = "available_node_types"
SCENARIOS = ("static", "autoscale", "spot", "mixed")
AMI = "ami-0d3b1e2f4a5c6d7e8"


class FakeSsm:
    def __init__(self, value: str = AMI) -> None:
        self.value, self.calls = value, []

    def get_parameter(self, Name: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls.append(Name)
        if not Name.startswith("/aws/service/"):
            raise ClientError({"Error": {"Code": "ParameterNotFound", "Message": Name}}, "GetParameter")
        return {"Parameter": {"Name": Name, "Value": self.value}}


class FakeEc2:
    def __init__(self, root_gb: int = 8, root_device: str = "/dev/xvda") -> None:
        self.root_gb, self.root_device = root_gb, root_device

    def describe_images(self, ImageIds: list[str]) -> dict[str, Any]:  # noqa: N803
        if ImageIds != [AMI]:
            return {"Images": []}
        return {"Images": [{"ImageId": AMI, "Name": "debian-12-amd64-20261101-1920",
                            "RootDeviceName": self.root_device,
                            "BlockDeviceMappings": [{"DeviceName": self.root_device, "Ebs": {
                                "VolumeSize": self.root_gb, "SnapshotId": "snap-1"}}]}]}


def _aws(scenario: str = "mixed") -> dict[str, Any]:
    return render(target="aws", scenario=scenario, lab="kim", outputs=OUTPUTS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_names_the_chosen_image_for_every_node_type(scenario: str) -> None:
    cfg = _aws(scenario)
    assert {name: nt["node_config"].get("ImageId") for name, nt in cfg[NT].items()} == \
        dict.fromkeys(cfg[NT], DEBIAN_12)
    assert cfg["auth"]["ssh_user"] == "admin"  # Debian's cloud user
    for nt in cfg[NT].values():  # the mapping names Debian 12's root device, so it sizes the root itself
        assert [d["DeviceName"] for d in nt["node_config"]["BlockDeviceMappings"]] == ["/dev/xvda"]


def test_pin_resolves_once_and_writes_one_ami_into_every_node_type() -> None:
    ssm = FakeSsm()
    out = pin_node_images(_aws(), ssm, FakeEc2(root_gb=8))
    assert ssm.calls == ["/aws/service/debian/release/12/latest/amd64"]
    assert {nt["node_config"]["ImageId"] for nt in out[NT].values()} == {AMI}
    sizes = {nt["node_config"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] for nt in out[NT].values()}
    assert sizes == {100}


@pytest.mark.parametrize(("snapshot_gb", "volume_gb"), [(8, 100), (100, 100), (140, 140), (256, 256)])
def test_root_volume_is_never_below_the_amis_snapshot(snapshot_gb: int, volume_gb: int) -> None:
    out = pin_node_images(_aws(), FakeSsm(), FakeEc2(root_gb=snapshot_gb))
    for nt in out[NT].values():
        ebs = nt["node_config"]["BlockDeviceMappings"][0]["Ebs"]
        assert ebs["VolumeSize"] == volume_gb and ebs["Encrypted"] is True


def test_a_mapping_that_misses_the_root_device_is_refused() -> None:
    with pytest.raises(RaylabError) as e:
        pin_node_images(_aws(), FakeSsm(), FakeEc2(root_device="/dev/sda1"))
    assert "root device" in e.value.message and "/dev/sda1" in e.value.message
    assert "DeviceName: /dev/sda1" in e.value.hint


def test_a_node_type_without_image_is_refused() -> None:
    cfg = _aws()
    del cfg[NT]["ray.worker.spot"]["node_config"]["ImageId"]
    with pytest.raises(RaylabError) as e:
        image_refs(cfg)
    assert "'ray.worker.spot' has no ImageId" in e.value.message


@pytest.mark.parametrize(("ref", "text"), [
    ("resolve:ssm:/not/public", "ParameterNotFound"),
    ("ami-00000000000000000", "does not exist in this region"),
])
def test_unresolvable_images_are_one_clear_error(ref: str, text: str) -> None:
    cfg = _aws()
    for nt in cfg[NT].values():
        nt["node_config"]["ImageId"] = ref
    with pytest.raises(RaylabError) as e:
        pin_node_images(cfg, FakeSsm(), FakeEc2())
    assert text in e.value.message


def test_pin_is_pure() -> None:
    cfg = _aws()
    img = NodeImage(AMI, "debian-12", "/dev/xvda", 8, DEBIAN_12)
    pin(cfg, {DEBIAN_12: img})
    assert cfg[NT]["ray.head.default"]["node_config"]["ImageId"] == DEBIAN_12


def test_local_target_boots_its_placeholder_image() -> None:
    cfg = render(target="local", scenario="mixed", lab="kim", outputs=OUTPUTS,
                 endpoint_url="http://127.0.0.1:5000")
    assert {nt["node_config"]["ImageId"] for nt in cfg[NT].values()} == {PLACEHOLDER_AMI}
