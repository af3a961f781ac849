"""Stage 2 identity: Terraform IAM (head role + ray-instance-profile-<lab>, worker role + profile).

apply: ``terraform init`` + ``apply`` of ``infra/terraform/`` with the target's environment
(credentials only through env), outputs into state section ``identity``.
verify: the head profile carries the head role, the head policy's actions are exactly the
least-privilege set and break no rule, the worker role and profile exist.
destroy: ``terraform destroy`` (no state: noop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.stages import BY_NAME
from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.iac.terraform import Terraform

OUTPUT_KEYS = (
    "head_instance_profile_name",
    "head_instance_profile_arn",
    "head_role_arn",
    "worker_instance_profile_name",
    "worker_instance_profile_arn",
    "worker_role_arn",
)


def tf_variables(*, lab: str, cluster_name: str, env: Mapping[str, str]) -> dict[str, str]:
    """Terraform variables; ``endpoint_url`` is the twin's URL on the local target, empty on AWS."""
    return {
        "lab_id": lab,
        "cluster_name": cluster_name,
        "region": env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-west-2",
        "endpoint_url": env.get("AWS_ENDPOINT_URL", ""),
    }


def terraform_for(ctx: Context) -> tuple[Terraform, dict[str, str]]:
    from raylab.iac.terraform import for_lab

    env = ctx.target.aws_env(ctx)
    tf = for_lab(
        source=ctx.root / "infra" / "terraform",
        raylab_dir=ctx.workdir,
        lab=ctx.lab,
        env=env,
        require_mirror=ctx.target.terraform_mirror_required,
        ui=ctx.ui,
    )
    return tf, tf_variables(lab=ctx.lab, cluster_name=ctx.names["cluster"], env=env)


def adoptable(names: Mapping[str, str]) -> dict[str, str]:
    """Terraform address -> import id of everything infra/terraform creates (names as in main.tf)."""
    head, worker = names["head_role"], names["worker_role"]
    return {
        "aws_iam_role.worker": worker,
        "aws_iam_role.head": head,
        "aws_iam_role_policy.worker": f"{worker}:{worker}-s3-read",
        "aws_iam_role_policy.head": f"{head}:{head}-autoscaler",
        "aws_iam_instance_profile.worker": names["worker_profile"],
        "aws_iam_instance_profile.head": names["head_profile"],
    }


def cloud_has(iam: Any, address: str, resource_id: str) -> bool:
    """Does the IAM object behind a Terraform address exist?"""
    kind = address.split(".", 1)[0]
    try:
        if kind == "aws_iam_role":
            iam.get_role(RoleName=resource_id)
        elif kind == "aws_iam_instance_profile":
            iam.get_instance_profile(InstanceProfileName=resource_id)
        elif kind == "aws_iam_role_policy":
            role, name = resource_id.split(":", 1)
            iam.get_role_policy(RoleName=role, PolicyName=name)
        else:
            return False
    except Exception as e:  # noqa: BLE001 - NoSuchEntity: not there
        if "NoSuchEntity" in str(e) or "not found" in str(e).lower():
            return False
        raise
    return True


def orphans(known: set[str], names: Mapping[str, str], exists: Any) -> dict[str, str]:
    """What the cloud has and Terraform's state lacks (a run killed before it saved its state)."""
    return {a: rid for a, rid in adoptable(names).items() if a not in known and exists(a, rid)}


