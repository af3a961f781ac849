"""What of a lab's network (stage 1) and identity (stage 2) is still in the cloud.

Both targets' ``leftovers`` (and teardown's proof) ask these; they sit below targets and stages so
neither has to import the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylab.context import Context


def network(ctx: Context) -> list[str]:
    """What of this lab's network is still there (the stack and every tagged/recorded resource)."""
    from raylab.aws.cfn import describe
    from raylab.aws.ec2 import network_leftovers
    from raylab.aws.session import client

    recorded = ctx.state.network()
    out: list[str] = []
    stack = describe(client(ctx, "cloudformation"), ctx.names["stack"])
    if stack is not None:
        out.append(f"stack {ctx.names['stack']} ({stack['StackStatus']})")
    out += network_leftovers(
        client(ctx, "ec2"),
        ctx.lab,
        [recorded.vpc_id] if recorded.vpc_id else [],
        [recorded.bastion_instance_id] if recorded.bastion_instance_id else [],
    )
    return out


def identity(ctx: Context) -> list[str]:
    """The lab's IAM roles/profiles still there."""
    from raylab.aws.iam import identity_leftovers
    from raylab.aws.session import client

    return identity_leftovers(client(ctx, "iam"), ctx.names)


def lab(ctx: Context) -> list[str]:
    """Stage 1's and stage 2's leftovers, in that order."""
    return network(ctx) + identity(ctx)
