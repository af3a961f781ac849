"""The cloud rules: moto, patched in this process, refuses and delays what a real account does.

``install(rules, console)`` patches moto's classes (the rehearsal's moto server runs in this process)
and returns a function that undoes every patch. What changes, and the text AWS itself returns:

- Every AMI of ``raylab.rehearsal.catalog`` exists in every region's EC2 backend, with its name, root
  device and a root snapshot of the catalog's size; the catalog's public SSM parameters name them.
  Moto's own images and parameters stay (AL2023's parameter then points at the catalog's AMI).
- RunInstances on a catalog AMI with a root ``VolumeSize`` below the snapshot: ``InvalidBlockDeviceMapping``.
  A launch with no root mapping gets the AMI's root device at the snapshot's size (moto: 8 GB /dev/sda1).
- RunInstances naming an instance profile younger than ``iam_profile_delay_s``: ``InvalidParameterValue``
  (IAM is eventually consistent; EC2 says the profile is invalid).
- TerminateInstances: ``shutting-down`` for ``shutdown_hold_s``, then ``terminated`` (settled lazily, at
  the next EC2 call). Until then the instance keeps its ENIs, volumes and profile association.
- DeleteSecurityGroup / DeleteSubnet while an instance that is not ``terminated`` uses the group or the
  subnet: ``DependencyViolation`` (as AWS, for running and stopped ones too; moto refuses neither).
- GetConsoleOutput: ``console(instance_id)``, base64-encoded as EC2 returns it, when it gives a string.

A stack deletion terminates its instances at once (CloudFormation waits for ``terminated`` before it
deletes groups and subnets). Nothing here opens a connection.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from raylab.rehearsal import catalog
from raylab.rehearsal.patching import Patches, once_under

Console = Callable[[str], str | None]

_HOLD = "_raylab_shutdown_until"  # on a moto Instance: when its shutdown ends, in _now() seconds
_ROOT_GB = "_raylab_root_gb"  # on a moto Ami: the catalog's root snapshot size
_REPLACED_AMIS = "_raylab_replaced_amis"  # on an EC2 backend: ami id -> moto's own Ami it replaced, or None
_REPLACED_PARAMS = "_raylab_replaced_params"  # on an SSM ParameterDict: name -> moto's versions, or None

_LOCK = threading.RLock()


def _now() -> float:
    """The rules' clock: wall-clock seconds, as moto's timestamps (tests move it forward)."""
    return time.time()

_active: list[Patches] = []


@dataclass(frozen=True)
class CloudRules:
    # IAM is eventually consistent: `ray up` right after Terraform was refused on AWS (finding 13); a lab
    # reaches the head's launch ~20 s after Terraform, so 8 s never refused it and the wait went untested
    iam_profile_delay_s: float = 30.0
    # shutting-down this long, holding ENIs (AWS: tens of seconds to a minute). 60 s outlasts the
    # `terraform destroy` between `ray down` and the stack delete: a sweep that takes shutting-down for
    # gone meets DependencyViolation, as on AWS (finding 11)
    shutdown_hold_s: float = 60.0


def install(rules: CloudRules, console: Console | None = None) -> Callable[[], None]:
    """Patch moto in this process; the returned function undoes it. A second install raises RuntimeError."""
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses import EC2Response
    from moto.ssm.models import ParameterDict

    with _LOCK:
        if _active:
            raise RuntimeError("the cloud rules are already installed in this process: uninstall them first")
        p = Patches()
        _active.append(p)
        orig_load = p.set(AmiBackend, "_load_amis", _load_amis_with_catalog)
        orig_bdm = p.set(Ami, "block_device_mappings", property(_ami_bdm))
        orig_params = p.set(ParameterDict, "_check_loading_status", _params_with_catalog)
        orig_run = p.set(EC2Backend, "run_instances", _run_instances)
        orig_terminate = p.set(Instance, "terminate", _terminate)
        p.set(Instance, "delete", _delete_now)
        orig_defaults = p.set(Instance, "setup_defaults", _setup_defaults)
        orig_del_sg = p.set(EC2Backend, "delete_security_group", _delete_security_group)
        orig_del_subnet = p.set(EC2Backend, "delete_subnet", _delete_subnet)
        orig_call = p.set(EC2Response, "call_action", _call_action)
        orig_console = p.set(EC2Response, "get_console_output", _get_console_output)
        _Orig.set(load=orig_load, bdm=orig_bdm.fget, params=orig_params, run=orig_run,
                  terminate=orig_terminate, defaults=orig_defaults,
                  del_sg=orig_del_sg, del_subnet=orig_del_subnet, call=orig_call, console=orig_console)
        _Orig.rules, _Orig.console_fn = rules, console
        for backend in _live_ec2_backends():
            _add_catalog_amis(backend)

    @once_under(_LOCK)
    def uninstall() -> None:
        for backend in _live_ec2_backends():
            for inst in list(_instances(backend)):
                _finish_shutdown(inst)
            _remove_catalog_amis(backend)
        for params in _live_parameter_dicts():
            _remove_catalog_params(params)
        p.restore()
        _active.remove(p)

    return uninstall


class _Orig:
    """moto's own functions, as they were when ``install`` ran, and the rules in force."""

    fns: dict[str, Any] = {}
    rules: CloudRules = CloudRules()
    console_fn: Console | None = None

    @classmethod
    def set(cls, **fns: Any) -> None:
        cls.fns = dict(fns)

    @classmethod
    def call(cls, fn: str, /, *args: Any, **kwargs: Any) -> Any:
        return cls.fns[fn](*args, **kwargs)


