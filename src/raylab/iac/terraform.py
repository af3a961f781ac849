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
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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


@dataclass
class Terraform:
    """One lab's Terraform working directory, run with the real binary."""

    source: Path  # infra/terraform
    workdir: Path  # .raylab/terraform/<lab>
    env: dict[str, str]  # full environment for the subprocess (credentials only here)
    ui: UI | None = None
    cli_config: Path | None = None
    last_output: list[str] = field(default_factory=list)  # lines of the last run (also in the log)

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

    def _run(self, args: list[str], show: bool = True) -> list[str]:
        exe = find_terraform(self.env)
        env = dict(self.env)
        env["TF_IN_AUTOMATION"] = "1"
        env["CHECKPOINT_DISABLE"] = "1"
        if self.cli_config is not None:
            env["TF_CLI_CONFIG_FILE"] = str(self.cli_config)
        cmd = [exe, f"-chdir={self.module_dir}", *args]
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        with open(self.log, "a") as log:
            t0 = time.monotonic()
            log.write(f"\n$ terraform {' '.join(args)}  # {time.strftime('%H:%M:%S')}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line.rstrip("\n"))
                    if show and self.ui is not None and any(m in line for m in _PROGRESS_MARKERS):
                        self.ui.info(f"  terraform: {line.strip()}")
                rc = proc.wait()
            except KeyboardInterrupt:
                # terraform got the same Ctrl-C: let it stop cleanly and save its state first
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
            finally:
                self.last_output = lines
                log.write(f"# took {time.monotonic() - t0:.1f} s\n")
        if rc != 0:
            err = [ln.strip("│ ").strip() for ln in lines if ln.strip("│ ").strip()]
            first = next((ln for ln in err if ln.startswith("Error:")), err[-1] if err else "no output")
            raise RaylabError(
                f"terraform {args[0]} failed: {first}",
                f"see {self.log}; fix the cause and re-run (Terraform resumes from its state)",
            )
        return lines

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
    full_env = {**os.environ, **env}
    find_terraform(full_env)
    mirror = find_mirror(full_env)
    if mirror is None and require_mirror:
        raise RaylabError(
            "no local Terraform provider mirror found (a folder holding registry.terraform.io/hashicorp/aws)",
            f"set {MIRROR_ENV} to the mirror's root, e.g. the folder above registry.terraform.io",
        )
    cfg = write_cli_config(raylab_dir, mirror) if mirror is not None else None
    return Terraform(
        source=source, workdir=raylab_dir / "terraform" / lab, env=full_env, ui=ui, cli_config=cfg
    )
