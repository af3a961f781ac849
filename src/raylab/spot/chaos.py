"""Chaos drills for spot: a capacity window (InsufficientInstanceCapacity) and reclaims.

Local target: the twin's control API (``/raylab/faults/capacity``, ``/raylab/spot/reclaim``): EC2's
answers and the reclaim (notice through the per-instance IMDS, termination at the deadline) happen
in the twin exactly where AWS would do them. AWS target: a capacity window cannot be injected into
a real account (say so); a reclaim with a notice is an AWS FIS experiment
(``aws:ec2:send-spot-instance-interruptions``, at least PT2M), from a template and role raylab
creates (tagged ``raylab-lab``) and removes at teardown; ``--no-notice`` is a plain TerminateInstances.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from raylab.cluster.vocab import Market
from raylab.errors import RaylabError

if TYPE_CHECKING:
    from raylab.context import Context

FIS_ACTION = "aws:ec2:send-spot-instance-interruptions"
FIS_MIN_NOTICE_S = 120  # FIS: durationBeforeInterruption is PT2M..PT15M
FIS_MAX_NOTICE_S = 900


# --- pure pieces ---------------------------------------------------------------------------------

# Ray's node-kind tag (ray.autoscaler.tags.TAG_RAY_NODE_KIND) is spelled "ray-node-type": head | worker.
RAY_NODE_KIND_TAG = "ray-node-type"


def reclaimable(instances: list[dict[str, Any]], cluster: str,
                node_type: str | None = None) -> list[dict[str, Any]]:
    """Running spot workers of ``cluster`` (twin/plain dicts: id, state, market, tags), oldest id first."""
    out = [i for i in instances
           if i.get("state") == "running" and i.get("market") == "spot"
           and i.get("tags", {}).get("ray-cluster-name") == cluster
           and i.get("tags", {}).get(RAY_NODE_KIND_TAG) != "head"
           and (node_type is None or i.get("tags", {}).get("ray-user-node-type") == node_type)]
    return sorted(out, key=lambda i: i["id"])


def pick(instances: list[dict[str, Any]], count: int) -> list[str]:
    if count < 1:
        raise RaylabError(f"--count must be at least 1, got {count}", "e.g. --count 2")
    if len(instances) < count:
        raise RaylabError(f"asked to reclaim {count} spot instance(s) but {len(instances)} are running",
                          "run `raylab stress` in another terminal on a spot or mixed cluster "
                          "(`raylab up --scenario mixed`); reclaim once `raylab status` lists spot instances")
    return [i["id"] for i in instances[:count]]


def prefer_first(instances: list[dict[str, Any]], prefer: list[str]) -> list[dict[str, Any]]:
    rank = {iid: n for n, iid in enumerate(prefer)}
    return sorted(instances, key=lambda i: (rank.get(i["id"], len(rank)), i["id"]))


def iso_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"PT{s // 60}M{s % 60}S" if s % 60 else f"PT{s // 60}M"


def fis_notice_seconds(requested: float) -> int:
    return int(min(FIS_MAX_NOTICE_S, max(FIS_MIN_NOTICE_S, requested)))


def fis_trust_policy() -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "fis.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def fis_role_policy(cluster: str) -> dict[str, Any]:
    """FIS may interrupt only this cluster's instances (by Ray's own cluster tag)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:SendSpotInstanceInterruptions",
         "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"aws:ResourceTag/ray-cluster-name": cluster}}},
        {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
    ]}


def fis_template_request(*, lab: str, role_arn: str, instance_arns: list[str],
                         notice_s: float) -> dict[str, Any]:
    return {
        "clientToken": str(uuid.uuid4()),
        "description": f"raylab {lab}: spot interruption drill ({len(instance_arns)} instance(s))",
        "roleArn": role_arn,
        "stopConditions": [{"source": "none"}],
        "targets": {"SpotWorkers": {"resourceType": "aws:ec2:spot-instance", "resourceArns": instance_arns,
                                    "selectionMode": "ALL"}},
        "actions": {"interrupt": {"actionId": FIS_ACTION,
                                  "parameters": {"durationBeforeInterruption": iso_duration(
                                      fis_notice_seconds(notice_s))},
                                  "targets": {"SpotInstances": "SpotWorkers"}}},
        "tags": {"raylab-lab": lab, "Name": f"raylab-{lab}-spot-drill"},
    }


