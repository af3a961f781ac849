"""Stage 6 on AWS: did each reclaimed worker drain on its notice? Ray's death record says (a rule a row)."""

from __future__ import annotations

from typing import Any

import pytest

from raylab.spot.drained import NAME, PREEMPTED, drained_check, verdicts

T = {"i-a": "10.0.2.5", "i-b": "10.0.2.6"}
PRE = f"{PREEMPTED}: spot interruption notice for i-a at 2026-12-06T09:00:00Z"
UNEXPECTED = "Unexpected termination: health check failed due to missing too many heartbeats"


def node(ip: str, state: str = "DEAD", msg: str | None = PRE) -> dict[str, Any]:
    return {"node_ip": ip, "state": state, "state_message": msg}


@pytest.mark.parametrize(
    ("nodes", "acts", "ok", "says"),
    [
        # both died drained: Ray recorded AUTOSCALER_DRAIN_PREEMPTED
        ([node("10.0.2.5"), node("10.0.2.6")], True, True, PREEMPTED),
        # one died undrained (the watcher was dead): the check fails and names it
        ([node("10.0.2.5"), node("10.0.2.6", msg=UNEXPECTED)], True, False, "i-b (10.0.2.6): Unexpected"),
        # one still alive in Ray: not drained-and-gone
        ([node("10.0.2.5"), node("10.0.2.6", state="ALIVE", msg=None)], True, False, "still alive in Ray"),
        # an IP reused by a new, live node does not hide the dead, drained one
        ([node("10.0.2.5"), node("10.0.2.6"), node("10.0.2.6", state="ALIVE", msg=None)], True, True,
         PREEMPTED),
        # Ray could not be asked
        (None, True, False, "could not be read"),
        # moto's FIS reclaims nothing: not judged
        (None, False, True, "reclaims nothing"),
    ],
)
def test_drained_check(nodes: list[dict[str, Any]] | None, acts: bool, ok: bool, says: str) -> None:
    c = drained_check(T, nodes, acts)
    assert c.ok is ok and says in c.detail and c.name.startswith(NAME)


def test_no_recorded_target_is_a_failure() -> None:
    assert drained_check({}, [], True).ok is False


def test_verdicts_prefer_the_drained_death() -> None:
    nodes = [node("10.0.2.5", msg=UNEXPECTED), node("10.0.2.5")]
    assert verdicts({"i-a": "10.0.2.5"}, nodes) == {"i-a": PRE}
