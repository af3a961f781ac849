"""The simulated outside world the forecast runs Ray's own autoscaler against: a clock that stands in
for ``time`` inside Ray's modules, a cloud with per-market vCPU quotas and boot delays, Ray's stopper, and
the autoscaling config and storage Ray's reconciler reads. See ``forecast.py`` for the whole picture.
"""

from __future__ import annotations

import time as _real_time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

from raylab.plan.model import RAY_VERSION, NodeTypeSpec, PlanInput

# Ray modules that read ``time`` and whose clock the simulation replaces.
_CLOCK_MODULES = (
    "ray.autoscaler.v2.instance_manager.common",
    "ray.autoscaler.v2.instance_manager.reconciler",
    "ray.autoscaler.v2.instance_manager.node_provider",
    "ray.autoscaler.v2.instance_manager.subscribers.cloud_resource_monitor",
    "ray.autoscaler.v2.scheduler",
    "ray.autoscaler.v2.schema",
)


# --- simulated clock ----------------------------------------------------------------------------------
class SimClock:
    """Stands in for the ``time`` module inside Ray's autoscaler modules."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)

    def monotonic(self) -> float:
        return self.now

    def monotonic_ns(self) -> int:
        return int(self.now * 1e9)

    def sleep(self, s: float) -> None:
        self.now += s

    def __getattr__(self, name: str) -> Any:  # perf_counter, strftime, ...
        return getattr(_real_time, name)


@contextmanager
def patched_clock(clock: SimClock) -> Iterator[None]:
    import importlib

    mods = [importlib.import_module(m) for m in _CLOCK_MODULES]
    saved = [m.time for m in mods]
    for m in mods:
        m.time = clock  # type: ignore[attr-defined]  # the simulated clock stands in for Ray's `import time`
    try:
        yield
    finally:
        for m, t in zip(mods, saved, strict=True):
            m.time = t  # type: ignore[attr-defined]  # as above: Ray's own `time` module back


def check_ray_internals() -> None:
    """Fail loudly if the Ray internals this forecast drives are not the ones it was written for."""
    import importlib
    import inspect

    import ray

    problems = []
    if ray.__version__ != RAY_VERSION:
        problems.append(f"ray {ray.__version__} installed, the forecast drives ray {RAY_VERSION}'s internals")
    for name in _CLOCK_MODULES:
        mod = importlib.import_module(name)
        t = getattr(mod, "time", None)
        if t is not _real_time and not isinstance(t, SimClock):
            problems.append(f"{name} no longer reads the time module")
    from ray.autoscaler.v2.instance_manager.reconciler import Reconciler

    params = set(inspect.signature(Reconciler.reconcile).parameters)
    need = {"instance_manager", "scheduler", "cloud_provider", "cloud_resource_monitor",
            "ray_cluster_resource_state", "non_terminated_cloud_instances", "autoscaling_config",
            "cloud_provider_errors"}
    if not need <= params:
        problems.append(f"Reconciler.reconcile lost parameters {sorted(need - params)}")
    from ray.autoscaler.v2.instance_manager.instance_manager import InstanceManager
    from ray.autoscaler.v2.instance_manager.storage import InMemoryStorage

    store = InMemoryStorage()
    if not (isinstance(getattr(store, "_tables", None), dict) and hasattr(store, "_lock")):
        problems.append("InMemoryStorage no longer keeps _tables/_lock")
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig, InstanceReconcileConfig

    if "request_status_timeout_s" not in {f.name for f in fields(InstanceReconcileConfig)} or \
            not hasattr(AutoscalingConfig, "get_instance_reconcile_config"):
        problems.append("the reconciler's REQUESTED timeout is no longer InstanceReconcileConfig's")
    if "_instance_storage" not in InstanceManager.__init__.__code__.co_names:
        problems.append("InstanceManager no longer has _instance_storage")
    if problems:
        raise RuntimeError("raylab plan cannot drive this Ray: " + "; ".join(problems))


# --- the simulated world ------------------------------------------------------------------------------
@dataclass
class _Inst:
    cid: str
    spec: NodeTypeSpec
    kind: str  # "head" | "worker"
    launched_at: float
    node_id: bytes
    ready_at: float
    terminated_at: float | None = None
    stopped: bool = False  # Ray drained/stopped on it
    running: list[float] = field(default_factory=list)  # end times of running tasks
    workers: int = 0  # worker processes started on the node (reused once idle)
    double_counted: list[float] = field(default_factory=list)  # until when a starting task is also demand
    idle_since: float = 0.0
    ready: bool = False

    def free_cpus(self, cpus_per_task: int) -> int:
        return self.spec.cpus - len(self.running) * cpus_per_task


class SimCloud:
    """A cloud with per-market vCPU quotas, batch fill and a boot delay (an ``ICloudInstanceProvider``)."""

    def __init__(self, plan: PlanInput, clock: SimClock, specs: dict[str, NodeTypeSpec]) -> None:
        self.plan = plan
        self.clock = clock
        self.specs = specs
        self.instances: dict[str, _Inst] = {}
        self._errors: list[Any] = []
        self._seq = 0
        self.calls: list[tuple[float, str, int, int, int]] = []  # (t, type, requested, launched, failed)
        self._boot_slots: list[float] = []  # when each boot slot is free again (max_concurrent_boots)

    def _ready_at(self, boot: float) -> float:
        now = self.clock.now
        limit = self.plan.max_concurrent_boots
        if not limit or boot <= 0:
            return now + boot
        if len(self._boot_slots) < limit:
            self._boot_slots.append(now + boot)
            return now + boot
        i = min(range(len(self._boot_slots)), key=self._boot_slots.__getitem__)
        start = max(now, self._boot_slots[i])
        self._boot_slots[i] = start + boot
        return start + boot

    def _new(self, spec: NodeTypeSpec, kind: str, boot: float) -> _Inst:
        self._seq += 1
        now = self.clock.now
        inst = _Inst(cid=f"i-{self._seq:017x}", spec=spec, kind=kind, launched_at=now,
                     node_id=self._seq.to_bytes(28, "big"), ready_at=self._ready_at(boot))
        self.instances[inst.cid] = inst
        return inst

    def used_vcpus(self, market: str) -> int:
        other = self.plan.other_vcpus if market == "ondemand" else 0
        return other + sum(i.spec.vcpus for i in self.instances.values()
                           if i.terminated_at is None and i.spec.market == market)

    def add_head(self, spec: NodeTypeSpec) -> _Inst:
        head = self._new(spec, "head", 0.0)
        head.ready = True
        head.idle_since = self.clock.now
        return head

    # ICloudInstanceProvider
    def get_non_terminated(self) -> dict[str, Any]:
        from ray.autoscaler.v2.instance_manager.node_provider import CloudInstance
        from ray.core.generated.instance_manager_pb2 import NodeKind

        return {i.cid: CloudInstance(cloud_instance_id=i.cid, node_type=i.spec.name,
                                     node_kind=NodeKind.HEAD if i.kind == "head" else NodeKind.WORKER,
                                     is_running=True)
                for i in self.instances.values() if i.terminated_at is None}

    def launch(self, shape: dict[str, int], request_id: str) -> None:
        from ray.autoscaler._private.constants import AUTOSCALER_MAX_LAUNCH_BATCH
        from ray.autoscaler.v2.instance_manager.node_provider import LaunchNodeError

        for node_type, count in shape.items():
            spec = self.specs[node_type]
            while count > 0:  # NodeProviderAdapter._do_launch: batches per type
                batch = min(count, AUTOSCALER_MAX_LAUNCH_BATCH)
                count -= batch
                quota = self.plan.quota(spec.market)
                fit = batch if quota is None else max(0, min(batch, (quota - self.used_vcpus(spec.market))
                                                              // spec.vcpus))
                for _ in range(fit):
                    self._new(spec, "worker", self.plan.boot_seconds)
                failed = batch if fit == 0 else 0  # a partial fill leaves the rest REQUESTED, as on AWS
                if failed:
                    err = LaunchNodeError(node_type, batch, request_id, self.clock.time_ns(),
                                          details="VcpuLimitExceeded (simulated quota)")
                    self._errors.append(err)
                self.calls.append((self.clock.now, node_type, batch, fit, failed))

    def terminate(self, ids: list[str], request_id: str) -> None:
        for cid in ids:
            inst = self.instances.get(cid)
            if inst is not None and inst.terminated_at is None:
                inst.terminated_at = self.clock.now

    def poll_errors(self) -> list[Any]:
        errs, self._errors = self._errors, []
        return errs


class _SimRayStopper:
    """Plays Ray's RayStopper: remembers which instances the reconciler asked to drain."""

    def __init__(self) -> None:
        self.stop_requested: set[str] = set()

    def notify(self, events: list[Any]) -> None:
        from ray.core.generated.instance_manager_pb2 import Instance

        for e in events:
            if e.new_instance_status == Instance.RAY_STOP_REQUESTED:
                self.stop_requested.add(e.instance_id)


