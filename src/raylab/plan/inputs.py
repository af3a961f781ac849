"""Turn a Ray cluster YAML (+ scenario overlay) and the command line into a forecast's ``PlanInput``.

Reads the YAML directly (placeholders like ``"{{ Name }}"`` are quoted strings and harmless here) and
merges ``configs/scenarios/<scenario>.yaml`` the way ``raylab config render`` does: mappings merge
key by key, other values replace, ``null`` deletes. Instance shapes come from raylab's offline table
(``raylab.cluster.instance_types``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from raylab.cluster.vocab import (
    IDLE_TIMEOUT_MINUTES,
    REQUEST_STATUS_TIMEOUT_S,
    TICK_S,
    UPSCALING_SPEED,
    Market,
)
from raylab.errors import RaylabError
from raylab.plan.model import NodeTypeSpec, PlanInput, Workload

COMPARE_PARAMS = ("upscaling_speed", "idle_timeout_minutes", "max_workers", "min_workers", "quota",
                  "boot_seconds")


def merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for k, v in overlay.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(out.get(k), v)
        return out
    return overlay


def load_config(config: Path, scenario: str | None, fallback_scenarios: Path | None = None) -> dict[str, Any]:
    """The cluster YAML merged with ``scenarios/<scenario>.yaml`` (next to it, else in fallback_scenarios)."""
    import yaml

    if not config.is_file():
        raise RaylabError(f"config file {str(config)!r} not found", "pass --config FILE (a Ray cluster YAML)")
    try:
        cfg = yaml.safe_load(config.read_text())
    except yaml.YAMLError as e:
        raise RaylabError(f"{config} is not valid YAML: {str(e).splitlines()[0]}", "fix the file") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("available_node_types"), dict):
        raise RaylabError(f"{config} has no available_node_types", "pass a Ray cluster YAML")
    if scenario:
        d = config.parent / "scenarios"
        if not (d / f"{scenario}.yaml").is_file() and fallback_scenarios is not None:
            d = fallback_scenarios
        ov = d / f"{scenario}.yaml"
        if not ov.is_file():
            raise RaylabError(f"scenario overlay {str(ov)!r} not found", "use one of the files in " + str(d))
        cfg = merge(cfg, yaml.safe_load(ov.read_text()) or {})
    return cfg


def _vcpus(instance_type: str) -> int:
    from raylab.cluster import instance_types

    it = instance_types.lookup(instance_type)
    if it is None:
        near = instance_types.closest(instance_type)
        hint = f"did you mean {near[0]}?" if near else "use an instance type from raylab's table"
        raise RaylabError(f"unknown instance type {instance_type!r} (not in raylab's offline table)", hint)
    return it.vcpus


def _int(v: Any, what: str) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError) as e:
        raise RaylabError(f"{what} is {v!r}, not an integer", "fix the cluster config") from e
    if n < 0:
        raise RaylabError(f"{what} is {n}, must be >= 0", "fix the cluster config")
    return n


def node_spec(name: str, nt: dict[str, Any], scale: int, head: bool) -> NodeTypeSpec:
    node_config = nt.get("node_config") or {}
    itype = str(node_config.get("InstanceType", ""))
    if not itype:
        raise RaylabError(f"node type {name!r} has no node_config.InstanceType", "fix the cluster config")
    vcpus = _vcpus(itype)
    res = nt.get("resources") or {}
    cpus = _int(res["CPU"], f"{name}.resources.CPU") if "CPU" in res else max(1, vcpus // scale)
    return NodeTypeSpec(
        name=name, instance_type=itype, vcpus=vcpus, cpus=cpus,
        market=Market.of_node_config(node_config).key,
        min_workers=0 if head else _int(nt.get("min_workers", 0), f"{name}.min_workers"),
        max_workers=0 if head else _int(nt.get("max_workers", 0), f"{name}.max_workers"),
        priority=int(nt.get("priority", 0) or 0),
    )


def plan_input(cfg: dict[str, Any], *, workload: Workload, quota_ondemand: int | None,
               quota_spot: int | None, boot_seconds: float, scale: int = 1,
               max_concurrent_boots: int | None = None, worker_start_s: float = 0.0,
               other_vcpus: int = 0, request_timeout_s: float = REQUEST_STATUS_TIMEOUT_S,
               tick_s: float = TICK_S) -> PlanInput:
    types = cfg["available_node_types"]
    head_name = cfg.get("head_node_type")
    if not isinstance(head_name, str) or head_name not in types:
        raise RaylabError(f"head_node_type {head_name!r} is not in available_node_types", "fix the config")
    head = node_spec(head_name, types[head_name], scale, head=True)
    workers = tuple(node_spec(n, t, scale, head=False) for n, t in types.items() if n != head_name)
    workers = tuple(w for w in workers if w.max_workers > 0)
    if not workers:
        raise RaylabError("no worker node type has max_workers > 0", "pick a scenario with workers")
    biggest = max(w.cpus for w in workers)
    if workload.cpus > max(biggest, head.cpus):
        raise RaylabError(f"a task needs {workload.cpus} CPUs but the largest node has {biggest}",
                          "lower --cpus or use a bigger instance type")
    return PlanInput(
        head=head, workers=workers, max_workers=_int(cfg.get("max_workers", 0), "max_workers"),
        upscaling_speed=float(cfg.get("upscaling_speed", UPSCALING_SPEED)),
        idle_timeout_minutes=float(cfg.get("idle_timeout_minutes", IDLE_TIMEOUT_MINUTES)),
        workload=workload, quota_ondemand=quota_ondemand, quota_spot=quota_spot, boot_seconds=boot_seconds,
        max_concurrent_boots=max_concurrent_boots, worker_start_s=worker_start_s, other_vcpus=other_vcpus,
        request_timeout_s=request_timeout_s, tick_s=tick_s,
    )


def parse_compare(spec: str) -> tuple[str, list[float]]:
    """``"upscaling_speed=1,10"`` -> ("upscaling_speed", [1.0, 10.0]); bad input -> RaylabError."""
    param, sep, values = spec.partition("=")
    param = param.strip()
    if not sep or param not in COMPARE_PARAMS:
        raise RaylabError(f"cannot compare {spec!r}",
                          f"use PARAM=V1,V2 with PARAM one of {', '.join(COMPARE_PARAMS)}")
    out: list[float] = []
    for v in values.split(","):
        try:
            x = float(v)
        except ValueError as e:
            raise RaylabError(f"--compare value {v!r} is not a number",
                              "e.g. --compare upscaling_speed=1,10") from e
        if x < 0 or x != x:
            raise RaylabError(f"--compare value {v!r} must be >= 0", "e.g. --compare quota=160,512")
        if param in ("max_workers", "min_workers", "quota") and x != int(x):
            raise RaylabError(f"--compare {param} value {v!r} must be a whole number", "e.g. 160")
        out.append(x)
    if len(out) < 1 or not values.strip():
        raise RaylabError(f"--compare {spec!r} has no values", "e.g. --compare upscaling_speed=1,10")
    return param, out


def vary(plan: PlanInput, param: str, value: float) -> PlanInput:
    p = plan.with_param(param, value)
    if param == "min_workers" and sum(w.min_workers for w in p.workers) > p.max_workers:
        p = replace(p, max_workers=sum(w.min_workers for w in p.workers))
    return p
