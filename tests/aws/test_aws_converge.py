"""Interrupted runs converge on the AWS target (the real CLI against a moto server on loopback):
SIGKILL `raylab stage 1` while its stack exists but before raylab recorded it, SIGKILL `raylab stage 2`
while Terraform creates the profiles, SIGKILL `raylab down` mid-way; each re-run finishes, and after the
re-run of down nothing of the lab is left but the network pieces moto itself cannot delete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from raylab.leftovers import find_leftovers
from tests.aws.conftest import aws_env

pytestmark = [pytest.mark.aws, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LAB = "cv"


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raylab", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill(p: subprocess.Popen[str]) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL


def _kill_at_line(
    p: subprocess.Popen[str], marker: str, delay: float = 1.0, timeout: float = 300,
    everything_under: Path | None = None,
) -> list[str]:
    assert p.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    for line in p.stderr:
        seen.append(line)
        if marker in line:
            time.sleep(delay)  # let the cloud side get ahead of raylab's own records
            children = [x.proc.pid for x in find_leftovers(everything_under)] if everything_under else []
            for pid in children:  # raylab's children (Terraform, its provider) die in the same instant
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _kill(p)
            return seen
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"{marker!r} never printed (exit {p.wait()}):\n{''.join(seen)}")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raylab", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_killed_stack_and_killed_down_converge(moto_endpoint: str, ec2_quotas: dict, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ec2_quotas.update({"L-1216C47A": 512, "L-34B43A08": 512})
    env = aws_env(moto_endpoint)
    common = ["--target", "aws", "--lab", LAB, "--yes", "--workdir", str(tmp_path / ".raylab")]
    state = tmp_path / ".raylab" / "state.json"
    cfn = boto3.client(
        "cloudformation",
        endpoint_url=moto_endpoint,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    # 1. stage 1 killed once its stack exists in the cloud but before raylab wrote its outputs down.
    # moto creates a stack at once, so raylab's DescribeStacks after CreateStack is made slow: the kill
    # lands in that window every time, not only when the machine is idle (a flaky race on a busy CI).
    from moto.cloudformation.models import CloudFormationBackend

    slow = CloudFormationBackend.describe_stacks

    def describe_stacks(self: CloudFormationBackend, name_or_stack_id: str) -> list:
        time.sleep(3.0)
        return slow(self, name_or_stack_id)

    monkeypatch.setattr(CloudFormationBackend, "describe_stacks", describe_stacks)
    p = _start(["stage", "1", *common], env)
    deadline = time.monotonic() + 120
    while not [s for s in cfn.list_stacks()["StackSummaries"] if s["StackName"] == f"raylab-{LAB}-network"]:
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.02)
    _kill(p)
    monkeypatch.setattr(CloudFormationBackend, "describe_stacks", slow)
    recorded = json.loads(state.read_text()) if state.exists() else {}
    assert "network" not in recorded  # the interruption hit between the cloud and raylab's records
    r = _run(["stage", "1", "--json", *common], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["stages"][0]["applied"]["action"] in ("noop", "updated")
    assert len([s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]) == 1

    # 2. down killed mid-way (the stack being deleted), then re-run: nothing left
    p = _start(["down", *common], env)
    _kill_at_line(p, "deleting stack", delay=0.0)
    r = _run(["down", "--json", *common], env)
    left = json.loads(r.stdout)["leftovers"]
    # moto refuses to delete a stack's NAT/VPC (DependencyViolation; real AWS deletes them), and on
    # the aws target stage 1 leaves that to CloudFormation (its dependency-order sweep runs on the
    # local target only). So against moto exactly those network pieces remain, nothing else: no
    # stack, no IAM object, no instance, no key pair, no process.
    moto_keeps = (
        "NAT gateway ",
        "VPC endpoint ",
        "route table ",
        "internet gateway ",
        "VPC vpc-",
        "elastic IP ",
        "subnet ",
        "security group ",
    )
    assert left and all(x.startswith(moto_keeps) for x in left), left
    assert r.returncode == 2 and "resource(s) left after teardown" in r.stderr
    assert not [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
@pytest.mark.lane2  # 106 s in CI: it balances the two lanes (31.3 and 28.7 min without it)
def test_killed_terraform_converges(moto_endpoint: str, ec2_quotas: dict, tmp_path: Path) -> None:
    ec2_quotas.update({"L-1216C47A": 512, "L-34B43A08": 512})
    env = aws_env(moto_endpoint)
    common = ["--target", "aws", "--lab", LAB, "--yes", "--workdir", str(tmp_path / ".raylab")]

    r = _run(["stage", "1", *common], env)
    assert r.returncode == 0, r.stderr
    # stage 2 and Terraform killed at once while it creates the instance profiles (its state unsaved):
    # a power cut. (Killing raylab alone no longer loses the state: Terraform gets SIGTERM and saves it.)
    p = _start(["stage", "2", *common], env)
    _kill_at_line(p, "aws_iam_instance_profile.head: Creating...", everything_under=tmp_path / ".raylab")
    r = _run(["stage", "2", "--json", *common], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"]
    assert "adopted" in r.stderr

    r = _run(["down", "--json", *common], env)
    assert not [
        x for x in json.loads(r.stdout)["leftovers"] if x.startswith(("instance profile", "IAM role"))
    ]
