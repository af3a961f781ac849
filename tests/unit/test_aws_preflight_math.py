"""The AWS preflight's pure decisions: what a config can launch, the quota fix, AZs, cost, the IP."""

from __future__ import annotations

import pytest

from raylab.targets.aws import preflight as pf
from raylab.targets.aws import quota_math as qm

C16 = {"InstanceType": "c7i.4xlarge"}
SPOT16 = {"InstanceType": "c7i.4xlarge", "InstanceMarketOptions": {"MarketType": "spot"}}
VCPUS = {"c7i.4xlarge": 16, "m7i.large": 2, "g5.xlarge": 4}


def cfg(od: int, spot: int, cap: int | None, head: dict | None = None) -> dict:
    c = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"node_config": head or C16},
            "od": {"max_workers": od, "node_config": C16},
            "sp": {"max_workers": spot, "node_config": SPOT16},
        },
    }
    if cap is not None:
        c["max_workers"] = cap
    return c


@pytest.mark.parametrize(
    ("config", "quota", "ok", "detail", "hint_tail"),
    [
        # stage 4's lesson: demand above the quota passes, and says where the wall stands
        (
            cfg(30, 0, 30),
            160,
            True,
            "max_workers 30 x 16 vCPU + head 16 = 496 > quota 160: the wall stands at about 9 worker(s) "
            "(stage 4 shows it) (L-1216C47A)",
            "to >= 496",
        ),
        (
            cfg(30, 0, 30),
            496,
            True,
            "max_workers 30 x 16 vCPU + head 16 = 496 <= quota 496 (L-1216C47A)",
            None,
        ),
        (cfg(30, 0, 4), 160, True, "max_workers 4 x 16 vCPU + head 16 = 80 <= quota 160 (L-1216C47A)", None),
        (
            cfg(30, 0, None),
            32,
            True,
            "max_workers 30 x 16 vCPU + head 16 = 496 > quota 32: the wall stands at about 1 worker(s) "
            "(stage 4 shows it) (L-1216C47A)",
            "to >= 496",
        ),
        # refused only below head + one worker
        (
            cfg(30, 0, 30),
            31,
            False,
            "max_workers 30 x 16 vCPU + head 16 = 496 > quota 31, below head 16 + one worker 16 = 32: "
            "the lab cannot start",
            "to >= 32 (better >= 496), or use smaller instance types",
        ),
    ],
)
def test_on_demand_quota(config: dict, quota: int, ok: bool, detail: str, hint_tail: str | None) -> None:
    d = qm.quota_demands(qm.launch_shapes(config), VCPUS, qm.global_cap(config))[qm.ON_DEMAND_QUOTA]
    c = qm.quota_check(d, quota)
    assert (c.ok, c.detail) == (ok, detail)
    if hint_tail:
        assert "request an increase of Running On-Demand Standard" in c.hint
        assert c.hint.endswith(hint_tail)


# The bastion's 2 vCPUs (t3.micro) count against the on-demand quota: 16 + 2 + 8 x 16 = 146 fits
# 160, a 9th c7i.4xlarge worker would make 162.
@pytest.mark.parametrize(
    ("quota", "ok", "wall", "floor_detail"),
    [
        (160, True, "8", None),
        (162, True, "9", None),
        (34, True, "1", None),
        (33, False, None, "below head 16 + bastion 2 + one worker 16 = 34: the lab cannot start"),
        (17, False, None, "below head 16 + bastion 2 + one worker 16 = 34: the lab cannot start"),
    ],
)
def test_bastion_counts_and_the_wall(
    quota: int, ok: bool, wall: str | None, floor_detail: str | None
) -> None:
    d = qm.quota_demands(qm.launch_shapes(cfg(30, 0, 30)), VCPUS, 30, bastion_vcpus=2)[qm.ON_DEMAND_QUOTA]
    assert d.total == 30 * 16 + 16 + 2 and d.floor == 34
    c = qm.quota_check(d, quota)
    assert c.ok is ok
    assert c.detail.startswith(f"max_workers 30 x 16 vCPU + head 16 + bastion 2 = 498 > quota {quota}")
    if wall:
        assert f"the wall stands at about {wall} worker(s)" in c.detail
        assert qm.workers_that_fit(quota, 16, 16, bastion_vcpus=2) == int(wall)
    else:
        assert c.detail.endswith(floor_detail)
        assert c.hint.endswith("to >= 34 (better >= 498), or use smaller instance types")


