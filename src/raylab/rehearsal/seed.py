"""What the rehearsal account holds before the lab starts, as an instructor's account would: the spot
service-linked role, and the public bucket stage 7 reads on AWS with the lab's Common Voice sample.

These are the twin's own calls (the account's history, not the operator's): the operator-policy scan
skips this module (tests/unit/test_room_operator_policy.py).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_BUCKET, DATA_PREFIX = "ray-example-data", "common_voice_17/parquet/"  # stage 7's source on AWS
SAMPLE = {"rows": 40, "seed": 7, "files": 2}  # the local target's sample, spoken by espeak-ng


def account(endpoint: str, region: str, shared: Path) -> None:
    """Seed the account at ``endpoint`` (moto, just started)."""
    import boto3

    kw = {"endpoint_url": endpoint, "aws_access_key_id": "rehearsal", "aws_secret_access_key": "rehearsal"}
    iam = boto3.client("iam", region_name=region, **kw)
    # AWS makes this role at an account's first spot request; raylab's preflight asks for it. (moto's
    # CreateServiceLinkedRole names it AWSServiceRoleForspot; AWS's name is this one.)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "spot.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName="AWSServiceRoleForEC2Spot", Path="/aws-service-role/spot.amazonaws.com/",
                    AssumeRolePolicyDocument=trust)
    data(boto3.client("s3", region_name="us-west-2", **kw), shared / "s3-sample")


def data(s3: object, folder: Path) -> None:
    """``s3://ray-example-data/common_voice_17/parquet/`` (us-west-2) holding the sample, made once per
    checkout in ``folder``."""
    from raylab.datajob.sample import write_sample

    marker = folder / "SAMPLE"
    want = " ".join(f"{k}={v}" for k, v in SAMPLE.items())
    if not marker.exists() or marker.read_text().strip() != want:
        write_sample(folder, **SAMPLE)
        marker.write_text(want + "\n")
    # public, as AWS's bucket is: stage 7 reads it anonymously (unsigned requests; moto checks ACLs)
    s3.create_bucket(Bucket=DATA_BUCKET, ACL="public-read",  # type: ignore[attr-defined]  # a boto3 client
                     CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    for f in sorted(folder.glob("*.parquet")):
        s3.upload_file(str(f), DATA_BUCKET, f"{DATA_PREFIX}{f.name}",  # type: ignore[attr-defined]  # a boto3 client
                       ExtraArgs={"ACL": "public-read"})