# --- local target ----------------------------------------------------------------------------------

def _twin(ctx: Context) -> Any:
    """The local target's twin control client (RaylabError when the twin is not running)."""
    return ctx.target.twin(ctx)  # type: ignore[attr-defined]  # only LocalTarget has one; callers ask faults == "twin"


def capacity(ctx: Context, *, market: str, instance_type: str = "*", az: str = "*",
             seconds: float | None = None, clear: bool = False) -> dict[str, Any]:
    if market != "*":
        try:
            market = Market.parse(market).value
        except ValueError:
            raise RaylabError(f"unknown market {market!r}",
                              "use --market spot or --market on-demand") from None
    if ctx.target.faults != "twin":  # only the twin opens capacity windows on demand
        raise RaylabError("a capacity window cannot be injected into a real AWS account",
                          "run this drill on --target local; on AWS, capacity errors come when they come "
                          "and the guard reacts to them (raylab status shows its decisions)")
    tw = _twin(ctx)
    if clear:
        tw.clear_capacity_faults()
        return {"cleared": True, "faults": tw.capacity_faults()}
    f = tw.add_capacity_fault(market=market, instance_type=instance_type, az=az, seconds=seconds)
    return {"fault": f, "until": f.get("until"), "faults": tw.capacity_faults()}


def reclaim(ctx: Context, *, count: int, notice_s: float, no_notice: bool = False,
            node_type: str | None = None, wait: bool = True, timeout: float = 60.0,
            prefer: list[str] | None = None) -> dict[str, Any]:
    """``prefer``: instance ids to take first (e.g. the ones running tasks now)."""
    if ctx.target.faults == "fis":
        return aws_reclaim(ctx, count=count, notice_s=notice_s, no_notice=no_notice, node_type=node_type)
    tw = _twin(ctx)
    cluster = ctx.names["cluster"]
    ids = pick(prefer_first(reclaimable(tw.instances(), cluster, node_type), prefer or []), count)
    notice = 0.0 if no_notice else max(1.0, float(notice_s))
    started = time.time()
    answer = tw._call("POST", "spot/reclaim", {"instance_ids": ids, "notice_s": notice})
    result: dict[str, Any] = {"instance_ids": ids, "notice_s": notice, "notices": answer.get("notices", {}),
                              "terminate_at": answer.get("terminate_at")}
    if wait:
        deadline = started + notice + timeout
        left = set(ids)
        while left and time.time() < deadline:
            states = {i["id"]: i["state"] for i in tw.instances()}
            left = {i for i in left if states.get(i) not in ("terminated", "shutting-down", None)}
            if left:
                time.sleep(0.5)
        result["terminated"] = sorted(set(ids) - left)
        result["seconds"] = round(time.time() - started, 1)
        if left:
            raise RaylabError(f"instances not terminated after the notice: {', '.join(sorted(left))}",
                              "see .raylab/logs/twin.log")
    return result


# --- AWS target ------------------------------------------------------------------------------------

def fis_role_name(lab: str) -> str:
    return f"raylab-{lab}-fis-spot"


def ensure_fis_role(iam: Any, lab: str, cluster: str) -> str:
    import json

    name = fis_role_name(lab)
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(fis_trust_policy()),
                              Description=f"raylab {lab}: lets AWS FIS send spot interruptions to {cluster}",
                              Tags=[{"Key": "raylab-lab", "Value": lab}])["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="spot-interruptions",
                        PolicyDocument=json.dumps(fis_role_policy(cluster)))
    return str(arn)


