"""State under ``.raylab/``: what every stage created, so each command can be re-run and resumes.

``state.json`` holds one section per stage plus the processes raylab started (by PID and
process group). Typed records here name what a section's readers may rely on
(``State.cluster()``); they read any older file (unknown keys are ignored, missing ones take their
default). A lock file refuses a second mutating command while one runs. Writes are atomic (write +
rename) so a killed run never leaves half a file. Credentials never go here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from raylab.errors import RaylabError

SECRET_MARKERS = ("secret", "password", "token", "session_key", "access_key")


def _scrub(obj: Any) -> Any:
    """Drop values under keys that look like credentials (defence in depth)."""
    if isinstance(obj, dict):
        return {
            k: ("<redacted>" if any(m in k.lower() for m in SECRET_MARKERS) else _scrub(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


@dataclass(frozen=True)
class ClusterRecord:
    """Section ``cluster``: written by stage 3 and the target's ``cluster_up``, read by every later
    stage. A target's own keys (local: head_pid, temp_root, ports; aws: ssh_user, head_ip) stay in
    the section for that target to read; they are not part of this record."""

    cluster_name: str = ""
    config_path: str = ""  # the rendered YAML the running cluster uses
    scenario: str = ""
    scale: int | None = None  # the lab scale stage 3 rendered (stage 4 runs at it)
    node_python: str | None = None  # the nodes' Python minor stage 3 set up
    head_instance_id: str = ""
    gcs_address: str = ""  # local target only (aws: reached through the bastion)
    dashboard_url: str = ""
    head_ready_s: float | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ClusterRecord:
        kw = {f.name: d[f.name] for f in fields(cls) if d.get(f.name) is not None}
        if "scale" in kw:
            kw["scale"] = int(kw["scale"])
        return cls(**kw)

    def required(self) -> ClusterRecord:
        """This record, or a RaylabError when no cluster is recorded (stage 3 has not run)."""
        if not self.config_path or not self.cluster_name:
            raise RaylabError("no running cluster recorded in .raylab/", "run `raylab up` first (stages 1-3)")
        return self


@dataclass(frozen=True)
class NetworkRecord:
    """Section ``network``: stage 1 writes the VPC stack's outputs (CloudFormation's names) and the
    stack's name; stage 3 renders from ``outputs``, teardown and the AWS target's SSH read the rest."""

    outputs: Mapping[str, str] = field(default_factory=dict)  # every stack output, as flat strings
    stack_name: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NetworkRecord:
        return cls({str(k): str(v) for k, v in d.items() if k != "stack_name" and v is not None},
                   str(d.get("stack_name") or ""))

    @property
    def vpc_id(self) -> str:
        return self.outputs.get("VpcId", "")

    @property
    def bastion_instance_id(self) -> str:
        return self.outputs.get("BastionInstanceId", "")

    @property
    def bastion_public_ip(self) -> str:
        return self.outputs.get("BastionPublicIp", "")


class State:
    def __init__(self, root: Path, owner: Mapping[str, str] | None = None) -> None:
        """``owner``: the lab id and target of the command writing (saved as section ``lab``, so a
        later command knows which lab this directory holds: ``labid.lab_for_workdir``)."""
        self.root = root
        self.path = root / "state.json"
        self.owner = dict(owner) if owner else None

    def ensure_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        return self.root

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RaylabError(
                f"state file {self.path} is unreadable: {e}",
                f"move it aside (mv {self.path} {self.path}.bad) and run `raylab down` to clean up",
            ) from e

    def save(self, data: dict[str, Any]) -> None:
        if self.owner is not None:
            data["lab"] = self.owner
        self.ensure_dir()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_scrub(data), indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path)

    def get(self, section: str) -> dict[str, Any]:
        return dict(self.load().get(section, {}))

    def cluster(self) -> ClusterRecord:
        """Section ``cluster`` as a typed record (empty fields: no cluster recorded)."""
        return ClusterRecord.from_json(self.get("cluster"))

    def network(self) -> NetworkRecord:
        """Section ``network`` as a typed record (empty: stage 1 has not run)."""
        return NetworkRecord.from_json(self.get("network"))

    def put(self, section: str, value: dict[str, Any]) -> None:
        data = self.load()
        data[section] = value
        self.save(data)

    def update(self, section: str, **values: Any) -> dict[str, Any]:
        data = self.load()
        cur = dict(data.get(section, {}))
        cur.update(values)
        data[section] = cur
        self.save(data)
        return cur

    def drop(self, section: str) -> None:
        data = self.load()
        if section in data:
            del data[section]
            self.save(data)

    # --- processes raylab started ---------------------------------------------------
    def record_process(self, name: str, pid: int, cmd: list[str] | str, **extra: Any) -> None:
        procs = self.get("processes")
        procs[name] = {"pid": pid, "pgid": pid, "cmd": cmd, "started": time.time(), **extra}
        self.put("processes", procs)

    def forget_process(self, name: str) -> None:
        procs = self.get("processes")
        procs.pop(name, None)
        self.put("processes", procs)

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Refuse a second mutating raylab command in the same working directory."""
        self.ensure_dir()
        fh = open(self.root / "lock", "a+")  # noqa: SIM115 - held for the block
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another raylab command"
                raise RaylabError(
                    f"{holder} is already running in {self.root.parent}",
                    "wait for it to finish, or stop it (Ctrl-C) and re-run; nothing was changed",
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"`raylab {command}` (pid {os.getpid()})")
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (kill 0 answers for zombies)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # state is the field after the ")" that closes the command name
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
