"""A room of three labs side by side on one twin (the local target's own, started as `raylab up` starts
it, with an on-demand quota of 48 vCPUs), and the instructor's `raylab room status` / `room sweep`
through the real CLI from the instructor's directory.

Each lab runs stage 1 for real (CloudFormation on the twin: its VPC, subnets, NAT, bastion), under the
busy lease `raylab lab/up/stage` hold (``raylab.room.busy.Heartbeat``); lab ann also stage 2
(Terraform: its roles and profiles) and is made with a TTL of one second. A Ray head per lab is the
twin's EC2 directly (no Ray process: the points here are names, tags, quotas and teardown), as is
another tool's instance and stack in the same account. The tests run in order on the one room:
isolation (names, tags, one lab's `down` leaves the others intact), the shared quota (a burst refused,
seen by the others in `room status`), the refusal of a busy lab, the sweep of the expired lab from its
tags alone, and that nothing of the other tool was touched.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from raylab.aws.session import client
from raylab.context import Context
from raylab.options import LabOptions
from raylab.room.busy import Heartbeat
from raylab.stages import BY_NAME, load
from raylab.stages.runner import run_stage
from raylab.ui import UI
from tests.integration.conftest import MotoTarget

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")]

QUOTA = 48  # on-demand vCPUs: 3 bastions (2 each) + another tool's t3.micro (2) + 2 heads (16 each) = 40
LABS = ("ann", "bob", "cat")
OTHER_TEMPLATE = json.dumps({"Resources": {"Vpc": {"Type": "AWS::EC2::VPC",
                                                   "Properties": {"CidrBlock": "10.99.0.0/16"}}}})


def _lab_ctx(root: Path, lab: str, endpoint: str, **options: Any) -> Context:
    return Context(target_name="local", lab=lab, ui=UI(), workdir=root / lab / ".raylab",
                   _target=MotoTarget(endpoint_url=endpoint), options=LabOptions(**options))


def _stage(ctx: Context, name: str) -> None:
    """One stage as `raylab stage N` runs it: under the lab's lease, its last stage tagged after."""
    with Heartbeat(lambda: client(ctx, "ec2"), ctx.lab, f"stage {BY_NAME[name].number}") as lease:
        r = run_stage(ctx, BY_NAME[name])
        assert r.ok, r.first_failure
        lease.progress(f"passed {BY_NAME[name].number} {name}")


def _run(ec2: Any, itype: str, tags: dict[str, str], subnet: str | None = None, n: int = 1) -> list[str]:
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    kw = {"SubnetId": subnet} if subnet else {}
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    out = ec2.run_instances(ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=n, TagSpecifications=spec,
                            **kw)
    return [i["InstanceId"] for i in out["Instances"]]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from raylab.cli.options import make_context

    root = tmp_path_factory.mktemp("room")
    teacher = make_context(target="local", lab="teacher", workdir=root / "teacher" / ".raylab")
    teacher.options = replace(teacher.options, quota_on_demand=QUOTA)
    t0 = time.monotonic()
    teacher.target.start(teacher)  # the twin, as `raylab up` starts it (recorded in teacher's .raylab/)
    try:
        endpoint = teacher.state.get("twin")["endpoint_url"]
        labs = {lab: _lab_ctx(root, lab, endpoint, **({"ttl_s": 1} if lab == "ann" else {})) for lab in LABS}
        for ctx in labs.values():
            _stage(ctx, "network")
        _stage(labs["ann"], "identity")
        ec2 = client(labs["ann"], "ec2")
        heads = {lab: _run(ec2, "c7i.4xlarge", {"raylab-lab": lab, "ray-node-type": "head",
                                                "ray-cluster-name": f"raylab-{lab}"},
                           subnet=labs[lab].state.get("network")["PrivateSubnetIds"].split(",")[0])[0]
                 for lab in ("ann", "bob")}
        other = _run(ec2, "t3.micro", {"Name": "other-tool"})[0]
        cfn = client(labs["ann"], "cloudformation")
        cfn.create_stack(StackName="other-tool-net", TemplateBody=OTHER_TEMPLATE,
                         Tags=[{"Key": "owner", "Value": "other-tool"}])
        yield {"root": root, "teacher": teacher, "labs": labs, "ec2": ec2, "cfn": cfn, "heads": heads,
               "other": other, "setup_s": time.monotonic() - t0}
    finally:
        teacher.target.stop(teacher)  # the twin, by its pid (its cloud goes with it)


