"""Run inside a network namespace with only loopback (see test_aws_ray_up.py): the AWS target's
`ray up` / `ray down` with Ray's own AWS provider creating the head in a moto server on 127.0.0.1.

ssh and rsync are replaced on PATH by fakes that record their argv (and exit 0), so Ray's node
updater "reaches" the head without a packet leaving the namespace. HOME is a temporary folder.
Prints one JSON report on stdout; the pytest side asserts on it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

BASTION_IP = "198.51.100.10"  # TEST-NET-2: never routed; in this namespace nothing is


def fake_tools(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("ssh", "rsync"):
        p = bin_dir / tool
        p.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write(json.dumps({{'tool': {tool!r}, 'argv': sys.argv[1:]}}) + '\\n')\n"
            "sys.exit(0)\n"
        )
        p.chmod(p.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)


def seed_aws(endpoint: str, lab: str) -> tuple[dict[str, str], dict[str, str]]:
    """What stages 1-2 would have created: a VPC with two private subnets, the Ray SG, the profiles."""
    import boto3

    kw = {"endpoint_url": endpoint, "region_name": "us-west-2"}
    ec2 = boto3.client("ec2", **kw)
    iam = boto3.client("iam", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=c, AvailabilityZone=az)["Subnet"]["SubnetId"]
        for c, az in (("10.42.16.0/20", "us-west-2a"), ("10.42.32.0/20", "us-west-2b"))
    ]
    sg = ec2.create_security_group(GroupName=f"raylab-{lab}-ray", Description="ray", VpcId=vpc)["GroupId"]
    bastion = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        SubnetId=subnets[0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "raylab-lab", "Value": lab}]}],
    )["Instances"][0]["InstanceId"]
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
            ],
        }
    )
    arns = {}
    for kind, role, prof in (
        ("head", f"raylab-{lab}-ray-head", f"ray-instance-profile-{lab}"),
        ("worker", f"raylab-{lab}-ray-worker", f"ray-worker-profile-{lab}"),
    ):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
        p = iam.create_instance_profile(InstanceProfileName=prof)["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=prof, RoleName=role)
        arns[kind] = p["Arn"]
    network = {
        "VpcId": vpc,
        "PublicSubnetIds": ",".join(subnets),
        "PrivateSubnetIds": ",".join(subnets),
        "AvailabilityZones": "us-west-2a,us-west-2b",
        "RaySecurityGroupId": sg,
        "BastionSecurityGroupId": sg,
        "BastionInstanceId": bastion,
        "BastionPublicIp": BASTION_IP,
        "stack_name": f"raylab-{lab}-network",
    }
    identity = {
        "head_instance_profile_arn": arns["head"],
        "worker_instance_profile_arn": arns["worker"],
        "head_instance_profile_name": f"ray-instance-profile-{lab}",
        "worker_instance_profile_name": f"ray-worker-profile-{lab}",
    }
    return network, identity


def instances(endpoint: str, cluster: str) -> list[dict]:
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-west-2")
    r = ec2.describe_instances(Filters=[{"Name": "tag:ray-cluster-name", "Values": [cluster]}])
    out = []
    for res in r["Reservations"]:
        for i in res["Instances"]:
            out.append(
                {
                    "id": i["InstanceId"],
                    "state": i["State"]["Name"],
                    "ip": i.get("PrivateIpAddress"),
                    "profile": (i.get("IamInstanceProfile") or {}).get("Arn"),
                    "key": i.get("KeyName"),
                    "subnet": i.get("SubnetId"),
                    "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                }
            )
    return out


def main(tmp: Path) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        calls = tmp / "fake-calls.jsonl"
        fake_tools(tmp / "fakebin", calls)
        home = tmp / "home"
        home.mkdir()
        os.environ.update(
            {
                "PATH": f"{tmp / 'fakebin'}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(home),
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-west-2",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(tmp / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        lab = "nt"
        network, identity = seed_aws(endpoint, lab)

        from raylab.cli.options import make_context
        from raylab.cluster.config import render, write_rendered
        from raylab.targets.aws import AwsTarget, ssh

        ctx = make_context(
            "aws", lab, json_mode=False, yes=True, scenario="autoscale", workdir=tmp / ".raylab", quiet=True
        )
        ctx.state.put("network", network)
        ctx.state.put("identity", identity)
        target = AwsTarget()
        target.start(ctx)  # the lab's key (0600) imported as key pair raylab-nt
        # The bastion's host key as stage 1 + a first contact would have pinned it (no keyscan here:
        # nothing answers at the bastion's address inside this namespace).
        plan = target.ssh_plan(ctx)
        hostkey = tmp / "bastion_host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
        plan.known_hosts.write_text(f"{BASTION_IP} {hostkey.with_suffix('.pub').read_text()}")

        cfg = render(
            target="aws",
            scenario="autoscale",
            lab=lab,
            outputs={**{k: v for k, v in network.items() if k != "stack_name"}, **identity},
        )
        # moto publishes Amazon Linux's public SSM parameters, not Debian's: the same resolve-and-pin
        # path (SSM, then DescribeImages for the root device and snapshot size) on an image it knows.
        for nt in cfg["available_node_types"].values():
            nt["node_config"]["ImageId"] = (
                "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        rendered = write_rendered(cfg, tmp / ".raylab" / "cluster.yaml")
        t0 = time.monotonic()
        info = target.cluster_up(ctx, rendered)
        up_s = time.monotonic() - t0
        after_up = instances(endpoint, ctx.names["cluster"])
        ups = [json.loads(x) for x in calls.read_text().splitlines()] if calls.exists() else []
        # an orphan: an instance of the cluster no Ray process knows about (interrupted launch)
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-west-2")
        orphan = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="c7i.4xlarge",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "ray-cluster-name", "Value": ctx.names["cluster"]}],
                }
            ],
        )["Instances"][0]["InstanceId"]
        t0 = time.monotonic()
        target.cluster_down(ctx)
        down_s = time.monotonic() - t0
        after_down = instances(endpoint, ctx.names["cluster"])
        key = Path(plan.key)
        report = {
            "info": info,
            "up_s": round(up_s, 1),
            "down_s": round(down_s, 1),
            "after_up": after_up,
            "after_down": after_down,
            "orphan": orphan,
            "calls": ups,
            "all_calls": [json.loads(x) for x in calls.read_text().splitlines()],
            "identity": identity,
            "key": str(key),
            "key_mode": oct(stat.S_IMODE(key.stat().st_mode)),
            "bastion_ip": BASTION_IP,
            "home_ssh": sorted(p.name for p in (home / ".ssh").glob("*")) if (home / ".ssh").exists() else [],
            "forbidden": [ssh.forbidden_flags(c["argv"]) for c in ups if c["tool"] == "ssh"],
            "connect_10": subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import socket; s=socket.socket(); s.settimeout(2); s.connect(('10.42.16.5', 22))",
                ],
                capture_output=True,
                text=True,
            )
            .stderr.strip()
            .splitlines()[-1:],
        }
        target.stop(ctx)
        report["leftovers"] = target.leftovers(ctx)
        return report
    finally:
        server.stop()


if __name__ == "__main__":
    print("RAYLAB-REPORT " + json.dumps(main(Path(sys.argv[1])), default=str))
