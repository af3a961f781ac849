"""The forecast stage 4 prints beside its run: `raylab plan` for the run's own settings (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest

from raylab.context import project_root
from raylab.observe.timeline import worker_start_s
from raylab.plan import inputs
from raylab.plan.for_run import forecast_for_run


def local_form(cpus: int = 4) -> dict[str, Any]:
    """The lab's YAML as the local target renders it at scale 4: 16-vCPU instances, 4 Ray CPUs."""
    root = project_root()
    cfg = inputs.load_config(root / "configs" / "ray-cluster.yaml", "autoscale",
                             root / "configs" / "scenarios")
    for name, nt in cfg["available_node_types"].items():
        nt["resources"] = {"CPU": 0 if name == cfg["head_node_type"] else cpus}
    return cfg


def test_the_stress_settings_meet_the_wall_at_8_workers() -> None:
    """Stage 4 at the default local scale: 120 x 30 s, quota 160 with head + bastion holding 18."""
    fc = forecast_for_run(local_form(), tasks=120, duration_s=30.0, quotas={"on-demand": 160},
                          reserved_vcpus=18, boot_s=4.0, worker_start_s=1.0, boot_slots=4,
                          request_timeout_s=15.0, measured_makespan_s=140.0)
    assert fc.peak_workers == 8  # 16 + 2 + 8 x 16 = 146; a 9th makes 162 > 160
    assert fc.makespan_s is not None and 120 <= fc.makespan_s <= 160  # 4 waves of 30 s + the ramp
    assert fc.measured_over_forecast == round(140.0 / fc.makespan_s, 2)
    assert (fc.boot_s, fc.worker_start_s, fc.boot_slots) == (4.0, 1.0, 4)


def test_booting_one_at_a_time_is_slower_than_together() -> None:
    """The twin's old serial boots (1 slot) forecast a longer ramp than boots together (4 slots)."""
    kw: dict[str, Any] = {"tasks": 120, "duration_s": 30.0, "quotas": {"on-demand": 160},
                          "reserved_vcpus": 18,
                          "boot_s": 6.0, "worker_start_s": 0.0, "request_timeout_s": 15.0,
                          "measured_makespan_s": None}
    serial = forecast_for_run(local_form(), boot_slots=1, **kw)
    together = forecast_for_run(local_form(), boot_slots=4, **kw)
    assert serial.makespan_s and together.makespan_s and serial.makespan_s > together.makespan_s
    assert together.measured_over_forecast is None  # nothing measured: no ratio


@pytest.mark.parametrize(("samples", "want"), [
    # first sample with a running task at 10, first with a finished one at 42: 30 s tasks -> 2 s start-up
    ([{"ts": 5.0, "tasks": {}}, {"ts": 10.0, "tasks": {"running": 4}},
      {"ts": 42.0, "tasks": {"finished": 1}}], 2.0),
    ([{"ts": 10.0, "tasks": {"running": 4}}], 0.0),  # nothing finished yet
    ([{"ts": 10.0, "tasks": {"running": 4}}, {"ts": 39.0, "tasks": {"finished": 1}}], 0.0),  # never negative
])
def test_worker_start_from_the_samples(samples: list[dict[str, Any]], want: float) -> None:
    assert worker_start_s(samples, 30.0) == want
