"""What the local target declares where the stages and the CLI would otherwise ask for its name.

``LocalTarget`` inherits these (see ``raylab/target.py`` for what each one means); they are kept here,
apart from the processes ``target.py`` runs, because each is a small fact about the local target.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylab.context import Context

from raylab.cluster.vocab import REQUEST_STATUS_TIMEOUT_ENV, TICK_ENV
from raylab.targets.local.head import AUTOSCALER_ENV
from raylab.targets.local.machines import boot_slots as machine_boot_slots

OPERATOR_CIDR = "127.0.0.1/32"  # the bastion's SSH rule: nothing off loopback
REGION = "us-west-2"  # the twin's region


class LocalDeclared:
    fixed_operator_cidr: str | None = OPERATOR_CIDR
    fixed_region: str | None = REGION  # the twin's; --region is refused
    spends_money = False  # nothing billable: no question before creating or destroying
    rehearsable = False  # nothing to rehearse: the twin already is the rehearsal of AWS
    preflight_shown = False  # housekeeping checks (stale run converged, free port): not printed
    live_prices = False  # the twin's prices are not AWS's: the offline table, list prices
    time_scale = "local"  # stress tasks of 30 s, not the plan's 300 s
    network_teardown = "sweep"  # moto's stack delete can leave pieces: swept by tag afterwards
    terraform_mirror_required = True  # no registry download: providers from the local mirror
    node_setup_s = 60.0  # a `ray start` on this machine
    request_timeout_s = float(AUTOSCALER_ENV[REQUEST_STATUS_TIMEOUT_ENV])  # the local head's env: 15 s
    tick_s = float(AUTOSCALER_ENV[TICK_ENV])  # the local head's env: 1 s (the lab's time scale)
    boot_slots: int | None = machine_boot_slots(os.cpu_count())  # the twin's concurrent boots
    loopback_only = True  # every Ray node binds 127.x (stage 3 checks it)
    gcs_reachable = True  # the head runs on this machine
    data_source = "sample"  # stage 7: clips generated here (espeak-ng)
    ships_code = False  # the nodes are this machine: jobs use this Python
    quota_settable = True  # the twin's vCPU quotas move at once (an approved increase)
    picks_node_python = False  # the nodes are processes of raylab's own Python

    def validate_config(self, cfg: dict[str, Any]) -> None:
        """Refuse a rendered YAML the twin cannot launch (``raylab.cluster.local_form.validate``)."""
        from raylab.targets.local.render import validate

        validate(cfg)

    def rendered_endpoint(self, ctx: Context) -> str | None:
        """The twin's recorded endpoint (even when the twin is down: `raylab config` only renders)."""
        return ctx.state.get("twin").get("endpoint_url")

    def ray_cli_hint(self, ctx: Context, gcs_address: str) -> str | None:
        """Ray's own CLI, kept on loopback by the lab's ``loopback`` shim."""
        from raylab.targets.local.head import LOOPBACK_DIR

        return (f"Ray's own CLI on this cluster (loopback only): RAYLAB_LOOPBACK_ONLY=1 "
                f"PYTHONPATH={LOOPBACK_DIR} RAY_AUTH_MODE=disabled ray status --address {gcs_address}")