def applied_json(changed: bool, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Stage 2's result as `raylab stage 2 --json` reports it (its keys are pinned by a test; pure)."""
    return {
        "action": "applied" if changed else "noop",
        "head_instance_profile": outputs.get("head_instance_profile_name"),
        "worker_instance_profile": outputs.get("worker_instance_profile_name"),
    }


def _profile_check(iam: Any, label: str, profile: str, role: str,
                   hint: str | None = None) -> tuple[Check, bool]:
    """Does the instance profile carry exactly ``role``? The check, and whether IAM knew the profile."""
    from raylab.aws.iam import profile_roles

    try:
        roles = profile_roles(iam, profile)
    except Exception as e:  # noqa: BLE001 - NoSuchEntity
        return Check(label, False, f"{profile}: {e}", "run `raylab stage 2`"), False
    return Check(label, roles == [role], f"{profile} carries {roles}", hint), True


def is_already_exists(error: str) -> bool:
    """A Terraform apply that failed because an IAM object of that name exists (pure)."""
    return "EntityAlreadyExists" in error


class IdentityStage:
    number, name, summary, verified_by = BY_NAME["identity"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.aws.session import client
        from raylab.iac.terraform import state_addresses

        tf, variables = terraform_for(ctx)
        with ctx.ui.waiting("terraform init (providers from the local mirror when present)"), \
                ctx.clock.phase("terraform init"):
            tf.init()
        iam = client(ctx, "iam")

        def adopt(why: str) -> bool:
            lost = orphans(state_addresses(tf.state_file), ctx.names, lambda a, rid: cloud_has(iam, a, rid))
            if lost:
                ctx.ui.warning(f"{len(lost)} IAM object(s) exist that Terraform's state lacks ({why}): "
                               "adopting them")
                for address, rid in lost.items():
                    tf.import_resource(address, rid, variables)
            return bool(lost)

        adopted = adopt("an interrupted run?")
        try:
            with ctx.clock.phase("terraform apply"):
                changed = tf.apply(variables) or adopted
        except RaylabError as e:
            # a create that reached IAM but whose answer did not reach Terraform (its SDK retried the
            # call and got 409): the object is ours and real; adopt it and apply once more
            if not is_already_exists(str(e)) or not adopt("IAM answered EntityAlreadyExists to a retry"):
                raise
            changed = tf.apply(variables) or True
        outputs = tf.output()
        ctx.state.put("identity", {k: outputs.get(k, "") for k in OUTPUT_KEYS})
        if changed:
            ctx.ui.success(
                f"IAM applied: {outputs.get('head_instance_profile_name')}, "
                f"{outputs.get('worker_instance_profile_name')}"
            )
        else:
            ctx.ui.noop("noop: Terraform reports no changes")
        return applied_json(bool(changed), outputs)

    def verify(self, ctx: Context) -> list[Check]:
        return [c if not c.ok else replace(c, hint=None) for c in self._verify(ctx)]

    def _verify(self, ctx: Context) -> list[Check]:
        from raylab.aws.iam import (
            HEAD_POLICY_ACTIONS,
            head_policy_findings,
            merged,
            policy_actions,
            role_inline_policies,
        )
        from raylab.aws.session import client

        n = ctx.names
        ident = ctx.state.get("identity")
        missing = [k for k in OUTPUT_KEYS if not ident.get(k)]
        checks = [
            Check(
                "terraform outputs",
                not missing,
                f"missing: {', '.join(missing)}" if missing else f"all {len(OUTPUT_KEYS)} outputs recorded",
                "run `raylab stage 2`",
            )
        ]
        iam = client(ctx, "iam")
        head, answered = _profile_check(iam, "head instance profile", n["head_profile"], n["head_role"],
                                        "run `raylab stage 2`")
        checks.append(head)
        if not answered:
            return checks
        doc = merged(role_inline_policies(iam, n["head_role"]).values())
        actions = policy_actions(doc)
        exact = actions == set(HEAD_POLICY_ACTIONS)
        diff = (
            f"missing {sorted(HEAD_POLICY_ACTIONS - actions)}, extra {sorted(actions - HEAD_POLICY_ACTIONS)}"
        )
        checks.append(
            Check(
                "head policy actions",
                exact,
                f"exactly the {len(HEAD_POLICY_ACTIONS)} least-privilege actions" if exact else diff,
                "infra/terraform/policies/head-policy.json.tftpl drifted from raylab.aws.iam",
            )
        )
        worker_arn = ident.get("worker_role_arn") or iam.get_role(RoleName=n["worker_role"])["Role"]["Arn"]
        findings = head_policy_findings(doc, cluster_name=n["cluster"], worker_role_arn=worker_arn)
        checks.append(
            Check(
                "head policy rules",
                not findings,
                "; ".join(findings)
                if findings
                else "no '*' action; stop/start/terminate by cluster tag; PassRole: worker role to EC2 only",
            )
        )
        worker, _ = _profile_check(iam, "worker role and profile", n["worker_profile"], n["worker_role"])
        checks.append(worker)
        return checks

    def destroy(self, ctx: Context) -> None:
        from raylab.aws.session import client
        from raylab.iac.terraform import state_addresses

        known = state_addresses(ctx.workdir / "terraform" / ctx.lab / "module" / "terraform.tfstate")
        iam = client(ctx, "iam")
        lost = orphans(known, ctx.names, lambda a, rid: cloud_has(iam, a, rid))
        # Checked before looking for terraform: nothing to destroy needs no binary.
        if not known and not lost:
            ctx.ui.noop("noop: no Terraform state for this lab and none of its IAM objects exist")
            ctx.state.drop("identity")
            return
        tf, variables = terraform_for(ctx)
        tf.init()
        for address, rid in lost.items():
            tf.import_resource(address, rid, variables)
        tf.destroy(variables)
        ctx.state.drop("identity")
        ctx.ui.success("IAM roles and instance profiles destroyed")


STAGE = IdentityStage()