def _cli(room: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    from raylab.cli.main import app

    monkeypatch.chdir(room["root"] / "teacher")  # the instructor's directory: its .raylab/ knows the twin
    return CliRunner().invoke(app, ["room", *args])


def _status(room: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    r = _cli(room, monkeypatch, "status", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _labs(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["lab"]: x for x in status["labs"]}


def test_1_each_lab_has_its_own_names_and_tags(room: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    labs = _labs(_status(room, monkeypatch))
    assert sorted(labs) == ["ann", "bob", "cat"]  # the other tool's instance and stack are no lab
    for lab, row in labs.items():
        assert row["stacks"] == [f"raylab-{lab}-network CREATE_COMPLETE"]
        assert row["last_stage"] == ("passed 2 identity" if lab == "ann" else "passed 1 network")
        assert row["busy"] is False and row["owner"] and row["expires"]
        vpcs = room["ec2"].describe_vpcs(Filters=[{"Name": "tag:raylab-lab", "Values": [lab]}])["Vpcs"]
        assert len(vpcs) == 1 and vpcs[0]["VpcId"] == room["labs"][lab].state.get("network")["VpcId"]
    assert labs["ann"]["instances"]["ondemand"] == 2 and labs["cat"]["instances"]["ondemand"] == 1
    assert labs["ann"]["cost"]["per_hour_usd"] > labs["cat"]["cost"]["per_hour_usd"] > 0
    assert labs["ann"]["expired"] is True and labs["bob"]["expired"] is False  # ann's TTL was 1 s


def test_2_one_labs_burst_is_refused_by_the_rooms_quota(room: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    cat = room["labs"]["cat"]
    with pytest.raises(ClientError) as e:  # cat's stage-4 burst: two 16-vCPU workers, 8 vCPUs free
        _run(client(cat, "ec2"), "c7i.4xlarge", {"raylab-lab": "cat", "ray-node-type": "worker"},
             subnet=cat.state.get("network")["PrivateSubnetIds"].split(",")[0], n=2)
    assert e.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    status = _status(room, monkeypatch)
    od = status["totals"][0]
    assert (od["quota_vcpus"], od["labs_vcpus"], od["other_vcpus"], od["free_vcpus"]) == (QUOTA, 38, 2, 8)
    assert _labs(status)["cat"]["ray_workers"] == {"ondemand": 0, "spot": 0}
    table = _cli(room, monkeypatch, "status")
    assert f"ondemand vCPUs (L-1216C47A): labs 38 + other 2 = 40 of quota {QUOTA} (83.3% used, 8 free)" \
        in table.stderr


def test_3_one_labs_down_leaves_the_others_intact(room: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    before = _labs(_status(room, monkeypatch))
    cat = room["labs"]["cat"]
    load(BY_NAME["teardown"]).apply(cat)  # `raylab down --lab cat`'s teardown, from cat's own .raylab/
    assert cat.target.leftovers(cat) == []
    after = _labs(_status(room, monkeypatch))
    assert sorted(after) == ["ann", "bob"]
    for lab in ("ann", "bob"):
        assert after[lab]["stacks"] == before[lab]["stacks"]
        assert after[lab]["instances"] == before[lab]["instances"]


def test_4_a_busy_lab_is_refused_unless_forced(room: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    bob = room["labs"]["bob"]
    with Heartbeat(lambda: client(bob, "ec2"), "bob", "stage 4"):  # bob's `raylab stage 4` is running
        row = _labs(_status(room, monkeypatch))["bob"]
        assert row["busy"] is True and row["busy_by"].startswith("`raylab stage 4` pid ")
        r = _cli(room, monkeypatch, "sweep", "--lab", "bob", "--yes", "--json")
        assert r.exit_code == 1 and json.loads(r.stdout)["swept"] == []
        assert "lab bob is mid-command (`raylab stage 4` pid" in r.stderr and "--force sweeps it" in r.stderr
        assert _labs(_status(room, monkeypatch))["bob"]["instances"] == row["instances"]  # nothing deleted
    assert _labs(_status(room, monkeypatch))["bob"]["busy"] is False  # the command ended: lease idle


def test_5_the_expired_lab_is_swept_from_its_tags_alone(room: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ann = room["labs"]["ann"]
    shutil.rmtree(ann.workdir)  # the trainee's .raylab/ is not needed (nor here)
    t0 = time.monotonic()
    r = _cli(room, monkeypatch, "sweep", "--expired", "--yes", "--json")
    took = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [(s["lab"], s["ok"], s["leftovers"]) for s in out["swept"]] == [("ann", True, [])]
    assert "lab ann: nothing left" in r.stderr
    labs = _labs(_status(room, monkeypatch))
    assert sorted(labs) == ["bob"] and labs["bob"]["instances"]["ondemand"] == 2  # bob's TTL has not passed
    iam = client(ann, "iam")
    profiles = [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]]
    assert not [p for p in profiles if p.endswith("-ann")]
    ec2 = room["ec2"]
    state = ec2.describe_instances(InstanceIds=[room["heads"]["ann"]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    print(json.dumps({"setup_s": round(room["setup_s"], 1), "sweep_s": round(took, 1)}))


def test_6_nothing_of_another_tool_was_touched(room: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    r = _cli(room, monkeypatch, "sweep", "--all", "--yes", "--json")  # sweeps bob, the last lab
    assert r.exit_code == 0, r.output
    assert [s["lab"] for s in json.loads(r.stdout)["swept"]] == ["bob"]
    other = room["ec2"].describe_instances(InstanceIds=[room["other"]])["Reservations"][0]["Instances"][0]
    assert other["State"]["Name"] == "running"
    stack = room["cfn"].describe_stacks(StackName="other-tool-net")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    r = _cli(room, monkeypatch, "sweep", "--expired", "--yes")
    assert r.exit_code == 0 and "no raylab lab in this region (us-west-2): nothing was deleted" in r.stderr
    assert "no raylab lab in us-west-2" in _cli(room, monkeypatch, "status").stderr