def aws_reclaim(ctx: Context, *, count: int, notice_s: float, no_notice: bool,
                node_type: str | None = None) -> dict[str, Any]:
    from raylab.aws.session import client

    ec2 = client(ctx, "ec2")
    cluster = ctx.names["cluster"]
    insts = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:ray-cluster-name", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["running"]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                insts.append({"id": i["InstanceId"], "state": "running",
                              "market": "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
                              "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])}})
    ids = pick(reclaimable(insts, cluster, node_type), count)
    if no_notice:
        ec2.terminate_instances(InstanceIds=ids)
        return {"instance_ids": ids, "notice_s": 0, "method": "TerminateInstances"}
    region = ec2.meta.region_name
    account = client(ctx, "sts").get_caller_identity()["Account"]
    role_arn = ensure_fis_role(client(ctx, "iam"), ctx.lab, cluster)
    req = fis_template_request(lab=ctx.lab, role_arn=role_arn,
                               instance_arns=[f"arn:aws:ec2:{region}:{account}:instance/{i}" for i in ids],
                               notice_s=notice_s)
    fis = client(ctx, "fis")
    tpl = fis.create_experiment_template(**req)["experimentTemplate"]
    exp = fis.start_experiment(clientToken=str(uuid.uuid4()), experimentTemplateId=tpl["id"],
                               tags={"raylab-lab": ctx.lab})["experiment"]
    return {"instance_ids": ids, "notice_s": fis_notice_seconds(notice_s), "method": "FIS",
            "experiment_template_id": tpl["id"], "experiment_id": exp["id"],
            "experiment_state": exp.get("state", {}).get("status")}


def aws_cleanup(ctx: Context) -> list[str]:
    """Remove raylab's FIS templates (tagged with the lab) and the FIS role. Idempotent."""
    from raylab.aws.session import client

    removed = []
    fis = client(ctx, "fis")
    for x in _running_experiments(fis, ctx.lab):  # FIS keeps finished experiments; stop what still runs
        if x["state"]["status"] == "stopping":
            continue
        fis.stop_experiment(id=x["id"])
        removed.append(f"fis experiment {x['id']} (stop requested)")
    for page in _pages(fis.list_experiment_templates):
        for t in page.get("experimentTemplates", []):
            if t.get("tags", {}).get("raylab-lab") == ctx.lab:
                fis.delete_experiment_template(id=t["id"])
                removed.append(f"fis template {t['id']}")
    iam = client(ctx, "iam")
    name = fis_role_name(ctx.lab)
    try:
        for p in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=p)
        iam.delete_role(RoleName=name)
        removed.append(f"iam role {name}")
    except iam.exceptions.NoSuchEntityException:
        pass
    return removed


def aws_leftovers(ctx: Context) -> list[str]:
    from raylab.aws.session import client

    fis = client(ctx, "fis")
    left = [f"fis experiment {x['id']} ({x['state']['status']})" for x in _running_experiments(fis, ctx.lab)]
    for page in _pages(fis.list_experiment_templates):
        left += [f"fis template {t['id']}" for t in page.get("experimentTemplates", [])
                 if t.get("tags", {}).get("raylab-lab") == ctx.lab]
    iam = client(ctx, "iam")
    try:
        iam.get_role(RoleName=fis_role_name(ctx.lab))
        left.append(f"iam role {fis_role_name(ctx.lab)}")
    except iam.exceptions.NoSuchEntityException:
        pass
    return left


def _running_experiments(fis: Any, lab: str) -> list[dict[str, Any]]:
    """The lab's experiments (tagged ``raylab-lab``) that have not ended."""
    return [x for page in _pages(fis.list_experiments) for x in page.get("experiments", [])
            if x.get("tags", {}).get("raylab-lab") == lab
            and x.get("state", {}).get("status") not in ("completed", "stopped", "failed", "cancelled")]


def _pages(call: Any) -> list[dict[str, Any]]:
    out, token = [], None
    while True:
        page = call(**({"nextToken": token} if token else {}))
        out.append(page)
        token = page.get("nextToken")
        if not token:
            return out
