"""Stage 6 on AWS: the FIS templates (pure) and the drills against a moto server on loopback (moto's
FIS records experiments and moves their state, but acts on nothing: the checks must say so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylab.errors import RaylabError
from raylab.spot import fis

ROLE = "arn:aws:iam::123456789012:role/raylab-t1-fis-spot"
HEAD_ROLE = "arn:aws:iam::123456789012:role/raylab-t1-ray-head"


def arns(n: int) -> list[str]:
    return [f"arn:aws:ec2:us-west-2:123456789012:instance/i-{k:02d}" for k in range(n)]


@pytest.mark.parametrize(("spot", "chosen"), [(1, 1), (2, 1), (3, 1), (5, 1), (6, 2), (9, 3), (10, 3)])
def test_reclaim_takes_a_third_of_the_spot_workers_at_least_one(spot, chosen):
    req = fis.reclaim_template(lab="t1", role_arn=ROLE, spot_arns=list(reversed(arns(spot))))
    tgt = req["targets"]["SpotWorkers"]
    assert tgt == {"resourceType": "aws:ec2:spot-instance", "resourceArns": arns(spot)[:chosen],
                   "selectionMode": "ALL"}
    act = req["actions"]["reclaim"]
    assert act["actionId"] == "aws:ec2:send-spot-instance-interruptions"
    assert act["parameters"] == {"durationBeforeInterruption": "PT2M"}
    assert act["targets"] == {"SpotInstances": "SpotWorkers"}
    assert req["roleArn"] == ROLE and req["tags"]["raylab-lab"] == "t1"


def test_reclaim_refuses_without_spot_workers():
    with pytest.raises(RaylabError, match="no spot worker"):
        fis.reclaim_template(lab="t1", role_arn=ROLE, spot_arns=[])


@pytest.mark.parametrize(("azs", "duration", "params"), [
    (["us-west-2a"], 300,
     {"duration": "PT5M", "availabilityZoneIdentifiers": "us-west-2a", "percentage": "100"}),
    (["us-west-2a", "us-west-2b"], 150,
     {"duration": "PT2M30S", "availabilityZoneIdentifiers": "us-west-2a,us-west-2b", "percentage": "100"}),
])
def test_capacity_template_targets_the_heads_role_in_the_spot_az(azs, duration, params):
    req = fis.capacity_template(lab="t1", role_arn=ROLE, head_role_arn=HEAD_ROLE, azs=azs,
                                duration_s=duration)
    assert req["targets"] == {"HeadRole": {"resourceType": "aws:iam:role", "resourceArns": [HEAD_ROLE],
                                           "selectionMode": "ALL"}}
    act = req["actions"]["capacity"]
    assert act["actionId"] == "aws:ec2:api-insufficient-instance-capacity-error"
    assert act["targets"] == {"Roles": "HeadRole"} and act["parameters"] == params
    assert req["tags"]["raylab-lab"] == "t1" and req["roleArn"] == ROLE
    with pytest.raises(RaylabError):
        fis.capacity_template(lab="t1", role_arn=ROLE, head_role_arn=HEAD_ROLE, azs=[])


@pytest.mark.parametrize(("spot", "ondemand", "azs", "spot_only"), [
    (["a"], ["b"], ["a"], True),
    (["a", "b"], ["b"], ["a"], True),
    (["a", "b"], ["a", "b"], ["a", "b"], False),  # both markets everywhere: on-demand fails too
    (["a"], [], ["a"], True),
])
def test_capacity_azs(spot, ondemand, azs, spot_only):
    assert fis.capacity_azs(spot, ondemand) == (azs, spot_only)


def test_capacity_policy_is_one_error_for_one_role():
    st = fis.capacity_policy(HEAD_ROLE)["Statement"]
    assert len(st) == 1 and st[0]["Action"] == "ec2:InjectApiError"
    assert st[0]["Condition"]["StringEquals"] == {"ec2:FisTargetArns": [HEAD_ROLE]}
    assert st[0]["Condition"]["ForAnyValue:StringEquals"] == {"ec2:FisActionId": [fis.CAPACITY_ACTION]}


def DEAD_DRAINED(ip: str) -> dict:  # noqa: N802 - a row's constant
    return {"node_ip": ip, "state": "DEAD", "state_message": "Terminated due to preemption: notice"}


def _rec(acts: bool, state: str = "completed", spot_only: bool = True) -> dict:
    return {"fis_acts": acts, "endpoint": "AWS us-west-2" if acts else "http://127.0.0.1:1", "head_id": "i-h",
            "job": {"id": "j1", "status": "SUCCEEDED"},
            "drills": {"reclaim": {"experiment_id": "e1", "state": state, "instance_ids": ["i-1", "i-2"],
                                   "private_ips": {"i-1": "10.0.2.5", "i-2": "10.0.2.6"},
                                   "ray_nodes": [DEAD_DRAINED("10.0.2.5"), DEAD_DRAINED("10.0.2.6")]},
                       "capacity": {"experiment_id": "e2", "state": "completed", "azs": ["us-west-2a"],
                                    "spot_only": spot_only, "started_at": 100.0, "ended_at": 400.0}}}


GONE = {"i-1": "terminated", "i-2": "shutting-down"}
CAPPED = {"recent": [{"kind": "guard_cap", "t": 130.0, "message": "spot capped at 0"}]}
GUARD = "capacity: the guard capped spot during the window"


@pytest.mark.parametrize(("acts", "states", "head", "guard", "failing"), [
    (True, GONE, "i-h", CAPPED, []),
    (True, {"i-1": "running", "i-2": "terminated"}, "i-h", CAPPED,
     ["reclaim: the targeted instances left running"]),
    (True, GONE, None, CAPPED, ["Ray kept the head"]),
    (True, GONE, "i-h", {"recent": [{"kind": "guard_cap", "t": 50.0}]}, [GUARD]),  # before it
    (True, GONE, "i-h", {"error": "ssh: timeout"}, [GUARD]),
    (False, {"i-1": "running", "i-2": "running"}, "i-h", {"error": "no SSH"}, []),  # not judged, said so
])
def test_checks(acts, states, head, guard, failing):
    cs = fis.checks(_rec(acts), {"states": states, "head": head, "guard": guard})
    assert [c.name for c in cs if not c.ok] == failing
    left = next(c for c in cs if c.name.startswith("reclaim: the targeted"))
    assert ("not judged" in left.name and "cannot be judged" in left.detail) is (not acts)
    assert any(c.name == GUARD + " (not judged)" for c in cs) is (not acts)


def test_a_reclaimed_worker_that_died_undrained_fails_the_stage():
    """Finding 9: a watcher that dies at start (Python 3.10, `datetime.UTC`) drains nothing; Ray then
    records the reclaimed worker as an unexpected termination."""
    rec = _rec(True)
    rec["drills"]["reclaim"]["ray_nodes"][1]["state_message"] = "Unexpected termination: health check failed"
    cs = fis.checks(rec, {"states": GONE, "head": "i-h", "guard": CAPPED})
    bad = [c for c in cs if not c.ok]
    assert [c.name for c in bad] == ["reclaim: each reclaimed worker drained on its notice"]
    assert "i-2 (10.0.2.6): Unexpected termination" in bad[0].detail
    assert "imds-watcher.out" in (bad[0].hint or "")


def test_checks_name_what_did_not_hold():
    now = {"states": GONE, "head": "i-h", "guard": CAPPED}
    cs = fis.checks(_rec(True, "failed"), now)
    assert [c.name for c in cs if not c.ok] == ["reclaim: FIS experiment completed"]
    cs = fis.checks(_rec(True, spot_only=False), now)
    bad = [c for c in cs if not c.ok]
    assert [c.name for c in bad] == ["capacity: a spot-only outage (on-demand workers in another AZ)"]
    assert "failed as well" in bad[0].detail and "SubnetIds" in (bad[0].hint or "")


# --- against moto ----------------------------------------------------------------------------------

class FakeAwsTarget:
    """The AWS target's capability and endpoint, without `ray up` or SSH."""

    name, faults = "aws", "fis"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.reapplied: list[str] = []

    def reapply(self, _ctx, config_path):
        self.reapplied.append(Path(config_path).read_text())
        return {}

    def aws_env(self, _ctx):
        return {"AWS_DEFAULT_REGION": "us-west-2", "AWS_ENDPOINT_URL": self.endpoint}

    def dashboard_url(self, _ctx):
        raise RaylabError("no dashboard: moto runs no Ray", "")


