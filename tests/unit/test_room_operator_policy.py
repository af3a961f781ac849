"""The operator policies (infra/terraform/operators): generated from what raylab calls, judged by the
same small IAM evaluator as the head's policy (tests/unit/test_iam_head_policy_lifecycle.py).

That evaluator knows StringEquals only and fails closed on any other operator; the instructor's sweep
needs StringLike ("any raylab-lab value"), so these tests add that one operator around it. IAM's policy
variable ${aws:PrincipalTag/raylab-lab} is replaced by the trainee's lab before evaluation, as IAM does.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import tests.unit.test_iam_head_policy_lifecycle as head_eval
from raylab.aws.ec2 import LAB_TAG
from raylab.aws.iam import is_mutating, statements
from raylab.room import operators as ops
from tests.unit.test_iam_head_policy_lifecycle import Request, allowed

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform" / "operators"
WHERE = {"partition": "aws", "region": "us-west-2", "account": "123456789012"}
ME, OTHER = "kim", "kim-2"  # a prefix of another lab's id must not match it
REGEN = ("regenerate: PYTHONPATH=src python -c 'from raylab.room.operators import templates; "
         "import pathlib; [pathlib.Path(\"infra/terraform/operators/policies\", n).write_text(t) "
         "for n, t in templates().items()]'")


@pytest.fixture(autouse=True)
def string_like(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head evaluator, plus StringLike (fnmatch, as IAM's * and ?)."""
    original = head_eval._conditions_hold

    def conditions_hold(stmt: dict[str, Any], ctx: dict[str, str]) -> bool:
        cond = stmt.get("Condition") or {}
        for op, kv in cond.items():
            if op == "StringLike":
                for key, pats in kv.items():
                    v = ctx.get(key)
                    if v is None or not any(fnmatch.fnmatchcase(v, str(p)) for p in head_eval._list(pats)):
                        return False
        rest = {op: kv for op, kv in cond.items() if op != "StringLike"}
        return original({**stmt, "Condition": rest}, ctx)

    monkeypatch.setattr(head_eval, "_conditions_hold", conditions_hold)


def _render(text: str, lab: str | None) -> dict[str, Any]:
    """What IAM evaluates: Terraform's templatefile() output, with the principal's tag substituted."""
    values = {"partition": WHERE["partition"], "region": WHERE["region"], "account_id": WHERE["account"]}
    text = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: values[m.group(1)], text).replace("$${", "${")
    if lab is not None:
        text = text.replace(ops.PRINCIPAL_LAB, lab)
    return json.loads(text)


def _shipped(name: str) -> str:
    return (TF / "policies" / name).read_text()


def trainee_doc(lab: str = ME) -> dict[str, Any]:
    """The trainee's two shipped managed policies, as one document."""
    parts = [_render(_shipped(f"{p}.json.tftpl"), lab) for p in ops.TRAINEE_PARTS]
    return {"Version": "2012-10-17", "Statement": [s for d in parts for s in statements(d)]}


def instructor_doc() -> dict[str, Any]:
    return _render(_shipped("instructor.json.tftpl"), None)


# --- generated, and shippable -------------------------------------------------------------------------
def test_shipped_templates_are_the_generated_ones() -> None:
    shipped = {p.name: p.read_text() for p in (TF / "policies").glob("*.json.tftpl")}
    assert shipped == ops.templates(), REGEN


def test_the_split_trainee_policy_is_the_whole_policy() -> None:
    whole = ops.trainee_policy(ME, **WHERE)
    assert trainee_doc() == {**whole, "Statement": sorted(whole["Statement"], key=lambda s: [
        n for p in ops.TRAINEE_PARTS.values() for n in p].index(s["Sid"]))}


@pytest.mark.parametrize("name", sorted(ops.templates()))
def test_each_managed_policy_fits_iams_size_limit(name: str) -> None:
    doc = _render(_shipped(name), None)  # IAM stores the policy variable as written
    size = len(re.sub(r"\s", "", json.dumps(doc)))
    assert size <= ops.MANAGED_POLICY_MAX_CHARS - 200, f"{name}: {size} characters, keep a margin"


def test_every_template_variable_is_passed_by_terraform() -> None:
    main = (TF / "main.tf").read_text()
    for text in ops.templates().values():
        for var in set(re.findall(r"(?<!\$)\$\{(\w+)\}", text)):
            assert re.search(rf"\b{var}\s*=", main), f"${{{var}}} not passed in operators/main.tf"


