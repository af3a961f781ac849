"""Run the real ``terraform`` binary for stage 2 (identity).

Why a subprocess and not the PyPI ``python-terraform`` wrapper: that package (0.10.1, 2019) is
unmaintained, and its ``destroy()`` passes ``-force``, a flag Terraform >= 0.15 rejects, so
``raylab down`` would fail on every current Terraform. Calling the binary directly with
``-input=false -no-color`` and reading outputs with ``output -json`` is short and keeps the
exact behaviour Terraform documents.

Layout: every lab gets its own working directory ``.raylab/terraform/<lab>/`` holding a copy of
``infra/terraform/`` (re-synced before each run), its ``.terraform/`` folder, lock file, state
and a log, so two labs in one room never share state. Providers come from a local filesystem
mirror when one exists (the folder above ``registry.terraform.io``), through a CLI config file
written under ``.raylab/`` and selected with ``TF_CLI_CONFIG_FILE``. Credentials travel only in
the environment; nothing secret is written to a file.

Killed at any moment: terraform runs in its own session, recorded before it runs
(:mod:`raylab.procs`), with a parent-death signal (SIGTERM: terraform stops gracefully, saves its
state and releases its lock). Its output goes to the log file, not a pipe, so a dead raylab never
makes it die of SIGPIPE half-way (which would orphan its provider). Ctrl-C stops its group SIGINT
first. Before each run, a terraform of this lab that an earlier raylab run left behind is stopped
(pid and start time checked); commands that lock the state wait ``-lock-timeout`` for a lock, and a
lock held by anything else is named in one line (holder pid from /proc/locks, who/when/operation
from ``.terraform.tfstate.lock.info``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab import procs, proctable
from raylab.errors import RaylabError

if TYPE_CHECKING:
    from raylab.ui import UI

MIRROR_ENV = "RAYLAB_TF_MIRROR"
# Where provider mirrors usually live (searched in order after $RAYLAB_TF_MIRROR).
LIKELY_MIRROR_ROOTS: tuple[str, ...] = (
    "/opt/tf-plugins",
    "/opt/terraform/plugins",
    "/opt/terraform-plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
)
# Parents searched one level deep for any folder that holds ``registry.terraform.io``.
SEARCH_PARENTS: tuple[str, ...] = ("/opt", "/usr/local/share", "/usr/share", "~")

LOCK_TIMEOUT = "60s"
# Commands that take the state lock (and so accept -lock-timeout).
_LOCKING = ("apply", "destroy", "import")
# Go's garbage collector target for terraform and the AWS provider (Go's default: 100). The provider
# builds its whole schema (thousands of resources) on every start, four starts per command, and most
# of that CPU was collecting. Measured (apply + destroy of infra/terraform against moto, 2 cores):
# 41-44 CPU-s and 35-38 s with Go's default, 26-31 CPU-s and 29-33 s with 400; the provider's peak
# memory 450 MB. GOGC=off was slower (37-40 CPU-s).
GOGC = "400"
# Lines of terraform's output worth showing live (the rest goes to the log only).
_PROGRESS_MARKERS = (
    ": Creating",
    ": Creation complete",
    ": Modifying",
    ": Modifications complete",
    ": Destroying",
    ": Destruction complete",
    ": Refreshing",
    "Apply complete",
    "Destroy complete",
    "No changes.",
    "Error:",
)


def is_mirror(path: Path) -> bool:
    """A filesystem mirror root holds ``registry.terraform.io/hashicorp/aws``."""
    return (path / "registry.terraform.io" / "hashicorp" / "aws").is_dir()


def mirror_candidates(env: Mapping[str, str]) -> list[Path]:
    """Folders to try, in order: the env override, likely roots, then one level under parents."""
    out: list[Path] = []
    if env.get(MIRROR_ENV):
        out.append(Path(env[MIRROR_ENV]).expanduser())
    out += [Path(p).expanduser() for p in LIKELY_MIRROR_ROOTS]
    for parent in SEARCH_PARENTS:
        p = Path(parent).expanduser()
        try:
            out += sorted(c for c in p.iterdir() if c.is_dir())
        except OSError:
            continue
    return out


def find_mirror(env: Mapping[str, str] | None = None) -> Path | None:
    """The provider mirror root, or None. An explicit $RAYLAB_TF_MIRROR that is not one is an error."""
    env = os.environ if env is None else env
    explicit = env.get(MIRROR_ENV)
    if explicit and not is_mirror(Path(explicit).expanduser()):
        raise RaylabError(
            f"${MIRROR_ENV}={explicit!r} is not a Terraform provider mirror",
            "point it at the folder that contains registry.terraform.io/hashicorp/aws/",
        )
    for c in mirror_candidates(env):
        if is_mirror(c):
            return c.resolve()
    return None


def cli_config_text(mirror: Path) -> str:
    """A Terraform CLI config installing every registry provider from ``mirror`` only."""
    return (
        "# written by raylab: providers come from the local filesystem mirror only\n"
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/*/*"]\n'
        "  }\n"
        "  direct {\n"
        '    exclude = ["registry.terraform.io/*/*"]\n'
        "  }\n"
        "}\n"
    )


def find_terraform(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    exe = shutil.which("terraform", path=env.get("PATH"))
    if exe is None:
        raise RaylabError(
            "terraform is not on PATH",
            "install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) and re-run",
        )
    return exe


def var_args(variables: Mapping[str, str]) -> list[str]:
    return [a for k, v in sorted(variables.items()) for a in ("-var", f"{k}={v}")]


def parse_outputs(text: str) -> dict[str, str]:
    """``terraform output -json`` -> flat {name: value as string}."""
    raw = json.loads(text or "{}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        val = v.get("value") if isinstance(v, dict) else v
        out[k] = val if isinstance(val, str) else json.dumps(val)
    return out


def summary_is_noop(lines: Iterable[str]) -> bool:
    """True when terraform reported that nothing changed."""
    return any("No changes." in line or "0 added, 0 changed, 0 destroyed" in line for line in lines)


def state_addresses(state_file: Path) -> set[str]:
    """Addresses (``type.name``) of the managed resources a local state file holds instances of."""
    try:
        data = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    # An interrupted create can leave a resource entry with no instance: that object is not managed.
    return {
        f"{r['type']}.{r['name']}"
        for r in data.get("resources", [])
        if r.get("mode") == "managed" and r.get("instances")
    }


def state_has_resources(state_file: Path) -> bool:
    return bool(state_addresses(state_file))


def lock_holders(path: Path, locks_text: str | None = None) -> list[int]:
    """PIDs holding a POSIX lock on ``path`` (the local backend locks ``terraform.tfstate``)."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text() if locks_text is None else locks_text
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        f = line.split()
        if "->" in f:  # a waiter, not a holder
            continue
        if len(f) >= 6 and f[1] in ("POSIX", "OFDLCK") and f[5].rsplit(":", 1)[-1] == str(st.st_ino):
            with_pid = f[4]
            if with_pid.lstrip("-").isdigit() and int(with_pid) > 0:
                out.append(int(with_pid))
    return sorted(set(out))


