"""Stage 3's "Ray and EC2 agree" wait grows with the workers min_workers starts and their setup time:
on AWS they are `running` in EC2 minutes before Ray lists them."""

from __future__ import annotations

import pytest

from raylab.stages.stage3_cluster import agree_timeout_s, expected_workers
from raylab.targets.aws import AwsTarget


@pytest.mark.parametrize(
    ("workers", "setup_s", "timeout"),
    [
        (0, 600.0, 60.0),  # autoscale: only the head, as before
        (1, 600.0, 660.0),
        (4, 600.0, 660.0),  # one wave of parallel setups
        (10, 600.0, 660.0),
        (11, 600.0, 1260.0),  # a second wave
        (30, 600.0, 1860.0),
        (4, 60.0, 120.0),  # local
    ],
)
def test_agree_timeout(workers: int, setup_s: float, timeout: float) -> None:
    assert agree_timeout_s(workers, setup_s) == timeout


def test_aws_allows_more_than_a_minute_when_workers_are_expected() -> None:
    assert agree_timeout_s(1, AwsTarget.node_setup_s) > 60 * 5


@pytest.mark.parametrize(
    ("types", "cap", "n"),
    [
        ({"head": {"min_workers": 0}, "w": {"min_workers": 0}}, None, 0),
        ({"head": {}, "w": {"min_workers": 4}}, None, 4),  # static
        ({"head": {}, "od": {"min_workers": 2}, "sp": {"min_workers": 3}}, None, 5),  # mixed
        ({"head": {}, "od": {"min_workers": 20}, "sp": {"min_workers": 20}}, 30, 30),  # the global cap
    ],
)
def test_expected_workers(types: dict, cap: int | None, n: int) -> None:
    cfg = {"head_node_type": "head", "available_node_types": types}
    if cap is not None:
        cfg["max_workers"] = cap
    assert expected_workers(cfg) == n
