"""`raylab down` on the local target stops the Ray head and the worker nodes together, and terminates
what the autoscaler launched while its head went down.

The head's stop (SIGTERM, Ray's own shutdown: about 6 s) used to run before the workers were even
terminated, so the two waits added up (11 s of `raylab lab`'s teardown)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from raylab.cli.options import make_context
from raylab.targets.local import LocalTarget
from raylab.targets.local import target as T


class Cloud:
    """What cluster_down sees of the twin: instances by id; terminate marks them gone."""

    def __init__(self, ids: list[str]) -> None:
        self.live = list(ids)
        self.terminated: list[list[str]] = []

    def terminate(self) -> int:
        gone, self.live = self.live, []
        if gone:
            self.terminated.append(gone)
        return len(gone)


def _down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud: Cloud,
          head_stop: Any) -> tuple[Any, list[str]]:
    ctx = make_context(workdir=tmp_path / ".raylab", lab="cd")
    ctx.state.put("cluster", {"cluster_name": "raylab-cd", "head_pid": 0})
    order: list[str] = []
    tgt = LocalTarget()
    monkeypatch.setattr(T, "twin_alive", lambda ctx: True)
    monkeypatch.setattr(T, "cleanup_temp", lambda cur: None)
    monkeypatch.setattr(LocalTarget, "_stop_head", lambda self, ctx, show=True: head_stop(order))
    def terminate_cluster(ctx: Any, cluster: str) -> int:
        order.append("terminate")
        return cloud.terminate()

    monkeypatch.setattr(T, "terminate_cluster", terminate_cluster)
    monkeypatch.setattr(T, "wait_nodes_gone", lambda twin, cluster, timeout: order.append("wait"))
    monkeypatch.setattr(LocalTarget, "twin", lambda self, ctx: type("Tw", (), {
        "unregister_cluster": staticmethod(lambda name: None)})())
    tgt.cluster_down(ctx)
    return ctx, order


def test_the_workers_are_terminated_while_the_head_is_still_stopping(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(["i-head", "i-w1", "i-w2"])
    terminated = threading.Event()

    def head_stop(order: list[str]) -> None:
        # the head's stop ends only once the workers are terminated: sequential stops never get here
        assert terminated.wait(5), "the workers were not terminated while the head was stopping"
        order.append("head stopped")

    real = Cloud.terminate

    def terminate(self: Cloud) -> int:
        n = real(self)
        terminated.set()
        return n

    monkeypatch.setattr(Cloud, "terminate", terminate)
    ctx, order = _down(tmp_path, monkeypatch, cloud, head_stop)
    assert order == ["terminate", "head stopped", "terminate", "wait"]
    assert cloud.terminated == [["i-head", "i-w1", "i-w2"]]
    assert ctx.state.get("cluster") == {}


def test_a_worker_launched_while_the_head_stopped_is_terminated_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(["i-head", "i-w1"])

    first = threading.Event()
    real = Cloud.terminate

    def terminate(self: Cloud) -> int:
        n = real(self)
        first.set()
        return n

    def head_stop(order: list[str]) -> None:
        # the autoscaler's last loop launches one more before it exits (a bounded wait: a sequential
        # teardown that never terminates while the head stops fails here instead of hanging)
        assert first.wait(5), "the workers were not terminated while the head was stopping"
        cloud.live.append("i-late")
        order.append("head stopped")

    monkeypatch.setattr(Cloud, "terminate", terminate)
    _, order = _down(tmp_path, monkeypatch, cloud, head_stop)
    assert cloud.terminated == [["i-head", "i-w1"], ["i-late"]]
    assert order[-1] == "wait"
