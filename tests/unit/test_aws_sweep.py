"""Teardown's sweep waits until the cluster's instances are `terminated`: a `shutting-down` one still
holds its network interface, and the stack's delete would then meet DependencyViolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raylab.context import Context
from raylab.errors import RaylabError
from raylab.targets.aws import AwsTarget
from raylab.ui import UI


class Ec2:
    """Instances that pass through shutting-down for ``slow`` polls before they are terminated."""

    def __init__(self, states: dict[str, str], slow: int) -> None:
        self.states, self.slow, self.polls, self.terminated = dict(states), slow, 0, []

    def _tick(self) -> None:
        self.polls += 1
        if self.polls > self.slow:
            done = {i: "terminated" for i, st in self.states.items() if st == "shutting-down"}
            self.states.update(done)

    def get_paginator(self, name: str) -> Any:
        me = self

        class P:
            def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:  # noqa: N803
                wanted = next(f["Values"] for f in Filters if f["Name"] == "instance-state-name")
                me._tick()
                insts = [{"InstanceId": i, "State": {"Name": st}} for i, st in sorted(me.states.items())
                         if st in wanted]
                return [{"Reservations": [{"Instances": insts}]}]

        return P()

    def terminate_instances(self, InstanceIds: list[str]) -> None:  # noqa: N803
        self.terminated += InstanceIds
        self.states.update({i: "shutting-down" for i in InstanceIds})


class Aws(AwsTarget):
    def __init__(self, ec2: Ec2) -> None:
        self.ec2 = ec2

    def _client(self, ctx: Context, service: str) -> Any:
        return self.ec2


def _ctx(tmp_path: Path, ec2: Ec2) -> Context:
    return Context(target_name="aws", lab="t0", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                   _target=Aws(ec2))


@pytest.mark.parametrize(
    ("states", "terminated"),
    [
        ({"i-1": "running", "i-2": "stopped"}, ["i-1", "i-2"]),
        ({"i-1": "shutting-down"}, []),  # `ray down` already asked: nothing to terminate, still wait
    ],
)
def test_sweep_waits_until_terminated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      states: dict[str, str], terminated: list[str]) -> None:
    import raylab.targets.aws.cluster as awscluster

    monkeypatch.setattr(awscluster.time, "sleep", lambda s: None)
    ec2 = Ec2(states, slow=4)
    ctx = _ctx(tmp_path, ec2)
    assert ctx.target.sweep(ctx, poll_s=0) == terminated  # type: ignore[attr-defined]
    assert ec2.terminated == terminated
    assert set(ec2.states.values()) == {"terminated"} and ec2.polls == 5


def test_sweep_that_cannot_finish_says_which_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raylab.targets.aws.cluster as awscluster

    monkeypatch.setattr(awscluster.time, "sleep", lambda s: None)
    ctx = _ctx(tmp_path, Ec2({"i-1": "shutting-down"}, slow=10**9))
    with pytest.raises(RaylabError, match=r"not terminated after 0 s: i-1 \(shutting-down\)"):
        ctx.target.sweep(ctx, timeout=0, poll_s=0)  # type: ignore[attr-defined]
