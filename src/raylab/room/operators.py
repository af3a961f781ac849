"""The operator policies (pure): what the people who run raylab may do, generated from what raylab calls.

Two IAM policies, shipped as Terraform in ``infra/terraform/operators/`` (the JSON templates there are
this module's output; a unit test fails when they drift):

- trainee: reads that AWS cannot scope; creates only with the tag ``raylab-lab`` equal to the trainee's
  own lab (``aws:RequestTag``), and changes or deletes only what carries that tag (``aws:ResourceTag``),
  or, for IAM roles, instance profiles and the CloudFormation stack, what has the lab's own name
  (``raylab.labid.names``). The lab is the principal tag ``raylab-lab``
  (``${aws:PrincipalTag/raylab-lab}``): the tag of the per-lab role the trainee assumes, set by the
  instructor's Terraform; the trainee can neither retag that role nor pass session tags.
- instructor: the same reads, and every teardown action (delete, terminate, detach, disassociate,
  release, revoke, remove) on any resource tagged ``raylab-lab`` or named like a raylab lab's: the room
  sweep, never touching what raylab did not create.

``GRANTS`` is the reviewed list. Actions raylab calls itself through boto3 are found in ``src/raylab``
by ``scan_calls`` (the unit test checks each one is granted); the others are called on the operator's
behalf by the tools raylab drives with the operator's credentials: CloudFormation (stage 1's
``infra/cloudformation/vpc.yaml``), Terraform (stage 2's ``infra/terraform``) and `ray up`/`ray down`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raylab.aws.ec2 import LAB_TAG
from raylab.labid import names

PRINCIPAL_LAB = "${aws:PrincipalTag/" + LAB_TAG + "}"
# Terraform's templatefile() needs "$${" for a literal "${"; ${partition} etc. are its variables.
TF_PRINCIPAL_LAB = "$" + PRINCIPAL_LAB
# boto3 service name -> IAM action prefix
ACTION_PREFIX = {"cloudformation": "cloudformation", "ec2": "ec2", "fis": "fis", "iam": "iam",
                 "pricing": "pricing", "service-quotas": "servicequotas", "ssm": "ssm", "sts": "sts"}
SWEEP_VERBS = ("Delete", "Terminate", "Detach", "Disassociate", "Release", "Revoke", "Remove")

READ, CREATE, LAB, SUPPORT, NAMED, PASS = "read", "create", "lab", "support", "named", "pass"


@dataclass(frozen=True)
class Grant:
    """One action on one kind of resource, how it is scoped, and who calls it."""

    action: str
    scope: str  # READ | CREATE (aws:RequestTag) | LAB (aws:ResourceTag) | SUPPORT | NAMED | PASS
    resource: str = "*"  # resource type ("vpc", "fis:experiment-template"), or a labid.names key for NAMED
    by: str = "raylab"  # raylab | cloudformation | terraform | ray

    @property
    def sweeps(self) -> bool:
        return self.action.split(":", 1)[1].startswith(SWEEP_VERBS)


def _g(scope: str, by: str, resource: str, *actions: str) -> tuple[Grant, ...]:
    return tuple(Grant(a, scope, resource, by) for a in actions)


GRANTS: tuple[Grant, ...] = (
    # reads AWS cannot scope to a tag (Describe*/List* on "*", account-level Get*)
    *_g(READ, "raylab", "*", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
        "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeInstances",
        "ec2:DescribeInternetGateways", "ec2:DescribeKeyPairs", "ec2:DescribeLaunchTemplates",
        "ec2:DescribeNatGateways", "ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets",
        "ec2:DescribeVpcEndpoints", "ec2:DescribeVpcs", "cloudformation:DescribeStacks",
        "cloudformation:DescribeStackEvents", "cloudformation:GetTemplate", "iam:GetRole",
        "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:GetInstanceProfile", "fis:ListExperimentTemplates",
        "fis:ListExperiments",
        "pricing:GetProducts", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
        "sts:GetCallerIdentity"),
    *_g(READ, "ray", "*", "ec2:DescribeImages", "ec2:DescribeLaunchTemplateVersions"),
    *_g(READ, "cloudformation", "*", "ec2:DescribeVpcAttribute"),
    *_g(READ, "terraform", "*", "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole"),
    Grant("ssm:GetParameter", READ, "ssm:public-parameter"),  # the AMI id AWS publishes
    # creates: only with the own lab's tag in the request
    *_g(CREATE, "raylab", "key-pair", "ec2:ImportKeyPair"),
    *_g(CREATE, "raylab", "fis:experiment-template", "fis:CreateExperimentTemplate"),
    *_g(CREATE, "raylab", "fis:experiment", "fis:StartExperiment"),
    *_g(CREATE, "ray", "instance", "ec2:RunInstances"),
    *_g(CREATE, "cloudformation", "vpc", "ec2:CreateVpc"),
    *_g(CREATE, "cloudformation", "subnet", "ec2:CreateSubnet"),
    *_g(CREATE, "cloudformation", "internet-gateway", "ec2:CreateInternetGateway"),
    *_g(CREATE, "cloudformation", "route-table", "ec2:CreateRouteTable"),
    *_g(CREATE, "cloudformation", "natgateway", "ec2:CreateNatGateway"),
    *_g(CREATE, "cloudformation", "elastic-ip", "ec2:AllocateAddress"),
    *_g(CREATE, "cloudformation", "security-group", "ec2:CreateSecurityGroup"),
    *_g(CREATE, "cloudformation", "launch-template", "ec2:CreateLaunchTemplate"),
    *_g(CREATE, "cloudformation", "vpc-endpoint", "ec2:CreateVpcEndpoint"),
    # ... and whatever a create needs of the lab's existing resources carries the lab's tag
    *_g(LAB, "ray", "subnet", "ec2:RunInstances"),
    *_g(LAB, "ray", "security-group", "ec2:RunInstances"),
    *_g(LAB, "cloudformation", "vpc", "ec2:CreateSubnet", "ec2:CreateRouteTable", "ec2:CreateSecurityGroup",
        "ec2:CreateVpcEndpoint", "ec2:ModifyVpcAttribute", "ec2:AttachInternetGateway"),
    *_g(LAB, "cloudformation", "subnet", "ec2:CreateNatGateway", "ec2:AssociateRouteTable"),
    *_g(LAB, "cloudformation", "elastic-ip", "ec2:CreateNatGateway", "ec2:AssociateAddress"),
    *_g(LAB, "cloudformation", "route-table", "ec2:CreateRoute", "ec2:DeleteRoute", "ec2:AssociateRouteTable",
        "ec2:CreateVpcEndpoint"),
    *_g(LAB, "cloudformation", "internet-gateway", "ec2:AttachInternetGateway"),
    *_g(LAB, "cloudformation", "security-group", "ec2:AuthorizeSecurityGroupIngress"),
    *_g(LAB, "cloudformation", "instance", "ec2:AssociateAddress"),
    *_g(LAB, "ray", "instance", "ec2:CreateTags"),  # `ray up` re-tags its head (ray-node-status)
    *_g(LAB, "raylab", "vpc", "ec2:CreateTags"),  # the lab's busy lease and last stage (raylab.room.busy)
    *_g(LAB, "raylab", "fis:experiment-template", "fis:StartExperiment"),
    # changes and teardown: only what carries the own lab's tag
    *_g(LAB, "raylab", "instance", "ec2:GetConsoleOutput", "ec2:TerminateInstances"),
    *_g(LAB, "raylab", "key-pair", "ec2:DeleteKeyPair"),
    *_g(LAB, "raylab", "internet-gateway", "ec2:DetachInternetGateway", "ec2:DeleteInternetGateway"),
    *_g(LAB, "raylab", "vpc", "ec2:DetachInternetGateway", "ec2:DeleteVpc"),
    *_g(LAB, "raylab", "launch-template", "ec2:DeleteLaunchTemplate"),
    *_g(LAB, "raylab", "natgateway", "ec2:DeleteNatGateway"),
    *_g(LAB, "raylab", "network-interface", "ec2:DeleteNetworkInterface"),
    *_g(LAB, "raylab", "route-table", "ec2:DisassociateRouteTable", "ec2:DeleteRouteTable"),
    *_g(LAB, "raylab", "security-group", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"),
    *_g(LAB, "raylab", "subnet", "ec2:DeleteSubnet"),
    *_g(LAB, "raylab", "vpc-endpoint", "ec2:DeleteVpcEndpoints"),
    *_g(LAB, "raylab", "elastic-ip", "ec2:DisassociateAddress", "ec2:ReleaseAddress"),
    *_g(LAB, "raylab", "fis:experiment-template", "fis:DeleteExperimentTemplate"),
    *_g(LAB, "raylab", "fis:experiment", "fis:GetExperiment", "fis:StopExperiment"),  # stage 6, down
    # resources a launch uses that are not the lab's own (AMIs, new volumes and interfaces), as the head's
    *_g(SUPPORT, "ray", "image", "ec2:RunInstances"),
    *_g(SUPPORT, "ray", "volume", "ec2:RunInstances"),
    *_g(SUPPORT, "ray", "network-interface", "ec2:RunInstances"),
    *_g(SUPPORT, "ray", "spot-instances-request", "ec2:RunInstances"),
    *_g(SUPPORT, "cloudformation", "launch-template", "ec2:RunInstances"),
    *_g(SUPPORT, "raylab", "fis:action", "fis:CreateExperimentTemplate"),
    # by name: the lab's own stack, roles and instance profiles (raylab.labid.names)
    *_g(NAMED, "raylab", "stack", "cloudformation:CreateStack", "cloudformation:UpdateStack",
        "cloudformation:DeleteStack"),
    *_g(NAMED, "raylab", "fis_role", "iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
        "iam:DeleteRole"),
    *[g for role in ("head_role", "worker_role") for g in _g(
        NAMED, "terraform", role, "iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy",
        "iam:DeleteRolePolicy", "iam:DeleteRole")],
    *[g for prof in ("head_profile", "worker_profile") for g in _g(
        NAMED, "terraform", prof, "iam:CreateInstanceProfile", "iam:TagInstanceProfile",
        "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile")],
    # iam:PassRole: only the lab's own roles, only to the service that runs them
    Grant("iam:PassRole", PASS, "head_role", "ray"),
    Grant("iam:PassRole", PASS, "worker_role", "ray"),
    Grant("iam:PassRole", PASS, "fis_role", "raylab"),
)
PASSED_TO = {"head_role": "ec2.amazonaws.com", "worker_role": "ec2.amazonaws.com",
             "fis_role": "fis.amazonaws.com"}


def lab_names(lab: str) -> dict[str, str]:
    """raylab's names for one lab, including the spot drill's FIS role (raylab.spot.chaos.fis_role_name)."""
    return {**names(lab), "fis_role": f"raylab-{lab}-fis-spot"}


# --- ARNs -----------------------------------------------------------------------------------------
def arn(resource: str, *, partition: str, region: str, account: str, lab: str, rid: str = "*") -> str:
    """The ARN of a resource type (``vpc``, ``fis:experiment``) or of a named resource of ``lab``."""
    if resource == "*":
        return "*"
    if resource == "ssm:public-parameter":
        return f"arn:{partition}:ssm:{region}::parameter/aws/service/*"
    if resource == "stack":
        return f"arn:{partition}:cloudformation:{region}:{account}:stack/{lab_names(lab)['stack']}/*"
    if resource.endswith(("_role", "_profile")):
        kind = "role" if resource.endswith("_role") else "instance-profile"
        return f"arn:{partition}:iam::{account}:{kind}/{lab_names(lab)[resource]}"
    service, _, rtype = resource.rpartition(":")
    if service == "fis":
        return f"arn:{partition}:fis:{region}:{account}:{rtype}/{rid}"
    if rtype == "image":
        return f"arn:{partition}:ec2:{region}::image/{rid}"
    return f"arn:{partition}:ec2:{region}:{account}:{rtype}/{rid}"


# --- the policies ---------------------------------------------------------------------------------
TEMPLATE_VARS = {"partition": "${partition}", "region": "${region}", "account": "${account_id}"}


def _stmt(sid: str, actions: Iterable[str], resources: Iterable[str],
          condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
    acts, res = sorted(set(actions)), sorted(set(resources))
    s: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": acts[0] if len(acts) == 1 else acts,
                         "Resource": res[0] if len(res) == 1 else res}
    if condition:
        s["Condition"] = dict(condition)
    return s


def _by_scope(scope: str, only: Iterable[Grant] = GRANTS) -> list[Grant]:
    return [g for g in only if g.scope == scope]


def trainee_policy(lab: str = TF_PRINCIPAL_LAB, **where: str) -> dict[str, Any]:
    """The trainee's policy. Default: the Terraform template (``${partition}``... and the principal tag)."""
    w = {**TEMPLATE_VARS, **where}
    a = {k: w[k] for k in ("partition", "region", "account")}
    mine = {"StringEquals": {f"aws:RequestTag/{LAB_TAG}": lab}}
    owned = {"StringEquals": {f"aws:ResourceTag/{LAB_TAG}": lab}}
    creates = _by_scope(CREATE)
    ec2_any = f"arn:{a['partition']}:ec2:{a['region']}:{a['account']}:*"
    ec2_creates = sorted({g.action.split(":")[1] for g in creates if g.action.startswith("ec2:")})
    out = [
        _stmt("ReadWhatCannotBeScoped", [g.action for g in _by_scope(READ) if g.resource == "*"], ["*"]),
        _stmt("ReadTheAmiAwsPublishes", [g.action for g in _by_scope(READ) if g.resource != "*"],
              [arn(g.resource, lab=lab, **a) for g in _by_scope(READ) if g.resource != "*"]),
        _stmt("CreateOnlyTaggedWithOwnLab", [g.action for g in creates],
              [arn(g.resource, lab=lab, **a) for g in creates], mine),
        _stmt("TagOnlyAtCreateWithOwnLab", ["ec2:CreateTags"], [ec2_any],
              {"StringEquals": {"ec2:CreateAction": ec2_creates, f"aws:RequestTag/{LAB_TAG}": lab}}),
        _stmt("ChangeOnlyWhatCarriesOwnLab", [g.action for g in _by_scope(LAB)],
              [ec2_any, f"arn:{a['partition']}:fis:{a['region']}:{a['account']}:*"], owned),
        _stmt("LaunchSupportingResources", [g.action for g in _by_scope(SUPPORT)],
              [arn(g.resource, lab=lab, **a) for g in _by_scope(SUPPORT)]),
        _stmt("OwnLabByName", [g.action for g in _by_scope(NAMED)],
              [arn(g.resource, lab=lab, **a) for g in _by_scope(NAMED)]),
    ]
    for service in sorted(set(PASSED_TO.values())):
        roles = [g for g in _by_scope(PASS) if PASSED_TO[g.resource] == service]
        out.append(_stmt(f"PassOwnLabRolesOnlyTo{service.split('.')[0].capitalize()}", ["iam:PassRole"],
                         [arn(g.resource, lab=lab, **a) for g in roles],
                         {"StringEquals": {"iam:PassedToService": service}}))
    return {"Version": "2012-10-17", "Statement": out}


