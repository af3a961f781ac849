"""The local form of the cluster config and the loopback-only rules."""

from __future__ import annotations

import copy
import json

import pytest

from raylab.cluster.local_form import PROVIDER_MODULE, is_loopback_url, to_local, validate
from raylab.errors import RaylabError
from raylab.targets.local.provider import LoopbackOnlyError, loopback_endpoint

EP = "http://127.0.0.1:4566"


def aws_form() -> dict:
    def nc(**extra: object) -> dict:
        return {"InstanceType": "c7i.4xlarge", "SubnetIds": ["subnet-a", "subnet-b"],
                "SecurityGroupIds": ["sg-1"], "KeyName": "raylab-t",
                "IamInstanceProfile": {"Arn": "arn:aws:iam::123456789012:instance-profile/p"},
                "MetadataOptions": {"HttpTokens": "required"}, **extra}

    return {
        "cluster_name": "raylab-t", "max_workers": 30, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "aws", "region": "us-west-2", "availability_zone": "us-west-2a,us-west-2b",
                     "aws_credentials": {"aws_access_key_id": "AKIA-must-not-survive"}},
        "auth": {"ssh_user": "ubuntu", "ssh_proxy_command": "ssh -W %h:%p ec2-user@203.0.113.10"},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": nc()},
            "ray.worker.ondemand": {"min_workers": 0, "max_workers": 30, "resources": {},
                                    "node_config": nc()},
            "ray.worker.spot": {"min_workers": 0, "max_workers": 0, "resources": {},
                                "node_config": nc(InstanceMarketOptions={"MarketType": "spot"})},
        },
        "setup_commands": ["pip install ray"],
        "head_start_ray_commands": ["ray stop", "ray start --head"],
    }


def test_to_local_scales_resources_and_keeps_node_config() -> None:
    cfg = to_local(aws_form(), endpoint_url=EP, scale=4)
    w = cfg["available_node_types"]["ray.worker.ondemand"]
    assert w["resources"]["CPU"] == 4  # 16 vCPU / 4
    assert w["resources"]["memory"] == 32 * 1024**3 // 4
    assert cfg["available_node_types"]["ray.head.default"]["resources"]["CPU"] == 0
    assert cfg["available_node_types"]["ray.worker.spot"]["node_config"]["InstanceMarketOptions"] == {
        "MarketType": "spot"}
    assert w["node_config"]["SubnetIds"] == ["subnet-a", "subnet-b"]
    assert w["node_config"]["IamInstanceProfile"]["Arn"].endswith("instance-profile/p")
    p = cfg["provider"]
    assert p["type"] == "external" and p["module"] == PROVIDER_MODULE and p["endpoint_url"] == EP
    assert p["cache_stopped_nodes"] is False and p["disable_node_updaters"] is True
    assert cfg["setup_commands"] == [] and cfg["head_start_ray_commands"] == []


def test_to_local_writes_no_credentials_and_no_bastion_hop() -> None:
    text = json.dumps(to_local(aws_form(), endpoint_url=EP, scale=4))
    assert "AKIA" not in text and "aws_access_key_id" not in text and "secret" not in text.lower()
    assert "203.0.113.10" not in text


def test_to_local_scale_one_is_the_plan() -> None:
    cfg = to_local(aws_form(), endpoint_url=EP, scale=1)
    assert cfg["available_node_types"]["ray.worker.ondemand"]["resources"]["CPU"] == 16


def test_local_form_passes_rays_schema() -> None:
    validate(to_local(aws_form(), endpoint_url=EP, scale=4))


def test_missing_subnets_refused_with_hint() -> None:
    bad = copy.deepcopy(aws_form())
    del bad["available_node_types"]["ray.worker.ondemand"]["node_config"]["SubnetIds"]
    with pytest.raises(RaylabError, match="SubnetIds"):
        to_local(bad, endpoint_url=EP, scale=4)


def test_unknown_instance_type_refused() -> None:
    bad = copy.deepcopy(aws_form())
    bad["available_node_types"]["ray.worker.ondemand"]["node_config"]["InstanceType"] = "c7i.4xlarg"
    with pytest.raises(RaylabError, match="c7i.4xlarg"):
        to_local(bad, endpoint_url=EP, scale=4)


@pytest.mark.parametrize("url", ["https://ec2.us-west-2.amazonaws.com", "http://10.0.0.5:4566",
                                 "http://192.0.2.2:4566", "http://[::1]:4566", ""])
def test_non_loopback_endpoints_refused(url: str) -> None:
    assert not is_loopback_url(url)
    with pytest.raises(RaylabError, match="127.0.0.0/8"):
        to_local(aws_form(), endpoint_url=url, scale=4)
    with pytest.raises(LoopbackOnlyError):
        loopback_endpoint({"endpoint_url": url} if url else {}, {})


@pytest.mark.parametrize("url", ["http://127.0.0.1:4566", "http://127.1.2.3:80", "http://localhost:5000"])
def test_loopback_endpoints_accepted(url: str) -> None:
    assert loopback_endpoint({"endpoint_url": url}, {}) == url


def test_provider_takes_the_environment_endpoint_only_if_loopback() -> None:
    assert loopback_endpoint({}, {"AWS_ENDPOINT_URL": EP}) == EP
    with pytest.raises(LoopbackOnlyError):
        loopback_endpoint({}, {"AWS_ENDPOINT_URL": "https://ec2.amazonaws.com"})


def test_processes_raylab_starts_find_its_python_first_on_path() -> None:
    """A job's `python stress.py` must run raylab's interpreter (with Ray), venv activated or not."""
    import sys
    from pathlib import Path

    from raylab.targets.local.head import loopback_env

    env = loopback_env({"PATH": "/usr/bin:/bin"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["PATH"].endswith("/usr/bin:/bin")


def test_the_real_config_runs_no_remote_commands_locally() -> None:
    """The AWS form copies the spot helpers and starts them with Ray's commands; the local target
    starts the guard and one watcher per node itself, so none of that survives to_local."""
    from raylab.cluster.config import render
    from tests.unit.test_config_rules import OUTPUTS as outputs

    aws = render(target="aws", scenario="mixed", lab="kim", outputs=outputs)
    assert aws["file_mounts"] and len(aws["worker_start_ray_commands"]) == 3
    local = render(target="local", scenario="mixed", lab="kim", outputs=outputs, endpoint_url=EP)
    assert local["file_mounts"] == {}
    assert local["head_start_ray_commands"] == local["worker_start_ray_commands"] == []
    assert "guard.py" not in json.dumps(local) and "imds_watcher" not in json.dumps(local)
