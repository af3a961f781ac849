"""The offline instance type table (shapes and us-west-2 on-demand prices) the checks and the planner use."""

from __future__ import annotations

from raylab.cluster import instance_types as it


def test_table_holds_the_lab_families_with_shapes_and_prices() -> None:
    c7i = it.lookup("c7i.4xlarge")
    assert c7i is not None
    assert (c7i.vcpus, c7i.memory_gib, c7i.arch, c7i.gpus) == (16, 32.0, "x86_64", 0)
    assert c7i.on_demand_usd_per_hour == 0.714
    families = {name.split(".")[0] for name in it.table()}
    assert {"c7i", "c6i", "m7i", "m6i", "r7i", "t3"} <= families
    for fam in ("c7i", "c6i", "m7i", "m6i", "r7i"):
        for size in ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"):
            row = it.lookup(f"{fam}.{size}")
            assert row is not None and row.vcpus > 0 and row.memory_gib > 0, f"{fam}.{size}"
            assert row.on_demand_usd_per_hour and row.on_demand_usd_per_hour > 0
    assert it.lookup("m7g.large").arch == "arm64"  # type: ignore[union-attr]
    assert it.price("nope.large") is None


def test_table_says_where_and_when_its_prices_are_from() -> None:
    info = it.table_info()
    assert info["region"] == "us-west-2"
    assert info["as_of"][:2] == "20"
    assert "On-Demand" in info["price_basis"]


def test_every_table_name_is_a_real_ec2_type_and_typos_get_a_suggestion() -> None:
    known = it.known_names()
    assert set(it.table()) <= known
    assert "p4d.24xlarge" in known  # botocore's list covers families beyond the priced table
    assert "c7i.4xlarg" not in known
    assert it.closest("c7i.4xlarg") == ["c7i.4xlarge"]
    assert it.closest("zzzzzz") == []


def test_prices_scale_with_size_within_a_family() -> None:
    for fam in ("c7i", "m7i", "r7i", "c6i", "m6i"):
        a, b = it.lookup(f"{fam}.large"), it.lookup(f"{fam}.4xlarge")
        assert a and b and a.on_demand_usd_per_hour and b.on_demand_usd_per_hour
        assert abs(b.on_demand_usd_per_hour - 8 * a.on_demand_usd_per_hour) < 1e-6