def test_spot_only_workers_put_head_and_bastion_on_the_on_demand_quota() -> None:
    d = qm.quota_demands(qm.launch_shapes(cfg(0, 28, 28)), VCPUS, 28, bastion_vcpus=2)
    assert d[qm.ON_DEMAND_QUOTA].total == 18 and d[qm.ON_DEMAND_QUOTA].terms == ()
    assert not qm.quota_check(d[qm.ON_DEMAND_QUOTA], 16).ok
    assert qm.quota_check(d[qm.ON_DEMAND_QUOTA], 18).ok
    spot = qm.quota_check(d[qm.SPOT_QUOTA], 160)
    assert spot.detail.endswith("about 10 worker(s) (stage 4 shows it) (L-34B43A08)")
    assert not qm.quota_check(d[qm.SPOT_QUOTA], 15).ok


def test_each_market_at_its_own_worst_case() -> None:
    # mixed: 30 on-demand or 28 spot under a global cap of 30: each quota must hold its own maximum
    d = qm.quota_demands(qm.launch_shapes(cfg(30, 28, 30)), VCPUS, 30)
    assert d[qm.ON_DEMAND_QUOTA].total == 30 * 16 + 16
    assert d[qm.SPOT_QUOTA].total == 28 * 16  # the head is on-demand
    c = qm.quota_check(d[qm.SPOT_QUOTA], 160)
    assert c.ok
    assert c.detail.startswith(
        "max_workers 28 x 16 vCPU = 448 > quota 160: the wall stands at about 10 worker(s)"
    )


def test_vcpus_already_in_use_count() -> None:
    d = qm.quota_demands(qm.launch_shapes(cfg(4, 0, 4)), VCPUS, 4)[qm.ON_DEMAND_QUOTA]
    c = qm.quota_check(d, 160, in_use=96)
    assert c.ok
    assert c.detail.startswith("max_workers 4 x 16 vCPU + head 16 + 96 in use = 176 > quota 160")
    assert "about 3 worker(s)" in c.detail
    c = qm.quota_check(d, 120, in_use=96)
    assert not c.ok and "below head 16 + one worker 16 + 96 in use = 128" in c.detail


def test_mixed_worker_sizes_give_a_range() -> None:
    c = cfg(0, 0, None)
    c["available_node_types"]["small"] = {"max_workers": 40, "node_config": {"InstanceType": "m7i.large"}}
    c["available_node_types"]["od"]["max_workers"] = 10
    d = qm.quota_demands(qm.launch_shapes(c), VCPUS, None, bastion_vcpus=2)[qm.ON_DEMAND_QUOTA]
    chk = qm.quota_check(d, 160)
    assert chk.ok and "the wall stands at about 8-71 worker(s)" in chk.detail


def test_non_standard_families_are_not_silently_passed() -> None:
    c = cfg(2, 0, 2)
    c["available_node_types"]["gpu"] = {"max_workers": 2, "node_config": {"InstanceType": "g5.xlarge"}}
    d = qm.quota_demands(qm.launch_shapes(c), VCPUS, 4)
    assert set(d) == {qm.ON_DEMAND_QUOTA}  # g5 has its own quota: preflight reports it as unchecked


@pytest.mark.parametrize(
    ("offered", "wanted", "ok", "azs"),
    [
        (
            {"c7i.4xlarge": {"us-west-2b", "us-west-2a", "us-west-2d"}},
            ["c7i.4xlarge"],
            True,
            ["us-west-2a", "us-west-2b"],
        ),
        (
            {"c7i.4xlarge": {"us-west-2a", "us-west-2b"}, "m7i.large": {"us-west-2b", "us-west-2c"}},
            ["c7i.4xlarge", "m7i.large"],
            False,
            ["us-west-2b"],
        ),
        ({"c7i.4xlarge": set()}, ["c7i.4xlarge"], False, []),
    ],
)
def test_azs(offered: dict, wanted: list, ok: bool, azs: list) -> None:
    c, got = pf.az_check(offered, wanted, "us-west-2")
    assert c.ok is ok
    assert got[:2] == azs
    if not ok:
        assert c.hint


