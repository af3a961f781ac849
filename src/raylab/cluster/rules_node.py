"""raylab's rules for what runs on the nodes (part of `raylab config check`; see validate.py).

- ``node-image``: an EC2 node type without ``ImageId`` boots Ray 2.60's default Deep Learning AMI
  (Ubuntu 18.04: Python 3.6-3.8, no wheel for Ray 2.60, a root snapshot larger than 100 GB).
- ``head-spot``: a head on spot. One reclaim takes the GCS, the autoscaler and the dashboard with it;
  the workers cannot rejoin and the jobs' history is gone.
- ``docker-ray``: a Docker image whose Ray is not the Ray installed here (2.60.0). A widely copied
  sample pins ``rayproject/ray-ml:2.0.0-cpu``; nodes of another Ray cannot join this cluster. An
  image whose Ray cannot be read from its name is a warning (the check could not run), not a pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from raylab.cluster.findings import (
    ERROR,
    WARN,
    Env,
    Finding,
    head_type_name,
    is_ec2,
    key_path,
    node_config,
    node_types,
)

NT = "available_node_types"
_RAY_IMAGE = re.compile(r"(^|/)rayproject/ray(-ml|-llm)?$")
_VERSION = re.compile(r"^(\d+\.\d+\.\d+)")


def installed_ray() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        from raylab.cluster.bootstrap import RAY_VERSION

        return RAY_VERSION


def check_node_image(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if not is_ec2(cfg):
        return
    for name, nt in node_types(cfg).items():
        nc = node_config(nt)
        if "ImageId" not in nc and "LaunchTemplate" not in nc:
            yield Finding(WARN, key_path(NT, name, "node_config", "ImageId"),
                          "no ImageId: Ray 2.60 boots its Deep Learning AMI (Ubuntu 18.04, Python 3.6-3.8: "
                          "no wheel for Ray 2.60; its root snapshot is larger than a 100 GB VolumeSize)",
                          "set ImageId, e.g. resolve:ssm:/aws/service/debian/release/12/latest/amd64 as in "
                          "configs/ray-cluster.yaml", "node-image")


def _market(nc: Mapping[str, Any]) -> str | None:
    imo = nc.get("InstanceMarketOptions")
    return str(imo.get("MarketType", "")).lower() if isinstance(imo, Mapping) else None


def check_head_spot(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    head = head_type_name(cfg)
    if head is None:
        return
    if _market(node_config(node_types(cfg)[head])) == "spot":
        yield Finding(WARN, key_path(NT, head, "node_config", "InstanceMarketOptions"),
                      f"the head node type {head!r} runs on spot: one reclaim takes the GCS, the autoscaler "
                      "and the dashboard with it, and every worker and job history is lost",
                      "run the head on-demand (drop InstanceMarketOptions there); put spot on worker types",
                      "head-spot")


def _images(cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key path, image) for every Docker image the config names."""
    docker = cfg.get("docker")
    if isinstance(docker, Mapping):
        for key in ("image", "head_image", "worker_image"):
            if isinstance(docker.get(key), str) and docker[key]:
                yield key_path("docker", key), docker[key]
    for name, nt in node_types(cfg).items():
        d = nt.get("docker")
        if isinstance(d, Mapping):
            for key in ("worker_image", "head_image", "image"):
                if isinstance(d.get(key), str) and d[key]:
                    yield key_path(NT, name, "docker", key), d[key]


def image_ray_version(image: str) -> str | None:
    """Ray's version from a rayproject image name (``rayproject/ray-ml:2.0.0-cpu`` -> 2.0.0), else None."""
    if "@" in image:
        return None  # pinned by digest: the name says nothing
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not _RAY_IMAGE.search(repo):
        return None
    m = _VERSION.match(tag)
    return m.group(1) if m else None


def check_docker_ray(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    want = installed_ray()
    for path, image in _images(cfg):
        got = image_ray_version(image)
        if got is None:
            yield Finding(WARN, path,
                          f"cannot tell which Ray {image!r} holds (no rayproject/ray:<version> tag)",
                          f"use an image with Ray {want}, e.g. rayproject/ray:{want}-py311-cpu", "docker-ray")
        elif got != want:
            yield Finding(ERROR, path,
                          f"{image!r} holds Ray {got}, but this cluster runs Ray {want}: its nodes cannot "
                          "join the head",
                          f"use rayproject/ray:{want}-py311-cpu (or the same tag of ray-ml), or remove "
                          "docker: to run Ray on the host", "docker-ray")


CHECKS = [
    ("node-image", check_node_image),
    ("head-spot", check_head_spot),
    ("docker-ray", check_docker_ray),
]

__all__ = ["CHECKS"]
