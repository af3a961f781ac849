"""What a target is: where the lab's "AWS" lives and how Ray is reached there.

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
    # How stage 6 injects its faults: "twin" (the local twin's control API) or "fis" (AWS FIS experiments).
    faults: str
    # The lab scale when none is given: the local target shrinks nodes and time (4); AWS runs the plan (1).
    default_scale: int

    def preflight(self, ctx: Context) -> list[Check]:
        """Checks that must pass before anything is created (credentials, quotas, tools)."""
        ...

    def start(self, ctx: Context) -> None:
        """Make the endpoint reachable (local: start the twin; aws: nothing to start)."""
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

    def cluster_down(self, ctx: Context) -> None: ...

    def cluster_status(self, ctx: Context) -> dict[str, Any]:
        """Ray's own view (autoscaler v2 status): nodes by type/state, pending launches, demand."""
        ...

    def readiness(self, ctx: Context) -> dict[str, Any]:
        """Time to ready per node (launch -> SSH up -> setup done -> Ray node alive) from EC2 and the
        cluster's dashboard; a phase the target does not have is None. Never raises (``error``)."""
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
