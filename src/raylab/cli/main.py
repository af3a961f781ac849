"""raylab's CLI entry point. No logic here: commands live one per file in this package.

Heavy imports (ray, boto3, moto) happen inside the commands, and a command's module is imported and
its parameters built only when it runs (raylab.cli.lazy), so ``raylab --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from raylab.cli.lazy import Entry, LazyGroup
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


def _new_app(**extra: Any) -> typer.Typer:
    """A Typer with the CLI's settings: the top-level app, and each command's when it is built."""
    return typer.Typer(
        rich_markup_mode=None,  # plain click help: instant, and text stays as written
        pretty_exceptions_enable=False,
        add_completion=False,
        **extra,
    )


# The top-level commands, in the order `raylab --help` lists them: name, the module whose ``register(app)``
# adds it, and its help's first sentence (click cuts the short help from it). Only the command that runs
# is imported and built (raylab.cli.lazy); tests/unit/test_cli_lazy.py fails if this drifts from the commands.
COMMANDS = (
    Entry("stages", "raylab.cli.cmd_stages",
          "List the lab's numbered stages: what each does and how raylab proves it worked."),
    Entry("lab", "raylab.cli.cmd_lab",
          "Run the whole lab in order (stages 1-7), stopping at the first stage that fails; then tear "
          "everything down (unless --keep) and prove nothing is left."),
    Entry("up", "raylab.cli.cmd_lab", "Stages 1-3: network, identity, cluster."),
    Entry("stage", "raylab.cli.cmd_lab",
          "Run one numbered stage (apply, then verify), as the trainee guide's chapter N does."),
    Entry("down", "raylab.cli.cmd_lab",
          "Tear down: ray down, terraform destroy, delete the stack, stop raylab's processes, then list what "
          "is left (nothing, or a non-zero exit)."),
    Entry("status", "raylab.cli.cmd_status",
          "Show the cluster as Ray sees it (autoscaler v2 status) and as EC2 sees it (instances by the "
          "ray-cluster-name tag), plus launch failures with AWS's reason (e.g. VcpuLimitExceeded), and what "
          "the capacity guard did about spot capacity errors and why."),
    Entry("plan", "raylab.cli.cmd_plan",
          "Predict what Ray 2.60's autoscaler will do (launch rounds, peak workers, the quota wall, "
          "makespan, idle scale-down) and what the run costs, before anything is launched."),
    Entry("stress", "raylab.cli.cmd_stress",
          "Stage 4: submit the stress job (the plan's 480 x 1-CPU tasks, scaled) as a Ray Job, show a "
          "live view, record a timeline and a chart, and verify: all tasks done, workers capped by the "
          "vCPU quota, the VcpuLimitExceeded errors recorded."),
    Entry("scale", "raylab.cli.cmd_scale",
          "Stage 5: edit the cluster YAML's autoscaling knobs (comments kept), re-apply it to the "
          "running cluster, run a second stress job, and measure: idle workers removed after the idle "
          "timeout down to min_workers, and peak workers / makespan against stage 4's run."),
    Entry("preflight", "raylab.cli.cmd_preflight",
          "Check credentials, region, AZs, vCPU quotas, the spot role, your public IP and the cost per hour "
          "before anything is created."),
    Entry("dashboard", "raylab.cli.cmd_dashboard", "Print the Ray dashboard's URL."),
    Entry("config", "raylab.cli.cmd_config",
          "Check a Ray cluster YAML, or render the lab's cluster YAML for a target and scenario."),
    Entry("data", "raylab.cli.cmd_data",
          "Common Voice 17 on Ray Data: run the job, make a local sample, show the real layout."),
    Entry("chaos", "raylab.cli.cmd_chaos",
          "Spot drills: capacity errors and reclaims on the running cluster."),
    Entry("room", "raylab.cli.cmd_room",
          "The room: an instructor's plan and view of every lab in one account and region."),
)


class _Group(LazyGroup):
    table = COMMANDS
    new_app = staticmethod(_new_app)


app = _new_app(
    cls=_Group,
    help=HELP,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    callback=lambda: None,  # a group with no eagerly registered command needs a callback (a no-op)
)


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