# ---- moto's backends, as they are now -------------------------------------------------------------


def _live_ec2_backends() -> Iterator[Any]:
    from moto.ec2.models import ec2_backends

    for account in list(dict.values(ec2_backends)):
        yield from list(dict.values(account))


def _live_parameter_dicts() -> Iterator[Any]:
    from moto.ssm.models import ssm_backends

    for account in list(dict.values(ssm_backends)):
        for backend in list(dict.values(account)):
            params = backend.__dict__.get("_parameters")
            if params is not None:
                yield params


def _instances(backend: Any) -> Iterator[Any]:
    for reservation in list(backend.reservations.values()):
        yield from list(reservation.instances)


# ---- AMIs and their SSM parameters --------------------------------------------------------------


def _load_amis_with_catalog(self: Any) -> None:
    _Orig.call("load", self)
    _add_catalog_amis(self)


def _add_catalog_amis(backend: Any) -> None:
    from moto.ec2.models.amis import Ami

    if _REPLACED_AMIS in backend.__dict__:
        return
    replaced: dict[str, Any] = {}
    for cat in catalog.CATALOG:
        ami_id = cat.id_in(backend.region_name)
        if ami_id is None:
            continue
        ami = Ami(backend, ami_id, name=cat.name, description=cat.name, owner_id=cat.owner_id,
                  owner_alias="amazon" if cat.owner_id != "136693071363" else None, public=True,
                  virtualization_type="hvm", architecture="x86_64", hypervisor="xen",
                  root_device_type="ebs", root_device_name=cat.root_device,
                  region_name=f"{backend.region_name}a")
        ami.ebs_snapshot.volume.size = cat.snapshot_gb  # DescribeSnapshots' VolumeSize
        setattr(ami, _ROOT_GB, cat.snapshot_gb)
        replaced[ami_id] = backend.amis.get(ami_id)
        backend.amis[ami_id] = ami
    setattr(backend, _REPLACED_AMIS, replaced)


def _remove_catalog_amis(backend: Any) -> None:
    replaced = backend.__dict__.pop(_REPLACED_AMIS, None) or {}
    for ami_id, before in replaced.items():
        if before is None:
            backend.amis.pop(ami_id, None)
        else:
            backend.amis[ami_id] = before


def _ami_bdm(self: Any) -> list[dict[str, Any]]:
    mappings: list[dict[str, Any]] = _Orig.call("bdm", self)
    gb = getattr(self, _ROOT_GB, None)
    if gb is not None:
        for m in mappings:
            if m["DeviceName"] == self.root_device_name:
                m["Ebs"].update(VolumeSize=gb, DeleteOnTermination=True)
    return mappings


def _catalog_ami(backend: Any, ami_id: str | None) -> Any:
    """moto's Ami for ``ami_id`` if it is a catalog AMI in this backend, else None."""
    ami = backend.amis.get(ami_id) if ami_id else None
    return ami if ami is not None and getattr(ami, _ROOT_GB, None) is not None else None


