"""Reaching a lab on AWS: the account (region, environment, boto3 clients) and the head through the bastion.

``AwsAccess`` is the base of the AWS target: the region a lab lives in (--region, the saved one, the
environment, the profile), the environment every tool is given (``AWS_ENDPOINT_URL`` passed on
unchanged), the lab's SSH plan with the bastion as the only hop (see ``ssh.py``), pinning the bastion's
host key before first use, and running a command on the head. Nothing here creates a resource.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.targets.aws import ssh as sshmod

if TYPE_CHECKING:
    from raylab.context import Context

BASTION_WAIT_S = 240.0


def region_of(
    option: str | None, saved: str | None, env: dict[str, str], profile_region: str | None
) -> str | None:
    """--region, else the region the lab already lives in, else the environment, else the profile."""
    return option or saved or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or profile_region or None


def head_of(instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    live = [i for i in instances if i.get("kind") == "head" and i.get("state") == "running"]
    return live[0] if live else None


class AwsAccess:
    """How the AWS target reaches the account and the head (the base of ``AwsTarget``)."""

    # environment ---------------------------------------------------------------------------
    def region(self, ctx: Context) -> str | None:
        saved = ctx.state.get("aws").get("region") if ctx.state.path.exists() else None
        prof = None
        if not (
            ctx.options.region
            or saved
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        ):
            import boto3
            from botocore.exceptions import ProfileNotFound

            try:
                prof = boto3.session.Session().region_name
            except ProfileNotFound as e:
                name = e.kwargs.get("profile", "?")
                raise RaylabError(
                    f"AWS profile {name!r} is not configured",
                    f"run `aws configure --profile {name}` (or `aws configure sso`), or unset AWS_PROFILE",
                ) from None
        return region_of(ctx.options.region, saved, dict(os.environ), prof)

    def aws_env(self, ctx: Context) -> dict[str, str]:
        region = self.region(ctx)
        if not region:
            raise RaylabError(
                "no AWS region is set", "pass --region us-west-2 or export AWS_DEFAULT_REGION=us-west-2"
            )
        env = {"AWS_DEFAULT_REGION": region, "AWS_REGION": region}
        if os.environ.get("AWS_ENDPOINT_URL"):
            env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
        return env

    def _client(self, ctx: Context, service: str) -> Any:
        from raylab.aws.session import client

        return client(ctx, service)

    # ssh --------------------------------------------------------------------------------------
    def ssh_plan(self, ctx: Context) -> sshmod.SshPlan:
        ip = ctx.state.network().bastion_public_ip
        if not ip:
            raise RaylabError(
                "no bastion yet: stage 1 (network) has not run for this lab", "run `raylab up --target aws`"
            )
        port = ctx.options.bastion_port
        plan = sshmod.plan_for(ctx.workdir, ctx.names["key_pair"], sshmod.Hop("ec2-user", ip, port))
        sshmod.write_config(plan)
        return plan

    def ensure_bastion_pinned(
        self, ctx: Context, plan: sshmod.SshPlan, wait_s: float = BASTION_WAIT_S
    ) -> None:
        """Pin the bastion's host key before first use (see ssh.py). A fresh bastion may still be
        booting: poll until it answers, and prefer to wait for the fingerprints cloud-init prints
        to its console so the scanned key is checked, not just trusted."""
        h = plan.bastion
        bastion_id = ctx.state.network().bastion_instance_id or None
        pinned_for = plan.known_hosts.with_name("bastion-instance")  # whose key the pin is
        if sshmod.pinned(plan, h.host, h.port):
            was = pinned_for.read_text().strip() if pinned_for.exists() else bastion_id
            if was == bastion_id:
                return
            # CloudFormation replaced the bastion (a new AMI): the Elastic IP is the same, the host key
            # is not. Forget the old key and pin the new one against the new instance's console.
            ctx.ui.warning(f"bastion {h.host} is a new instance ({was} -> {bastion_id}): its old host key "
                           "is forgotten and the new one pinned")
            sshmod.forget_host(plan, h.host, h.port)
        t0 = time.monotonic()
        while True:
            expected: list[str] = []
            with contextlib.suppress(Exception):
                out = self._client(ctx, "ec2").get_console_output(InstanceId=bastion_id, Latest=True)
                expected = sshmod.console_fingerprints(out.get("Output") or "")
            waited = time.monotonic() - t0
            if expected or waited >= wait_s / 2:  # keys without a console check only after a while
                try:
                    fps = sshmod.pin_host_key(plan, h.host, h.port, expected=expected)
                    break
                except RaylabError as e:
                    if "does not match" in e.message or waited >= wait_s:
                        raise
            if waited >= wait_s:
                raise RaylabError(
                    f"bastion {h.host} did not answer on SSH within {int(wait_s)} s",
                    "check the bastion in the EC2 console and that your IP is allowed",
                )
            time.sleep(5)
        how = (
            "matches the console"
            if expected
            else f"no console yet: compare with `aws ec2 get-console-output --instance-id {bastion_id}`"
        )
        sshmod._write_private(pinned_for, f"{bastion_id}\n")
        ctx.ui.info(f"bastion {h.host} host key pinned in {plan.known_hosts}: {', '.join(fps)} ({how})")

    def head_hop(self, ctx: Context) -> sshmod.Hop:
        from raylab.cluster.status import ec2_instances

        head = head_of(ec2_instances(self._client(ctx, "ec2"), ctx.names["cluster"]))
        if head is None:
            raise RaylabError(
                f"no running head for cluster {ctx.names['cluster']}", "run `raylab up --target aws`"
            )
        ip = self._private_ip(ctx, head["id"])
        user = (ctx.state.get("cluster").get("ssh_user")) or "admin"  # Debian 12's login user
        return sshmod.Hop(user, ip)

    def _private_ip(self, ctx: Context, instance_id: str) -> str:
        desc = self._client(ctx, "ec2").describe_instances(InstanceIds=[instance_id])
        return str(desc["Reservations"][0]["Instances"][0]["PrivateIpAddress"])

    def on_head(self, ctx: Context, remote: str, stdin: str | None = None, timeout: float = 120) -> str:
        plan = self.ssh_plan(ctx)
        self.ensure_bastion_pinned(ctx, plan)
        cmd = sshmod.ssh_command(plan, self.head_hop(ctx), remote)
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RaylabError(
                f"command on the head failed ({r.returncode}): {r.stderr.strip()[-300:]}",
                "check the bastion (raylab stage 1 --verify-only) and `ray up` logs under .raylab/logs/",
            )
        return r.stdout
