"""AWS FIS in the rehearsal: the two experiments stage 6 starts act on the account, as AWS's do.

moto 5.2.6 records FIS templates and experiments but acts on nothing: an experiment moves one state
further at every GetExperiment and ends ``completed``. ``install(hooks)`` patches this process's moto so that
an experiment with one of these actions runs them (``initiating`` -> ``running`` -> ``completed``;
``StopExperiment``: ``stopping`` -> ``stopped``; a target it cannot act on: ``failed``, with why):

- ``aws:ec2:send-spot-instance-interruptions`` (targets: spot instances by ARN, parameter
  ``durationBeforeInterruption``): every target gets a rebalance recommendation at once and the
  interruption notice two minutes before the end (with PT2M, both at once), published in its
  instance metadata through ``hooks``; at the end EC2 terminates it (the cloud rules' shutting-down,
  then terminated), with the state reason ``Server.SpotInstanceTermination``. Every target must be a
  running spot instance, else the experiment fails before it acts.
- ``aws:ec2:api-insufficient-instance-capacity-error`` (targets: IAM roles by ARN; parameters
  ``duration``, ``availabilityZoneIdentifiers`` (names or IDs, comma-separated), ``percentage``): for
  the duration, RunInstances called with that role's credentials (moto's STS knows whose temporary
  keys they are: the instance's role, through the instance metadata) in one of those zones fails
  with ``InsufficientInstanceCapacity`` and AWS's text (on-demand and spot alike), for ``percentage``
  of those calls (deterministically: 50 fails every second call). The zone is the request's subnet's
  (``SubnetId``, a network interface's, or the launch template's), else its ``Placement``, else the
  region's first zone, where moto puts it.

Durations are multiplied by ``scale`` (default ``RAYLAB_REHEARSAL_FIS_SCALE``, else 1.0: AWS's
time), so a test can play PT2M in two seconds. A stop cancels what has not happened yet (the
rehearsal's choice). Other FIS actions keep moto's behaviour. Targets chosen by tags or filters are
not resolved (moto does not resolve them either): such an experiment fails and says so.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raylab.aws.ec2_texts import CAPACITY_CODE, CAPACITY_MESSAGE_OD, CAPACITY_MESSAGE_SPOT
from raylab.rehearsal.patching import Patches, once_under

RECLAIM_ACTION = "aws:ec2:send-spot-instance-interruptions"
CAPACITY_ACTION = "aws:ec2:api-insufficient-instance-capacity-error"
SCALE_ENV = "RAYLAB_REHEARSAL_FIS_SCALE"
NOTICE_LEAD_S = 120.0  # the interruption notice comes two minutes before the interruption
SPOT_REASON = ("Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination")

_RUN = "_raylab_run"  # on a moto Experiment: its _Run
_LOCK = threading.RLock()


def _nothing(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class FisHooks:
    """What the world does for FIS: publish notices in the instances' metadata, and log."""

    notice: Callable[[str, float], None]  # (instance id, seconds until the interruption)
    rebalance: Callable[[str], None] = _nothing  # (instance id)
    log: Callable[[str], None] = _nothing