def _params_with_catalog(self: Any, key: str) -> None:
    _Orig.call("params", self, key)
    if _REPLACED_PARAMS in self.__dict__:
        return
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter

    make: Any = Parameter  # moto's class is abstract to mypy (CloudFormation hooks), concrete at runtime
    replaced: dict[str, Any] = {}
    setattr(self, _REPLACED_PARAMS, replaced)  # before loading: loading calls back into this method
    if not self.latest_amis_loaded:  # moto's own AL2023 parameter first, so that ours replaces it
        self._load_latest_amis()
        self.latest_amis_loaded = True
    for cat in catalog.CATALOG:
        ami_id = cat.id_in(self.region_name)
        if cat.ssm_parameter is None or ami_id is None:
            continue
        before = dict.get(self, cat.ssm_parameter)
        replaced[cat.ssm_parameter] = before
        last = before[-1] if before else None
        dict.__setitem__(self, cat.ssm_parameter, [make(
            account_id=self.account_id, name=cat.ssm_parameter, value=ami_id, parameter_type="String",
            description=None, allowed_pattern=None, keyid=None,
            last_modified_date=last.last_modified_date if last else utcnow(),
            version=last.version if last else 1, data_type="text")])


def _remove_catalog_params(params: Any) -> None:
    replaced = params.__dict__.pop(_REPLACED_PARAMS, None) or {}
    for name, before in replaced.items():
        if before is None:
            dict.pop(params, name, None)
        else:
            dict.__setitem__(params, name, before)


# ---- RunInstances --------------------------------------------------------------------------------


def _ec2_error(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: list[str],
                   **kwargs: Any) -> Any:
    _settle(self)
    ami_id = image_id
    if not ami_id and kwargs.get("launch_template"):
        ami_id = self._get_template_from_args(kwargs["launch_template"]).image_id
    ami = _catalog_ami(self, ami_id)
    if ami is not None:
        _check_root_volume(self, ami, kwargs)
    _check_profile_age(self, kwargs)
    reservation = _Orig.call("run", self, image_id, count, user_data, security_group_names, **kwargs)
    if ami is not None:
        for inst in reservation.instances:
            _ensure_root_volume(inst, ami)
    return reservation