def lock_info(module_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads((module_dir / ".terraform.tfstate.lock.info").read_text()))
    except (OSError, ValueError):
        return {}


def describe_lock(info: Mapping[str, str], holders: Iterable[int]) -> str:
    """One line naming a lock's holder: ``<Who>, <operation> since <Created> (lock ID, pid N ...)``."""
    op = str(info.get("Operation", "")).removeprefix("OperationType").lower() or "an operation"
    who = info.get("Who") or "someone"
    created = str(info.get("Created", ""))[:19].replace("T", " ")
    parts = [f"id {info['ID']}"] if info.get("ID") else []
    for pid in holders:
        p = proctable.read_proc(pid)
        parts.append(f"pid {pid}: {p.describe()[:60]}" if p else f"pid {pid}")
    since = f" since {created} UTC" if created else ""
    return f"{who}, {op}{since}" + (f" ({'; '.join(parts)})" if parts else "")


@dataclass
class Terraform:
    """One lab's Terraform working directory, run with the real binary."""

    source: Path  # infra/terraform
    workdir: Path  # .raylab/terraform/<lab>
    env: dict[str, str]  # full environment for the subprocess (credentials only here)
    ui: UI | None = None
    cli_config: Path | None = None
    last_output: list[str] = field(default_factory=list)  # lines of the last run (also in the log)
    lab: str = ""
    records_root: Path | None = None  # where its process is recorded: the lab's .raylab/ (for_lab)

    @property
    def records(self) -> procs.Records:
        return procs.Records(self.records_root or self.workdir)

    @property
    def module_dir(self) -> Path:
        return self.workdir / "module"

    @property
    def state_file(self) -> Path:
        return self.module_dir / "terraform.tfstate"

    @property
    def log(self) -> Path:
        return self.workdir / "terraform.log"

    def has_state(self) -> bool:
        return state_has_resources(self.state_file)

    # --- setup -------------------------------------------------------------------------
    def sync_module(self) -> None:
        """Copy the .tf files and policy templates into the lab's module dir (state stays)."""
        self.module_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        wanted: set[Path] = set()
        for src in sorted(self.source.rglob("*")):
            rel = src.relative_to(self.source)
            if src.is_dir() or rel.parts[0].startswith(".") or src.suffix not in (".tf", ".tftpl"):
                continue
            dst = self.module_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            wanted.add(rel)
        for old in self.module_dir.rglob("*"):
            rel = old.relative_to(self.module_dir)
            if (
                old.is_file()
                and old.suffix in (".tf", ".tftpl")
                and rel not in wanted
                and not rel.parts[0].startswith(".")
            ):
                old.unlink()

    def _clear_orphans(self) -> None:
        """Stop a terraform of this lab that an earlier, dead raylab run left running."""
        for rec, act in self.records.converge(owner="terraform", lab=self.lab):
            if act == "stop" and self.ui is not None:
                self.ui.warning(f"stopped `{rec.what}` (pid {rec.pid}) left running by an earlier raylab "
                                "run that was killed; it held this lab's Terraform state lock")

    def _foreign_lock(self) -> str | None:
        """One line naming who holds the state lock, if anything does right now."""
        holders = lock_holders(self.state_file)
        return describe_lock(lock_info(self.module_dir), holders) if holders else None

    def _run(self, args: list[str], show: bool = True) -> list[str]:
        exe = find_terraform(self.env)
        env = dict(self.env)
        env["TF_IN_AUTOMATION"] = "1"
        env["CHECKPOINT_DISABLE"] = "1"
        env.setdefault("GOGC", GOGC)  # inherited by the provider; yours wins if you set one
        if self.cli_config is not None:
            env["TF_CLI_CONFIG_FILE"] = str(self.cli_config)
        if args[0] in _LOCKING:
            args = [args[0], f"-lock-timeout={LOCK_TIMEOUT}", *args[1:]]
        cmd = [exe, f"-chdir={self.module_dir}", *args]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._clear_orphans()
        holder = self._foreign_lock() if args[0] in _LOCKING else None
        if holder and self.ui is not None:
            self.ui.warning(f"this lab's Terraform state is locked by {holder}; "
                            f"waiting up to {LOCK_TIMEOUT} for it")
        with open(self.log, "a") as log:
            log.write(f"\n$ terraform {' '.join(args)}  # {time.strftime('%H:%M:%S')}\n")
        t0 = time.monotonic()
        lines: list[str] = []
        offset = self.log.stat().st_size
        proc = procs.spawn(cmd, self.log, env=env, records=self.records, what=f"terraform {args[0]}",
                           owner="terraform", lab=self.lab, ephemeral=True)
        rec = self.records.of(proc.pid, child=True)  # a quick exit: found as a zombie too
        try:
            rc = self._follow(proc, offset, lines, show)
        except KeyboardInterrupt:
            # terraform is in its own session: Ctrl-C reached only raylab. Stop its group SIGINT
            # first, so it saves its state and releases the lock; a second Ctrl-C hurries it.
            if self.ui is not None:
                self.ui.warning(f"stopping terraform (pid {proc.pid}): it saves its state first")
            if rec is not None:
                procs.stop_record(rec, self.records.root)
                self.records.forget(rec)
            raise
        finally:
            self.last_output = lines
            with open(self.log, "a") as log:
                log.write(f"# took {time.monotonic() - t0:.1f} s\n")
        if rec is not None:
            procs.stop_record(rec, self.records.root, procs.QUICK_STEPS)  # a provider left behind
            self.records.forget(rec)
        if rc != 0:
            err = [ln.strip("│ ").strip() for ln in lines if ln.strip("│ ").strip()]
            first = next((ln for ln in err if ln.startswith("Error:")), err[-1] if err else "no output")
            if "Error acquiring the state lock" in first:
                held = self._foreign_lock() or describe_lock(lock_info(self.module_dir), [])
                raise RaylabError(
                    f"terraform {args[0]}: the Terraform state of lab {self.lab or self.workdir.name!r} "
                    f"is locked by {held}, not by a raylab run",
                    f"let it finish or stop it, then re-run; if no such process exists: "
                    f"terraform -chdir={self.module_dir} force-unlock <id>",
                )
            raise RaylabError(
                f"terraform {args[0]} failed: {first}",
                f"see {self.log}; fix the cause and re-run (Terraform resumes from its state)",
            )
        return lines

    def _follow(self, proc: Any, offset: int, lines: list[str], show: bool) -> int:
        """Read terraform's output from the log as it grows (no pipe: see the module doc)."""
        buf = b""
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            while True:
                rc = proc.poll()  # polled before reading: after exit, one read gets the rest
                chunk = fh.read()
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    lines.append(line)
                    if show and self.ui is not None and any(m in line for m in _PROGRESS_MARKERS):
                        self.ui.info(f"  terraform: {line.strip()}")
                if rc is not None and not chunk:
                    if buf:
                        lines.append(buf.decode(errors="replace"))
                    return int(rc)
                if not chunk:
                    time.sleep(0.1)

    def init(self) -> None:
        self.sync_module()
        self._run(["init", "-input=false", "-no-color"], show=False)

    def apply(self, variables: Mapping[str, str]) -> bool:
        """Apply; returns True when something changed, False for a noop."""
        lines = self._run(["apply", "-input=false", "-no-color", "-auto-approve", *var_args(variables)])
        return not summary_is_noop(lines)

    def destroy(self, variables: Mapping[str, str]) -> None:
        self._run(["destroy", "-input=false", "-no-color", "-auto-approve", *var_args(variables)])

    def import_resource(self, address: str, resource_id: str, variables: Mapping[str, str]) -> bool:
        """Adopt an existing cloud object into the state; False when there is nothing to adopt."""
        try:
            self._run(
                ["import", "-input=false", "-no-color", *var_args(variables), address, resource_id],
                show=False,
            )
        except RaylabError:
            if any("Cannot import non-existent remote object" in ln for ln in self.last_output):
                return False
            raise
        if self.ui is not None:
            self.ui.info(f"  terraform: adopted {address} ({resource_id}) left by an interrupted run")
        return True

    def validate(self) -> list[str]:
        return self._run(["validate", "-no-color"], show=False)

    def output(self) -> dict[str, str]:
        return parse_outputs("\n".join(self._run(["output", "-json", "-no-color"], show=False)))


