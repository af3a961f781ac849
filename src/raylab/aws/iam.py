"""IAM: the head policy's least-privilege rules (pure, shared by stage 2's verify and the IaC
gates in tests/unit/test_iac_gates.py) and a few read helpers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# Exactly what Ray's AWS node provider on the head needs (field notes: describe, run, tag,
# terminate; stop/start only with cached stopped nodes; PassRole of the worker role).
# DescribeInstanceTypes: the monitor fills node resources from it on every config load.
# tests/unit/test_iam_head_policy_lifecycle.py proves each one is needed and together enough.
HEAD_POLICY_ACTIONS: frozenset[str] = frozenset(
    {
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:TerminateInstances",
        "ec2:StopInstances",
        "ec2:StartInstances",
        "iam:PassRole",
    }
)
WORKER_POLICY_ACTIONS: frozenset[str] = frozenset({"s3:GetObject", "s3:ListBucket"})
TAG_SCOPED_ACTIONS = ("ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances")
CLUSTER_TAG_KEYS = ("aws:ResourceTag/ray-cluster-name", "ec2:ResourceTag/ray-cluster-name")
READ_PREFIXES = ("Describe", "List", "Get")


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def statements(doc: Mapping[str, Any] | str) -> list[dict[str, Any]]:
    parsed: Mapping[str, Any] = json.loads(doc) if isinstance(doc, str) else doc
    return [dict(s) for s in _as_list(parsed.get("Statement"))]


def policy_actions(doc: Mapping[str, Any] | str) -> set[str]:
    """Every action an Allow statement grants."""
    return {a for s in statements(doc) if s.get("Effect") == "Allow" for a in _as_list(s.get("Action"))}


def is_mutating(action: str) -> bool:
    verb = action.split(":", 1)[-1]
    return not verb.startswith(READ_PREFIXES)


def _cond_values(stmt: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    out: list[str] = []
    for op, kv in (stmt.get("Condition") or {}).items():
        if not op.startswith("StringEquals"):
            continue
        for k in keys:
            out += [str(v) for v in _as_list(kv.get(k))]
    return out


def head_policy_findings(
    doc: Mapping[str, Any] | str, *, cluster_name: str, worker_role_arn: str
) -> list[str]:
    """Every way the head policy breaks least privilege ([] when it holds). Messages quote values."""
    found: list[str] = []
    for i, s in enumerate(statements(doc)):
        sid = s.get("Sid") or f"statement {i}"
        if s.get("NotAction") or s.get("NotResource"):
            found.append(f"{sid}: NotAction/NotResource grants more than it names")
        if s.get("Effect") != "Allow":
            continue
        actions = _as_list(s.get("Action"))
        resources = _as_list(s.get("Resource"))
        cond = s.get("Condition") or {}
        for a in actions:
            if a == "*" or a.endswith(":*"):
                found.append(f"{sid}: wildcard action {a!r}")
        if "*" in resources and not cond:
            mut = [a for a in actions if is_mutating(a)]
            if mut:
                found.append(f"{sid}: mutating action(s) {mut} on resource '*' without a condition")
        for a in actions:
            if a in TAG_SCOPED_ACTIONS and cluster_name not in _cond_values(s, CLUSTER_TAG_KEYS):
                found.append(f"{sid}: {a} is not scoped by the tag ray-cluster-name={cluster_name!r}")
            if a == "iam:PassRole":
                if resources != [worker_role_arn]:
                    found.append(
                        f"{sid}: iam:PassRole on {resources}, not only the worker role {worker_role_arn!r}"
                    )
                if _cond_values(s, ["iam:PassedToService"]) != ["ec2.amazonaws.com"]:
                    found.append(
                        f"{sid}: iam:PassRole lacks the condition iam:PassedToService=ec2.amazonaws.com"
                    )
    extra = policy_actions(doc) - HEAD_POLICY_ACTIONS
    if extra:
        found.append(f"actions beyond what Ray's AWS provider needs: {sorted(extra)}")
    return found


def worker_policy_findings(doc: Mapping[str, Any] | str, *, bucket: str = "ray-example-data") -> list[str]:
    found: list[str] = []
    allowed = {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    for i, s in enumerate(statements(doc)):
        sid = s.get("Sid") or f"statement {i}"
        if s.get("Effect") != "Allow":
            continue
        extra = set(_as_list(s.get("Action"))) - WORKER_POLICY_ACTIONS
        if extra:
            found.append(f"{sid}: worker actions beyond S3 read: {sorted(extra)}")
        bad = [r for r in _as_list(s.get("Resource")) if r not in allowed]
        if bad:
            found.append(f"{sid}: worker resources beyond the data bucket: {bad}")
    return found


def role_inline_policies(iam: Any, role: str) -> dict[str, dict[str, Any]]:
    """{policy name: document} of a role's inline policies."""
    out: dict[str, dict[str, Any]] = {}
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        out[name] = json.loads(doc) if isinstance(doc, str) else doc
    return out


def merged(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [s for d in docs for s in statements(d)]}


def profile_roles(iam: Any, profile: str) -> list[str]:
    return [
        r["RoleName"]
        for r in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    ]


def identity_leftovers(iam: Any, names: Mapping[str, str]) -> list[str]:
    """The lab's roles and instance profiles that still exist."""
    out: list[str] = []
    for key in ("head_profile", "worker_profile"):
        try:
            iam.get_instance_profile(InstanceProfileName=names[key])
            out.append(f"instance profile {names[key]}")
        except Exception as e:  # noqa: BLE001 - NoSuchEntity means gone
            if "NoSuchEntity" not in str(e) and "not found" not in str(e).lower():
                raise
    for key in ("head_role", "worker_role"):
        try:
            iam.get_role(RoleName=names[key])
            out.append(f"IAM role {names[key]}")
        except Exception as e:  # noqa: BLE001
            if "NoSuchEntity" not in str(e) and "not found" not in str(e).lower():
                raise
    return out