def test_the_tag_is_the_one_raylab_puts_on_its_resources() -> None:
    assert ops.LAB_TAG == LAB_TAG
    # each trainee role carries its lab: a role session's principal tags are its role's tags
    assert re.search(rf'tags\s*=\s*{{\s*"{LAB_TAG}"\s*=\s*each\.key\s*}}', (TF / "main.tf").read_text())


# --- generated from what raylab calls -----------------------------------------------------------------
# The AWS twins' server side: they patch or call moto's backends in their own process (stop_instances,
# STS's assume_role for an instance's role...), they call no AWS API.
NOT_CALLERS = {"targets/local/twin.py", "targets/local/moto_patches.py", "rehearsal/metadata.py",
               "rehearsal/fis.py", "rehearsal/seed.py"}  # the twins' own calls, not the operator's


def _sources() -> dict[str, str]:
    src = ROOT / "src" / "raylab"
    files = {str(p.relative_to(src)): p for p in sorted(src.rglob("*.py"))}
    return {name: p.read_text() for name, p in files.items() if name not in NOT_CALLERS}


@pytest.fixture(scope="module")
def called() -> dict[str, set[str]]:
    import botocore.session
    from botocore import xform_name

    sources = _sources()
    services = ops.services_called(sources)
    unknown = services - set(ops.ACTION_PREFIX)
    assert not unknown, f"raylab now calls {sorted(unknown)}: add its IAM prefix and actions to operators.py"
    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}
    for svc in services:
        for op in session.get_service_model(svc).operation_names:
            operations.setdefault(xform_name(op), set()).add(f"{ops.ACTION_PREFIX[svc]}:{op}")
    return ops.scan_calls(sources, operations)


def test_the_scan_sees_raylabs_calls(called: dict[str, set[str]]) -> None:
    assert len(called) >= 50
    assert called["ec2:DeleteVpc"] == {"aws/ec2.py"}
    assert "spot/chaos.py" in called["fis:ListExperimentTemplates"]  # passed as a method, not called
    assert "observe/run.py" in called["ec2:DescribeInstances"]  # via get_paginator("describe_instances")


def test_every_action_raylab_calls_is_granted(called: dict[str, set[str]]) -> None:
    granted = {g.action for g in ops.GRANTS}
    missing = {a: sorted(f) for a, f in called.items() if a not in granted}
    assert missing == {}, "src/raylab calls actions the operator policy lacks: add them to operators.GRANTS"


def test_every_grant_said_to_be_raylabs_is_called_by_raylab(called: dict[str, set[str]]) -> None:
    stale = sorted({g.action for g in ops.GRANTS if g.by == "raylab" and g.scope != ops.PASS} - set(called))
    assert stale == [], "granted for raylab but src/raylab no longer calls them: remove or re-attribute"


# --- what a trainee may do ----------------------------------------------------------------------------
def _arn(g: ops.Grant, lab: str = ME, rid: str = "x-1") -> str:
    return ops.arn(g.resource, lab=lab, rid=rid, **WHERE)


def _req(action: str, resource: str, **ctx: str) -> Request:
    return Request(action, resource, tuple(sorted(ctx.items())))


RT, QT = f"aws:RequestTag/{LAB_TAG}", f"aws:ResourceTag/{LAB_TAG}"


def _ids(g: ops.Grant) -> str:
    return f"{g.scope}-{g.action}-{g.resource}"


@pytest.mark.parametrize("g", ops.GRANTS, ids=_ids)
def test_trainee_may_do_what_raylab_does_in_their_own_lab(g: ops.Grant) -> None:
    doc = trainee_doc()
    if g.scope == ops.READ:
        req = _req(g.action, _arn(g))
    elif g.scope == ops.CREATE:
        req = _req(g.action, _arn(g), **{RT: ME})
    elif g.scope == ops.LAB:
        req = _req(g.action, _arn(g), **{QT: ME})
    elif g.scope == ops.PASS:
        req = _req(g.action, _arn(g), **{"iam:PassedToService": ops.PASSED_TO[g.resource]})
    else:  # SUPPORT, NAMED
        req = _req(g.action, _arn(g))
    assert allowed(doc, req), req


SCOPED = [g for g in ops.GRANTS if g.scope in (ops.CREATE, ops.LAB, ops.NAMED, ops.PASS)]


