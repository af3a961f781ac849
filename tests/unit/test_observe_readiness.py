"""Time to ready per node: the join of EC2 and Ray's node table, the summary, `ray up`'s log, the edges."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from raylab.observe import readiness as R
from raylab.observe.readiness_fetch import collect, fetch_ray_nodes


def inst(iid: str, launched: float | None, kind: str = "worker", ip: str = "", state: str = "running",
         market: str = "on-demand", node_type: str = "ray.worker.default") -> dict[str, Any]:
    return {"id": iid, "launched_at": launched, "kind": kind, "ip": ip, "state": state, "market": market,
            "node_type": node_type}


def node(iid: str, start: float | None, ip: str = "127.0.0.1", alive: bool = True) -> R.RayNode:
    return R.RayNode(node_id=f"n-{iid}-{start}", instance_id=iid, ip=ip, start_s=start, alive=alive)


# (rule, instances, ray nodes, instance id -> expected launch->alive seconds)
JOIN_CASES = [
    ("matched by the instance id Ray records", [inst("i-1", 100.0)], [node("i-1", 104.5)], {"i-1": 4.5}),
    ("no Ray node yet: alive is None", [inst("i-1", 100.0)], [], {"i-1": None}),
    ("a node of another instance is not mine", [inst("i-1", 100.0)], [node("i-2", 101.0)], {"i-1": None}),
    ("the FIRST node of an instance counts (a restart does not make it later)",
     [inst("i-1", 100.0)], [node("i-1", 130.0), node("i-1", 103.0, alive=False)], {"i-1": 3.0}),
    ("a node started before the launch is not this instance's",
     [inst("i-1", 100.0)], [node("i-1", 90.0)], {"i-1": None}),
    ("LaunchTime is whole seconds: a start within 1 s before it counts as 0",
     [inst("i-1", 100.0)], [node("i-1", 99.4)], {"i-1": 0.0}),
    ("no instance id in Ray: matched by a private IP only this instance has",
     [inst("i-1", 100.0, ip="10.0.1.5"), inst("i-2", 100.0, ip="10.0.1.6")],
     [node("", 107.0, ip="10.0.1.5")], {"i-1": 7.0, "i-2": None}),
    ("an IP two instances share matches neither",
     [inst("i-1", 100.0, ip="10.0.1.5"), inst("i-2", 101.0, ip="10.0.1.5")],
     [node("", 107.0, ip="10.0.1.5")], {"i-1": None, "i-2": None}),
    ("same IP on every local node (127.0.0.1): the instance id decides",
     [inst("i-1", 100.0, ip="127.0.0.1"), inst("i-2", 110.0, ip="127.0.0.1")],
     [node("i-2", 115.0), node("i-1", 102.0)], {"i-1": 2.0, "i-2": 5.0}),
    ("an instance without a launch time is left out", [inst("i-1", None)], [node("i-1", 1.0)], {}),
]


@pytest.mark.parametrize(("rule", "instances", "nodes", "want"), JOIN_CASES, ids=[c[0] for c in JOIN_CASES])
def test_join(rule: str, instances: list[dict[str, Any]], nodes: list[R.RayNode],
              want: dict[str, float | None]) -> None:
    rows = R.join(instances, nodes)
    assert {r.instance_id: r.launch_to_alive_s for r in rows} == want


def test_rows_are_in_launch_order() -> None:
    rows = R.join([inst("i-b", 200.0), inst("i-a", 100.0, kind="head")], [])
    assert [r.instance_id for r in rows] == ["i-a", "i-b"]


# (rule, row, expected (launch->ssh, ssh->setup, setup->alive, setup excluding boot))
PHASE_CASES = [
    ("local: no SSH, no setup phase; setup = launch->alive minus the modelled boot (0)",
     R.NodeReadiness("i-1", "w", "worker", "spot", "running", 100.0, ray_alive_at=108.0, boot_delay_s=0.0),
     (None, None, None, 8.0)),
    ("local with a modelled boot delay: setup excludes it",
     R.NodeReadiness("i-1", "w", "worker", "spot", "running", 100.0, ray_alive_at=130.0, boot_delay_s=20.0),
     (None, None, None, 10.0)),
    ("aws head: every phase from the `ray up` log; setup from SSH up",
     R.NodeReadiness("i-h", "h", "head", "on-demand", "running", 100.0, ssh_up_at=140.0, setup_done_at=200.0,
                     ray_alive_at=205.0),
     (40.0, 60.0, 5.0, 65.0)),
    ("aws worker: no SSH known, no boot delay known: setup is None, not invented",
     R.NodeReadiness("i-2", "w", "worker", "on-demand", "running", 100.0, ray_alive_at=300.0),
     (None, None, None, None)),
    ("not alive yet: every span ending at alive is None",
     R.NodeReadiness("i-3", "w", "worker", "on-demand", "pending", 100.0, ssh_up_at=130.0),
     (30.0, None, None, None)),
]


@pytest.mark.parametrize(("rule", "row", "want"), PHASE_CASES, ids=[c[0] for c in PHASE_CASES])
def test_phases(rule: str, row: R.NodeReadiness, want: tuple[float | None, ...]) -> None:
    assert (row.launch_to_ssh_s, row.ssh_to_setup_s, row.setup_to_alive_s, row.setup_s) == want


def _row(kind: str, launched: float, alive: float | None, boot: float | None = 0.0) -> R.NodeReadiness:
    return R.NodeReadiness(f"i-{launched}", "t", kind, "on-demand", "running", launched, ray_alive_at=alive,
                           boot_delay_s=boot)


# (rule, rows, expected summary subset)
SUMMARY_CASES = [
    ("head apart from the workers; median and max over alive workers",
     [_row("head", 0, 5), _row("worker", 10, 14), _row("worker", 20, 30), _row("worker", 30, 36)],
     {"head_launch_to_alive_s": 5.0, "workers": 3, "workers_alive": 3, "worker_launch_to_alive_median_s": 6.0,
      "worker_launch_to_alive_max_s": 10.0, "within_target": True}),
    ("a worker not alive yet is counted, not measured",
     [_row("worker", 10, 14), _row("worker", 20, None)],
     {"workers": 2, "workers_alive": 1, "workers_not_alive": 1, "worker_launch_to_alive_max_s": 4.0}),
    ("a setup over 60 s misses the target", [_row("worker", 0, 61)], {"within_target": False}),
    ("no setup measurable (aws workers): the target is unknown, not met",
     [_row("worker", 0, 30, boot=None)], {"within_target": None, "worker_launch_to_alive_max_s": 30.0}),
    ("only the head: no worker figures", [_row("head", 0, 3)],
     {"workers": 0, "worker_launch_to_alive_median_s": None, "head_launch_to_alive_s": 3.0}),
]


@pytest.mark.parametrize(("rule", "rows", "want"), SUMMARY_CASES, ids=[c[0] for c in SUMMARY_CASES])
def test_summary(rule: str, rows: list[R.NodeReadiness], want: dict[str, Any]) -> None:
    s = R.summarize(rows)
    assert {k: s[k] for k in want} == want


def test_table_prints_missing_phases_as_a_dash() -> None:
    rep = R.report([_row("head", 0, 5)])
    assert R.table_rows(rep) == [["i-0", "t", "on-demand", "5.0", "—", "—", "—"]]
    assert "head 5.0 s" in R.summary_line(rep)


# --- `ray up`'s log --------------------------------------------------------------------------------
RAY_UP_LOG = """\
2026-12-06 10:00:00,000\tINFO commands.py:300 -- Launched a new head node
2026-12-06 10:00:05,000\tINFO updater.py:320 -- New status: waiting-for-ssh
2026-12-06 10:00:05,100\tINFO updater.py:283 -- [1/7] Waiting for SSH to become available
2026-12-06 10:00:05,200\tINFO updater.py:287 -- Running `uptime` as a test.
2026-12-06 10:00:20,000\tINFO updater.py:301 -- Success.
2026-12-06 10:00:21,000\tINFO updater.py:400 -- New status: syncing-files
2026-12-06 10:00:30,000\tINFO updater.py:470 -- [6/7] Running setup commands
2026-12-06 10:01:40,500\tINFO updater.py:510 -- [7/7] Starting the Ray runtime
2026-12-06 10:01:50,000\tINFO updater.py:210 -- New status: up-to-date
   a line Ray's shell printed without a prefix
