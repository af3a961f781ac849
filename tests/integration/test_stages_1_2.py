"""Stages 1 and 2 for real: CloudFormation and Terraform against a moto server on 127.0.0.1.

One lab's life: network apply + verify, re-apply is a noop, identity apply + verify, re-apply
converges with no changes, teardown of both, and nothing of the lab is left (asked, not assumed).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from raylab.stages import BY_NAME, load
from raylab.stages.runner import run_stage

pytestmark = pytest.mark.integration

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


@needs_terraform
def test_network_and_identity_apply_verify_reapply_destroy(moto_ctx, capsys) -> None:
    ctx = moto_ctx
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    r1 = run_stage(ctx, BY_NAME["network"])
    timings["stack create"] = time.monotonic() - t0
    assert r1.ok, r1.first_failure
    assert r1.applied["action"] == "created"
    net = ctx.state.get("network")
    assert net["stack_name"] == "raylab-it-network"
    assert len(net["PrivateSubnetIds"].split(",")) == 2
    assert {c.name for c in r1.checks} >= {
        "stack",
        "stack outputs",
        "private subnets",
        "Ray security group",
        "bastion security group",
    }

    r1b = run_stage(ctx, BY_NAME["network"])
    assert r1b.applied["action"] == "noop" and r1b.ok
    assert ctx.state.get("network") == net

    t0 = time.monotonic()
    r2 = run_stage(ctx, BY_NAME["identity"])
    timings["terraform init+apply"] = time.monotonic() - t0
    assert r2.ok, r2.first_failure
    assert r2.applied["action"] == "applied"
    ident = ctx.state.get("identity")
    assert ident["head_instance_profile_name"] == "ray-instance-profile-it"
    assert ident["worker_role_arn"].endswith(":role/raylab-it-ray-worker")
    # credentials never land in raylab's files
    for f in ctx.workdir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".tfstate", ".log", "") and f.stat().st_size < 5_000_000:
            assert "AWS_SECRET_ACCESS_KEY" not in f.read_text(errors="ignore"), f

    t0 = time.monotonic()
    r2b = run_stage(ctx, BY_NAME["identity"])
    timings["terraform re-apply"] = time.monotonic() - t0
    assert r2b.applied["action"] == "noop" and r2b.ok

    assert sorted(ctx.target.leftovers(ctx))  # both stages' resources are seen as present

    t0 = time.monotonic()
    load(BY_NAME["identity"]).destroy(ctx)
    load(BY_NAME["network"]).destroy(ctx)
    timings["destroy both"] = time.monotonic() - t0
    assert ctx.target.leftovers(ctx) == []
    assert ctx.state.get("network") == {} and ctx.state.get("identity") == {}

    # destroy again: idempotent no-ops
    load(BY_NAME["identity"]).destroy(ctx)
    load(BY_NAME["network"]).destroy(ctx)
    err = capsys.readouterr().err
    assert "noop: no Terraform state for this lab" in err
    assert "noop: stack raylab-it-network does not exist" in err
    print(json.dumps({k: round(v, 1) for k, v in timings.items()}))


def test_verify_fails_when_the_stack_is_missing(moto_ctx) -> None:
    checks = load(BY_NAME["network"]).verify(moto_ctx)
    assert [(c.name, c.ok) for c in checks] == [("stack", False)]
    assert "raylab stage 1" in (checks[0].hint or "")


def test_network_verify_catches_an_open_ray_port(moto_ctx) -> None:
    """A rule added behind raylab's back (dashboard open to the world) fails the Ray SG check."""
    from raylab.aws.session import client

    run_stage(moto_ctx, BY_NAME["network"])
    sg = moto_ctx.state.get("network")["RaySecurityGroupId"]
    client(moto_ctx, "ec2").authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    ray_sg = {c.name: c for c in load(BY_NAME["network"]).verify(moto_ctx)}["Ray security group"]
    assert not ray_sg.ok
    assert "8265" in ray_sg.detail and "0.0.0.0/0" in ray_sg.detail
    load(BY_NAME["network"]).destroy(moto_ctx)
    assert moto_ctx.target.leftovers(moto_ctx) == []


@needs_terraform
def test_identity_converges_after_terraform_is_killed_mid_apply(moto_ctx, capsys) -> None:
    """SIGKILL terraform while it creates the profiles (state unsaved); the re-run adopts and finishes."""
    import os
    import signal
    import subprocess

    from raylab.iac.terraform import state_addresses, var_args
    from raylab.stages.stage2_identity import terraform_for

    ctx = moto_ctx
    tf, variables = terraform_for(ctx)
    tf.init()
    env = {**tf.env, "TF_CLI_CONFIG_FILE": str(tf.cli_config), "TF_IN_AUTOMATION": "1"}
    proc = subprocess.Popen(
        [
            "terraform",
            f"-chdir={tf.module_dir}",
            "apply",
            "-input=false",
            "-no-color",
            "-auto-approve",
            *var_args(variables),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "aws_iam_instance_profile.head: Creating..." in line:
            break
    time.sleep(1.0)  # the profile now exists in the cloud; terraform waits before saving it
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any("Creating..." in ln for ln in seen)

    r = run_stage(ctx, BY_NAME["identity"])
    assert r.ok, r.first_failure
    err = capsys.readouterr().err
    assert "adopting them" in err and "adopted aws_iam_instance_profile.head" in err
    assert len(state_addresses(tf.state_file)) == 6  # all managed again (destroy is covered above)
