"""Finding 1, end to end on the AWS target: the YAML `ray up` gets carries one pinned AMI.

AwsTarget.cluster_up against moto in-process (no network): the bastion hop and `ray up` itself are
stubbed; the image is resolved through SSM and DescribeImages as on an account. moto publishes
Amazon Linux's public parameters, not Debian's, so the rendered reference is swapped for one it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

AL2023 = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-west-2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def test_cluster_up_hands_ray_up_one_pinned_ami_and_a_root_that_fits(aws: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from raylab.cli.options import make_context
    from raylab.cluster.config import render, write_rendered
    from raylab.targets.aws import AwsTarget
    from tests.unit.test_config_rules import OUTPUTS

    ctx = make_context("aws", "kim", yes=True, scenario="mixed", workdir=tmp_path / ".raylab", quiet=True)
    ctx.state.put("network", {k: OUTPUTS[k] for k in ("PrivateSubnetIds", "AvailabilityZones",
                                                       "RaySecurityGroupId", "BastionPublicIp")})
    cfg = render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)
    for nt in cfg["available_node_types"].values():
        nt["node_config"]["ImageId"] = AL2023
    path = write_rendered(cfg, tmp_path / ".raylab" / "cluster.yaml")

    ssm, ec2 = boto3.client("ssm"), boto3.client("ec2")
    ami = ssm.get_parameter(Name=AL2023.split(":", 2)[2])["Parameter"]["Value"]
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    snapshot_gb = image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
    ran: list[dict[str, Any]] = []

    def ray_up(_ctx: Any, args: list[str], log_name: str, timeout: float) -> None:
        ran.append(yaml.safe_load(Path(args[-1]).read_text()))
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="c7i.4xlarge", TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "ray-cluster-name", "Value": "raylab-kim"},
                                                  {"Key": "ray-node-type", "Value": "head"}]}])

    target = AwsTarget()
    monkeypatch.setattr(target, "ensure_bastion_pinned", lambda *a, **kw: None)
    monkeypatch.setattr(target, "_run_ray", ray_up)
    info = target.cluster_up(ctx, path)

    [up] = ran
    for name, nt in up["available_node_types"].items():
        nc = nt["node_config"]
        assert nc["ImageId"] == ami, name
        [root] = nc["BlockDeviceMappings"]
        assert root["DeviceName"] == "/dev/xvda" and root["Ebs"]["VolumeSize"] == max(100, snapshot_gb), name
    assert info["ssh_user"] == "admin"
