"""Stage 6 on the AWS target: the reclaim and capacity drills as AWS FIS experiments.

- reclaim: ``aws:ec2:send-spot-instance-interruptions`` on a third of the running spot workers (at
  least one, by instance ARN), notice PT2M (FIS's minimum), while the stress job runs;
- capacity: ``aws:ec2:api-insufficient-instance-capacity-error`` on the head's IAM role (the role the
  autoscaler launches with) in the AZ(s) of the spot workers' subnet(s), percentage 100, for a window.
  It fails every RunInstances of that role in those AZs, on-demand and spot alike: it shows spot alone
  failing only where on-demand workers launch in another AZ (``capacity_azs`` says which case it is).

raylab creates the FIS role (``chaos.ensure_fis_role``, plus the capacity action scoped to the head's
role), the templates (tagged ``raylab-lab``), starts the experiments, waits on them (bounded, with
progress), deletes the templates and records experiment ids and states. ``down`` stops experiments
still running and removes templates and role (``chaos.aws_cleanup``); FIS keeps no deletable record
of a finished experiment. The checks say what they cannot judge (an endpoint that is not AWS records
experiments but acts on nothing).

A piece: imports the base and other pieces (aws, spot, observe), never targets, stages or the CLI.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.checks import Check
from raylab.errors import RaylabError
from raylab.spot.chaos import FIS_ACTION, fis_role_name, iso_duration, reclaimable
from raylab.spot.drained import drained_check, private_ips, ray_nodes, wait_dead
from raylab.spot.fis_record import CLAIMS, new_record

if TYPE_CHECKING:
    from raylab.context import Context

LAB_TAG = "raylab-lab"  # raylab.aws.ec2.LAB_TAG (the tag of everything raylab creates)
CAPACITY_ACTION = "aws:ec2:api-insufficient-instance-capacity-error"
RECLAIM_NOTICE_S = 120  # PT2M, the shortest notice FIS sends
SPOT_TYPE, ONDEMAND_TYPE = "ray.worker.spot", "ray.worker.ondemand"
TERMINAL = ("completed", "stopped", "failed", "cancelled")


# --- pure ------------------------------------------------------------------------------------------

def reclaim_share(n_spot: int) -> int:
    """A third of the running spot workers, at least one."""
    if n_spot < 1:
        raise RaylabError("no spot worker is running: nothing to reclaim",
                          "stage 6 needs spot workers: `raylab up --scenario mixed` and a running job")
    return max(1, n_spot // 3)


def instance_arn(region: str, account: str, iid: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:instance/{iid}"


def _tags(lab: str, drill: str) -> dict[str, str]:
    return {LAB_TAG: lab, "raylab-drill": drill, "Name": f"raylab-{lab}-{drill}-drill"}


def reclaim_template(*, lab: str, role_arn: str, spot_arns: list[str],
                     notice_s: int = RECLAIM_NOTICE_S) -> dict[str, Any]:
    """CreateExperimentTemplate: interrupt a third of ``spot_arns`` (sorted, at least one) by ARN."""
    chosen = sorted(spot_arns)[:reclaim_share(len(spot_arns))]
    return {
        "clientToken": str(uuid.uuid4()),
        "description": f"raylab {lab}: reclaim {len(chosen)} of {len(spot_arns)} spot worker(s)",
        "roleArn": role_arn, "stopConditions": [{"source": "none"}],
        "targets": {"SpotWorkers": {"resourceType": "aws:ec2:spot-instance", "resourceArns": chosen,
                                    "selectionMode": "ALL"}},
        "actions": {"reclaim": {"actionId": FIS_ACTION, "targets": {"SpotInstances": "SpotWorkers"},
                                "parameters": {"durationBeforeInterruption": iso_duration(notice_s)}}},
        "tags": _tags(lab, "reclaim"),
    }


def capacity_template(*, lab: str, role_arn: str, head_role_arn: str, azs: list[str],
                      duration_s: int = 300, percentage: int = 100) -> dict[str, Any]:
    """CreateExperimentTemplate: RunInstances by the head's role in ``azs`` fails for ``duration_s``."""
    if not azs:
        raise RaylabError("no availability zone for the capacity drill",
                          "the spot workers' node type lists no SubnetIds")
    return {
        "clientToken": str(uuid.uuid4()),
        "description": f"raylab {lab}: no capacity for the head's launches in {','.join(azs)}",
        "roleArn": role_arn, "stopConditions": [{"source": "none"}],
        "targets": {"HeadRole": {"resourceType": "aws:iam:role", "resourceArns": [head_role_arn],
                                 "selectionMode": "ALL"}},
        "actions": {"capacity": {"actionId": CAPACITY_ACTION, "targets": {"Roles": "HeadRole"},
                                 "parameters": {"duration": iso_duration(duration_s),
                                                "availabilityZoneIdentifiers": ",".join(azs),
                                                "percentage": str(percentage)}}},
        "tags": _tags(lab, "capacity"),
    }


