"""Integration fixtures: a real moto server on 127.0.0.1 and a tiny Target pointing at it.

``moto_target`` is for tests of stages 1-2 that need a real endpoint but not the whole local
target (twin, Ray): a ``ThreadedMotoServer`` on a free loopback port, fake credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from raylab.targets.local.declared import LocalDeclared

if TYPE_CHECKING:
    from raylab.checks import Check
    from raylab.context import Context


@dataclass
class MotoTarget(LocalDeclared):
    """Implements the Target verbs stages 1-2 use, against one moto server; it declares what the
    local target declares (operator CIDR, network sweep, Terraform mirror, ...)."""

    endpoint_url: str
    name: str = "local"
    region: str = "us-west-2"

    def aws_env(self, ctx: Context) -> dict[str, str]:
        return {"AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    def preflight(self, ctx: Context) -> list[Check]:
        return []

    def start(self, ctx: Context) -> None:
        return None

    def stop(self, ctx: Context) -> None:
        return None

    def leftovers(self, ctx: Context) -> list[str]:
        from raylab.aws.leftovers import lab

        return lab(ctx)

    def cluster_up(self, ctx: Context, config_path: Path) -> dict[str, Any]:
        raise NotImplementedError("moto_target has no Ray cluster")

    def cluster_down(self, ctx: Context) -> None:
        return None

    def cluster_status(self, ctx: Context) -> dict[str, Any]:
        return {}

    def dashboard_url(self, ctx: Context) -> str:
        return ""


@pytest.fixture
def moto_target() -> Iterator[MotoTarget]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    try:
        yield MotoTarget(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto_ctx(moto_target: MotoTarget, tmp_path: Path) -> Context:
    """A Context for lab ``it`` on the moto target, state under tmp_path."""
    from raylab.context import Context
    from raylab.ui import UI

    return Context(target_name="local", lab="it", ui=UI(), workdir=tmp_path / ".raylab", _target=moto_target)