def _autoscaling_config(plan: PlanInput) -> Any:
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

    def node_type(spec: NodeTypeSpec, head: bool) -> dict[str, Any]:
        res: dict[str, Any] = {"CPU": spec.cpus}
        return {"node_config": {"InstanceType": spec.instance_type}, "resources": res,
                "min_workers": 0 if head else spec.min_workers,
                "max_workers": 0 if head else spec.max_workers, "priority": spec.priority}

    types = {plan.head.name: node_type(plan.head, True)}
    types.update({w.name: node_type(w, False) for w in plan.workers})
    cfg = {
        "cluster_name": "raylab-plan",
        "max_workers": plan.max_workers,
        "upscaling_speed": plan.upscaling_speed,
        "idle_timeout_minutes": plan.idle_timeout_minutes,
        "provider": {"type": "aws", "region": "us-east-1", "cache_stopped_nodes": False,
                     "disable_node_updaters": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": types,
        "head_node_type": plan.head.name,
    }
    config = AutoscalingConfig(cfg, skip_content_hash=True)
    # Ray builds InstanceReconcileConfig() from the head's env, read once at import: the plan's value
    # (the target's head env) is given the reconciler here instead.
    reconcile = replace(config.get_instance_reconcile_config(),
                        request_status_timeout_s=int(plan.request_timeout_s))
    config.get_instance_reconcile_config = lambda: reconcile  # this one config's, not the class's
    return config


def _shallow_storage() -> Any:
    """Ray's InMemoryStorage, reading without ``copy.deepcopy``.

    Its values are ``VersionedValue(bytes, int)`` tuples (immutable), so a shallow copy of the table is
    the same snapshot; the deep copy was half of the forecast's run time.
    """
    from ray.autoscaler.v2.instance_manager.storage import InMemoryStorage

    class ShallowReadStorage(InMemoryStorage):
        def get_all(self, table: str) -> Any:
            with self._lock:
                return (dict(self._tables[table]), self._version)

    return ShallowReadStorage()
