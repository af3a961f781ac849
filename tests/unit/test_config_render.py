"""render(): template + scenario overlay + stage outputs; what Ray's own validator says of the result."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from raylab.cluster.config import dump_yaml, fill, merge, placeholders, render, write_rendered
from raylab.cluster.validate import check_file, validate
from raylab.errors import RaylabError
from tests.conftest import ROOT
from tests.unit.test_config_rules import OUTPUTS

SCENARIOS = ("static", "autoscale", "spot", "mixed")
NT = "available_node_types"
HEAD, OD, SPOT = "ray.head.default", "ray.worker.ondemand", "ray.worker.spot"
RAY_PORTS = (6379, 8265, 10001)


def ray_accepts(cfg: dict[str, Any]) -> None:
    """Ray 2.60's own validator, called as `ray up` does (prepare_config, then validate_config)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {s: render(target="aws", scenario=s, lab="kim", outputs=OUTPUTS) for s in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_renders_a_config_ray_accepts(rendered: dict[str, dict[str, Any]], scenario: str) -> None:
    cfg = rendered[scenario]
    ray_accepts(cfg)
    assert validate(cfg) == []
    assert placeholders(cfg) == []


def test_ray_validator_used_here_does_reject_bad_configs(rendered: dict[str, dict[str, Any]]) -> None:
    """The check above can fail: the same call rejects a removed key and a fractional resource."""
    import jsonschema

    for mutate in (lambda c: c.update(target_utilization_fraction=0.8),
                   lambda c: c[NT][OD].update(resources={"CPU": 0.5})):
        cfg = copy.deepcopy(rendered["autoscale"])
        mutate(cfg)
        with pytest.raises(jsonschema.ValidationError):
            ray_accepts(cfg)


def _mm(cfg: dict[str, Any], name: str) -> tuple[int, int]:
    return cfg[NT][name]["min_workers"], cfg[NT][name]["max_workers"]


def test_scenario_shapes(rendered: dict[str, dict[str, Any]]) -> None:
    static, auto, spot, mixed = (rendered[s] for s in SCENARIOS)
    lo, hi = _mm(static, OD)
    assert lo == hi == static["max_workers"] > 0 and _mm(static, SPOT) == (0, 0)  # min = max: no autoscaling
    assert _mm(auto, OD) == (0, 30) and _mm(auto, SPOT) == (0, 0) and auto["max_workers"] == 30
    assert _mm(spot, OD) == (0, 0) and _mm(spot, SPOT) == (0, 30)
    assert _mm(mixed, OD)[0] > 0, "mixed keeps a small on-demand base"
    assert _mm(mixed, SPOT)[1] > 0 and _mm(mixed, OD)[1] > _mm(mixed, OD)[0], "on-demand can grow as fallback"
    assert mixed[NT][SPOT]["priority"] > mixed[NT][OD].get("priority", 0), "spot is preferred"
    for cfg in rendered.values():
        assert cfg[NT][SPOT]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert "InstanceMarketOptions" not in cfg[NT][OD]["node_config"]
        shapes = {cfg[NT][n]["node_config"]["InstanceType"] for n in (OD, SPOT)}
        assert shapes == {"c7i.4xlarge"}  # the same shape on both markets