def _root_mappings(backend: Any, ami: Any, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    mappings = kwargs.get("block_device_mappings")
    if mappings is None and kwargs.get("launch_template"):
        mappings = backend._get_template_from_args(kwargs["launch_template"]).data.get("BlockDeviceMappings")
    return [m for m in mappings or [] if m.get("DeviceName") == ami.root_device_name]


def _check_root_volume(backend: Any, ami: Any, kwargs: dict[str, Any]) -> None:
    need = getattr(ami, _ROOT_GB)
    for m in _root_mappings(backend, ami, kwargs):
        size = (m.get("Ebs") or {}).get("VolumeSize")
        if size is not None and int(size) < need:
            # AWS's own text, two spaces before "snapshot" included
            raise _ec2_error("InvalidBlockDeviceMapping",
                             f"Volume of size {int(size)}GB is smaller than  snapshot "
                             f"'{ami.ebs_snapshot.id}', expect size >= {need}GB")


def _check_profile_age(backend: Any, kwargs: dict[str, Any]) -> None:
    delay = _Orig.rules.iam_profile_delay_s
    arn: str | None = kwargs.get("iam_instance_profile_arn")
    name: str | None = kwargs.get("iam_instance_profile_name")
    if delay <= 0 or not (arn or name):
        return
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    iam = iam_backends[backend.account_id][get_partition(backend.region_name)]
    if arn:  # the ARN wins when both are given, as in moto
        profile, field, value, what = iam.get_instance_profile_by_arn(arn), "arn", arn, "ARN"
    elif name:
        profile, field, value, what = iam.get_instance_profile(name), "name", name, "name"
    created = profile.create_date.replace(tzinfo=UTC).timestamp()  # moto: naive UTC
    if _now() - created < delay:
        raise _ec2_error("InvalidParameterValue",
                         f"Value ({value}) for parameter iamInstanceProfile.{field} is invalid. "
                         f"Invalid IAM Instance Profile {what}")


def _setup_defaults(self: Any) -> None:
    """No BlockDeviceMappings: a catalog AMI's root device, at its snapshot's size (moto: 8 GB /dev/sda1)."""
    ami = _catalog_ami(self.ec2_backend, self.image_id)
    if ami is None:
        _Orig.call("defaults", self)
    # else: _ensure_root_volume adds the root once the instance is built


def _ensure_root_volume(inst: Any, ami: Any) -> None:
    gb = getattr(ami, _ROOT_GB)
    bdm = inst.block_device_mapping
    if ami.root_device_name in bdm:
        volume = inst.ec2_backend.get_volume(bdm[ami.root_device_name].volume_id)
        if not volume.size:
            volume.size = gb  # a root mapping without VolumeSize gets the snapshot's size
        return
    inst.add_block_device(gb, ami.root_device_name, ami.ebs_snapshot.id, False, True, None, None)


# ---- TerminateInstances and what a shutting-down instance still holds ----------------------------


def _terminate(self: Any) -> Any:
    with _LOCK:
        if _HOLD in self.__dict__ and self._state.name == "shutting-down":
            return copy.copy(self._state)
        hold = _Orig.rules.shutdown_hold_s
        if hold <= 0 or self._state.name == "terminated":
            return _Orig.call("terminate", self)
        from moto.core.utils import utcnow
        from moto.ec2.models.instances import StateReason

        before = copy.copy(self._state)
        self._state.name, self._state.code = "shutting-down", 32
        self._reason = f"User initiated ({utcnow().strftime('%Y-%m-%d %H:%M:%S UTC')})"
        self.state_reason = StateReason("Client.UserInitiatedShutdown: User initiated shutdown",
                                        "Client.UserInitiatedShutdown")
        setattr(self, _HOLD, _now() + hold)
        return before


def _delete_now(self: Any, account_id: str, region: str) -> None:
    """CloudFormation's delete: CloudFormation itself waits until the instance is terminated."""
    with _LOCK:
        self.__dict__.pop(_HOLD, None)
        _Orig.call("terminate", self)


def _finish_shutdown(inst: Any) -> None:
    with _LOCK:
        if inst.__dict__.pop(_HOLD, None) is not None and inst._state.name == "shutting-down":
            _Orig.call("terminate", inst)


def _settle(backend: Any) -> None:
    """Instances whose hold has passed become terminated."""
    now = _now()
    with _LOCK:
        for inst in _instances(backend):
            until = inst.__dict__.get(_HOLD)
            if until is not None and now >= until:
                _finish_shutdown(inst)


def _holders(backend: Any) -> Iterator[Any]:
    """Instances that still hold network interfaces: every one not yet terminated."""
    for inst in _instances(backend):
        if inst._state.name != "terminated":
            yield inst


def _delete_security_group(self: Any, name: str | None = None, group_id: str | None = None) -> None:
    _settle(self)
    group = self.get_security_group_from_id(group_id) if group_id else (
        self.get_security_group_by_name_or_id(name) if name else None)
    if group is not None:
        for inst in _holders(self):
            used = {g.id for g in inst.security_groups}
            for nic in inst.nics.values():
                used.update(g.id for g in nic.group_set)
            if group.id in used:
                raise _ec2_error("DependencyViolation", f"resource {group.id} has a dependent object")
    _Orig.call("del_sg", self, name=name, group_id=group_id)


def _delete_subnet(self: Any, subnet_id: str) -> Any:
    _settle(self)
    for inst in _holders(self):
        subnets = {inst.subnet_id} | {nic.subnet.id for nic in inst.nics.values() if nic.subnet}
        if subnet_id in subnets:
            raise _ec2_error("DependencyViolation",
                             f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
    return _Orig.call("del_subnet", self, subnet_id)


# ---- the EC2 API's entry and GetConsoleOutput -----------------------------------------------------


def _call_action(self: Any) -> Any:
    if getattr(self, "region", None):
        _settle(self.ec2_backend)
    return _Orig.call("call", self)


def _get_console_output(self: Any) -> Any:
    fn = _Orig.console_fn
    instance_id = self._get_param("InstanceId")
    text = fn(instance_id) if fn is not None else None
    if text is None:
        return _Orig.call("console", self)
    from moto.core.responses import ActionResult
    from moto.core.types import Base64EncodedString
    from moto.core.utils import utcnow

    instance = self.ec2_backend.get_instance(instance_id)  # InvalidInstanceID.NotFound as moto says it
    return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                         "Output": Base64EncodedString.from_raw_string(text)})
