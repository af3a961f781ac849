"""`raylab status` as a user sees it without a cluster, and its JSON shape."""

from __future__ import annotations

from pathlib import Path

from raylab.cli.cmd_status import status_view
from tests.conftest import run_cli


def test_status_without_a_cluster_says_what_to_do(tmp_path: Path) -> None:
    r = run_cli("status", "--workdir", str(tmp_path / ".raylab"), "--json", timeout=60)
    assert r.returncode != 0
    assert "raylab up" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_status_view_has_the_contract_keys() -> None:
    st = {"cluster_name": "raylab-t", "gcs_address": "127.0.0.1:1",
          "ray_nodes": [{"type": "ray.worker.ondemand", "state": "RUNNING", "group": "active",
                         "instance_id": "i-1", "ip": "127.0.0.1", "resources": {"CPU": 4.0}, "used": {}}],
          "instances": [{"id": "i-1", "type": "c7i.4xlarge", "state": "running", "market": "spot",
                         "node_type": "ray.worker.spot", "kind": "worker", "az": "us-west-2a"}],
          "launch_failures": [{"code": "VcpuLimitExceeded", "count": 3}], "agreement": {"ok": True}}
    v = status_view(st)
    assert v["ray_nodes"][0]["type"] == "ray.worker.ondemand"
    assert v["ray_nodes"][0]["resources"] == {"CPU": 4.0}
    assert v["instances"][0] == {"id": "i-1", "type": "c7i.4xlarge", "state": "running", "market": "spot",
                                 "node_type": "ray.worker.spot", "kind": "worker"}
    assert v["launch_failures"][0]["code"] == "VcpuLimitExceeded"
