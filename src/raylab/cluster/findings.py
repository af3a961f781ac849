"""The vocabulary of ``raylab config check``: a finding, its levels, key paths, and small accessors of
a cluster YAML that never raise. ``validate`` (structural rules) and ``rules_ec2`` (EC2 and security
rules) both import it, so neither imports the other at module level.

Imports: only the instance type table below it in ``raylab.cluster``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

from raylab.cluster.instance_types import InstanceType

ERROR = "ERROR"
WARN = "WARN"
FILE = "(file)"  # the key path of findings about the whole file
RAY_DOCS = "https://docs.ray.io/en/latest/cluster/vms/references/ray-cluster-configuration.html"


@dataclass(frozen=True)
class Finding:
    level: str  # ERROR | WARN
    path: str  # key path, e.g. available_node_types[ray.worker.spot].node_config.InstanceType
    message: str  # what is wrong (quotes the value)
    hint: str  # what to do
    check: str  # the rule's name, e.g. "removed-key"

    def line(self) -> str:
        return f"{self.level} {self.path}: {self.message} ({self.hint})"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.level == ERROR for f in findings)


def key_path(*parts: str | int) -> str:
    """Join keys into a readable path; keys with dots (node type names) go in brackets."""
    out = ""
    for p in parts:
        if isinstance(p, int) or "." in p or " " in p or not p:
            out += f"[{p}]"
        else:
            out += f".{p}" if out else p
    return out or FILE


def is_placeholder(v: Any) -> bool:
    return isinstance(v, str) and "{{" in v and "}}" in v


def is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def suggest(name: str, known: Iterable[str]) -> str | None:
    m = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return m[0] if m else None


# --- what a config holds (small accessors that never raise) -----------------------------------------
def provider_of(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    p = cfg.get("provider")
    return p if isinstance(p, Mapping) else {}


def node_types(cfg: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    nts = cfg.get("available_node_types")
    if not isinstance(nts, Mapping):
        return {}
    return {str(k): v for k, v in nts.items() if isinstance(v, Mapping)}


def node_config(nt: Mapping[str, Any]) -> Mapping[str, Any]:
    nc = nt.get("node_config")
    return nc if isinstance(nc, Mapping) else {}


def is_ec2(cfg: Mapping[str, Any]) -> bool:
    """AWS provider, or a provider (the local twin's external one) launching EC2-shaped nodes."""
    if provider_of(cfg).get("type") == "aws":
        return True
    return any("InstanceType" in node_config(nt) for nt in node_types(cfg).values())


def head_type_name(cfg: Mapping[str, Any]) -> str | None:
    h = cfg.get("head_node_type")
    return h if isinstance(h, str) and h in node_types(cfg) else None


Check = Callable[[Mapping[str, Any], "Env"], Iterable[Finding]]


@dataclass(frozen=True)
class Env:
    """What checks may consult besides the config: EC2's answer about instance types, if asked."""

    instance_types: Mapping[str, InstanceType] | None = None  # None: offline table + botocore names
