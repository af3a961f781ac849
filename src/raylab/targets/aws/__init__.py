"""The AWS target: the same stages on a real account; Ray is reached through the bastion.

Differences from the local target: no endpoint of its own (the user's credential chain and region;
``AWS_ENDPOINT_URL`` from the environment is passed on unchanged so every tool talks to the same
place), `ray up`/`ray down` as subprocesses on the rendered YAML with every SSH hop through the bastion
(see ``ssh.py``), Ray's status read on the head over SSH, the dashboard through an SSH tunnel bound to
127.0.0.1, and a sweep that terminates any instance still tagged with the cluster name after `ray
down`. Credentials are never printed or written. ``AwsTarget`` is built in layers: ``access.py``
(region, clients, the bastion hop), ``cluster.py`` (Ray's cluster, sweep, status, dashboard), and here
the preflight, the lab's key pair, stopping, and what is left.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from raylab.cluster.vocab import REQUEST_STATUS_TIMEOUT_S, TICK_S
from raylab.errors import RaylabError
from raylab.targets.aws import ssh as sshmod
from raylab.targets.aws.cluster import NOT_GONE, AwsCluster

if TYPE_CHECKING:
    from raylab.checks import Check
    from raylab.context import Context


class AwsTarget(AwsCluster):
    name = "aws"
    faults = "fis"  # stage 6's drills are AWS FIS experiments (raylab.spot.fis)
    default_scale = 1  # the plan's 480 x 300 s on c7i.4xlarge workers
    fixed_operator_cidr: str | None = None  # the operator's public /32: preflight detects operator_ip
    fixed_region: str | None = None  # --region, else AWS_REGION / AWS_DEFAULT_REGION / the profile's
    spends_money = True  # a NAT gateway and EC2 instances are billed: ask unless --yes
    rehearsable = True  # `lab --rehearsal`: this code against a twin account in network namespaces
    preflight_shown = True  # region, AZs, where the quota wall stands: worth printing
    live_prices = True  # the Pricing API and EC2's spot price history are the market's
    time_scale = "aws"  # the plan's time: stress tasks of 300 s
    network_teardown = "explain"  # a failed stack delete is explained (its events), never force-deleted
    terraform_mirror_required = False  # providers may come from the Terraform registry
    node_setup_s = 600.0  # boot, SSH from the head, setup commands (pip install of Ray and deps)
    request_timeout_s = REQUEST_STATUS_TIMEOUT_S  # the head runs with Ray's default (600 s)
    tick_s = TICK_S  # the head runs with Ray's default loop (5 s)
    boot_slots: int | None = None  # EC2 boots every instance of a launch in parallel
    loopback_only = False  # nodes have VPC addresses
    gcs_reachable = False  # the head's GCS only through the bastion (cluster_status over SSH)
    data_source = "s3"  # stage 7: Common Voice 17 parquet on S3, on the lab's cluster only
    ships_code = True  # the nodes are EC2 instances: a job ships raylab and its deps
    quota_settable = False  # quotas are raised through Service Quotas, not at once
    picks_node_python = True  # each node's setup makes a venv of the chosen Python (uv)

    # what the stages ask ------------------------------------------------------------------------
    def validate_config(self, cfg: dict[str, Any]) -> None:
        """Nothing beyond what `ray up` itself checks."""

    def rendered_endpoint(self, ctx: Context) -> str | None:
        return None

    def ray_cli_hint(self, ctx: Context, gcs_address: str) -> str | None:
        return None

    def set_quota(self, ctx: Context, code: str, vcpus: int) -> int | None:
        raise RaylabError(f"the AWS target does not set vCPU quotas (asked: {code} = {vcpus})",
                          f"on AWS ask for a quota increase in the Service Quotas console ({code})")

    # preflight -----------------------------------------------------------------------------
    def cluster_config(self, ctx: Context) -> dict[str, Any]:
        """What the lab will launch: --config FILE, else configs/ray-cluster.yaml + the scenario."""
        from raylab.cluster.config import default_base, load_yaml, merge, scenario_path

        if ctx.options.config:
            return load_yaml(ctx.options.config)
        base = default_base()
        return merge(load_yaml(base), load_yaml(scenario_path(ctx.scenario, base)))

    def operator_ip_lookup(self, ctx: Context) -> Any:
        """The operator's public IP: --operator-ip / RAYLAB_OPERATOR_IP, else AWS's checkip service.
        Never looked up on the internet when AWS_ENDPOINT_URL is loopback (tests, twins)."""
        from raylab.targets.aws.preflight import checkip_lookup

        given = ctx.options.operator_ip or os.environ.get("RAYLAB_OPERATOR_IP")
        if given:
            return lambda: str(given).split("/")[0]
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        if "127." in endpoint or "localhost" in endpoint:

            def refuse() -> str:
                raise ValueError("AWS_ENDPOINT_URL is on loopback: no internet lookup of your IP")

            return refuse

        def lookup() -> str:
            try:
                return checkip_lookup()
            except OSError as e:
                raise ValueError(f"could not reach {e}") from None

        return lookup

    def run_preflight(self, ctx: Context) -> Any:
        from raylab.cluster import instance_types
        from raylab.targets.aws.preflight import BASTION_TYPE, run_checks

        def price(itype: str, market: str) -> float | None:
            return instance_types.price(itype)  # spot: at most the on-demand price (upper bound)

        cfg = self.cluster_config(ctx)
        bastion = BASTION_TYPE
        findings = run_checks(
            cfg=cfg,
            region=self.region(ctx),
            client=lambda s: self._client(ctx, s),
            cluster_name=ctx.names["cluster"],
            ip_lookup=self.operator_ip_lookup(ctx),
            price=price,
            bastion_price=instance_types.price(bastion),
            bastion_type=bastion,
            lab=ctx.lab,
        )
        if findings.ok:
            f = findings.facts
            found = ctx.detected
            found.operator_ip = found.operator_ip or f["operator_cidr"].split("/")[0]
            found.availability_zones = found.availability_zones or f["availability_zones"]
            found.key_name = found.key_name or ctx.names["key_pair"]
        return findings

    def preflight_report(self, ctx: Context) -> tuple[list[Check], dict[str, Any]]:
        """``run_preflight``'s checks and facts, read-only: nothing is written to .raylab/."""
        findings = self.run_preflight(ctx)
        return findings.checks, findings.facts

    def preflight(self, ctx: Context) -> list[Check]:
        findings = self.run_preflight(ctx)
        if findings.ok:
            ctx.state.update(
                "aws",
                region=findings.facts["region"],
                account=findings.facts.get("account"),
                operator_cidr=findings.facts.get("operator_cidr"),
                availability_zones=findings.facts.get("availability_zones"),
            )
        return findings.checks

    # start / stop ----------------------------------------------------------------------------
    def start(self, ctx: Context) -> None:
        """The lab's SSH key: generated once under .raylab/ssh/ (0600), imported as key pair
        raylab-<lab> so the bastion and the Ray nodes accept it (a present key pair is a noop)."""
        name = ctx.names["key_pair"]
        path = sshmod.ssh_dir(ctx.workdir).resolve() / f"{name}.pem"
        _, pub = sshmod.ensure_key(path, name)
        ec2 = self._client(ctx, "ec2")
        try:
            ec2.describe_key_pairs(KeyNames=[name])
            ctx.ui.noop(f"key pair {name} exists")
        except Exception as e:
            if "InvalidKeyPair.NotFound" not in str(e):
                raise
            ec2.import_key_pair(
                KeyName=name,
                PublicKeyMaterial=pub.encode(),
                TagSpecifications=[
                    {"ResourceType": "key-pair", "Tags": [{"Key": "raylab-lab", "Value": ctx.lab}]}
                ],
            )
            ctx.ui.success(f"key pair {name} imported from {path}")
        ctx.detected.key_name = ctx.detected.key_name or name

    def stop(self, ctx: Context) -> None:
        from raylab.leftovers import stop_leftovers
        from raylab.procs import stop_group

        procs = ctx.state.get("processes")
        for pname, p in procs.items():
            if pname.startswith("aws-"):
                stop_group(int(p["pgid"]), timeout=5)
                ctx.state.forget_process(pname)
        stop_leftovers(ctx.workdir)  # every other process raylab started here (pid + start time checked)
        name = ctx.names["key_pair"]
        with contextlib.suppress(RaylabError):
            ec2 = self._client(ctx, "ec2")
            ec2.delete_key_pair(KeyName=name)  # idempotent on EC2
        d = sshmod.ssh_dir(ctx.workdir)
        for f in (d / f"{name}.pem", d / f"{name}.pem.pub"):
            f.unlink(missing_ok=True)

    # what is left ---------------------------------------------------------------------------------
    def leftovers(self, ctx: Context) -> list[str]:
        """Instances of the cluster tag, the stack and the lab's network (stage 1's own check), the
        roles/profiles (stage 2's), the lab's key pair, and raylab's live processes (tunnels)."""
        from raylab.aws.leftovers import lab as lab_leftovers
        from raylab.state import pid_alive

        n = ctx.names
        ec2 = self._client(ctx, "ec2")
        r = ec2.describe_instances(
            Filters=[
                {"Name": "tag:ray-cluster-name", "Values": [n["cluster"]]},
                {"Name": "instance-state-name", "Values": NOT_GONE},
            ]
        )
        left = [
            f"instance {i['InstanceId']} ({i['State']['Name']}, cluster {n['cluster']})"
            for res in r["Reservations"]
            for i in res["Instances"]
        ]
        left += lab_leftovers(ctx)
        from raylab.spot.chaos import aws_leftovers as fis_leftovers  # stage 6: FIS experiments, role

        left += fis_leftovers(ctx)
        with contextlib.suppress(Exception):  # NotFound: gone
            if ec2.describe_key_pairs(KeyNames=[n["key_pair"]])["KeyPairs"]:
                left.append(f"key pair {n['key_pair']}")
        for pname, p in ctx.state.get("processes").items():
            if pname.startswith("aws-") and pid_alive(int(p["pid"])):
                left.append(f"process {pname} (pid {p['pid']})")
        from raylab.leftovers import find_leftovers  # every process of the work dir (records + /proc scan)
        return left + [x.line() for x in find_leftovers(ctx.workdir)]
