"""The interruption watcher against a real IMDSv2 twin on 127.0.0.1 (raylab.targets.local.imds)."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from raylab.spot.imds_watcher import (
    ImdsClient,
    Notice,
    Poll,
    Watcher,
    WatcherState,
    decide,
    parse_instance_action,
    parse_rebalance,
    poll_once,
)
from raylab.targets.local.imds import ImdsServer, MetadataStore, handle

IID = "i-0123456789abcdef0"


@pytest.fixture
def imds():
    store = MetadataStore()
    store.register(IID, instance_type="c7i.4xlarge", az="us-west-2a", lifecycle="spot")
    with ImdsServer(store) as srv:
        yield srv


def _req(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}),
                                    timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Drains:
    def __init__(self, answers: list[tuple[bool, str]] | None = None) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.answers = answers or []

    def __call__(self, node_id: str, msg: str, deadline_ms: int) -> tuple[bool, str]:
        self.calls.append((node_id, msg, deadline_ms))
        return self.answers.pop(0) if self.answers else (True, "")


def _watcher(endpoint: str, drains: Drains) -> tuple[Watcher, io.StringIO]:
    out = io.StringIO()
    return Watcher(ImdsClient(endpoint, timeout=1), drains, node_id="ab" * 14, interval=0.05, out=out), out


def _events(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# --- the IMDS twin answers as EC2 does ---------------------------------------------------------

def test_token_flow_and_401_without_token(imds):
    ep = imds.endpoint_for(IID)
    assert _req(ep + "/latest/meta-data/instance-id")[0] == 401  # HttpTokens=required
    assert _req(ep + "/latest/api/token", "PUT")[0] == 400  # TTL header is mandatory
    assert _req(ep + "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "99999"})[0] == 400
    st, tok = _req(ep + "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert st == 200 and tok
    assert _req(ep + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": tok}) == (200, IID)
    assert _req(ep + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": "bogus"})[0] == 401
    # a token belongs to its instance
    imds.store.register("i-other")
    other = imds.endpoint_for("i-other")
    assert _req(other + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": tok})[0] == 401


def test_notice_documents_are_formatted_as_aws_does(imds):
    c = ImdsClient(imds.endpoint_for(IID))
    assert c.get("/latest/meta-data/spot/instance-action")[0] == 404
    assert c.get("/latest/meta-data/events/recommendations/rebalance")[0] == 404
    now = datetime(2026, 11, 25, 20, 11, 56, 700000, tzinfo=UTC)
    imds.store.mark_interruption(IID, 120, now=now)
    imds.store.mark_rebalance(IID, now=now)
    st, body = c.get("/latest/meta-data/spot/instance-action")
    assert st == 200 and json.loads(body) == {"action": "terminate", "time": "2026-11-25T20:13:56Z"}
    assert json.loads(c.get("/latest/meta-data/events/recommendations/rebalance")[1]) == {
        "noticeTime": "2026-11-25T20:11:56Z"}


def test_expired_token_is_refused():
    store = MetadataStore()
    store.register(IID)
    tok = store.issue_token(IID, 1, now=1000.0)
    hdr = {"X-aws-ec2-metadata-token": tok}
    assert handle(store, "GET", f"/{IID}/latest/meta-data/instance-id", hdr, now=1000.5).status == 200
    assert handle(store, "GET", f"/{IID}/latest/meta-data/instance-id", hdr, now=1001.5).status == 401


def test_optional_tokens_allow_imdsv1_but_not_bad_tokens():
    store = MetadataStore()
    store.register(IID, http_tokens="optional")
    assert handle(store, "GET", f"/{IID}/latest/meta-data/instance-id", {}).status == 200
    assert handle(store, "GET", f"/{IID}/latest/meta-data/instance-id",
                  {"X-aws-ec2-metadata-token": "x"}).status == 401


# --- parsing and the pure decision ---------------------------------------------------------------

@pytest.mark.parametrize(
    "body", ["", "nope", "[]", '{"action": "terminate"}', '{"action": "x", "time": "soon"}'])
def test_garbage_instance_action_is_a_value_error(body):
    with pytest.raises(ValueError):
        parse_instance_action(body)


def test_parse_rebalance():
    n = parse_rebalance('{"noticeTime": "2026-11-25T20:11:56Z"}')
    assert n.kind == "rebalance" and n.time == datetime(2026, 11, 25, 20, 11, 56, tzinfo=UTC)


T = datetime(2026, 11, 25, 20, 13, 56, tzinfo=UTC)
INT = Notice("interruption", "terminate", T)
REB = Notice("rebalance", "rebalance", T)


@pytest.mark.parametrize(
    ("state", "poll", "on_rebalance", "expected_events", "drained_after"),
    [
        (WatcherState(), Poll(), False, [], False),
        (WatcherState(), Poll(interruption=INT), False, ["interruption_notice", "drain"], False),
        (WatcherState(seen_interruption=INT, drained=True), Poll(interruption=INT), False, [], True),
        # a rejected drain is retried on the next poll, but not forever
        (WatcherState(seen_interruption=INT, drain_attempts=1), Poll(interruption=INT), False,
         ["drain"], False),
        (WatcherState(seen_interruption=INT, drain_attempts=5), Poll(interruption=INT), False, [], False),
        (WatcherState(), Poll(rebalance=REB), False, ["rebalance_recommendation"], False),
        (WatcherState(), Poll(rebalance=REB), True, ["rebalance_recommendation", "drain"], False),
        (WatcherState(), Poll(errors=("refused",)), False, ["imds_error"], False),
        (WatcherState(consecutive_errors=1), Poll(errors=("refused",)), False, [], False),
        (WatcherState(consecutive_errors=11), Poll(errors=("refused",)), False, ["imds_error"], False),
        (WatcherState(consecutive_errors=3), Poll(), False, ["imds_recovered"], False),
    ],
)
def test_decide_table(state, poll, on_rebalance, expected_events, drained_after):
    new, acts = decide(state, poll, on_rebalance)
    assert [a.event for a in acts] == expected_events
    assert new.drained is drained_after
    drain = [a for a in acts if a.kind == "drain"]
    if drain:
        assert drain[0].detail["deadline_ms"] == int(T.timestamp() * 1000)


# --- the watcher loop end to end over HTTP -------------------------------------------------------

def test_watcher_drains_once_with_the_notice_deadline(imds):
    drains = Drains()
    w, out = _watcher(imds.endpoint_for(IID), drains)
    w.step()
    assert drains.calls == []
    notice = imds.store.mark_interruption(IID, 120)
    w.step()
    w.step()
    assert len(drains.calls) == 1
    node, msg, deadline = drains.calls[0]
    assert node == "ab" * 14 and "terminate" in msg
    assert deadline == int(datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ")
                           .replace(tzinfo=UTC).timestamp() * 1000)
    assert [e["event"] for e in _events(out)] == ["interruption_notice", "drained"]
    assert _events(out)[1]["reason"] == "DRAIN_NODE_REASON_PREEMPTION"


def test_rejected_drain_is_retried(imds):
    drains = Drains([(False, "node is busy"), (True, "")])
    w, out = _watcher(imds.endpoint_for(IID), drains)
    imds.store.mark_interruption(IID, 30)
    w.step()
    w.step()
    w.step()
    assert len(drains.calls) == 2
    assert [e["event"] for e in _events(out)] == ["interruption_notice", "drain_failed", "drained"]


def test_drainer_exception_does_not_kill_the_watcher(imds):
    def boom(*_: object) -> tuple[bool, str]:
        raise ConnectionError("GCS unreachable")

    out = io.StringIO()
    w = Watcher(ImdsClient(imds.endpoint_for(IID)), boom, node_id="cd" * 14, out=out)
    imds.store.mark_interruption(IID, 30)
    w.step()
    assert _events(out)[-1]["event"] == "drain_failed" and "GCS unreachable" in _events(out)[-1]["error"]


def test_new_token_after_imds_forgets_tokens(imds):
    c = ImdsClient(imds.endpoint_for(IID))
    assert c.get("/latest/meta-data/instance-id") == (200, IID)
    with imds.store._lock:
        imds.store._tokens.clear()  # what an IMDS restart does to issued tokens
    assert c.get("/latest/meta-data/instance-id") == (200, IID)


def test_imds_down_then_back(imds):
    store = imds.store
    port = imds.port
    drains = Drains()
    w, out = _watcher(imds.endpoint_for(IID), drains)
    imds.stop()
    t0 = time.monotonic()
    w.step()
    w.step()
    assert time.monotonic() - t0 < 3  # refused fast, no hang
    store.mark_interruption(IID, 60)
    with ImdsServer(store, port=port):
        w.step()
    evs = [e["event"] for e in _events(out)]
    assert evs == ["imds_error", "imds_recovered", "interruption_notice", "drained"]
    assert len(drains.calls) == 1


def test_garbage_json_is_logged_not_fatal(imds):
    imds.store.instances[IID].instance_action = "garbage"  # type: ignore[assignment]
    drains = Drains()
    w, out = _watcher(imds.endpoint_for(IID), drains)
    w.step()
    assert drains.calls == []
    ev = _events(out)[0]
    assert ev["event"] == "imds_error" and "unreadable" in ev["errors"][0]


def test_poll_once_on_unknown_instance_is_just_404s(imds):
    # an unregistered instance answers 404 everywhere (token PUT included): an error, no crash
    p = poll_once(ImdsClient(imds.endpoint_for("i-nothere")))
    assert p.interruption is None and p.errors


def test_run_resolves_node_in_background_then_drains(imds):
    import threading

    calls = []

    def resolve() -> str | None:
        calls.append(1)
        return "ef" * 14 if len(calls) >= 2 else None  # the node registers a moment after boot

    drains = Drains()
    out = io.StringIO()
    w = Watcher(ImdsClient(imds.endpoint_for(IID)), drains, resolve_node=resolve, interval=0.05, out=out)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    w_thread = w.resolve_in_background(stop, every=0.05)
    w_thread.join(timeout=5)
    assert w.node_id == "ef" * 14
    t.start()
    imds.store.mark_interruption(IID, 30)
    deadline = time.monotonic() + 5
    while not drains.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(timeout=5)
    assert drains.calls and drains.calls[0][0] == "ef" * 14
    assert "drained" in [e["event"] for e in _events(out)]


# --- release: a drained node's task workers go before the instance does ------------------------

D = int(T.timestamp() * 1000)  # the drain's deadline


@pytest.mark.parametrize(
    ("state", "now_ms", "before_s", "released"),
    [
        (WatcherState(drained=True, deadline_ms=D), D - 10_000, 10.0, True),  # at deadline - S
        (WatcherState(drained=True, deadline_ms=D), D + 5_000, 10.0, True),  # late: at once
        (WatcherState(drained=True, deadline_ms=D), D - 11_000, 10.0, False),  # not yet
        (WatcherState(drained=True, deadline_ms=D, released=True), D, 10.0, False),  # once only
        (WatcherState(drained=True, deadline_ms=D), D, None, False),  # off (the local target)
        (WatcherState(drained=False), D, 10.0, False),  # nothing drained, nothing released
    ],
)
def test_decide_release(state, now_ms, before_s, released):
    new, acts = decide(state, Poll(), False, now_ms, before_s)
    assert [a.kind for a in acts if a.kind == "release"] == (["release"] if released else [])
    assert new.released is (released or state.released)


def test_watcher_releases_a_drained_node_before_its_deadline(imds):
    """The drain records its deadline; a later poll within --release-before of it kills the node's
    task workers (here a fake releaser) once, and logs which."""
    drains, killed = Drains(), []
    w, out = _watcher(imds.endpoint_for(IID), drains)
    w.release_before = 10.0
    w.releaser = lambda: killed.append("x") or ["42 ray::heavy_task"]
    notice = imds.store.mark_interruption(IID, 120)
    w.step()  # drains
    deadline = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    w.step()
    assert killed == []  # two minutes left
    w.clock = lambda: deadline - 5
    w.step()
    w.step()
    assert killed == ["x"]
    rel = [e for e in _events(out) if e["event"] == "released"]
    assert len(rel) == 1 and rel[0]["workers"] == ["42 ray::heavy_task"]


def test_kill_task_workers_kills_only_ray_titled_processes(tmp_path):
    """Only processes whose title is ``ray::...``; the raylet, agents and this watcher stay."""
    import subprocess
    import sys

    from raylab.spot.imds_watcher import kill_task_workers

    code = "import time; time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code])
    other = subprocess.Popen([sys.executable, "-c", code])
    try:
        proc = tmp_path / "proc"
        for p, title in ((worker.pid, b"ray::heavy_task\0"), (other.pid, b"/usr/bin/raylet\0--x\0"),
                         (999999999, b"ray::gone\0")):
            (proc / str(p)).mkdir(parents=True)
            (proc / str(p) / "cmdline").write_bytes(title)
        (proc / "self").mkdir()
        killed = kill_task_workers(str(proc))
        assert killed == [f"{worker.pid} ray::heavy_task"]
        assert worker.wait(timeout=10) == -9
        assert other.poll() is None
    finally:
        for p in (worker, other):
            p.kill()
            p.wait()


@pytest.mark.parametrize(
    ("title", "task"),
    [
        ("ray::heavy_task", True),
        ("ray::SpotDemo.step", True),  # an actor's method: restarted elsewhere (max_restarts)
        ("ray::DashboardAgent", False),  # the raylet fate-shares with its agents
        ("ray::RuntimeEnvAgent", False),
        ("ray::IDLE", False),
        ("ray::IDLE_SpillWorker", False),
        ("ray::SPILL_SpillWorker", False),
        ("/usr/bin/raylet", False),
    ],
)
def test_is_task_worker(title, task):
    from raylab.spot.imds_watcher import is_task_worker

    assert is_task_worker(title) is task


def test_tripwire_ray_process_titles():
    """The titles the watcher spares are Ray 2.60's own (private constants: a Ray upgrade that renames
    them fails here, not on a node)."""
    from ray._private import ray_constants as rc

    from raylab.spot.imds_watcher import NOT_TASKS

    for t in (rc.AGENT_PROCESS_TYPE_DASHBOARD_AGENT, rc.AGENT_PROCESS_TYPE_RUNTIME_ENV_AGENT,
              rc.WORKER_PROCESS_TYPE_IDLE_WORKER, rc.WORKER_PROCESS_TYPE_SPILL_WORKER_IDLE,
              rc.WORKER_PROCESS_TYPE_RESTORE_WORKER_IDLE, rc.WORKER_PROCESS_TYPE_SPILL_WORKER,
              rc.WORKER_PROCESS_TYPE_RESTORE_WORKER):
        assert t.startswith(NOT_TASKS), t
