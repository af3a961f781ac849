"""Stage 7's decisions and checks (pure), the job-output contract, and the data CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylab.datajob import pipeline, submit
from raylab.stages.stage7_data import checks_for
from tests.conftest import json_out, run_cli

SUMMARY = {"clips": 5, "kept": 2, "dropped": 2, "errors": 1, "out": "/x",
           "dropped_by_reason": {"low_snr": 1, "clipped": 1}}
FEATS = [{"path": "a", "duration_s": 3.0}, {"path": "b", "duration_s": 4.5}]
CLIPS = [{"path": "a", "status": "kept", "reason": None}, {"path": "b", "status": "kept", "reason": None},
         {"path": "c", "status": "dropped", "reason": "low_snr"},
         {"path": "d", "status": "dropped", "reason": "clipped"},
         {"path": "e", "status": "error", "reason": "corrupt_audio"}]


def test_checks_pass_on_consistent_outputs() -> None:
    checks = checks_for(SUMMARY, FEATS, CLIPS)
    assert [c.name for c in checks] == ["counts add up", "features parquet written", "counts match the rows",
                                        "durations present"]
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@pytest.mark.parametrize(("summary", "feats", "clips", "failing"), [
    ({**SUMMARY, "clips": 6}, FEATS, CLIPS, "counts add up"),
    (SUMMARY, FEATS[:1], CLIPS, "features parquet written"),
    (SUMMARY, [FEATS[0], FEATS[0]], CLIPS, "features parquet written"),  # duplicate key
    ({**SUMMARY, "dropped_by_reason": {"low_snr": 2}}, FEATS, CLIPS, "counts match the rows"),
    (SUMMARY, [FEATS[0], {"path": "b", "duration_s": None}], CLIPS, "durations present"),
])
def test_checks_fail_on_inconsistent_outputs(summary: dict, feats: list, clips: list, failing: str) -> None:
    bad = [c.name for c in checks_for(summary, feats, clips) if not c.ok]
    assert bad == [failing]


def test_remote_outputs_checked_from_the_summary() -> None:
    checks = checks_for({**SUMMARY, "out": "local:///tmp/x"}, None, None)
    assert [(c.name, c.ok) for c in checks] == [("counts add up", True), ("features written", True)]


def test_job_summary_line_is_found_in_noisy_logs() -> None:
    logs = "\n".join(["(raylet) something", f"{submit.MARKER}{json.dumps({'kept': 1})}", "noise {",
                      f"prefix {submit.MARKER}{json.dumps({'kept': 2})}", f"{submit.MARKER}not json"])
    assert submit.parse_summary(logs) == {"kept": 2}
    assert submit.parse_summary("nothing here") is None


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:8265", True), ("http://localhost:8265", True),
    ("http://10.0.1.5:8265", False), ("http://54.1.2.3:8265", False), ("http://example.com", False),
])
def test_only_loopback_dashboards_are_contacted(url: str, ok: bool) -> None:
    assert submit.is_loopback_url(url) is ok
    if not ok:
        assert submit.dashboard_up(url) is False  # refused without any connection attempt


@pytest.mark.parametrize(("files", "rows", "cpus", "blocks"), [
    (10, 113_800, 480, 960),  # the plan's 30 x 16 vCPU: 2 blocks per CPU, not 10 blocks
    (10, 113_800, 0, 10),  # no CPU yet (autoscaling from zero): one per file; pass --blocks
    (2, 40, 2, 4),
    (4, 2000, 1, 4),
    (2, 6, 16, 2),  # never blocks of fewer than ~4 rows, never fewer than the files
])
def test_default_read_parallelism(files: int, rows: int, cpus: int, blocks: int) -> None:
    assert pipeline.default_num_blocks(files, rows, cpus) == blocks


def test_job_arguments() -> None:
    assert submit.job_args("s", "o", blocks=8, limit=None) == ["--source", "s", "--out", "o", "--no-progress",
                                                               "--blocks", "8"]


def test_run_on_missing_source_is_one_line_error(tmp_path: Path) -> None:
    p = run_cli("data", "run", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                env={"RAY_ADDRESS": ""})
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: source folder '{tmp_path / 'none'}' does not exist")


def test_schema_reads_a_local_folder(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from raylab.datajob import sample

    blob = {"bytes": b"fLaC\x00\x00\x00\x22xx", "path": "x.flac"}
    r = {"client_id": "c", "path": "x.flac", "audio": blob, "sentence": "s", "up_votes": 1, "down_votes": 0,
         "age": "", "gender": "", "accent": "", "locale": "en", "segment": "", "variant": ""}
    t = pa.Table.from_pylist([r], schema=sample.schema())
    pq.write_table(t, tmp_path / "0.parquet")
    p = run_cli("data", "schema", "--source", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    d = json_out(p)
    assert d["total_rows"] == 1 and d["schema_problem"] is None
    assert "audio: struct<bytes: binary, path: string>" in d["schema"]
    assert d["first_clip"]["sniffed_format"] == "flac"
    assert d["first_clip"]["first_bytes_hex"].startswith("664c6143")  # "fLaC"