def test_cost_full_scale_takes_the_dearest_mix() -> None:
    prices = {("c7i.4xlarge", "on-demand"): 0.714, ("c7i.4xlarge", "spot"): 0.3}
    shapes = qm.capped(qm.launch_shapes(cfg(30, 28, 30)), 30, lambda s: prices[(s.instance_type, s.market)])
    total, lines = pf.cost_per_hour(shapes, lambda t, m: prices[(t, m)], fixed=0.045)
    assert total == round(31 * 0.714 + 0.045, 2)
    assert lines[0].startswith("head: 1 x c7i.4xlarge on-demand")
    total, lines = pf.cost_per_hour(shapes, lambda t, m: None)
    assert total is None and "price unknown" in lines[0]


@pytest.mark.parametrize(
    ("ip", "cidr", "error"),
    [
        ("52.95.110.1\n", "52.95.110.1/32", None),
        ("10.1.2.3", None, "not a public address"),
        ("127.0.0.1", None, "not a public address"),
        ("2600:1f14::1", None, "IPv6"),
        ("<html>", None, "not an IP address"),
    ],
)
def test_operator_cidr(ip: str, cidr: str | None, error: str | None) -> None:
    if error:
        with pytest.raises(ValueError, match=error):
            pf.operator_cidr(ip)
    else:
        assert pf.operator_cidr(ip) == cidr


def test_missing_region_stops_before_any_call() -> None:
    calls: list[str] = []

    def client(service: str):  # pragma: no cover - must not be called
        calls.append(service)
        raise AssertionError("no AWS call without a region")

    f = pf.run_checks(
        cfg=cfg(1, 0, 1),
        region=None,
        client=client,
        cluster_name="raylab-x",
        ip_lookup=lambda: "52.95.110.1",
        price=lambda t, m: 1.0,
    )
    assert [c.name for c in f.checks] == ["region"] and not f.ok
    assert calls == []


def test_ip_lookup_not_called_when_credentials_fail() -> None:
    looked: list[int] = []

    class Sts:
        def get_caller_identity(self):
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()

    f = pf.run_checks(
        cfg=cfg(1, 0, 1),
        region="us-west-2",
        client=lambda s: Sts(),
        cluster_name="raylab-x",
        ip_lookup=lambda: looked.append(1) or "52.95.110.1",
        price=lambda t, m: 1.0,
    )
    assert [(c.name, c.ok) for c in f.checks] == [("region", True), ("credentials", False)]
    assert f.checks[-1].detail == "no AWS credentials found"
    assert looked == []


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        ("no-net", "could not reach AWS at https://sts.us-west-2.amazonaws.com (EndpointConnectionError)"),
        ("no-creds", "no AWS credentials found"),
        ("denied", "AWS rejected the credentials (InvalidClientTokenId)"),
        ("expired", "your AWS session has expired (ExpiredToken)"),
        ("sso-expired", "your AWS session has expired (UnauthorizedSSOTokenError)"),
    ],
)
def test_credentials_failures_are_told_apart(exc: str, detail: str) -> None:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        UnauthorizedSSOTokenError,
    )

    errors = {
        "no-net": EndpointConnectionError(endpoint_url="https://sts.us-west-2.amazonaws.com"),
        "no-creds": NoCredentialsError(),
        "denied": ClientError(
            {"Error": {"Code": "InvalidClientTokenId", "Message": "no"}}, "GetCallerIdentity"
        ),
        "expired": ClientError(
            {"Error": {"Code": "ExpiredToken", "Message": "The security token in the request is expired"}},
            "GetCallerIdentity",
        ),
        "sso-expired": UnauthorizedSSOTokenError(),
    }

    class Sts:
        def get_caller_identity(self):
            raise errors[exc]

    f = pf.run_checks(
        cfg=cfg(1, 0, 1),
        region="us-west-2",
        client=lambda s: Sts(),
        cluster_name="raylab-x",
        ip_lookup=lambda: "52.95.110.1",
        price=lambda t, m: 1.0,
    )
    c = f.checks[-1]
    assert c.name == "credentials" and not c.ok
    assert c.detail.startswith(detail)
    if exc == "no-net":
        assert "rejected" not in c.detail and "network" in c.hint