def test_the_plans_cluster(rendered: dict[str, dict[str, Any]]) -> None:
    for cfg in rendered.values():
        prov = cfg["provider"]
        assert (prov["type"], prov["region"], prov["use_internal_ips"], prov["cache_stopped_nodes"]) == \
            ("aws", "us-west-2", True, False)
        assert cfg["cluster_name"] == "raylab-kim" and cfg["head_node_type"] == HEAD
        assert "upscaling_speed" in cfg and "idle_timeout_minutes" in cfg
        head = cfg[NT][HEAD]["node_config"]
        assert head["IamInstanceProfile"] == {"Arn": OUTPUTS["head_instance_profile_arn"]}
        assert cfg["worker_start_ray_commands"][1].endswith(
            "ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076")
        assert "address=\"auto\"" not in json.dumps(cfg) and "ray.init" not in json.dumps(cfg)
        assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in cfg["head_start_ray_commands"][1]
        # the spot helpers: copied to every node; the guard beside the head's autoscaler, reading the
        # YAML it re-reads and the monitor.log it writes; the watcher after each worker's `ray start`
        spot = Path(__file__).resolve().parents[2] / "src" / "raylab" / "spot"
        assert cfg["file_mounts"] == {"~/raylab/guard.py": str(spot / "guard.py"),
                                      "~/raylab/imds_watcher.py": str(spot / "imds_watcher.py")}
        assert all(Path(p).is_file() for p in cfg["file_mounts"].values())
        guard = cfg["head_start_ray_commands"][-1]
        assert "$HOME/ray-env/bin/python ~/raylab/guard.py --config ~/ray_bootstrap_config.yaml" in guard
        assert "--cluster-name raylab-kim " in guard and "/logs/monitor.log" in guard
        watcher = cfg["worker_start_ray_commands"][-1]
        assert "$HOME/ray-env/bin/python ~/raylab/imds_watcher.py --gcs-address=$RAY_HEAD_IP:6379" in watcher
        for cmd in (guard, watcher):  # restartable: the previous one is stopped by its own pid file
            assert cmd.startswith("kill $(cat ~/raylab/") and "nohup " in cmd and "< /dev/null" in cmd
        assert "ruamel.yaml" in " ".join(cfg["head_setup_commands"])
    assert rendered["autoscale"]["max_workers"] == 30


def test_security_of_every_rendered_node_type(rendered: dict[str, dict[str, Any]]) -> None:
    """Issue 8's promises, read from the rendered configs themselves."""
    for cfg in rendered.values():
        proxy = cfg["auth"]["ssh_proxy_command"]
        assert proxy.startswith("ssh -W %h:%p ") and f"ec2-user@{OUTPUTS['BastionPublicIp']}" in proxy
        assert " -A" not in proxy and "ForwardAgent=no" in proxy
        for name, nt in cfg[NT].items():
            nc = nt["node_config"]
            assert nc["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                             "HttpPutResponseHopLimit": 2}, name
            assert all(d["Ebs"]["Encrypted"] is True for d in nc["BlockDeviceMappings"]), name
            private = OUTPUTS["PrivateSubnetIds"].split(",")
            assert nc["SubnetIds"] and set(nc["SubnetIds"]) <= set(private), name  # private subnets only
            assert not any(ni.get("AssociatePublicIpAddress") for ni in nc.get("NetworkInterfaces", []))
            assert nc["SecurityGroupIds"] == [OUTPUTS["RaySecurityGroupId"]]
        text = dump_yaml(cfg)
        assert "0.0.0.0/0" not in text and "::/0" not in text
        assert all(str(p) not in json.dumps(cfg.get("provider", {})) for p in RAY_PORTS)


def test_rendered_file_round_trips_through_check(tmp_path: Path, rendered: dict[str, dict[str, Any]]) -> None:
    p = write_rendered(rendered["mixed"], tmp_path / "sub" / "cluster.yaml")
    assert check_file(p) == []
    assert not list(p.parent.glob("*.tmp"))


# --- placeholders and overlays (pure) -----------------------------------------------------------------------
def test_unfilled_placeholder_is_an_error_naming_it() -> None:
    outs = {k: v for k, v in OUTPUTS.items() if k != "worker_instance_profile_arn"}
    with pytest.raises(RaylabError) as e:
        render(target="aws", scenario="spot", lab="kim", outputs=outs)
    assert e.value.message == "placeholder {{ worker_instance_profile_arn }} has no value"


def test_outputs_override_derived_values() -> None:
    cfg = render(target="aws", scenario="autoscale", lab="kim",
                 outputs={**OUTPUTS, "ssh_private_key": "/abs/key.pem", "bastion_user": "admin"})
    assert cfg["auth"]["ssh_private_key"] == "/abs/key.pem"
    assert "-i /abs/key.pem " in cfg["auth"]["ssh_proxy_command"]
    assert cfg["auth"]["ssh_proxy_command"].endswith(f"admin@{OUTPUTS['BastionPublicIp']}")


def test_fill_splices_comma_lists_only_for_whole_items() -> None:
    tmpl = {"a": ["{{ S }}", "x"], "b": "{{ S }}", "c": ["pre-{{ S }}"], "d": "{{ MISSING }}"}
    got = fill(tmpl, {"S": "s1,s2"})
    assert got == {"a": ["s1", "s2", "x"], "b": "s1,s2", "c": ["pre-s1,s2"], "d": "{{ MISSING }}"}
    assert placeholders(got) == ["MISSING"]


def test_merge_maps_replaces_values_and_null_deletes() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3}
    assert merge(base, {"a": {"y": [3]}, "b": None, "d": {"e": 1}}) == {"a": {"x": 1, "y": [3]}, "c": 3,
                                                                         "d": {"e": 1}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3}  # not mutated


