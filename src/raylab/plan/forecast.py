"""Forecast what Ray 2.60's autoscaler v2 will do, by running Ray's own code against a simulated cloud.

Nothing here re-derives Ray's formulas. Each 5 s tick calls the real
``ray.autoscaler.v2.instance_manager.reconciler.Reconciler.reconcile()`` with Ray's real
``InstanceManager`` (in-memory storage), ``ResourceDemandScheduler``, ``CloudInstanceUpdater`` and
``CloudResourceMonitor``, exactly as ``ray.autoscaler.v2.autoscaler.Autoscaler`` wires them. Only the
outside world is simulated:

- the cloud (``SimCloud``, an ``ICloudInstanceProvider``): launches are executed in batches of
  ``AUTOSCALER_MAX_LAUNCH_BATCH`` like ``NodeProviderAdapter``; each batch is one RunInstances with
  MinCount=1, MaxCount=n, so it fills what the vCPU quota of its market (on-demand or spot, separate
  quotas) still allows and fails (VcpuLimitExceeded) only when not even one instance fits (the rest of
  a partly filled batch stays REQUESTED, as with Ray's AWS provider); a launched instance's Ray node
  registers ``boot_seconds`` later (``max_concurrent_boots`` bounds boots in flight, as the local
  twin does: 1 per core, at least 2);
- the Ray cluster: node states (the head reports ``node:__internal_head__``, or the reconciler never
  scales), pending demand, idle durations, and task placement (each task takes ``cpus`` CPUs for
  ``duration_s`` seconds, placed the moment a slot is free; with ``worker_start_s`` a fresh CPU slot
  first starts a worker process, during which the task holds the CPU without progressing and, for at
  most one tick, is also still reported as pending demand, as measured on the local lab);
- Ray's stopper (draining an idle node is reported DEAD on the next tick);
- the clock: ``time`` is replaced, in the Ray modules that read it, by a simulated clock, so Ray's own
  timeouts (600 s REQUESTED, idle timeouts, availability recovery) fire in simulated time.

Two storage-level shortcuts keep a forecast around a second or two: terminal IM instances
(TERMINATED, ALLOCATION_FAILED) are dropped after each tick, and Ray's in-memory storage is read with a
shallow copy (its values are immutable); neither changes a decision (see ``_World._prune``).

Not modelled: Ray's AWS provider retrying a failed RunInstances up to 5 times (the forecast counts
launch calls, not API calls), spot interruptions, node failures, and anything after a task's sleep
(no data transfer, no object spilling).

This is Ray's private API: Ray is pinned to 2.60.0 (pyproject) and ``check_ray_internals()`` (run by a
unit test and at the start of every forecast) fails loudly if the pieces it drives have changed.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

from raylab.plan.model import Forecast, PlanInput, Round
from raylab.plan.sim import (
    SimClock,
    SimCloud,
    _autoscaling_config,
    _Inst,
    _shallow_storage,
    _SimRayStopper,
    check_ray_internals,
    patched_clock,
)


class _World:
    """The simulated cluster: cloud + Ray nodes + tasks, and one tick of Ray's real reconciler."""

    def __init__(self, plan: PlanInput, clock: SimClock) -> None:
        from ray.autoscaler.v2.instance_manager.instance_manager import InstanceManager
        from ray.autoscaler.v2.instance_manager.instance_storage import InstanceStorage
        from ray.autoscaler.v2.instance_manager.subscribers.cloud_instance_updater import (
            CloudInstanceUpdater,
        )
        from ray.autoscaler.v2.instance_manager.subscribers.cloud_resource_monitor import (
            CloudResourceMonitor,
        )
        from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

        self.plan = plan
        self.clock = clock
        self.specs = {s.name: s for s in (plan.head, *plan.workers)}
        self.cloud = SimCloud(plan, clock, self.specs)
        self.config = _autoscaling_config(plan)
        self.monitor = CloudResourceMonitor()
        self.stopper = _SimRayStopper()
        self.im = InstanceManager(
            instance_storage=InstanceStorage(cluster_id="raylab-plan", storage=_shallow_storage()),
            instance_status_update_subscribers=[CloudInstanceUpdater(cloud_provider=self.cloud),
                                                self.stopper, self.monitor],
        )
        self.scheduler = ResourceDemandScheduler(None)
        self.head = self.cloud.add_head(plan.head)
        self.queued = 0
        self.done = 0
        self.last_end = 0.0
        self.version = 0

    # Ray side ------------------------------------------------------------------------------------
    def _nodes(self) -> list[_Inst]:
        return sorted((i for i in self.cloud.instances.values()
                       if i.terminated_at is None and i.ready and not i.stopped), key=lambda i: i.ready_at)

    def _place(self) -> None:
        c = self.plan.workload.cpus
        if self.queued <= 0:
            return
        for node in self._nodes():
            while self.queued > 0 and node.free_cpus(c) >= c:
                start = 0.0
                if node.workers < len(node.running) + 1:  # no idle worker process: start one
                    node.workers += 1
                    start = self.plan.worker_start_s
                if start > 0:
                    node.double_counted.append(self.clock.now + min(start, self.plan.tick_s))
                node.running.append(self.clock.now + start + self.plan.workload.duration_s)
                self.queued -= 1

    def advance_to(self, t_next: float) -> None:
        """Move the world (boots, task ends, placements) up to ``t_next``, event by event."""
        while True:
            live = [i for i in self.cloud.instances.values() if i.terminated_at is None]
            boots = [i.ready_at for i in live if not i.ready]
            ends = [e for i in live for e in i.running]
            nxt = min(boots + ends, default=math.inf)
            if nxt > t_next:
                break
            self.clock.now = max(self.clock.now, nxt)
            for i in live:
                if not i.ready and i.ready_at <= self.clock.now:
                    i.ready, i.idle_since = True, self.clock.now
                if i.running:
                    before = len(i.running)
                    i.running = [e for e in i.running if e > self.clock.now]
                    if len(i.running) < before:
                        self.done += before - len(i.running)
                        self.last_end = self.clock.now
                    if not i.running:
                        i.idle_since = self.clock.now
            self._place()
        self.clock.now = t_next
        self._place()

    def _ray_state(self) -> Any:
        from ray.core.generated.autoscaler_pb2 import (
            ClusterResourceState,
            NodeState,
            NodeStatus,
            ResourceRequest,
            ResourceRequestByCount,
        )

        self.version += 1
        c = self.plan.workload.cpus
        state = ClusterResourceState(cluster_resource_state_version=self.version,
                                     cluster_session_name="raylab-plan")
        for i in self.cloud.instances.values():
            if not i.ready or i.terminated_at is not None:
                continue
            total = {"CPU": float(i.spec.cpus)}
            if i.kind == "head":
                total["node:__internal_head__"] = 1.0
            avail = dict(total, CPU=float(i.spec.cpus - len(i.running) * c))
            busy = bool(i.running)
            status = NodeStatus.DEAD if i.stopped else (NodeStatus.RUNNING if busy else NodeStatus.IDLE)
            state.node_states.append(NodeState(
                node_id=i.node_id, instance_id=i.cid, ray_node_type_name=i.spec.name,
                instance_type_name=i.spec.instance_type, total_resources=total, available_resources=avail,
                status=status, node_ip_address="10.0.0.1",
                idle_duration_ms=0 if busy or i.stopped else int((self.clock.now - i.idle_since) * 1000)))
        pending = self.queued + self._double_counted()
        if pending > 0:
            state.pending_resource_requests.append(ResourceRequestByCount(
                request=ResourceRequest(resources_bundle={"CPU": float(c)}), count=pending))
        return state

    def _double_counted(self) -> int:
        now = self.clock.now
        n = 0
        for i in self.cloud.instances.values():
            if i.double_counted:
                i.double_counted = [u for u in i.double_counted if u > now]
                n += len(i.double_counted) if i.terminated_at is None else 0
        return n

    def im_instances(self) -> list[Any]:
        from ray.autoscaler.v2.instance_manager.reconciler import Reconciler

        return Reconciler._get_im_instances(self.im)[0]

    def tick(self) -> None:
        from ray.autoscaler.v2.instance_manager.reconciler import Reconciler

        Reconciler.reconcile(
            instance_manager=self.im, scheduler=self.scheduler, cloud_provider=self.cloud,
            cloud_resource_monitor=self.monitor, ray_cluster_resource_state=self._ray_state(),
            non_terminated_cloud_instances=self.cloud.get_non_terminated(),
            cloud_provider_errors=self.cloud.poll_errors(), autoscaling_config=self.config,
        )
        if self.stopper.stop_requested:  # Ray drains the node: DEAD from the next report on
            by_id = {i.instance_id: i.cloud_instance_id for i in self.im_instances()}
            for iid in self.stopper.stop_requested:
                inst = self.cloud.instances.get(by_id.get(iid, ""))
                if inst is not None and not inst.running:
                    inst.stopped = True
            self.stopper.stop_requested.clear()
        self._prune()

    def _prune(self) -> None:
        """Drop instances in a terminal status (TERMINATED, ALLOCATION_FAILED) from the IM storage.

        Ray keeps them forever and deep-copies the whole table on every read (tens of reads per tick),
        which makes a 300-failed-launch run 20x slower; no decision reads a terminal instance (the
        scheduler skips them, the reconciler only reports them), so dropping them changes no outcome.
        """
        from ray.core.generated.instance_manager_pb2 import Instance

        dead = [i.instance_id for i in self.im_instances()
                if i.status in (Instance.TERMINATED, Instance.ALLOCATION_FAILED)]
        if dead:
            self.im._instance_storage.batch_delete_instances(dead)

    # observations --------------------------------------------------------------------------------
    def workers_alive(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for i in self.cloud.instances.values():
            if i.kind == "worker" and i.terminated_at is None:
                out[i.spec.name] += 1
        return out

    def workers_ready(self) -> int:
        return sum(1 for i in self._nodes() if i.kind == "worker")

    def wanted(self) -> dict[str, int]:
        from ray.core.generated.instance_manager_pb2 import Instance

        gone = {Instance.TERMINATED, Instance.ALLOCATION_FAILED, Instance.TERMINATING,
                Instance.RAY_STOPPED, Instance.RAY_STOPPING, Instance.RAY_STOP_REQUESTED}
        out: dict[str, int] = defaultdict(int)
        for i in self.im_instances():
            if i.status not in gone and i.instance_type != self.plan.head.name:
                out[i.instance_type] += 1
        return out

    def pending(self) -> bool:
        from ray.core.generated.instance_manager_pb2 import Instance

        active = {Instance.QUEUED, Instance.REQUESTED, Instance.ALLOCATED, Instance.RAY_INSTALLING}
        return any(i.status in active for i in self.im_instances())


def _quiet_ray_logs() -> None:
    for name in ("ray.autoscaler", "ray.autoscaler.v2"):
        logging.getLogger(name).setLevel(logging.ERROR)


def simulate(plan: PlanInput) -> Forecast:
    """Run Ray's reconciler tick by tick from cluster start until the job is done and scale-down settles."""
    check_ray_internals()
    _quiet_ray_logs()
    clock = SimClock()
    t0 = clock.now
    with patched_clock(clock):
        w = _World(plan, clock)
        floor = {s.name: s.min_workers for s in plan.workers}
        ticks = 0
        # 1. cluster start: reach min_workers (or give up after 30 min, e.g. at a quota wall)
        while True:
            w.tick()
            ticks += 1
            ready_by_type: dict[str, int] = defaultdict(int)
            for i in w._nodes():
                if i.kind == "worker":
                    ready_by_type[i.spec.name] += 1
            settled = all(ready_by_type[n] >= m for n, m in floor.items()) and not w.pending()
            if (ticks > 1 and settled) or clock.now - t0 >= 1800:
                break
            w.advance_to(clock.now + plan.tick_s)
        w.advance_to(clock.now + plan.tick_s)  # the job is submitted between two autoscaler ticks
        job_start = clock.now
        w.queued = plan.workload.tasks
        w._place()
        # 2. the job, then idle scale-down
        rounds: list[Round] = []
        timeline: list[tuple[float, int]] = []
        peak_by_type: dict[str, int] = defaultdict(int)
        desired: dict[str, int] = defaultdict(int)
        makespan: float | None = None
        scale_down: float | None = None
        ncalls_seen = len(w.cloud.calls)
        while clock.now - job_start <= plan.horizon_s:
            w.tick()
            ticks += 1
            t_rel = clock.now - job_start
            calls = w.cloud.calls[ncalls_seen:]
            ncalls_seen = len(w.cloud.calls)
            if calls:
                rounds.append(_round(t_rel, calls))
            for name, n in w.wanted().items():
                desired[name] = max(desired[name], n)
            for name, n in w.workers_alive().items():
                peak_by_type[name] = max(peak_by_type[name], n)
            timeline.append((t_rel, w.workers_ready()))
            if makespan is None and w.done >= plan.workload.tasks:
                makespan = w.last_end - job_start
            if makespan is not None:
                alive = w.workers_alive()
                if all(alive.get(n, 0) <= floor[n] for n in floor) and not w.pending():
                    scale_down = t_rel
                    break
            w.advance_to(clock.now + plan.tick_s)
        # the pre-job rounds (min_workers at start) are part of the story too
        pre = [c for c in w.cloud.calls if c[0] < job_start]
        pre_rounds = [_round(t - job_start, [c for c in pre if c[0] == t])
                      for t in sorted({c[0] for c in pre})]
        end = clock.now
    inst_seconds: dict[str, float] = defaultdict(float)
    for i in w.cloud.instances.values():
        up = (i.terminated_at if i.terminated_at is not None else end) - i.launched_at
        inst_seconds[i.spec.name] += max(60.0, up)  # EC2 per-second billing, 60 s minimum
    return Forecast(
        peak_workers=_peak_total(w, job_start),
        peak_by_type=dict(peak_by_type),
        desired_by_type=dict(desired),
        rounds=pre_rounds + rounds,
        makespan_s=makespan,
        scale_down_s=scale_down,
        job_start_s=job_start - t0,
        failed_launch_calls=sum(1 for c in w.cloud.calls if c[4]),
        instance_seconds=dict(inst_seconds),
        timeline=timeline,
        ticks=ticks,
        tasks_done=w.done,
    )


def _round(t_rel: float, calls: list[tuple[float, str, int, int, int]]) -> Round:
    req: dict[str, int] = defaultdict(int)
    ok: dict[str, int] = defaultdict(int)
    bad: dict[str, int] = defaultdict(int)
    for _, typ, n, launched, failed in calls:
        req[typ] += n
        ok[typ] += launched
        bad[typ] += failed
    return Round(t_s=t_rel, requested=dict(req), launched=dict(ok), failed=dict(bad))


def _peak_total(w: _World, job_start: float) -> int:
    """Most worker instances alive at once (from the cloud's launch/terminate times)."""
    events: list[tuple[float, int]] = []
    for i in w.cloud.instances.values():
        if i.kind != "worker":
            continue
        events.append((i.launched_at, 1))
        if i.terminated_at is not None:
            events.append((i.terminated_at, -1))
    peak = cur = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        cur += d
        peak = max(peak, cur)
    return peak
