"""Finding 14: `raylab config check` on a head on spot and on a Docker image of another Ray."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from raylab.cluster.config import dump_yaml, render
from raylab.cluster.rules_node import image_ray_version
from raylab.cluster.validate import ERROR, WARN, check_file, validate
from tests.unit.test_config_rules import OUTPUTS

NT, HEAD = "available_node_types", "ray.head.default"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)


def _found(cfg: dict[str, Any], check: str) -> list[tuple[str, str, str]]:
    return [(f.level, f.path, f.message) for f in validate(cfg, ray=False) if f.check == check]


def test_a_head_on_spot_is_a_warning(base: dict[str, Any]) -> None:
    cfg = copy.deepcopy(base)
    cfg[NT][HEAD]["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}
    [(level, path, msg)] = _found(cfg, "head-spot")
    assert level == WARN and path == f"{NT}[{HEAD}].node_config.InstanceMarketOptions"
    assert "GCS" in msg and "autoscaler" in msg
    assert _found(base, "head-spot") == []  # spot workers are fine


@pytest.mark.parametrize(("image", "level"), [
    ("rayproject/ray-ml:2.0.0-cpu", ERROR),  # the widely copied sample
    ("rayproject/ray:2.59.1-py311", ERROR),
    ("docker.io/rayproject/ray:2.60.0-py311-cpu", None),
    ("rayproject/ray-ml:2.60.0-gpu", None),
    ("rayproject/ray:latest", WARN),  # cannot tell: never a pass
    ("rayproject/ray", WARN),
    ("my.registry:5000/team/ray-image:1.4", WARN),
    ("rayproject/ray@sha256:" + "0" * 64, WARN),
])
def test_docker_image_ray_version(base: dict[str, Any], image: str, level: str | None) -> None:
    for where in ("top", "node type"):
        cfg = copy.deepcopy(base)
        if where == "top":
            cfg["docker"] = {"image": image, "container_name": "ray_container"}
        else:
            cfg[NT]["ray.worker.spot"]["docker"] = {"worker_image": image}
        found = _found(cfg, "docker-ray")
        assert [f[0] for f in found] == ([level] if level else []), (where, found)


def test_the_sample_is_an_error_in_config_check(tmp_path: Path, base: dict[str, Any]) -> None:
    cfg = copy.deepcopy(base)
    cfg["docker"] = {"image": "rayproject/ray-ml:2.0.0-cpu", "container_name": "ray_container"}
    p = tmp_path / "cluster.yaml"
    p.write_text(dump_yaml(cfg))
    errors = [f for f in check_file(p) if f.level == ERROR]
    assert [(f.check, f.path) for f in errors] == [("docker-ray", "docker.image")]
    assert "Ray 2.0.0" in errors[0].message and "2.60.0" in errors[0].message


def test_image_ray_version() -> None:
    assert image_ray_version("rayproject/ray-ml:2.0.0-cpu") == "2.0.0"
    assert image_ray_version("rayproject/ray:2.60.0.abcdef-py311") == "2.60.0"
    assert image_ray_version("someone/rayproject-ray:2.60.0") is None


def test_the_labs_own_config_is_clean_of_node_findings(base: dict[str, Any]) -> None:
    assert [f for f in validate(base) if f.check in ("node-image", "head-spot", "docker-ray")] == []