def instructor_policy(**where: str) -> dict[str, Any]:
    """The instructor's policy: every read, and the sweep of any raylab lab (tagged, or named ``*``)."""
    w = {**TEMPLATE_VARS, **where}
    a = {k: w[k] for k in ("partition", "region", "account")}
    tagged = {"StringLike": {f"aws:ResourceTag/{LAB_TAG}": "?*"}}
    sweep_lab = [g for g in _by_scope(LAB) if g.sweeps]
    sweep_named = [g for g in _by_scope(NAMED) if g.sweeps]
    return {"Version": "2012-10-17", "Statement": [
        _stmt("ReadWhatCannotBeScoped", [g.action for g in _by_scope(READ) if g.resource == "*"], ["*"]),
        _stmt("SweepAnythingTaggedByRaylab", [g.action for g in sweep_lab],
              [f"arn:{a['partition']}:ec2:{a['region']}:{a['account']}:*",
               f"arn:{a['partition']}:fis:{a['region']}:{a['account']}:*"], tagged),
        _stmt("SweepRaylabNamedAndTagged", [g.action for g in sweep_named],
              [arn(g.resource, lab="*", **a) for g in sweep_named], tagged),
    ]}


def sweep_actions() -> set[str]:
    return {g.action for g in GRANTS if g.sweeps and g.scope in (LAB, NAMED)}