def capacity_policy(head_role_arn: str) -> dict[str, Any]:
    """What FIS may do for the capacity drill: inject that one error, for that one role."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ec2:InjectApiError", "Resource": "*",
        "Condition": {"ForAnyValue:StringEquals": {"ec2:FisActionId": [CAPACITY_ACTION]},
                      "StringEquals": {"ec2:FisTargetArns": [head_role_arn]}}}]}


def capacity_azs(spot_azs: list[str], ondemand_azs: list[str]) -> tuple[list[str], bool]:
    """(AZs to refuse, spot_only): the spot AZs without on-demand when there are any (a spot-only
    outage: on-demand still launches elsewhere), else every spot AZ (then on-demand fails there too)."""
    only = sorted(set(spot_azs) - set(ondemand_azs))
    return (only, True) if only else (sorted(set(spot_azs)), False)


def checks(s: dict[str, Any], now: dict[str, Any]) -> list[Check]:
    """Stage 6's checks on AWS from the recorded drills ``s`` and what EC2 says ``now``
    (``states``: instance id -> state; ``head``: the running head's id or None)."""
    acts = s.get("fis_acts", False)
    out = []
    for name, d in s.get("drills", {}).items():
        st = d.get("state")
        out.append(Check(f"{name}: FIS experiment completed", st == "completed",
                         f"experiment {d.get('experiment_id')}: {st} ({d.get('reason', '')})",
                         None if st == "completed" else "see the experiment in the FIS console"))
    rc = s.get("drills", {}).get("reclaim")
    if rc:
        ids = rc.get("instance_ids", [])
        still = [i for i in ids if now.get("states", {}).get(i) == "running"]
        if acts:
            out.append(Check("reclaim: the targeted instances left running", not still and bool(ids),
                             f"{len(ids) - len(still)} of {len(ids)} left running ({', '.join(ids)})"
                             + (f"; still running: {', '.join(still)}" if still else "")))
        else:
            out.append(Check("reclaim: the targeted instances left running (not judged)", True,
                             f"cannot be judged here: {s.get('endpoint')} is not AWS; its FIS records "
                             f"experiments but acts on nothing ({len(still)} of {len(ids)} still running)"))
        if rc.get("state") == "completed":  # else nothing was reclaimed: the check above says why
            out.append(drained_check(rc.get("private_ips") or {}, rc.get("ray_nodes"), acts))
    cap = s.get("drills", {}).get("capacity")
    if cap:
        split = bool(cap.get("spot_only"))
        out.append(Check("capacity: a spot-only outage (on-demand workers in another AZ)", split,
                         f"refused in {','.join(cap.get('azs', []))}; " + (
                             "on-demand workers launch elsewhere" if split else
                             f"{ONDEMAND_TYPE} uses these AZs too, so its launches failed as well"),
                         None if split else f"give {SPOT_TYPE} and {ONDEMAND_TYPE} subnets in different "
                         "AZs (node_config.SubnetIds)"))
        out.append(_guard_check(cap, now.get("guard"), acts))
    head = s.get("head_id")
    ok = bool(head) and now.get("head") == head
    out.append(Check("Ray kept the head", ok, f"head {head} before the drills, {now.get('head')} running now "
                     "(EC2's view)", None if ok else "`raylab status`: the cluster lost its head"))
    job = s.get("job") or {}
    if job.get("status"):
        runs = [*job.get("earlier", []), {"id": job.get("id"), "status": job["status"]}]
        ok = all(r["status"] == "SUCCEEDED" for r in runs)
        out.append(Check("stress job during the drills completed", ok,
                         ", ".join(f"job {r['id']}: {r['status']}" for r in runs)))
    else:
        out.append(Check("stress job during the drills" + ("" if acts else " (not judged)"), not acts,
                         f"no job ran: {job.get('why', 'not submitted')}"
                         + ("" if acts else "; the drills ran on the experiments alone")))
    return out


def _guard_check(cap: dict[str, Any], guard: dict[str, Any] | None, acts: bool) -> Check:
    """The capacity guard capped spot while the capacity experiment ran (its decisions on the head)."""
    name = "capacity: the guard capped spot during the window"
    moto = "" if acts else "; cannot be judged here: this endpoint's FIS refuses no launch"
    if not guard or "error" in guard:
        why = (guard or {}).get("error", "no guard report")
        return Check(name + ("" if acts else " (not judged)"), not acts,
                     f"the guard's decisions could not be read: {why}{moto}",
                     "`raylab status` shows the guard's last decisions" if acts else None)
    t0, t1 = cap.get("started_at") or 0, (cap.get("ended_at") or 0) + 60
    caps = [e for e in guard.get("recent", [])
            if e.get("kind") == "guard_cap" and t0 <= (e.get("t") or 0) <= t1]
    return Check(name + ("" if caps or acts else " (not judged)"), bool(caps) or not acts,
                 f"{len(caps)} cap(s): {caps[0].get('message', '')}" if caps
                 else f"no cap in the window{moto}")


# --- I/O -------------------------------------------------------------------------------------------

def _client(ctx: Context, service: str) -> Any:
    from raylab.aws.session import client

    return client(ctx, service)


def cluster_view(ctx: Context) -> dict[str, Any]:
    """EC2's view of the cluster: running spot workers (ids) and the running head's id."""
    ec2 = _client(ctx, "ec2")
    insts, head = [], None
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:ray-cluster-name", "Values": [ctx.names["cluster"]]},
            {"Name": "instance-state-name", "Values": ["running"]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                if tags.get("ray-node-type") == "head":
                    head = i["InstanceId"]
                insts.append({"id": i["InstanceId"], "state": "running", "tags": tags,
                              "ip": i.get("PrivateIpAddress", ""),
                              "type": i.get("InstanceType", ""),
                              "market": "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand"})
    return {"spot": [i["id"] for i in reclaimable(insts, ctx.names["cluster"])], "head": head,
            "ips": {i["id"]: i["ip"] for i in insts},
            "workers": [i["type"] for i in insts if i["tags"].get("ray-node-type") == "worker"]}


def node_type_azs(ctx: Context, cfg: dict[str, Any], node_type: str) -> list[str]:
    subnets = ((cfg.get("available_node_types") or {}).get(node_type, {}).get("node_config", {})
               .get("SubnetIds") or [])
    if not subnets:
        return []
    r = _client(ctx, "ec2").describe_subnets(SubnetIds=list(subnets))
    return sorted({s["AvailabilityZone"] for s in r["Subnets"]})


def wait_experiment(ctx: Context, fis: Any, exp_id: str, timeout: float, poll: float) -> dict[str, Any]:
    """Poll the experiment until it ends or ``timeout``; progress on every change and every ~30 s."""
    t0, last, said = time.monotonic(), None, 0.0
    while True:
        st = fis.get_experiment(id=exp_id)["experiment"]["state"]
        el = time.monotonic() - t0
        if st["status"] != last or el - said >= 30:
            ctx.ui.info(f"  experiment {exp_id}: {st['status']} after {el:.0f} s")
            last, said = st["status"], el
        if st["status"] in TERMINAL:
            return {"state": st["status"], "reason": st.get("reason", ""), "seconds": round(el, 1)}
        if el > timeout:
            fis.stop_experiment(id=exp_id)
            return {"state": "timed out", "reason": f"still {st['status']} after {timeout:.0f} s: stopped",
                    "seconds": round(el, 1)}
        time.sleep(poll)


def start_experiment(ctx: Context, fis: Any, request: dict[str, Any], poll: float) -> tuple[str, str]:
    """Create the template and start it; a role IAM has not propagated yet is retried for ~60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            tpl = fis.create_experiment_template(**request)["experimentTemplate"]["id"]
            break
        except Exception as e:  # noqa: BLE001 - ValidationException until IAM shows FIS the new role
            if "ValidationException" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(max(poll, 2.0))
    while True:
        try:
            exp = fis.start_experiment(clientToken=str(uuid.uuid4()), experimentTemplateId=tpl,
                                       tags={LAB_TAG: ctx.lab})["experiment"]
            return tpl, str(exp["id"])
        except Exception as e:  # noqa: BLE001 - ValidationException until FIS can assume the role
            if "ValidationException" not in str(e) or time.monotonic() > deadline:
                fis.delete_experiment_template(id=tpl)
                raise
            time.sleep(max(poll, 2.0))


def submit_job(ctx: Context, o: dict[str, Any]) -> tuple[Any, str]:
    """Stage 4's stress job, submitted as stage 4 does (Ray's Jobs API through the target's dashboard
    URL): the plan's 480 x 300 s outlasts both drills. (None, why) when the target exposes none."""
    try:
        from raylab.observe.job import StressJob
        from raylab.observe.run import default_workload

        scale = ctx.state.cluster().scale or 1  # the lab's scale, as stage 4 ran it
        tasks, duration = default_workload(scale)
        tasks = int(o.get("burst_tasks") or tasks)  # a drill's burst (keep_demand)
        url = ctx.target.dashboard_url(ctx)
        return StressJob.submit(url, ctx.root / "workloads", tasks, duration, scale), ""
    except Exception as e:  # noqa: BLE001 - the drills still run; the check says no job ran
        return None, (e.one_line() if isinstance(e, RaylabError) else f"{type(e).__name__}: {e}")[:300]


def fis_acts(env: dict[str, str]) -> bool:
    """Whether the FIS behind the target's endpoint acts on instances: AWS's does; moto's records
    experiments only; the rehearsal's acts (its world says so with RAYLAB_ENDPOINT_FIS_ACTS=1)."""
    import os

    return not env.get("AWS_ENDPOINT_URL") or os.environ.get("RAYLAB_ENDPOINT_FIS_ACTS") == "1"


def wait_for_spot(ctx: Context, wait_s: float, poll_s: float, joined: bool = False) -> dict[str, Any]:
    """EC2's view once a spot worker runs (the job's demand makes the autoscaler launch them), or as
    it is after ``wait_s``. ``joined``: only spot workers that are live Ray nodes count (their watcher
    starts right after `ray start`: a notice to a node still in its setup drains nothing)."""
    deadline, url = time.monotonic() + wait_s, None
    while True:
        view = cluster_view(ctx)
        if view["spot"] and joined:
            url = url or ctx.target.dashboard_url(ctx)
            alive = {n.get("node_ip") for n in ray_nodes(url) or [] if n.get("state") == "ALIVE"}
            ready = [i for i in view["spot"] if view["ips"].get(i) in alive]
            if ready or time.monotonic() >= deadline:
                return {**view, "spot": ready or view["spot"]}
        elif view["spot"] or time.monotonic() >= deadline:
            return view
        ctx.ui.info(f"waiting for spot workers{' to join Ray' if view['spot'] else ''} "
                    f"({int(deadline - time.monotonic())} s left)")
        time.sleep(poll_s)


JobStarter = Callable[["Context", dict[str, Any]], tuple[Any, str]]


def run_drills(ctx: Context, o: dict[str, Any], job_starter: JobStarter = submit_job) -> dict[str, Any]:
    """Both drills, one after the other, while the stress job runs. Returns what stage 6 records."""
    from raylab.cluster.config import load_yaml
    from raylab.spot.chaos import ensure_fis_role

    cluster = ctx.state.get("cluster")
    env = ctx.target.aws_env(ctx)
    iam, fis, sts = _client(ctx, "iam"), _client(ctx, "fis"), _client(ctx, "sts")
    region = env.get("AWS_DEFAULT_REGION") or _client(ctx, "ec2").meta.region_name
    account = sts.get_caller_identity()["Account"]
    head_role_arn = iam.get_role(RoleName=ctx.names["head_role"])["Role"]["Arn"]
    cfg = load_yaml(Path(cluster["config_path"])) if cluster.get("config_path") else {}
    azs, spot_only = capacity_azs(node_type_azs(ctx, cfg, SPOT_TYPE), node_type_azs(ctx, cfg, ONDEMAND_TYPE))
    if not azs:  # refuse before anything is created
        raise RaylabError(f"{SPOT_TYPE} lists no subnet: no AZ for the capacity drill",
                          f"set node_config.SubnetIds of {SPOT_TYPE} in {cluster.get('config_path')}")
    rec = new_record(env.get("AWS_ENDPOINT_URL") or f"AWS {region}", fis_acts(env))
    job, why = job_starter(ctx, o)
    rec["job"] = {"id": job.job_id} if job else {"why": why}
    ctx.ui.info(f"stress job {job.job_id} submitted" if job else f"no stress job: {why}")
    view = wait_for_spot(ctx, float(o["spot_wait"]), float(o["fis_poll"]),  # the job's demand brings them
                         joined=rec["fis_acts"])
    rec["head_id"] = view["head"]
    n_reclaim = reclaim_share(len(view["spot"]))  # refuses before any FIS resource is created
    ctx.ui.step("FIS role (least privilege: this cluster's spot instances, the head's role)")
    role_arn = ensure_fis_role(iam, ctx.lab, ctx.names["cluster"])
    iam.put_role_policy(RoleName=fis_role_name(ctx.lab), PolicyName="capacity-errors",
                        PolicyDocument=json.dumps(capacity_policy(head_role_arn)))
    rec["fis_role"] = role_arn
    arns = [instance_arn(region, account, i) for i in view["spot"]]
    plans = {"reclaim": (reclaim_template(lab=ctx.lab, role_arn=role_arn, spot_arns=arns),
                         RECLAIM_NOTICE_S),
             "capacity": (capacity_template(lab=ctx.lab, role_arn=role_arn, head_role_arn=head_role_arn,
                                            azs=azs, duration_s=int(o["fis_window"])), int(o["fis_window"]))}
    for name, (req, length) in plans.items():
        what = (f"{n_reclaim} of {len(arns)} spot worker(s), notice PT2M" if name == "reclaim" else
                f"RunInstances by {ctx.names['head_role']} in {','.join(azs)} for {length} s"
                + ("" if spot_only else " (on-demand shares these AZs: it fails there too)"))
        ctx.ui.step(f"FIS drill {name}: {what}")
        job = keep_demand(ctx, o, job, rec["job"], job_starter, burst=name == "capacity")
        tpl, exp = start_experiment(ctx, fis, req, o["fis_poll"])
        d: dict[str, Any] = {"template_id": tpl, "experiment_id": exp, "claim": CLAIMS[name]}
        if name == "reclaim":
            d["instance_ids"] = [a.rsplit("/", 1)[1] for a in req["targets"]["SpotWorkers"]["resourceArns"]]
            d["private_ips"] = private_ips(_client(ctx, "ec2"), d["instance_ids"])
        else:
            d.update({"azs": azs, "spot_only": spot_only, "head_role": head_role_arn})
        rec["drills"][name] = d
        d["started_at"] = time.time()
        try:
            d.update(wait_experiment(ctx, fis, exp, length + o["fis_timeout"], o["fis_poll"]))
        finally:
            d["ended_at"] = time.time()
            fis.delete_experiment_template(id=tpl)
            d["template_deleted"] = True
    rc = rec["drills"].get("reclaim")
    if rc and rec["fis_acts"] and rc.get("state") == "completed":  # Ray's word on how they died
        rc["ray_nodes"] = wait_dead(ctx.target.dashboard_url(ctx), rc["private_ips"])
    if job:
        wait_jobs(ctx, [*((e.pop("job"), e) for e in rec["job"].get("earlier", [])), (job, rec["job"])],
                  o["fis_job_timeout"], o["fis_poll"])
    return rec


def wait_jobs(ctx: Context, jobs: list[tuple[Any, dict[str, Any]]], timeout: float, poll: float) -> None:
    """Every drill's job to its end (or ``timeout``), its status into its record; progress every ~30 s."""
    t0 = time.monotonic()
    said = 0.0
    for j, r in jobs:
        while not j.done and time.monotonic() - t0 < timeout:
            el = time.monotonic() - t0
            if el - said >= 30:
                why = getattr(j, "message", "")
                ctx.ui.info(f"  job {j.job_id} {j.status} after the drills, {el:.0f} s" + (f" ({why})" if why
                                                                                         else ""))
                said = el
            time.sleep(poll)
            j.poll()
        r["status"] = j.status if j.done else f"still {j.status} after the drills"


def burst_tasks(default_tasks: int, running_worker_cpus: int, worker_cpus: int = 16) -> int:
    """One-CPU tasks for a drill's burst (pure): beyond what the running workers hold by three workers,
    so the autoscaler must launch while the drill lasts; never fewer than the lab's own job."""
    return max(default_tasks, running_worker_cpus + 3 * worker_cpus)


def keep_demand(ctx: Context, o: dict[str, Any], job: Any, record: dict[str, Any],
                job_starter: JobStarter, burst: bool = False) -> Any:
    """Before a drill: demand the autoscaler must launch for. The plan's job (480 x 300 s, scale 1)
    outlasts both drills and stays far beyond the quota; a lab scaled down (480/S x 30 s) is absorbed
    by the running workers within the first drill, so a drill that needs launches (``burst``: the
    capacity drill) then gets a fresh burst beyond them, as does any drill once the job has ended.
    Every job is kept in ``record`` (``earlier``: those submitted before the last) and judged."""
    if job is None:
        return None
    if not job.done:
        job.poll()
    scale = ctx.state.cluster().scale or 1
    if not job.done and (scale == 1 or not burst):
        return job
    from raylab.observe.run import default_workload, vcpus_of

    running = cluster_view(ctx)["workers"]
    cpus = sum(vcpus_of(t) or 16 for t in running)
    tasks = burst_tasks(default_workload(scale)[0], cpus)
    fresh, why = job_starter(ctx, {**o, "burst_tasks": tasks})
    if fresh is None:
        record["why"] = why
        return job
    record.setdefault("earlier", []).append({"id": job.job_id, "status": job.status, "job": job})
    record["id"] = fresh.job_id
    ctx.ui.info(f"{fresh.job_id}: {tasks} tasks for the next drill, beyond the {len(running)} running "
                f"workers' {cpus} CPUs (job {job.job_id} {job.status.lower()})")
    return fresh


def now_view(ctx: Context, s: dict[str, Any]) -> dict[str, Any]:
    """What verify compares against: the reclaimed instances' states and the running head."""
    ids = (s.get("drills", {}).get("reclaim") or {}).get("instance_ids") or []
    states = {}
    if ids:
        r = _client(ctx, "ec2").describe_instances(InstanceIds=ids)
        states = {i["InstanceId"]: i["State"]["Name"] for x in r["Reservations"] for i in x["Instances"]}
    try:
        guard = ctx.target.cluster_status(ctx).get("capacity_guard") or {}
    except Exception as e:  # noqa: BLE001 - reported by the check, never raised from verify
        guard = {"error": (e.one_line() if isinstance(e, RaylabError) else f"{type(e).__name__}: {e}")[:200]}
    return {"states": states, "head": cluster_view(ctx)["head"], "guard": guard}
