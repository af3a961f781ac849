"""A lab reached from its tags alone: the instructor's `raylab room sweep` on a trainee's lab.

``TagsOnly`` wraps the instructor's own target. Every verb is the target's (so the teardown is
`raylab down`'s own stages), except what the trainee's ``.raylab/`` would have told it:

- ``aws_env``: the instructor's endpoint, region and credentials (local: the instructor's twin);
- ``cluster_down``: terminates every instance tagged ``raylab-lab=<lab>`` or
  ``ray-cluster-name=raylab-<lab>`` and waits until each is terminated, then the target's own
  ``cluster_down`` (aws: its sweep by the cluster tag; local: nothing recorded, a noop);
- ``stop``: deletes the lab's key pair (by its name) and stops nothing else: the processes a lab runs
  are on the trainee's machine, and the instructor's own (local: the twin) must keep running;
- ``leftovers``: the cloud, read by tag and name (instances, the stack and network, the roles and
  profiles), with the target's own list (aws: key pair, FIS, tunnels).

Nothing here is found by anything but the lab's tag or the names derived from its id
(``raylab.labid.names``), so another tool's resources are never touched.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from raylab.aws.ec2 import LAB_TAG
from raylab.errors import RaylabError

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.target import Target

NOT_GONE = ["pending", "running", "stopping", "stopped", "shutting-down"]


class TagsOnly:
    def __init__(self, inner: Target, env: dict[str, str], wait_s: float = 300.0) -> None:
        self._inner = inner
        self._env = dict(env)
        self._wait_s = wait_s

    def __getattr__(self, name: str) -> Any:  # every other verb and declaration: the target's own
        return getattr(self._inner, name)

    def aws_env(self, ctx: Context) -> dict[str, str]:
        return dict(self._env)

    def _instances(self, ctx: Context) -> dict[str, str]:
        """The lab's instances not yet terminated: id -> state (by the lab tag or the cluster tag)."""
        from raylab.aws.session import client

        ec2 = client(ctx, "ec2")
        out: dict[str, str] = {}
        for key, value in ((LAB_TAG, ctx.lab), ("ray-cluster-name", ctx.names["cluster"])):
            flt = [{"Name": f"tag:{key}", "Values": [value]},
                   {"Name": "instance-state-name", "Values": NOT_GONE}]
            for page in ec2.get_paginator("describe_instances").paginate(Filters=flt):
                out.update({i["InstanceId"]: i["State"]["Name"] for r in page["Reservations"]
                            for i in r["Instances"]})
        return out

    def cluster_down(self, ctx: Context) -> None:
        from raylab.aws.session import client

        found = self._instances(ctx)
        live = sorted(i for i, st in found.items() if st != "shutting-down")
        if live:
            ctx.ui.step(f"terminating {len(live)} instance(s) of lab {ctx.lab}: {', '.join(live)}")
            client(ctx, "ec2").terminate_instances(InstanceIds=live)
        deadline = time.monotonic() + self._wait_s
        while found and time.monotonic() < deadline:
            time.sleep(1.0)
            found = self._instances(ctx)
        if found:
            raise RaylabError(f"instances of lab {ctx.lab} not terminated after {self._wait_s:.0f} s: "
                              f"{', '.join(sorted(found))}", "wait a minute and re-run `raylab room sweep`")
        self._inner.cluster_down(ctx)

    def stop(self, ctx: Context) -> None:
        import contextlib

        from raylab.aws.session import client

        ec2, name = client(ctx, "ec2"), ctx.names["key_pair"]
        with contextlib.suppress(Exception):  # InvalidKeyPair.NotFound: there is none
            if ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]:
                ec2.delete_key_pair(KeyName=name)
                ctx.ui.success(f"key pair {name} deleted")

    def leftovers(self, ctx: Context) -> list[str]:
        from raylab.aws import leftovers

        own = self._inner.leftovers(ctx)
        cloud = [f"instance {i} ({st})" for i, st in sorted(self._instances(ctx).items())
                 if not any(i in line for line in own)]
        return list(dict.fromkeys(cloud + leftovers.lab(ctx) + own))