def instructor_actions() -> set[str]:
    from raylab.aws.iam import policy_actions

    return policy_actions(instructor_policy())


# --- what raylab calls ------------------------------------------------------------------------------
def scan_calls(sources: Mapping[str, str], operations: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """IAM actions raylab's code calls: ``{action: {file, ...}}``.

    ``sources`` maps a file name to its Python text; ``operations`` maps a boto3 method name
    (``describe_instances``) to the IAM actions it may be (``ec2:DescribeInstances``). Every attribute
    named like an operation counts (``ec2.describe_vpcs(...)``, ``_pages(fis.list_experiment_templates)``),
    and so does the operation named in ``get_paginator("...")``/``get_waiter("...")``.
    """
    found: dict[str, set[str]] = {}
    for fname, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            hits: list[str] = []
            if isinstance(node, ast.Attribute) and node.attr in operations:
                hits.append(node.attr)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("get_paginator", "get_waiter") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                hits.append(node.args[0].value)
            for h in hits:
                for action in operations.get(h, ()):
                    found.setdefault(action, set()).add(fname)
    return found


def services_called(sources: Mapping[str, str]) -> set[str]:
    """boto3 service names raylab makes clients for: ``client(ctx, "ec2")``, ``boto3.client("fis")``."""
    out: set[str] = set()
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if name in ("client", "_client"):
                    out |= {a.value for a in node.args
                            if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return out


# --- what Terraform ships ---------------------------------------------------------------------------
# A managed policy holds at most 6,144 characters (whitespace excluded), so the trainee's is two.
TRAINEE_PARTS = {
    "trainee-lab-resources": ("CreateOnlyTaggedWithOwnLab", "TagOnlyAtCreateWithOwnLab",
                              "ChangeOnlyWhatCarriesOwnLab", "LaunchSupportingResources"),
    "trainee-reads-and-names": ("ReadWhatCannotBeScoped", "ReadTheAmiAwsPublishes", "OwnLabByName",
                                "PassOwnLabRolesOnlyToEc2", "PassOwnLabRolesOnlyToFis"),
}
MANAGED_POLICY_MAX_CHARS = 6144


def split(doc: Mapping[str, Any], sids: Iterable[str]) -> dict[str, Any]:
    want = set(sids)
    return {"Version": doc["Version"], "Statement": [s for s in doc["Statement"] if s["Sid"] in want]}


def templates() -> dict[str, str]:
    """``infra/terraform/operators/policies/``: file name -> text (Terraform ``templatefile`` JSON)."""
    import json

    doc = trainee_policy()
    out = {f"{name}.json.tftpl": json.dumps(split(doc, sids), indent=2) + "\n"
           for name, sids in TRAINEE_PARTS.items()}
    out["instructor.json.tftpl"] = json.dumps(instructor_policy(), indent=2) + "\n"
    return out
