"""Finding 9: the interruption watcher runs on a node's Python 3.10 (and 3.8), as the nodes run it.

On a node the watcher is one copied file (``~/raylab/imds_watcher.py``) started with the node's
Python, not an installed raylab. Here it is copied the same way and run by python3.10 against
raylab's IMDSv2 twin on 127.0.0.1 until it has polled a few times.
"""

from __future__ import annotations

import glob
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from raylab.targets.local.imds import ImdsServer, MetadataStore

WATCHER = Path(__file__).resolve().parents[2] / "src" / "raylab" / "spot" / "imds_watcher.py"
IID = "i-0123456789abcdef0"


def _python(minor: str) -> str:
    found = sorted(glob.glob(f"/root/.pyenv/versions/{minor}.*/bin/python")) or \
        [p for p in [shutil.which(f"python{minor}")] if p]
    if not found:
        pytest.skip(f"no python{minor} on this machine")
    return found[-1]


@pytest.mark.parametrize("minor", ["3.8", "3.10"])
def test_watcher_compiles_and_imports_on_old_python(tmp_path: Path, minor: str) -> None:
    node_copy = tmp_path / "imds_watcher.py"
    shutil.copy(WATCHER, node_copy)
    r = subprocess.run([_python(minor), "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import imds_watcher as w; print(w.parse_time('2026-11-29T10:00:00Z').isoformat())",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2026-11-29T10:00:00+00:00"


def test_watcher_sees_a_notice_under_python310(tmp_path: Path) -> None:
    """A real run: started, the twin posts an interruption notice, the watcher reports it and tries
    to drain (Ray is not installed in this python3.10, so the drain fails and is logged: no crash)."""
    node_copy = tmp_path / "imds_watcher.py"
    shutil.copy(WATCHER, node_copy)
    log = tmp_path / "imds-watcher.log"
    store = MetadataStore()
    store.register(IID, instance_type="c7i.4xlarge", az="us-west-2a", lifecycle="spot")
    with ImdsServer(store) as srv:
        p = subprocess.Popen([_python("3.10"), str(node_copy), "--gcs-address=127.0.0.1:1",
                              "--node-id", "ab" * 14, "--endpoint", srv.endpoint_for(IID),
                              "--interval", "0.05", "--log", str(log)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and p.poll() is None and not log.exists():
                time.sleep(0.05)
            store.mark_interruption(IID)
            while time.monotonic() < deadline and p.poll() is None:
                if "drain" in log.read_text():
                    break
                time.sleep(0.1)
            assert p.poll() is None, f"the watcher exited: {p.communicate()[1]}"
        finally:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    events = [json.loads(ln) for ln in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "stopped", kinds
    assert any(k.startswith("drain") for k in kinds), kinds
