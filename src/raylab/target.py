"""What a target is: where the lab's "AWS" lives and how Ray is reached there.

The contract sits in the base layer, so that ``Context`` can name it; the two implementations sit
above, in ``raylab.targets`` (every difference between them lives there).

Two targets implement this contract with the SAME stages, templates and configs:

- ``local`` (the default): a moto server on 127.0.0.1 owned by raylab (the "twin"), plus a
  real local Ray cluster whose autoscaler v2 launches "EC2 instances" through it; every
  instance becomes a real local Ray node. No AWS account, no traffic off loopback.
- ``aws``: a real account; Ray is reached through the bastion (ProxyJump, never ``-A``).

Semantics every implementation keeps:
- Every verb is idempotent: calling it again converges and reports "noop" when nothing is needed.
- ``aws_env`` is the whole truth about the endpoint: boto3, Terraform and Ray's AWS code all
  get the same values, so nothing can talk to a different "cloud" than the stages verify.
- Errors the user can act on are ``RaylabError`` with a hint; nothing is half-created by a
  refusal (checks run before anything is created).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from raylab.checks import Check
    from raylab.context import Context


class Target(Protocol):
    name: str
    # How stage 6 and `raylab chaos` inject faults: "twin" (the local twin's control API: spot reclaims
    # and capacity windows) or "fis" (AWS FIS experiments: spot reclaims only; a real account's
    # capacity errors come when they come, so `raylab chaos capacity` is refused).
    faults: str
    # The lab scale when none is given: the local target shrinks nodes and time (4); AWS runs the plan (1).
    default_scale: int
    # Who may SSH to the bastion: a fixed CIDR (local: 127.0.0.1/32; `lab`/`up` refuse --allow-ssh-from),
    # or None: --allow-ssh-from, else the operator's public IP, detected (aws: preflight fills operator_ip).
    fixed_operator_cidr: str | None
    # The region when it is not the user's to choose (local: the twin's us-west-2; `lab`/`up` refuse
    # --region), or None: --region, else the environment's or the profile's region (aws).
    fixed_region: str | None
    # Creating and destroying the lab's resources costs money: `lab`, `up` and `stage N` ask before
    # creating, `down` before destroying, unless --yes (aws; local creates nothing billable).
    spends_money: bool
    # `lab --rehearsal` can run this target inside the rehearsal's world (a twin account in private
    # network namespaces, raylab.rehearsal): the AWS target's own code without an account (aws only).
    rehearsable: bool
    # `lab`/`up` print each passing preflight check (aws: where the quota wall stands, the region, the
    # AZs); local's checks are housekeeping (a stale run converged, a free port) and stay quiet.
    preflight_shown: bool
    # The endpoint's prices are the market's: `raylab plan` reads the Pricing API and the spot price
    # history, the cost report the spot price history (aws); the twin's are not AWS's, so local
    # uses the offline table and bills at list prices.
    live_prices: bool
    # The clock the lab's runs keep, as the cost report records it ("time_scale"): "aws" (the plan's
    # time: stress tasks of 300 s) or "local" (shortened: 30 s tasks; the bill then says it is AWS list
    # prices for the twin's launch and termination times at local time scale, not AWS time).
    time_scale: str
    # How stage 1 tears the network down: "sweep" (delete the stack, then delete whatever of the lab's
    # network is left, by tag, in dependency order: moto's stack delete can leave pieces) or "explain"
    # (delete the stack and explain a failed delete from CloudFormation's events; never force-delete).
    network_teardown: str
    # Terraform (stage 2) must take its providers from the local mirror: no registry download (local).
    terraform_mirror_required: bool
    # Launch call -> Ray node alive, per worker, in seconds: stage 3 waits that long per wave of
    # parallel setups for min_workers' nodes (aws: the AMI's boot, SSH from the head and the setup
    # commands; local: a `ray start`).
    node_setup_s: float
    # The head autoscaler's REQUESTED timeout, s (``vocab.REQUEST_STATUS_TIMEOUT_ENV``): the rest of a
    # partly filled launch is asked for again after this long, with or without demand; `raylab plan`
    # forecasts with it (local: 15, the local head's env; aws: Ray's 600).
    request_timeout_s: float
    # The head autoscaler's loop, s (``vocab.TICK_ENV``): v2 decides what to launch once per loop;
    # stage 4's forecast steps with it (local: 1, the lab's time scale; aws: Ray's 5). `raylab plan`
    # forecasts the plan's time, Ray's 5 s, unless --tick-seconds says otherwise.
    tick_s: float
    # Nodes that boot at once: the forecast stage 4 prints next to its run models it (local: the
    # twin's boot slots, 1 per core and at least 2; aws: None, every instance boots in parallel).
    boot_slots: int | None
    # Every Ray node must bind a 127.x address (stage 3 checks it): nothing of the lab leaves loopback.
    loopback_only: bool
    # Ray's GCS answers from this machine, so status is read from it directly rather than through
    # ``cluster_status`` (local: the head runs here; aws: only through the bastion).
    gcs_reachable: bool
    # Stage 7's input: "sample" (clips generated on this machine; with no lab cluster up the job runs on
    # an isolated local Ray) or "s3" (Common Voice 17 from S3; only on the lab's cluster).
    data_source: str
    # The cluster's nodes are other machines: a Ray job ships raylab and its deps in its runtime_env.
    ships_code: bool
    # `raylab scale --quota` can move this target's vCPU quota at once (local: the twin's); stage 5's
    # default drill then raises the quota, else it raises upscaling_speed.
    quota_settable: bool
    # The nodes' Python is set up on them (--node-python picks its minor); else they run raylab's own.
    picks_node_python: bool

    def preflight(self, ctx: Context) -> list[Check]:
        """Checks that must pass before anything is created (credentials, quotas, tools)."""
        ...

    def start(self, ctx: Context) -> None:
        """Make the endpoint reachable (local: start the twin; aws: nothing to start)."""
        ...

    def preflight_report(self, ctx: Context) -> tuple[list[Check], dict[str, Any]]:
        """What `raylab preflight` shows: the checks and the facts found (aws: region, AZs, cost lines;
        read-only, nothing is written to .raylab/)."""
        ...

    def aws_env(self, ctx: Context) -> dict[str, str]:
        """Environment for boto3 / terraform / Ray's AWS provider: region, endpoint, credentials."""
        ...

    def cluster_up(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        """Start (or converge) the Ray cluster from a rendered cluster YAML."""
        ...

    def reapply(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        """Apply a changed cluster YAML to the running cluster without restarting Ray on the head
        (stage 5). local: the head's autoscaler v2 re-reads the file itself; aws: `ray up --no-restart`."""
        ...

    def validate_config(self, cfg: dict[str, Any]) -> None:
        """Refuse (RaylabError) a rendered cluster YAML this target cannot run (local: node types the
        twin cannot launch); a config `ray up` accepts is left to `ray up` (aws)."""
        ...

    def rendered_endpoint(self, ctx: Context) -> str | None:
        """The ``endpoint_url`` a rendered cluster YAML carries (local: the twin's recorded one, even
        when the twin is down; aws: None, Ray's AWS code uses AWS's own endpoints)."""
        ...

    def set_quota(self, ctx: Context, code: str, vcpus: int) -> int | None:
        """Set the vCPU quota ``code`` (e.g. L-1216C47A) to ``vcpus``; returns the quota now in force.
        Only where ``quota_settable``: elsewhere a RaylabError that says how quotas are raised."""
        ...

    def cluster_down(self, ctx: Context) -> None: ...

    def cluster_status(self, ctx: Context) -> dict[str, Any]:
        """Ray's own view (autoscaler v2 status): nodes by type/state, pending launches, demand."""
        ...

    def readiness(self, ctx: Context) -> dict[str, Any]:
        """Time to ready per node (launch -> SSH up -> setup done -> Ray node alive) from EC2 and the
        cluster's dashboard; a phase the target does not have is None. Never raises (``error``)."""
        ...

    def ray_cli_hint(self, ctx: Context, gcs_address: str) -> str | None:
        """How to run Ray's own CLI against this cluster from here (`raylab status` prints it), or None."""
        ...

    def dashboard_url(self, ctx: Context) -> str:
        """A URL on 127.0.0.1 for the Ray dashboard / Jobs API (aws: through an SSH tunnel)."""
        ...

    def stop(self, ctx: Context) -> None:
        """Stop every process raylab started for this target (by PID)."""
        ...

    def leftovers(self, ctx: Context) -> list[str]:
        """What is still there after teardown (instances, stacks, profiles, processes)."""
        ...