def test_unknown_target_and_scenario() -> None:
    with pytest.raises(RaylabError, match="unknown scenario 'cheap'"):
        render(target="aws", scenario="cheap", lab="kim", outputs=OUTPUTS)
    with pytest.raises(RaylabError, match="unknown target 'gcp'"):
        render(target="gcp", scenario="spot", lab="kim", outputs=OUTPUTS)


def test_base_with_syntax_error_is_a_raylab_error(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "spot.yaml").write_text("max_workers: 3\n")
    base = tmp_path / "ray-cluster.yaml"
    base.write_text("cluster_name: [oops\n")
    with pytest.raises(RaylabError, match="YAML syntax error: line 2, column 1"):
        render(target="aws", scenario="spot", lab="kim", outputs=OUTPUTS, base=base)


def test_scenario_files_are_overlays_not_copies() -> None:
    """Overlays touch only scaling keys, so the base file stays the one place for everything else."""
    import yaml

    allowed_top = {"max_workers", "upscaling_speed", "idle_timeout_minutes", NT}
    for s in SCENARIOS:
        ov = yaml.safe_load((ROOT / "configs" / "scenarios" / f"{s}.yaml").read_text())
        assert set(ov) <= allowed_top, s
        for nt in ov.get(NT, {}).values():
            assert set(nt) <= {"min_workers", "max_workers", "priority", "node_config"}, s
            assert set(nt.get("node_config", {})) <= {"SubnetIds"}, s  # placement only (which AZ)


# --- the local target's form (engineered elsewhere; skipped only if that module is absent) -----
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_local_form_renders_and_validates(scenario: str) -> None:
    pytest.importorskip("raylab.cluster.local_form")
    cfg = render(target="local", scenario=scenario, lab="kim", outputs=OUTPUTS, scale=4,
                 endpoint_url="http://127.0.0.1:4599")
    assert cfg["provider"]["type"] == "external"
    assert [f.line() for f in validate(cfg) if f.level == "ERROR"] == []
    ray_accepts(cfg)


def test_local_form_needs_the_twin_endpoint() -> None:
    with pytest.raises(RaylabError, match="needs the twin's endpoint URL"):
        render(target="local", scenario="spot", lab="kim", outputs=OUTPUTS)


def test_mixed_puts_spot_and_on_demand_workers_in_different_azs(rendered: dict[str, dict[str, Any]]) -> None:
    """Stage 6's FIS capacity drill refuses every launch of the head's role in one AZ: with spot in the
    second subnet and on-demand in the first, the outage hits spot only and on-demand still launches."""
    first, second = [s.strip() for s in OUTPUTS["PrivateSubnetIds"].split(",")][:2]
    types = rendered["mixed"]["available_node_types"]
    assert types["ray.worker.ondemand"]["node_config"]["SubnetIds"] == [first]
    assert types["ray.worker.spot"]["node_config"]["SubnetIds"] == [second]
    assert types["ray.worker.ondemand"]["node_config"]["InstanceType"] == "c7i.4xlarge"  # the rest merged
    auto = rendered["autoscale"]["available_node_types"]
    assert all(nt["node_config"]["SubnetIds"] == [first, second] for nt in auto.values())


@pytest.mark.parametrize(("ids", "a", "b"), [
    ("subnet-1,subnet-2", "subnet-1", "subnet-2"),
    ("subnet-1", "subnet-1", "subnet-1"),  # one subnet: both types share it
    (" subnet-1 , subnet-2 ,", "subnet-1", "subnet-2"),
])
def test_subnet_values(ids: str, a: str, b: str) -> None:
    from raylab.cluster.config import subnet_values

    assert subnet_values({"PrivateSubnetIds": ids}) == {"PrivateSubnetA": a, "PrivateSubnetB": b}
    assert subnet_values({}) == {}