@pytest.fixture(scope="module")
def moto_url():
    """A moto server on 127.0.0.1 in this process (the twin's kind of endpoint: not AWS)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def lab(monkeypatch, tmp_path, moto_url):
    """A mixed cluster in moto: head, 3 spot workers in us-west-2a, 1 on-demand in us-west-2b."""
    import urllib.request

    import boto3

    from raylab.cli.options import make_context
    from raylab.options import LabOptions

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-west-2", "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(k, v)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    ec2, iam = boto3.client("ec2", region_name="us-west-2"), boto3.client("iam", region_name="us-west-2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sub = {az: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
           for az, cidr in (("us-west-2a", "10.0.1.0/24"), ("us-west-2b", "10.0.2.0/24"))}
    ctx = make_context("aws", "t1", workdir=tmp_path / ".raylab")
    ctx._target = FakeAwsTarget(moto_url)  # type: ignore[assignment]
    iam.create_role(RoleName=ctx.names["head_role"], AssumeRolePolicyDocument="{}")
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(yaml.safe_dump({"available_node_types": {
        "ray.head.default": {"node_config": {"SubnetIds": list(sub.values())}},
        fis.SPOT_TYPE: {"node_config": {"SubnetIds": [sub["us-west-2a"]]}, "max_workers": 28},
        fis.ONDEMAND_TYPE: {"node_config": {"SubnetIds": [sub["us-west-2b"]]}}}}))
    ctx.state.put("cluster", {"config_path": str(cfg), "cluster_name": ctx.names["cluster"]})
    ctx.options = LabOptions(spot_drill={"fis_poll": 0.01, "fis_window": 120, "fis_timeout": 5.0,
                                         "fis_job_timeout": 1.0, "spot_wait": 0.05})

    def run(kind: str, n: int, market: str | None, az: str) -> list[str]:
        kv = {"ray-cluster-name": ctx.names["cluster"], "ray-node-type": kind}
        extra = {"InstanceMarketOptions": {"MarketType": market}} if market else {}
        r = ec2.run_instances(ImageId="ami-12345678", MinCount=n, MaxCount=n, InstanceType="c7i.4xlarge",
                              SubnetId=sub[az], **extra, TagSpecifications=[{"ResourceType": "instance",
                              "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}])
        return [i["InstanceId"] for i in r["Instances"]]

    head = run("head", 1, None, "us-west-2a")[0]
    spot = run("worker", 3, "spot", "us-west-2a")
    run("worker", 1, None, "us-west-2b")
    yield ctx, {"head": head, "spot": spot, "fis": boto3.client("fis", region_name="us-west-2"),
                "iam": iam, "ec2": ec2}


def test_stage6_on_aws_runs_both_drills_and_down_leaves_nothing(lab):
    from raylab.spot.chaos import aws_leftovers
    from raylab.stages.stage6_spot import STAGE

    ctx, w = lab
    rec = STAGE.apply(ctx)
    assert rec["method"] == "fis" and rec["head_id"] == w["head"] and rec["fis_acts"] is False
    rc, cap = rec["drills"]["reclaim"], rec["drills"]["capacity"]
    assert rc["instance_ids"] == sorted(w["spot"])[:1] and rc["state"] == cap["state"] == "completed"
    assert cap["azs"] == ["us-west-2a"] and cap["spot_only"] is True
    assert cap["head_role"].endswith(":role/raylab-t1-ray-head")
    assert rec["claims"]["reclaim"].startswith("proves:") and "does not prove" in rec["claims"]["capacity"]
    assert "no dashboard" in rec["job"]["why"]
    # the experiments, as FIS holds them: the right targets and parameters, tagged with the lab
    f = w["fis"]
    exps = {x["id"]: f.get_experiment(id=x["id"])["experiment"] for x in f.list_experiments()["experiments"]}
    assert set(exps) == {rc["experiment_id"], cap["experiment_id"]}
    e = exps[rc["experiment_id"]]
    assert e["targets"]["SpotWorkers"]["resourceArns"] == [
        f"arn:aws:ec2:us-west-2:123456789012:instance/{rc['instance_ids'][0]}"]
    assert e["actions"]["reclaim"]["parameters"] == {"durationBeforeInterruption": "PT2M"}
    e = exps[cap["experiment_id"]]
    assert e["targets"]["HeadRole"]["resourceArns"] == [cap["head_role"]]
    assert e["actions"]["capacity"]["parameters"] == {
        "duration": "PT2M", "availabilityZoneIdentifiers": "us-west-2a", "percentage": "100"}
    assert all(x["tags"] == {"raylab-lab": "t1"} for x in f.list_experiments()["experiments"])
    # templates deleted once the experiments ended; the role stays until `down`
    assert f.list_experiment_templates()["experimentTemplates"] == []
    pols = w["iam"].list_role_policies(RoleName="raylab-t1-fis-spot")["PolicyNames"]
    assert sorted(pols) == ["capacity-errors", "spot-interruptions"]
    # verify: moto's FIS acts on nothing, and the checks say so rather than pass or fail on it
    checks = STAGE.verify(ctx)
    assert [c.name for c in checks if not c.ok] == []
    judged = {c.name: c.detail for c in checks}
    assert "cannot be judged" in judged["reclaim: the targeted instances left running (not judged)"]
    assert "no job ran" in judged["stress job during the drills (not judged)"]
    assert aws_leftovers(ctx) == ["iam role raylab-t1-fis-spot"]
    STAGE.destroy(ctx)  # what `down` runs for stage 6
    assert aws_leftovers(ctx) == []
    assert w["iam"].list_roles()["Roles"] == [r for r in w["iam"].list_roles()["Roles"]
                                              if r["RoleName"] != "raylab-t1-fis-spot"]


def test_down_stops_a_running_experiment_and_lists_it_until_then(lab):
    from moto.moto_api import state_manager

    from raylab.spot import chaos

    ctx, w = lab
    f = w["fis"]
    state_manager.set_transition("fis::experiment", {"progression": "manual", "times": 10_000})
    try:
        role = chaos.ensure_fis_role(w["iam"], "t1", ctx.names["cluster"])
        req = fis.reclaim_template(lab="t1", role_arn=role, spot_arns=arns(3))
        tpl, exp = fis.start_experiment(ctx, f, req, 0.01)
        left = chaos.aws_leftovers(ctx)
        assert left == [f"fis experiment {exp} (pending)", f"fis template {tpl}",
                        "iam role raylab-t1-fis-spot"]
        removed = chaos.aws_cleanup(ctx)
        assert removed == [f"fis experiment {exp} (stop requested)", f"fis template {tpl}",
                           "iam role raylab-t1-fis-spot"]
        assert chaos.aws_leftovers(ctx) == [f"fis experiment {exp} (stopping)"]  # until FIS has stopped it
        assert chaos.aws_cleanup(ctx) == []  # a stopping experiment is not stopped twice
    finally:
        state_manager.unset_transition("fis::experiment")
    f.get_experiment(id=exp)  # moto moves an experiment's state when it is read
    assert f.get_experiment(id=exp)["experiment"]["state"]["status"] == "stopped"
    assert chaos.aws_leftovers(ctx) == []


def test_a_drill_that_does_not_end_is_stopped_at_its_timeout(lab):
    from moto.moto_api import state_manager

    ctx, w = lab
    state_manager.set_transition("fis::experiment", {"progression": "manual", "times": 10_000})
    try:
        req = fis.reclaim_template(lab="t1", role_arn=ROLE, spot_arns=arns(1))
        tpl, exp = fis.start_experiment(ctx, w["fis"], req, 0.01)
        r = fis.wait_experiment(ctx, w["fis"], exp, timeout=0.2, poll=0.02)
        assert r["state"] == "timed out" and "stopped" in r["reason"]
        assert w["fis"].get_experiment(id=exp)["experiment"]["state"]["status"] in ("stopping", "stopped")
    finally:
        state_manager.unset_transition("fis::experiment")


def test_a_scenario_without_spot_gets_spot_for_the_drills_and_back_after(lab):
    """autoscale/static have no spot workers: stage 6 allows them (the mixed limits) with `ray up
    --no-restart`, runs the drills, and puts the YAML back and re-applies it."""
    from raylab.stages.stage6_spot import STAGE

    ctx, _ = lab
    cfg = Path(ctx.state.get("cluster")["config_path"])
    doc = yaml.safe_load(cfg.read_text())
    types = doc["available_node_types"]
    types[fis.SPOT_TYPE]["max_workers"] = 0
    both = sorted({*types[fis.SPOT_TYPE]["node_config"]["SubnetIds"],
                   *types[fis.ONDEMAND_TYPE]["node_config"]["SubnetIds"]})
    for nt in (fis.SPOT_TYPE, fis.ONDEMAND_TYPE):  # as autoscale renders them: every private subnet
        types[nt]["node_config"]["SubnetIds"] = both
    cfg.write_text(yaml.safe_dump(doc))
    ctx.state.put("network", {"PrivateSubnetIds": ",".join(both)})
    STAGE.apply(ctx)
    first, last = (yaml.safe_load(t)["available_node_types"] for t in ctx.target.reapplied)
    assert first[fis.SPOT_TYPE]["max_workers"] > 0
    # the capacity drill is a spot-only outage: on-demand in the first subnet's AZ, spot in the second
    assert first[fis.ONDEMAND_TYPE]["node_config"]["SubnetIds"] == both[:1]
    assert first[fis.SPOT_TYPE]["node_config"]["SubnetIds"] == both[1:]
    assert last[fis.SPOT_TYPE]["max_workers"] == 0 and last[fis.SPOT_TYPE]["node_config"]["SubnetIds"] == both
    assert yaml.safe_load(cfg.read_text())["available_node_types"] == last


def test_no_spot_worker_refuses_before_creating_anything(lab):
    from raylab.spot.chaos import aws_leftovers
    from raylab.stages.stage6_spot import STAGE

    ctx, w = lab
    w["ec2"].terminate_instances(InstanceIds=w["spot"])
    with pytest.raises(RaylabError, match="no spot worker"):
        STAGE.apply(ctx)
    assert aws_leftovers(ctx) == [] and not Path(ctx.workdir / "spot").exists()


def test_the_stress_job_runs_through_the_drills_and_its_end_is_checked(lab):
    ctx, w = lab

    class Job:
        job_id, status, polls = "raysubmit_1", "RUNNING", 0

        @property
        def done(self):
            return self.status == "SUCCEEDED"

        def poll(self):
            self.polls += 1
            if self.polls >= 3:  # still running after both drills, done while raylab waits for it
                self.status = "SUCCEEDED"

    job = Job()
    o = {**ctx.options.spot_drill, "fis_job_timeout": 5.0}
    rec = fis.run_drills(ctx, o, job_starter=lambda c, o: (job, ""))
    assert rec["job"] == {"id": "raysubmit_1", "status": "SUCCEEDED"} and job.polls == 3
    cs = fis.checks(rec, fis.now_view(ctx, rec))
    assert next(c for c in cs if c.name.startswith("stress job")).ok


def test_a_job_that_ends_before_a_drill_is_followed_by_a_fresh_one(lab):
    """A scaled-down lab's job (480/S x 30 s) ends within the first drill: the capacity drill gets a
    fresh job, so spot launches meet the outage; both jobs are judged."""
    ctx, w = lab

    class Job:
        def __init__(self, n: int, ends: str, after: int) -> None:
            self.job_id, self.status, self.ends, self.after = f"raysubmit_{n}", "RUNNING", ends, after

        @property
        def done(self):
            return self.status != "RUNNING"

        def poll(self):
            self.after -= 1
            if self.after == 0:
                self.status = self.ends

    # the first runs through the reclaim drill and has ended when the capacity drill starts
    jobs = iter([Job(1, "SUCCEEDED", after=2), Job(2, "FAILED", after=1)])
    o = {**ctx.options.spot_drill, "fis_job_timeout": 5.0}
    rec = fis.run_drills(ctx, o, job_starter=lambda c, o: (next(jobs), ""))
    assert rec["job"] == {"id": "raysubmit_2", "status": "FAILED",
                          "earlier": [{"id": "raysubmit_1", "status": "SUCCEEDED"}]}
    c = next(c for c in fis.checks(rec, fis.now_view(ctx, rec)) if c.name.startswith("stress job"))
    assert not c.ok and c.detail == "job raysubmit_1: SUCCEEDED, job raysubmit_2: FAILED"


@pytest.mark.parametrize(("default", "running", "want"), [
    (60, 48, 96),     # scale 8: the lab's job fits in three workers; the burst needs three more
    (480, 48, 480),   # the plan's job is already far beyond them
    (60, 0, 60),
])
def test_burst_tasks(default: int, running: int, want: int) -> None:
    assert fis.burst_tasks(default, running) == want


def test_a_scaled_lab_bursts_beyond_its_workers_for_the_capacity_drill(lab):
    """At --scale 8 the running workers absorb the lab's job: the capacity drill gets its own burst,
    sized beyond them, while the first job still runs; both are waited for and judged."""
    ctx, w = lab
    ctx.state.update("cluster", scale=8)

    class Job:
        def __init__(self, n: int) -> None:
            self.job_id, self.status, self.polls = f"raysubmit_{n}", "RUNNING", 0

        @property
        def done(self):
            return self.status != "RUNNING"

        def poll(self):
            self.polls += 1
            if self.polls >= 3:
                self.status = "SUCCEEDED"

    asked: list[dict] = []

    def starter(c, o):
        asked.append(o)
        return Job(len(asked)), ""

    o = {**ctx.options.spot_drill, "fis_job_timeout": 5.0}
    rec = fis.run_drills(ctx, o, job_starter=starter)
    workers = fis.cluster_view(ctx)["workers"]
    assert [a.get("burst_tasks") for a in asked] == [None, fis.burst_tasks(60, 16 * len(workers))]
    assert rec["job"] == {"id": "raysubmit_2", "status": "SUCCEEDED",
                          "earlier": [{"id": "raysubmit_1", "status": "SUCCEEDED"}]}
