"""Stages 4 and 5 for real.

- ``test_stress_job_on_isolated_head``: the job runner, sampler, timeline and chart against a
  one-node Ray head this test starts itself (own temp dir and ports, inside a network namespace
  with only loopback, stopped by PID). No twin needed.
- ``test_stress_and_scaling_on_local_target``: the local target at a tiny scale (see below).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


# --- the probe: runs inside `unshare --net` (only loopback), started by the test below -------------
def _probe(work: Path) -> dict:
    import urllib.request

    from raylab.context import Context
    from raylab.observe.run import run_stress
    from raylab.procs import free_port, spawn, stop_group
    from raylab.ui import UI

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    gcs, dash = free_port(), free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    tmp = Path(f"/tmp/rl-{os.getpid()}")
    cmd = [ray_bin, "start", "--head", "--block", "--temp-dir", str(tmp), "--port", str(gcs),
           "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--num-cpus", "2", "--include-dashboard", "true", "--disable-usage-stats",
           "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", "0",
           "--min-worker-port", "0", "--max-worker-port", "0"]
    proc = spawn(cmd, work / "head.log", env=env)
    try:
        url = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/api/version", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("head did not come up: " + (work / "head.log").read_text()[-2000:]) \
                        from None
                time.sleep(1)
        cfg = work / "cluster.yaml"
        cfg.write_text(json.dumps({
            "cluster_name": "probe", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.25,
            "head_node_type": "ray.head.default",
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 2}, "node_config": {"InstanceType": "c7i.large"}},
                "ray.worker.ondemand": {"resources": {"CPU": 4}, "min_workers": 0, "max_workers": 2,
                                        "node_config": {"InstanceType": "c7i.4xlarge"}}}}))

        class HeadOnly:  # the target's two verbs this run needs; EC2 is absent here
            name = "local"

            def dashboard_url(self, ctx: Context) -> str:
                return url

            def aws_env(self, ctx: Context) -> dict[str, str]:
                raise RuntimeError("no EC2 in this probe")

        ctx = Context(target_name="local", lab="probe", ui=UI(), workdir=work / ".raylab", _target=HeadOnly())
        ctx.state.put("cluster", {"cluster_name": "raylab-probe", "config_path": str(cfg),
                                  "gcs_address": f"127.0.0.1:{gcs}", "scale": 4})
        return run_stress(ctx, tasks=6, duration=3.0, scale=4, out_dir=work / "run")
    finally:
        stop_group(proc.pid)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_stress_job_on_isolated_head(tmp_path: Path) -> None:
    """6 x 3 s tasks on a 2-CPU head: all complete, the timeline and chart are written."""
    from raylab.observe import timeline as tl

    inner = f"ip link set lo up && exec {sys.executable} {__file__} {tmp_path}"
    p = subprocess.run(["unshare", "--net", "sh", "-c", inner], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert (s["tasks_total"], s["tasks_completed"], s["tasks_failed"]) == (6, 6, 0)
    assert s["makespan_s"] >= 9  # 3 waves of 2 tasks x 3 s on 2 CPUs
    assert s["peak_workers"] == 0  # no worker nodes: only the head ran tasks
    meta, samples = tl.read(Path(s["timeline"]))
    assert meta["tasks"] == 6 and len(samples) >= 3
    assert max(x["tasks"]["running"] or 0 for x in samples) >= 1
    assert Path(s["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


if __name__ == "__main__":
    out = _probe(Path(sys.argv[1]))
    print(json.dumps(out, default=str))
