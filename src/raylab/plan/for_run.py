"""The forecast for a run that happened: `raylab plan` with the run's own settings and measured boot.

Stage 4 prints it beside what it measured, so every lab run checks the forecast (issue 17: the
measured makespan within 10% of the forecast, peak workers exact). The forecast gets what the run
measured of the machine (launch -> Ray node alive, a worker process's start-up) and what the target
declares (its boot slots, its REQUESTED timeout, its autoscaler loop); everything else comes from the
cluster YAML and the record: tasks, duration, quotas, the vCPUs the head and bastion already hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raylab.cluster.vocab import TICK_S
from raylab.plan.model import Workload


@dataclass(frozen=True)
class RunForecast:
    makespan_s: float | None  # Ray's autoscaler on the simulated cloud: first task -> last task
    peak_workers: int
    boot_s: float  # given: the run's median launch -> Ray node alive
    worker_start_s: float  # given: the run's worker start-up
    boot_slots: int | None  # given: nodes booting at once (None: all)
    measured_over_forecast: float | None  # the run's makespan / the forecast's

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def forecast_for_run(cfg: dict[str, Any], *, tasks: int, duration_s: float, quotas: dict[str, int | None],
                     reserved_vcpus: int, boot_s: float, worker_start_s: float, boot_slots: int | None,
                     request_timeout_s: float, measured_makespan_s: float | None,
                     tick_s: float = TICK_S) -> RunForecast:
    """Run Ray's own autoscaler offline for the run's settings (~0.1-1 s)."""
    from raylab.plan.forecast import simulate
    from raylab.plan.inputs import plan_input

    head_vcpus = _head_vcpus(cfg)
    p = plan_input(cfg, workload=Workload(tasks=tasks, cpus=1, duration_s=duration_s),
                   quota_ondemand=quotas.get("on-demand"), quota_spot=quotas.get("spot"),
                   boot_seconds=boot_s, max_concurrent_boots=boot_slots, worker_start_s=worker_start_s,
                   other_vcpus=max(0, reserved_vcpus - head_vcpus), request_timeout_s=request_timeout_s,
                   tick_s=tick_s)
    fc = simulate(p)
    mk = None if fc.makespan_s is None else round(fc.makespan_s, 1)
    ratio = round(measured_makespan_s / mk, 2) if mk and measured_makespan_s else None
    return RunForecast(makespan_s=mk, peak_workers=fc.peak_workers, boot_s=round(boot_s, 1),
                       worker_start_s=worker_start_s, boot_slots=boot_slots, measured_over_forecast=ratio)


def _head_vcpus(cfg: dict[str, Any]) -> int:
    from raylab.plan.inputs import node_spec

    head = cfg["head_node_type"]
    return node_spec(head, cfg["available_node_types"][head], 1, head=True).vcpus