# what would send a service past AWS_ENDPOINT_URL: its own variable, or the SDKs' flag ignoring it
ENDPOINT_OVERRIDES = ("AWS_ENDPOINT_URL_", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def endpoint_env(env: Mapping[str, str]) -> dict[str, str]:
    """Terraform's environment; with ``AWS_ENDPOINT_URL`` (the twin) every service goes there (pure).
    infra/terraform has no ``endpoints`` block (2.2 CPU-s per provider configuration), so nothing
    inherited from the operator's shell may send one service elsewhere. On AWS: left as it is."""
    if not env.get("AWS_ENDPOINT_URL"):
        return dict(env)
    return {k: v for k, v in env.items() if not k.startswith(ENDPOINT_OVERRIDES)}


def write_cli_config(raylab_dir: Path, mirror: Path) -> Path:
    path = raylab_dir / "terraform" / "terraformrc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cli_config_text(mirror))
    return path


def for_lab(
    *,
    source: Path,
    raylab_dir: Path,
    lab: str,
    env: Mapping[str, str],
    require_mirror: bool,
    ui: UI | None = None,
) -> Terraform:
    """A ready-to-use Terraform for one lab: binary checked, mirror found, CLI config written.

    ``require_mirror`` (the local target): no mirror is a clear error, since there is no
    network to download the provider from.
    """
    full_env = endpoint_env({**os.environ, **env})
    find_terraform(full_env)
    mirror = find_mirror(full_env)
    if mirror is None and require_mirror:
        raise RaylabError(
            "no local Terraform provider mirror found (a folder holding registry.terraform.io/hashicorp/aws)",
            f"set {MIRROR_ENV} to the mirror's root, e.g. the folder above registry.terraform.io",
        )
    cfg = write_cli_config(raylab_dir, mirror) if mirror is not None else None
    return Terraform(
        source=source, workdir=raylab_dir / "terraform" / lab, env=full_env, ui=ui, cli_config=cfg,
        lab=lab, records_root=raylab_dir,
    )