@pytest.mark.parametrize("g", SCOPED, ids=_ids)
def test_trainee_cannot_touch_another_lab_or_what_raylab_did_not_create(g: ops.Grant) -> None:
    doc = trainee_doc()
    if g.scope == ops.CREATE:
        refused = [_req(g.action, _arn(g), **{RT: OTHER}), _req(g.action, _arn(g))]
    elif g.scope == ops.LAB:
        refused = [_req(g.action, _arn(g), **{QT: OTHER}), _req(g.action, _arn(g)),
                   _req(g.action, _arn(g), **{"aws:ResourceTag/Name": ME})]
    elif g.scope == ops.NAMED:
        refused = [_req(g.action, _arn(g, lab=OTHER)), _req(g.action, _arn(g, lab="*"))]
    else:
        refused = [_req(g.action, _arn(g, lab=OTHER), **{"iam:PassedToService": ops.PASSED_TO[g.resource]}),
                   _req(g.action, _arn(g), **{"iam:PassedToService": "lambda.amazonaws.com"})]
    assert [r for r in refused if allowed(doc, r)] == []


def test_tags_only_at_launch_with_own_lab_never_to_take_another_labs_instance() -> None:
    doc = trainee_doc()
    inst = ops.arn("instance", lab=ME, rid="i-0abc", **WHERE)
    assert allowed(doc, _req("ec2:CreateTags", inst, **{"ec2:CreateAction": "RunInstances", RT: ME}))
    assert allowed(doc, _req("ec2:CreateTags", inst, **{QT: ME, RT: ME}))  # re-tag its own
    # retagging another lab's (or an untagged) instance with one's own lab, to terminate it next: refused
    assert not allowed(doc, _req("ec2:CreateTags", inst, **{QT: OTHER, RT: ME}))
    assert not allowed(doc, _req("ec2:CreateTags", inst, **{RT: ME}))
    assert not allowed(doc, _req("ec2:CreateTags", inst, **{"ec2:CreateAction": "RunInstances", RT: OTHER}))
    assert not allowed(doc, _req("ec2:TerminateInstances", inst, **{QT: OTHER}))
    assert not allowed(doc, _req("ec2:DeleteVpc", ops.arn("vpc", lab=ME, **WHERE), **{QT: OTHER}))


def test_trainee_policy_is_least_privilege_in_shape() -> None:
    for s in statements(trainee_doc()):
        acts = head_eval._list(s["Action"])
        assert not any(a == "*" or a.endswith(":*") for a in acts), s["Sid"]
        mut = [a for a in acts if is_mutating(a)]
        res = head_eval._list(s["Resource"])
        if mut:
            assert "*" not in res, f"{s['Sid']}: mutating {mut} on '*'"
            by_name = all(ME in r for r in res)
            assert s.get("Condition") or by_name or s["Sid"] == "LaunchSupportingResources", (
                f"{s['Sid']}: mutating {mut} with neither a tag condition nor the lab's names")


# --- what an instructor may do ------------------------------------------------------------------------
@pytest.mark.parametrize("g", [g for g in ops.GRANTS if g.scope in (ops.LAB, ops.NAMED)], ids=_ids)
def test_instructor_sweeps_any_raylab_lab_and_nothing_else(g: ops.Grant) -> None:
    doc = instructor_doc()
    tagged = _req(g.action, _arn(g, lab=OTHER), **{QT: OTHER})
    assert allowed(doc, tagged) is g.sweeps, tagged  # teardown verbs only: no create, change or launch
    assert not allowed(doc, _req(g.action, _arn(g, lab=OTHER)))  # untagged: not raylab's, never touched
    if g.scope == ops.NAMED:  # a role or stack named otherwise is not raylab's, even when tagged
        assert not allowed(doc, _req(g.action, _arn(g, lab=OTHER).replace("raylab-", "other-")
                                     .replace("ray-", "other-"), **{QT: OTHER}))


def test_instructor_reads_everything_a_trainee_reads_and_creates_nothing() -> None:
    doc = instructor_doc()
    for g in ops.GRANTS:
        if g.scope == ops.READ and g.resource == "*":
            assert allowed(doc, _req(g.action, "*")), g.action
    assert ops.sweep_actions() <= ops.instructor_actions()
    assert not {a for a in ops.instructor_actions() if a.split(":")[1].startswith(("Create", "Run", "Put"))}


# --- terraform ----------------------------------------------------------------------------------------
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


@needs_terraform
def test_terraform_fmt_and_validate(tmp_path: Path) -> None:
    import subprocess

    from raylab.iac.terraform import find_mirror, for_lab

    fmt = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-no-color", str(TF)],
                         capture_output=True, text=True, timeout=60)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    if find_mirror({}) is None:
        pytest.skip("no local Terraform provider mirror: validate needs the aws provider offline")
    tf = for_lab(source=TF, raylab_dir=tmp_path, lab="operators", env={}, require_mirror=True)
    tf.init()
    assert "Success! The configuration is valid." in tf.validate()
