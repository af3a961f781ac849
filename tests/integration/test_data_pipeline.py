"""The data stage end to end on real local Ray: a generated Common Voice sample (espeak-ng speech,
MP3 + FLAC) plus bad data, through Ray Data, checked against an independent decoder.

Every Ray instance here is a NEW isolated one with its own temp dir (the job's ``ray.init(
address="local")``, or a ``ray start --head --block`` this module starts and stops by process
group); RAY_ADDRESS is removed so nothing attaches to another cluster on the host.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
sf = pytest.importorskip("soundfile")

from raylab.datajob import quality, report, sample  # noqa: E402
from tests.conftest import ROOT, json_out, run_cli  # noqa: E402

pytestmark = pytest.mark.integration

ROWS = 24
BAD = {"corrupt_audio": 1, "empty_audio": 2, "unknown_format": 1, "missing_column:sentence": 3,
       "wrong_type:audio": 2}
NO_RAY_ADDRESS = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 good clips in 2 files, plus: a file of 4 bad rows (truncated MP3, empty bytes, null audio,
    text), a file missing `sentence` (3 rows), a file whose `audio` is a string (2 rows), a non-parquet."""
    d = tmp_path_factory.mktemp("cv") / "src"
    sample.write_sample(d, ROWS, seed=11, files=2)
    rows = pq.read_table(d / "1.parquet").slice(0, 4).to_pylist()
    bad = [dict(r, path=f"bad_{i}.mp3") for i, r in enumerate(rows)]
    bad[0]["audio"] = {"bytes": bad[0]["audio"]["bytes"][:300] + b"\x00" * 600, "path": "x"}
    bad[1]["audio"] = {"bytes": b"", "path": "y"}
    bad[2]["audio"] = None
    bad[3]["audio"] = {"bytes": b"these are not audio bytes", "path": "z"}
    pq.write_table(pa.Table.from_pylist(bad, schema=sample.schema()), d / "bad_rows.parquet")
    base = pq.read_table(d / "0.parquet")
    pq.write_table(base.slice(0, 3).drop_columns(["sentence"]), d / "no_sentence.parquet")
    wrong = base.slice(3, 2)
    pq.write_table(wrong.set_column(wrong.column_names.index("audio"), "audio", pa.array(["a", "b"])),
                   d / "audio_as_text.parquet")
    (d / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    return d


def truth(source: Path) -> dict[str, float]:
    """path -> duration by soundfile.info on the original bytes (the independent decoder)."""
    out = {}
    for f in ("0.parquet", "1.parquet"):
        for r in pq.read_table(source / f, columns=["path", "audio"]).to_pylist():
            out[r["path"]] = sf.info(io.BytesIO(r["audio"]["bytes"])).duration
    return out


def test_job_standalone_on_local_ray_agrees_with_an_independent_decoder(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "workloads" / "common_voice.py"), "--source", str(source),
                        "--out", str(out), "--num-cpus", "2", "--blocks", "6", "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=NO_RAY_ADDRESS, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout.strip().splitlines()[-1].removeprefix("RAYLAB_SUMMARY "))
    assert s == json.loads((out / "summary.json").read_text())
    assert "isolated local Ray (2 CPU" in p.stderr

    # bad data: counted per reason, the rest completed
    assert s["errors_by_reason"] == BAD
    assert {(Path(f["path"]).name, f["reason"]) for f in s["files_left_out"]} == {
        ("no_sentence.parquet", "missing_column:sentence"), ("audio_as_text.parquet", "wrong_type:audio"),
        ("broken.parquet", "unreadable_file")}
    assert s["decoded"] == ROWS and s["kept"] + s["dropped"] == ROWS
    assert s["clips"] == ROWS + sum(BAD.values())

    # durations: within 1% of soundfile.info for every decoded clip and every kept clip
    durations = truth(source)
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    decoded = [r for r in clips if r["status"] != "error"]
    assert {r["path"] for r in decoded} == set(durations)
    for r in decoded:
        assert r["duration_s"] == pytest.approx(durations[r["path"]], rel=0.01), r["path"]
    feats = pq.read_table(out / "features").to_pylist()
    assert len(feats) == s["kept"] > 0
    assert len({r["path"] for r in feats}) == len(feats)
    for r in feats:
        assert r["duration_s"] == pytest.approx(durations[r["path"]], rel=0.01)
        assert len(r["logmel_mean"]) == 40

    # the filter: every recorded reason follows from the recorded features and thresholds
    t = quality.Thresholds(**s["thresholds"])
    for r in decoded:
        assert r["reason"] == quality.drop_reason(r, t), r["path"]
        assert r["status"] == ("dropped" if r["reason"] else "kept")
    assert s["dropped_by_reason"] == dict(Counter(r["reason"] for r in decoded if r["reason"]))
    assert {r["path"] for r in feats} == {r["path"] for r in decoded if r["status"] == "kept"}

    # statistics: recomputed from the rows, per accent, gender and age
    for key in report.GROUP_BY:
        assert s["by"][key] == report.group_stats(clips, key)
        assert sum(g["clips"] for g in s["by"][key]) == len(clips)
    assert s["kept_hours"] == pytest.approx(sum(r["duration_s"] for r in feats) / 3600, abs=1e-5)
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")


def test_cli_run_with_limit(source: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for f in ("0.parquet", "1.parquet"):
        (good / f).write_bytes((source / f).read_bytes())
    p = run_cli("data", "run", "--source", str(good), "--out", str(tmp_path / "o"), "--limit", "5",
                "--num-cpus", "1", "--json", env={"RAY_ADDRESS": ""})
    assert p.returncode == 0, p.stderr[-3000:]
    s = json_out(p)
    assert s["ok"] is True and s["clips"] == 5 and s["errors"] == 0 and s["cluster_cpus"] == 1
    assert pq.read_table(tmp_path / "o" / "features").num_rows == s["kept"]


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A real Ray head with a dashboard, on 127.0.0.1 with its own temp dir and ports."""
    from raylab.procs import free_port, spawn, stop_group
    from raylab.targets.local.head import loopback_env

    tmp = tempfile.mkdtemp(prefix="rl-dt-", dir="/tmp")
    ports = {}
    while len(set(ports.values())) < 7:
        ports = {n: free_port() for n in ("gcs", "dash", "client", "metrics", "al", "ag", "re")}
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={ports['gcs']}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={ports['dash']}", f"--ray-client-server-port={ports['client']}",
           f"--metrics-export-port={ports['metrics']}", f"--dashboard-agent-listen-port={ports['al']}",
           f"--dashboard-agent-grpc-port={ports['ag']}", f"--runtime-env-agent-port={ports['re']}",
           "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={tmp}", "--num-cpus=2",
           "--object-store-memory=300000000", "--disable-usage-stats"]
    env = {**NO_RAY_ADDRESS, **loopback_env(NO_RAY_ADDRESS)}
    proc = spawn(cmd, Path(tmp) / "head.log", env=env)
    url = f"http://127.0.0.1:{ports['dash']}"
    try:
        from raylab.datajob.submit import dashboard_up

        deadline = time.monotonic() + 90
        while not dashboard_up(url):
            assert proc.poll() is None, (Path(tmp) / "head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the test's Ray head did not come up in 90 s"
            time.sleep(1)
        yield url
    finally:
        stop_group(proc.pid, timeout=3.0)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def test_stage7_runs_as_a_ray_job_on_the_labs_cluster(ray_head: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from raylab.context import Context
    from raylab.stages.stage7_data import STAGE
    from raylab.targets import get_target
    from raylab.ui import UI

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the lab's local cluster runs
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ctx = Context(target_name="local", lab="t7", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                  make_target=get_target)
    ctx.state.put("cluster", {"dashboard_url": ray_head})
    applied = STAGE.apply(ctx)
    assert applied["where"].startswith("Ray Job on the lab's cluster") and applied["job_id"]
    checks = STAGE.verify(ctx)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    s = ctx.state.get("data")
    assert s["clips"] == 40 and s["read_blocks"] == 8 and s["cluster_cpus"] == 2
    # a second apply converges without running the job again
    assert STAGE.apply(ctx)["kept"] == s["kept"]
    STAGE.destroy(ctx)
    assert not (tmp_path / ".raylab" / "data").exists() and ctx.state.get("data") == {}