_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def iso_seconds(text: str) -> float:
    """ISO 8601 duration as FIS takes it ("PT2M", "PT1H30M", "PT90S") in seconds; ValueError else."""
    m = _DURATION.fullmatch(text.strip()) if text else None
    if m is None or not any(m.groups()) or text.strip().endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def time_scale(env: dict[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get(SCALE_ENV, "").strip()
    scale = float(raw) if raw else 1.0
    if not scale > 0:
        raise ValueError(f"{SCALE_ENV} must be a positive number, got {raw!r}")
    return scale


def _arn_parts(arn: str) -> tuple[str, str, str]:
    """(region, account, last path segment) of an ARN."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        raise ValueError(f"not an ARN: {arn!r}")
    return parts[3], parts[4], parts[5].rsplit("/", 1)[-1]


# ---- the capacity windows -------------------------------------------------------------------------


@dataclass
class _Fault:
    roles: frozenset[tuple[str, str]]  # (account, role name)
    zones: frozenset[str]  # AZ names or IDs
    percentage: float
    calls: int = 0

    def hit(self) -> bool:
        """Whether this matching call fails: ``percentage`` of them, spread evenly."""
        self.calls += 1
        p = self.percentage / 100.0
        return math.floor(self.calls * p + 1e-9) > math.floor((self.calls - 1) * p + 1e-9)


@dataclass
class _Active:
    hooks: FisHooks
    scale: float
    faults: list[_Fault] = field(default_factory=list)
    runs: list[_Run] = field(default_factory=list)


_active: list[_Active] = []


def _now_active() -> _Active | None:
    return _active[0] if _active else None


class _Failed(Exception):
    pass


class _Run:
    """One experiment's actions, played on a thread of its own."""

    def __init__(self, exp: Any, active: _Active) -> None:
        self.exp = exp
        self.active = active
        self.status = "initiating"
        self.reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with _LOCK:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, daemon=True, name=f"fis-{self.exp.id[:8]}")
                self._thread.start()

    def request_stop(self) -> None:
        if self.status in ("initiating", "running"):
            self.status = "stopping"
        self._stop.set()

    def _main(self) -> None:
        try:
            plays = [self._plan(name, a) for name, a in self.exp.actions.items()]
        except (_Failed, ValueError, KeyError) as e:
            self.status, self.reason = "failed", str(e)
            self.active.hooks.log(f"FIS experiment {self.exp.id} failed: {e}")
            return
        if self._stop.is_set():
            self.status = "stopped"
            return
        self.status = "running"
        threads = [threading.Thread(target=p, daemon=True) for p in plays]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.status = "stopped" if self._stop.is_set() else "completed"

    def _targets(self, action: dict[str, Any]) -> list[str]:
        arns: list[str] = []
        for target_name in (action.get("targets") or {}).values():
            target = self.exp.targets.get(target_name) or {}
            if not target.get("resourceArns"):
                raise _Failed(f"target {target_name}: the rehearsal resolves targets by resourceArns only")
            arns += target["resourceArns"]
        return arns

    def _plan(self, name: str, action: dict[str, Any]) -> Callable[[], None]:
        action_id = action.get("actionId")
        params = action.get("parameters") or {}
        scale = self.active.scale
        if action_id == RECLAIM_ACTION:
            notice_s = iso_seconds(params["durationBeforeInterruption"]) * scale
            instances = [_spot_instance(arn) for arn in self._targets(action)]
            return lambda: self._reclaim(instances, notice_s)
        if action_id == CAPACITY_ACTION:
            roles = frozenset(_arn_parts(a)[1:] for a in self._targets(action))
            zones = frozenset(z.strip() for z in str(params["availabilityZoneIdentifiers"]).split(",")
                              if z.strip())
            pct, window_s = float(params.get("percentage", 100)), iso_seconds(params["duration"]) * scale
            if not (zones and 0 < pct <= 100):
                raise _Failed(f"action {name}: availabilityZoneIdentifiers and percentage 1..100 needed")
            fault = _Fault(roles, zones, pct)
            return lambda: self._capacity(fault, window_s)
        return lambda: None  # moto's own: done at once

    def _reclaim(self, instances: list[Any], seconds: float) -> None:
        hooks, end = self.active.hooks, time.monotonic() + seconds
        lead = NOTICE_LEAD_S * self.active.scale
        for inst in instances:
            hooks.rebalance(inst.id)
        if self._stop.wait(max(0.0, seconds - lead)):
            return
        for inst in instances:
            hooks.notice(inst.id, max(0.0, end - time.monotonic()))
            hooks.log(f"FIS: spot interruption notice for {inst.id}")
        if self._stop.wait(max(0.0, end - time.monotonic())):
            return
        for inst in instances:
            _interrupt(inst)
            hooks.log(f"FIS: {inst.id} interrupted (spot)")

    def _capacity(self, fault: _Fault, seconds: float) -> None:
        with _LOCK:
            self.active.faults.append(fault)
        self.active.hooks.log(f"FIS: RunInstances by {sorted(r for _, r in fault.roles)} in "
                              f"{sorted(fault.zones)} refused for {seconds:.0f} s")
        try:
            self._stop.wait(seconds)
        finally:
            with _LOCK:
                if fault in self.active.faults:
                    self.active.faults.remove(fault)


def _spot_instance(arn: str) -> Any:
    from moto.ec2.models import ec2_backends

    region, account, iid = _arn_parts(arn)
    try:
        inst = ec2_backends[account][region].get_instance(iid)
    except Exception as e:  # noqa: BLE001 - moto's InvalidInstanceID.NotFound
        raise _Failed(f"target {arn}: no such instance") from e
    state = inst._state.name  # noqa: SLF001 - moto's model
    if inst.lifecycle != "spot" or state != "running":
        raise _Failed(f"target {arn}: not a running spot instance ({inst.lifecycle or 'on-demand'}, {state})")
    return inst


def _interrupt(inst: Any) -> None:
    """EC2 reclaims a spot instance: TerminateInstances' path (the cloud rules' shutting-down)."""
    from moto.ec2.models.instances import StateReason

    if inst._state.name in ("shutting-down", "terminated"):  # noqa: SLF001 - moto's model
        return
    inst.ec2_backend.terminate_instances([inst.id])
    code, message = SPOT_REASON
    inst.state_reason = StateReason(message, code)


# ---- RunInstances under a capacity window ---------------------------------------------------------


def _caller_role(resp: Any) -> tuple[str, str] | None:
    """(account, role name) whose temporary credentials signed this request, or None."""
    from moto.sts.models import sts_backends
    from moto.utilities.utils import get_partition

    key = resp.get_access_key()
    partition = get_partition(resp.region)
    for account in {resp.current_account, *dict.keys(sts_backends)}:
        backends = dict.get(sts_backends, account)
        backend = dict.get(backends, partition) if backends is not None else None
        assumed = backend.get_assumed_role_from_access_key(key) if backend is not None else None
        if assumed is not None:
            _, acct, name = _arn_parts(assumed.role_arn)
            return acct, name
    return None


def _request_zone(resp: Any) -> tuple[str | None, str | None]:
    """(AZ name, AZ id) where this RunInstances would place its instances."""
    backend = resp.ec2_backend
    lt_data: dict[str, Any] = {}
    if resp._get_param("LaunchTemplate"):
        try:
            lt_data = backend._get_template_from_args(resp._get_param("LaunchTemplate")).data or {}
        except Exception:  # noqa: BLE001 - moto answers the bad template itself
            return None, None
    nics = resp._get_param("NetworkInterfaces") or lt_data.get("NetworkInterfaces") or []
    subnet_id = resp._get_param("SubnetId") or next(
        (n.get("SubnetId") for n in nics if n.get("SubnetId")), None)
    if subnet_id:
        try:
            subnet = backend.get_subnet(subnet_id)
        except Exception:  # noqa: BLE001 - moto answers the unknown subnet itself
            return None, None
        return subnet.availability_zone, subnet.availability_zone_id
    name = (resp._get_param("Placement.AvailabilityZone")
            or (lt_data.get("Placement") or {}).get("AvailabilityZone") or resp.region + "a")
    zone_id = next((z.zone_id for z in backend.describe_availability_zones() if z.name == name), None)
    return name, zone_id


def _refusal(resp: Any) -> str | None:
    """AWS's InsufficientInstanceCapacity text when a capacity window refuses this call, else None."""
    active = _now_active()
    if active is None or not active.faults:
        return None
    role = _caller_role(resp)
    if role is None:
        return None
    name, zone_id = _request_zone(resp)
    with _LOCK:
        fault = next((f for f in active.faults if role in f.roles and ({name, zone_id} & f.zones)), None)
        if fault is None or not fault.hit():
            return None
    if resp._get_param("InstanceMarketOptions.MarketType") == "spot":
        return CAPACITY_MESSAGE_SPOT
    return CAPACITY_MESSAGE_OD.format(itype=resp._get_param("InstanceType") or "m1.small", az=name)


# ---- install ----------------------------------------------------------------------------------------


def install(hooks: FisHooks, scale: float | None = None) -> Callable[[], None]:
    """Patch this process's moto (FIS and RunInstances); returns the uninstall. A second install
    raises RuntimeError."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.fis.models import Experiment, FISBackend

    with _LOCK:
        if _active:
            raise RuntimeError("the rehearsal's FIS is already installed in this process: uninstall it first")
        active = _Active(hooks, time_scale() if scale is None else scale)
        if not active.scale > 0:
            raise ValueError(f"scale must be positive, got {active.scale}")
        _active.append(active)
    patches = Patches()

    orig_init = Experiment.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        ids = {a.get("actionId") for a in (self.actions or {}).values()}
        if ids & {RECLAIM_ACTION, CAPACITY_ACTION}:
            run = _Run(self, active)
            self.__dict__[_RUN] = run
            active.runs.append(run)

    orig_status: property = Experiment.status  # type: ignore[assignment]  # ManagedState's property, read from the class

    def get_status(self: Any) -> str | None:
        run = self.__dict__.get(_RUN)
        return run.status if run is not None else orig_status.fget(self)  # type: ignore[misc]  # property's getter

    def set_status(self: Any, value: str) -> None:
        run = self.__dict__.get(_RUN)
        if run is None:
            orig_status.fset(self, value)  # type: ignore[misc]  # property's setter
        elif value == "stopping":
            run.request_stop()

    orig_to_dict = Experiment.to_dict

    def to_dict(self: Any, tags: dict[str, str] | None = None) -> dict[str, Any]:
        d = orig_to_dict(self, tags=tags)
        run = self.__dict__.get(_RUN)
        if run is not None and run.reason:
            d["state"]["reason"] = run.reason
        return d

    orig_start = FISBackend.start_experiment

    def start_experiment(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = orig_start(self, *args, **kwargs)
        run = self.experiments[out["id"]].__dict__.get(_RUN)
        if run is not None:
            run.start()
        return out

    orig_run = EC2Response.run_instances

    def run_instances(self: Any) -> Any:
        refused = _refusal(self)
        if refused is not None:
            active.hooks.log(f"FIS: RunInstances refused ({CAPACITY_CODE})")
            raise EC2ClientError(CAPACITY_CODE, refused)
        return orig_run(self)

    patches.set(Experiment, "__init__", init)
    patches.set(Experiment, "status", property(get_status, set_status))
    patches.set(Experiment, "to_dict", to_dict)
    patches.set(FISBackend, "start_experiment", start_experiment)
    patches.set(EC2Response, "run_instances", run_instances)

    @once_under(_LOCK)
    def uninstall() -> None:
        for run in active.runs:
            run.request_stop()
        active.faults.clear()
        patches.restore()
        _active.remove(active)

    return uninstall
