"""Targets: ``local`` (the embedded default, a real twin on loopback) and ``aws``; ``base.Target`` is the
contract, and every difference between the two belongs behind it.

May import: pieces (cluster, aws, spot, plan, observe, datajob, iac) and the base; never stages or
the CLI (stages import targets, not the other way round).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raylab.errors import RaylabError

if TYPE_CHECKING:
    from raylab.target import Target


def get_target(name: str) -> Target:
    if name == "local":
        from raylab.targets.local import LocalTarget

        return LocalTarget()
    if name == "aws":
        from raylab.targets.aws import AwsTarget

        return AwsTarget()
    raise RaylabError(f"unknown target {name!r}", "use --target local (default) or --target aws")
