"""raylab's CLI entry point. No logic here: commands live one per file in this package.

Heavy imports (ray, boto3, moto) happen inside the commands, so ``raylab --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from raylab.errors import RaylabError
from raylab.stages.registry import help_lines

HELP = f"""Run the lab "Ray on AWS EC2: autoscaling, spot, and data at scale" stage by
stage, proving each stage worked before the next one starts.

\b
Stages (see `raylab stages`):
{help_lines()}

\b
Targets:
  --target local  the default: a real Ray cluster on this machine whose autoscaler launches
                  "EC2 instances" on a local AWS twin at 127.0.0.1; no account needed
  --target aws    a real AWS account (never implied; asks before spending unless --yes)

\b
Typical use:
  raylab lab --yes                            the whole lab, then teardown
  raylab up / raylab stress / raylab down     an instructor's run
  raylab stage 3                              one numbered stage (apply + verify)
  raylab plan --compare upscaling_speed=1,10  predict before you pay
  raylab config check my-cluster.yaml         catch what `ray up` would reject
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: instant, and text stays as written
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes ``register(app)``. One line per command file.
_COMMANDS = (
    "raylab.cli.cmd_stages",
    "raylab.cli.cmd_lab",
    "raylab.cli.cmd_status",
    "raylab.cli.cmd_config",
    "raylab.cli.cmd_plan",
    "raylab.cli.cmd_data",
    "raylab.cli.cmd_stress",
    "raylab.cli.cmd_scale",
    "raylab.cli.cmd_chaos",
    "raylab.cli.cmd_preflight",
    "raylab.cli.cmd_dashboard",
    "raylab.cli.cmd_room",
)

for _name in _COMMANDS:
    importlib.import_module(_name).register(app)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """Typer >= 0.19 vendors click (typer._click); older ones use click. Handle whichever runs."""
    found: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        found.append(VendoredClickException)
    except ImportError:
        pass
    try:
        from click import ClickException

        found.append(ClickException)
    except ImportError:
        pass
    return tuple(found)


def main() -> None:
    importlib.import_module("raylab.signals").install()  # SIGTERM/SIGHUP stop like Ctrl-C, exit 130
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:  # `raise typer.Exit(n)` returns n here (standalone_mode=False)
            sys.exit(rc)
    except RaylabError as e:
        from raylab.ui import UI

        UI().error(e.one_line())
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume; `raylab down` cleans up", file=sys.stderr)
        sys.exit(130)
    except _click_exceptions() as e:  # usage errors: click's own one-line message, exit 2
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `raylab` or a bare group: show help
            ctx = getattr(e, "ctx", None)
            print(ctx.get_help() if ctx else str(e))
            sys.exit(0)
        e.show()  # type: ignore[attr-defined]  # every click exception has show(); the tuple is typed loosely
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