"""
T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC).timestamp()


def test_updater_marks_read_ssh_up_and_setup_done() -> None:
    assert R.updater_marks(RAY_UP_LOG, tz=UTC) == [(T0 + 20.0, "ssh_up"), (T0 + 100.5, "setup_done")]


# (rule, marks, launched_at, expected (ssh_up_at, setup_done_at))
HEAD_CASES = [
    ("the first marks after the head's launch", [(10.0, "ssh_up"), (50.0, "setup_done")], 0.0, (10.0, 50.0)),
    ("marks of an earlier head (before this launch) are not this head's",
     [(10.0, "ssh_up"), (50.0, "setup_done"), (110.0, "ssh_up"), (150.0, "setup_done")], 100.0,
     (110.0, 150.0)),
    ("a later `ray up --no-restart` does not move the first marks",
     [(10.0, "ssh_up"), (50.0, "setup_done"), (500.0, "ssh_up"), (520.0, "setup_done")], 0.0, (10.0, 50.0)),
    ("no marks (pretty log, or no log): None, not invented", [], 0.0, (None, None)),
]


@pytest.mark.parametrize(("rule", "marks", "launched", "want"), HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_head_phases(rule: str, marks: list[tuple[float, str]], launched: float,
                     want: tuple[float | None, float | None]) -> None:
    p = R.head_phases(marks, launched)
    assert (p["ssh_up_at"], p["setup_done_at"]) == want


# --- the edges, with fakes ----------------------------------------------------------------------------
def _summary_payload() -> dict[str, Any]:
    # the shape of Ray 2.60's GET /nodes?view=summary (uint64 startTimeMs as a string)
    return {"result": True, "msg": "Node summary fetched.", "data": {"summary": [
        {"ip": "127.0.0.1", "raylet": {"nodeId": "aa", "instanceId": "i-head", "state": "ALIVE",
                                       "nodeManagerAddress": "127.0.0.1",
                                       "startTimeMs": str(int((T0 + 4.0) * 1000))}},
        {"ip": "127.0.0.1", "raylet": {"nodeId": "bb", "instanceId": "i-w1", "state": "DEAD",
                                       "nodeManagerAddress": "127.0.0.1",
                                       "startTimeMs": str(int((T0 + 19.5) * 1000))}},
    ]}}


class _Dashboard(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(_summary_payload() if self.path.startswith("/nodes?view=summary") else {}).encode()
        self.send_response(200 if self.path.startswith("/nodes?view=summary") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dashboard() -> Any:
    srv = HTTPServer(("127.0.0.1", 0), _Dashboard)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


class FakeEC2:
    def __init__(self) -> None:
        self.filters: list[Any] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "describe_instances"
        fake = self

        class P:
            def paginate(self, Filters: list[Any]) -> list[dict[str, Any]]:  # noqa: N803 - boto3's name
                fake.filters.append(Filters)
                lt = datetime.fromtimestamp(T0, tz=UTC)
                return [{"Reservations": [{"Instances": [
                    {"InstanceId": "i-head", "LaunchTime": lt, "State": {"Name": "running"},
                     "PrivateIpAddress": "10.0.1.5",
                     "Tags": [{"Key": "ray-node-type", "Value": "head"},
                              {"Key": "ray-user-node-type", "Value": "ray.head.default"}]},
                    {"InstanceId": "i-w1", "LaunchTime": datetime.fromtimestamp(T0 + 10, tz=UTC),
                     "State": {"Name": "terminated"}, "InstanceLifecycle": "spot",
                     "Tags": [{"Key": "ray-node-type", "Value": "worker"},
                              {"Key": "ray-user-node-type", "Value": "ray.worker.spot"}]},
                ]}]}]

        return P()


def test_fetch_ray_nodes_reads_the_dashboards_node_table(dashboard: str) -> None:
    nodes = fetch_ray_nodes(dashboard)
    assert [(n.instance_id, n.start_s, n.alive) for n in nodes] == [("i-head", T0 + 4.0, True),
                                                                     ("i-w1", T0 + 19.5, False)]


def test_fetch_ray_nodes_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        fetch_ray_nodes("http://10.0.1.5:8265")  # refused before any connection


def test_collect_joins_ec2_and_the_dashboard(dashboard: str) -> None:
    ec2 = FakeEC2()
    rep = collect(ec2, "raylab-t1", lambda: dashboard, boot_delay_s=0.0)
    assert ec2.filters == [[{"Name": "tag:ray-cluster-name", "Values": ["raylab-t1"]}]]
    by_id = {n["instance_id"]: n for n in rep["nodes"]}
    assert by_id["i-head"]["launch_to_alive_s"] == 4.0 and by_id["i-head"]["ssh_up_at"] is None
    assert by_id["i-w1"]["launch_to_alive_s"] == 9.5 and by_id["i-w1"]["market"] == "spot"
    assert rep["summary"]["worker_launch_to_alive_max_s"] == 9.5 and rep["summary"]["within_target"] is True


def test_collect_reads_the_heads_phases_from_the_ray_up_log(dashboard: str) -> None:
    def at(dt: float) -> str:  # `ray up` logs the machine's local time
        return datetime.fromtimestamp(T0 + dt).strftime("%Y-%m-%d %H:%M:%S,000")

    log = (f"{at(1)}\tINFO updater.py:283 -- [1/7] Waiting for SSH to become available\n"
           f"{at(2)}\tINFO updater.py:301 -- Success.\n"
           f"{at(3)}\tINFO updater.py:510 -- [7/7] Starting the Ray runtime\n")
    rep = collect(FakeEC2(), "c", lambda: dashboard, head_log=log)
    head = next(n for n in rep["nodes"] if n["kind"] == "head")
    assert (head["launch_to_ssh_s"], head["ssh_to_setup_s"], head["setup_to_alive_s"]) == (2.0, 1.0, 1.0)
    worker = next(n for n in rep["nodes"] if n["kind"] == "worker")
    assert worker["ssh_up_at"] is None and worker["setup_s"] is None  # aws workers: not invented


def test_collect_never_raises() -> None:
    def down() -> str:
        raise RuntimeError("tunnel exited")

    rep = collect(FakeEC2(), "c", down)
    assert rep["nodes"] == [] and "tunnel exited" in rep["error"]
