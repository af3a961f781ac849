"""`raylab config check`: Ray's own schema validator plus raylab's rules for a Ray cluster YAML.

A finding is data (``Finding``: level, key path, what is wrong, what to do, name of the check).
Checks never raise: a check that crashes becomes an ERROR finding naming it, a check that cannot
run (EC2 unreachable) is a WARN, never a silent pass. ``validate`` is pure (a dict in, findings
out); ``check_file`` adds the file-level findings (missing, empty, YAML syntax, duplicate keys).

Structural rules live here; the EC2 and security rules in ``raylab.cluster.rules_ec2``; Ray's own
schema and validator in ``raylab.cluster.ray_schema``; the finding vocabulary in ``findings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from raylab.cluster.findings import (  # noqa: F401 - re-exported: callers import them from here
    ERROR,
    FILE,
    RAY_DOCS,
    WARN,
    Check,
    Env,
    Finding,
    has_errors,
    head_type_name,
    is_ec2,
    is_number,
    is_placeholder,
    key_path,
    node_config,
    node_types,
    provider_of,
    suggest,
)
from raylab.cluster.instance_types import Describer, InstanceType
from raylab.cluster.ray_schema import (  # noqa: F401 - ray_findings, ray_schema: re-exported
    AWS_PROVIDER_EXTRA,
    _covered,
    node_type_keys,
    ray_findings,
    ray_schema,
    schema_keys,
)

# --- structural rules ------------------------------------------------------------------------------------
REMOVED_TOP = {
    "target_utilization_fraction": (
        "removed in Ray 2.x and rejected by its schema: the autoscaler no longer aims at a utilization "
        "fraction, it sizes the cluster to the resources queued tasks and actors ask for",
        "delete it and set upscaling_speed instead: each autoscaler loop may add up to upscaling_speed x "
        "the running nodes of a type, at least 1; 1.0 is the default",
    ),
    "autoscaling_mode": (
        "removed in Ray 2.x and rejected by its schema; it was default or aggressive",
        "delete it; a larger upscaling_speed (e.g. 10) scales up faster, as 'aggressive' did",
    ),
    "min_workers": (
        "a top-level min_workers is rejected by Ray 2.x: minimums are per node type",
        "delete it; set min_workers on a worker node type under available_node_types",
    ),
    "initial_workers": (
        "removed in Ray 2.x: there is no separate initial size",
        "delete it; set min_workers on a worker node type under available_node_types",
    ),
    "head_node": (
        "the legacy head_node section is not supported by Ray 2.x",
        "move it to available_node_types.<name>.node_config and set head_node_type: <name>",
    ),
    "worker_nodes": (
        "the legacy worker_nodes section is not supported by Ray 2.x",
        "move it to available_node_types.<name>.node_config with min_workers/max_workers",
    ),
    "worker_default_node_type": (
        "removed in Ray 2.x: the autoscaler picks node types from the resources tasks ask for",
        "delete it",
    ),
}


def check_removed_keys(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    for key, (msg, hint) in REMOVED_TOP.items():
        if key in cfg:
            if key in ("head_node", "worker_nodes") and not cfg[key]:  # Ray drops empty ones, warning
                yield Finding(WARN, key_path(key), "an empty legacy section; Ray drops it", "delete it",
                              "removed-key")
            else:
                yield Finding(ERROR, key_path(key), msg, hint, "removed-key")


def _unknown(path: tuple[str | int, ...], key: str, known: Iterable[str], level: str, what: str,
             ignored: bool = False) -> Finding:
    close = suggest(key, known)
    effect = "Ray ignores it silently" if ignored else "Ray rejects it"
    msg = f"unknown key {key!r} in {what}: {effect}"
    hint = f"did you mean {close!r}?" if close else "remove it; see " + RAY_DOCS
    return Finding(level, key_path(*path, key), msg, hint, "unknown-key")


def check_unknown_keys(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    for key in cfg:
        if key not in schema_keys() and key not in REMOVED_TOP:
            yield _unknown((), str(key), schema_keys(), ERROR, "the cluster config")
    prov = cfg.get("provider")
    if isinstance(prov, Mapping):
        ptype = prov.get("type")
        known = schema_keys("provider") | AWS_PROVIDER_EXTRA
        for key in prov:
            k = str(key)
            if k in known or k.startswith("_"):
                continue
            close = suggest(k, known)
            if ptype == "aws":  # a typo here silently turns a setting off: an error when it looks like one
                yield _unknown(("provider",), k, known, ERROR if close else WARN, "provider", ignored=True)
            elif close:  # other providers may define their own keys; only likely typos
                yield _unknown(("provider",), k, known, WARN, "provider", ignored=True)
    for section in ("auth", "docker"):
        sec = cfg.get(section)
        if isinstance(sec, Mapping):
            for key in sec:
                if key not in schema_keys(section):
                    yield _unknown((section,), str(key), schema_keys(section), ERROR, section)
    for name, nt in node_types(cfg).items():
        for key in nt:
            if key not in node_type_keys():
                yield _unknown(("available_node_types", name), str(key), node_type_keys(), ERROR,
                               f"node type {name!r}")


def _number_problem(v: Any, integer: bool) -> str | None:
    if isinstance(v, bool):
        return f"{str(v).lower()} is not a number"
    if isinstance(v, str):
        try:
            float(v)
            return f"{v!r} is a string, not a number"
        except ValueError:
            return f"{v!r} is not a number"
    if not is_number(v):
        return f"{v!r} is not a number"
    if v < 0:
        return f"{v} is negative"
    if integer and not (isinstance(v, int) or float(v).is_integer()):
        return f"{v} is not a whole number"
    return None


NUMBERS_TOP = {  # key -> (integer?, what to write)
    "max_workers": (True, "a whole number >= 0, e.g. 30"),
    "upscaling_speed": (False, "a number >= 0, e.g. 1.0"),
    "idle_timeout_minutes": (False, "a number of minutes >= 0, e.g. 5 or 0.5 for 30 s"),
}
NUMBERS_NODE = {
    "min_workers": (True, "a whole number >= 0"),
    "max_workers": (True, "a whole number >= 0"),
    "idle_timeout_s": (False, "a number of seconds >= 0"),
}


def check_numbers(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    for key, (integer, want) in NUMBERS_TOP.items():
        if key in cfg and (p := _number_problem(cfg[key], integer)):
            yield Finding(ERROR, key_path(key), p, f"write {want}", "numbers")
        elif integer and isinstance(cfg.get(key), float):
            yield Finding(WARN, key_path(key), f"{cfg[key]} is written as a float; it counts nodes",
                          f"write {int(cfg[key])}", "numbers")
    for name, nt in node_types(cfg).items():
        for key, (integer, want) in NUMBERS_NODE.items():
            path = key_path("available_node_types", name, key)
            if key in nt and (p := _number_problem(nt[key], integer)):
                yield Finding(ERROR, path, p, f"write {want}", "numbers")
            elif integer and isinstance(nt.get(key), float):
                yield Finding(WARN, path, f"{nt[key]} is written as a float; it counts nodes",
                              f"write {int(nt[key])}", "numbers")
        prio = nt.get("priority", 0)
        if not isinstance(prio, int) or isinstance(prio, bool):
            yield Finding(ERROR, key_path("available_node_types", name, "priority"),
                          f"{nt['priority']!r} is not a whole number",
                          "write an integer; the higher priority wins when node types fit equally", "numbers")


def _count(v: Any) -> int | None:
    return int(v) if is_number(v) and v >= 0 else None


def check_min_max(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    head = cfg.get("head_node_type")
    total_min = 0
    for name, nt in node_types(cfg).items():
        lo, hi = _count(nt.get("min_workers", 0)), _count(nt.get("max_workers"))
        if lo is not None and hi is not None and lo > hi:
            yield Finding(ERROR, key_path("available_node_types", name, "min_workers"),
                          f"min_workers {lo} is above max_workers {hi}",
                          "make min_workers <= max_workers, equal for a fixed size", "min-max")
        if name != head and lo is not None:
            total_min += lo
    gmax = _count(cfg.get("max_workers"))
    if gmax is not None and total_min > gmax:
        yield Finding(ERROR, key_path("max_workers"),
                      f"the node types' min_workers add up to {total_min}, above max_workers {gmax}",
                      f"raise max_workers to at least {total_min} or lower some min_workers", "min-max")


CANONICAL_RESOURCES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory",
                       "object_store_memory": "object_store_memory"}


def check_resources(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    for name, nt in node_types(cfg).items():
        res = nt.get("resources")
        base = ("available_node_types", name, "resources")
        if "resources" in nt and not isinstance(res, Mapping):
            yield Finding(ERROR, key_path(*base), f"{res!r} is not a mapping",
                          "write resources: {} (Ray fills them from the instance type) or {CPU: 16}",
                          "resources")
            continue
        for rname, v in (res or {}).items():
            path = key_path(*base, str(rname))
            if is_number(v) and v >= 0 and not float(v).is_integer():
                yield Finding(ERROR, path, f"{v} is fractional; Ray node resources are whole numbers",
                              f"use a whole number, {int(v)} or {int(v) + 1}; to pack tasks tighter ask less "
                              "per task instead, e.g. num_cpus=0.5 in @ray.remote", "resources")
            elif (p := _number_problem(v, integer=False)) is not None:
                yield Finding(ERROR, path, p, "write a whole number >= 0", "resources")
            canon = CANONICAL_RESOURCES.get(str(rname).lower())
            if canon and rname != canon:
                yield Finding(WARN, path, f"{rname!r} is a custom resource, not Ray's {canon!r}: "
                              "resource names are case-sensitive", f"rename it to {canon}", "resources")
            if rname == "memory" and is_number(v) and 0 < v < 2**20:
                yield Finding(WARN, path, f"memory {v} is in bytes, i.e. less than 1 MiB",
                              "give bytes, e.g. 32 GiB = 34359738368", "resources")


def check_head_node_type(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    nts = cfg.get("available_node_types")
    if nts is None:
        yield Finding(ERROR, key_path("available_node_types"), "missing",
                      "declare the head and worker node types under available_node_types", "head-node-type")
        return
    if not isinstance(nts, Mapping) or not nts:
        yield Finding(ERROR, key_path("available_node_types"), "must be a non-empty mapping of node types",
                      "declare the head and worker node types, e.g. ray.head.default: {...}",
                      "head-node-type")
        return
    head = cfg.get("head_node_type")
    if head is None:
        yield Finding(ERROR, key_path("head_node_type"), "missing",
                      f"name the head's node type, one of: {', '.join(map(str, nts))}", "head-node-type")
    elif head not in nts:
        close = suggest(str(head), map(str, nts))
        hint = f"did you mean {close!r}?" if close else f"use one of: {', '.join(map(str, nts))}"
        yield Finding(ERROR, key_path("head_node_type"), f"{head!r} is not one of available_node_types",
                      hint, "head-node-type")


def check_provider(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    prov = cfg.get("provider")
    if prov is None or not isinstance(prov, Mapping):
        yield Finding(ERROR, key_path("provider"), "missing" if prov is None else "is not a mapping",
                      "add provider: {type: aws, region: us-west-2}", "provider")
        return
    if "type" not in prov:
        yield Finding(ERROR, key_path("provider", "type"), "missing", "set provider.type: aws", "provider")
    if prov.get("type") != "aws":
        return
    region = prov.get("region")
    if region is None:
        yield Finding(ERROR, key_path("provider", "region"), "missing; Ray's AWS provider needs it",
                      "set provider.region, e.g. us-west-2", "provider")
        return
    regions = aws_regions()
    if regions and not is_placeholder(region) and region not in regions:
        close = suggest(str(region), regions)
        yield Finding(ERROR, key_path("provider", "region"), f"{region!r} is not an AWS region",
                      f"did you mean {close!r}?" if close else "use e.g. us-west-2", "provider")
        return
    azs = prov.get("availability_zone")
    if isinstance(azs, str) and not is_placeholder(azs):
        for az in (a.strip() for a in azs.split(",") if a.strip()):
            if not az.startswith(str(region)):
                yield Finding(ERROR, key_path("provider", "availability_zone"),
                              f"zone {az!r} is not in region {region!r}",
                              f"use zones of {region}, e.g. {region}a,{region}b", "provider")


@lru_cache(maxsize=1)
def aws_regions() -> frozenset[str]:
    try:
        import botocore.session

        return frozenset(botocore.session.get_session().get_available_regions("ec2"))
    except Exception:  # noqa: BLE001 - without botocore the region rule is skipped
        return frozenset()


def check_placeholders(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    from raylab.cluster.config import placeholders

    names = placeholders(cfg)
    if names:
        shown = ", ".join("{{ " + n + " }}" for n in names)
        yield Finding(WARN, FILE, f"{len(names)} template placeholder(s) not filled: {shown}",
                      "this is a template: `raylab config render --target aws --scenario S --outputs FILE` "
                      "fills them", "placeholders")


# --- running the checks -------------------------------------------------------------------------------------
def _checks() -> list[tuple[str, Check]]:
    from raylab.cluster import rules_ec2, rules_node

    return [
        ("provider", check_provider),
        ("removed-key", check_removed_keys),
        ("unknown-key", check_unknown_keys),
        ("numbers", check_numbers),
        ("min-max", check_min_max),
        ("resources", check_resources),
        ("head-node-type", check_head_node_type),
        ("placeholders", check_placeholders),
        *rules_ec2.CHECKS,
        *rules_node.CHECKS,
    ]


_RANK = {ERROR: 0, WARN: 1}


def validate(cfg: dict[str, Any], *, instance_types: Mapping[str, InstanceType] | None = None,
             ray: bool = True) -> list[Finding]:
    """Every finding for a parsed cluster config (pure; never raises).

    ``instance_types``: EC2's answer (name -> InstanceType) for the names in ``cfg``; a name missing
    from it is not offered. None: the offline table plus botocore's list of instance type names.
    ``ray``: also run Ray's own ``prepare_config`` + ``validate_config``.
    """
    if not isinstance(cfg, Mapping):
        return [Finding(ERROR, FILE, f"the top level is a {type(cfg).__name__}, not a mapping",
                        "a cluster YAML is a mapping of keys such as cluster_name, provider, ...", "yaml")]
    env = Env(instance_types=instance_types)
    found: list[Finding] = []
    for name, check in _checks():
        try:
            found.extend(check(cfg, env))
        except Exception as e:  # noqa: BLE001 - a crashing check is a finding, never a traceback
            found.append(Finding(ERROR, FILE, f"check {name!r} crashed: {type(e).__name__}: {e}",
                                 "report this raylab bug with the YAML that caused it", name))
    if ray:
        try:
            found.extend(f for f in ray_findings(cfg) if not _covered(f, found))
        except Exception as e:  # noqa: BLE001
            found.append(Finding(ERROR, FILE, f"check 'ray-schema' crashed: {type(e).__name__}: {e}",
                                 "report this raylab bug with the YAML that caused it", "ray-schema"))
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda f: _RANK.get(f.level, 2))


def instance_type_names(cfg: Mapping[str, Any]) -> list[str]:
    names = {node_config(nt).get("InstanceType") for nt in node_types(cfg).values()}
    return sorted(n for n in names if isinstance(n, str) and n and not is_placeholder(n))


def check_file(path: Path | str, *, describe: Describer | None = None, ray: bool = True) -> list[Finding]:
    """Findings for a cluster YAML file (never raises). ``describe``: ask EC2 about instance types
    (``instance_types.ec2_describer(region)`` on the AWS target; any callable in tests)."""
    from raylab.cluster.config import parse_yaml, yaml_error_text

    p = Path(path)
    try:
        if not p.exists():
            return [Finding(ERROR, FILE, f"no such file: {str(p)!r}", "check the path", "yaml")]
        if p.is_dir():
            return [Finding(ERROR, FILE, f"{str(p)!r} is a directory",
                            "pass the cluster YAML file itself, e.g. configs/ray-cluster.yaml", "yaml")]
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [Finding(ERROR, FILE, f"cannot read {str(p)!r}: {e}",
                        "check the file's permissions and that it is UTF-8 text", "yaml")]
    try:
        cfg = parse_yaml(text)
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError and friends
        return [Finding(ERROR, FILE, f"YAML syntax error at {yaml_error_text(e)}",
                        "fix the YAML (indentation, quotes, colons), then check again", "yaml")]
    if cfg is None:
        return [Finding(ERROR, FILE, "the file is empty (no YAML document)",
                        "start from configs/ray-cluster.yaml", "yaml")]
    if not isinstance(cfg, dict):
        return validate(cfg, ray=False)
    pre: list[Finding] = []
    answer: Mapping[str, InstanceType] | None = None
    if describe is not None and (names := instance_type_names(cfg)):
        try:
            answer = dict(describe(names))
        except Exception as e:  # noqa: BLE001 - a check that cannot run is a WARN, never a pass
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            pre.append(Finding(WARN, FILE, f"could not ask EC2 about instance types: {type(e).__name__}: "
                               f"{first}", "check AWS credentials and region; the offline table was used",
                               "instance-type"))
    return pre + validate(cfg, instance_types=answer, ray=ray)
