"""Bad data gets a reason, not a crash: per row (process) and per file (sources), then counted
(report). No Ray here: the same functions run inside the Ray job."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
sf = pytest.importorskip("soundfile")

from raylab.datajob import process, quality, report, sample, sources  # noqa: E402
from raylab.errors import RaylabError  # noqa: E402


def flac(seconds: float = 2.0) -> bytes:
    rng = np.random.default_rng(0)
    x = 0.01 * rng.standard_normal(int(seconds * 16_000))
    x[8000:24000] += 0.4 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 16_000, format="FLAC")
    return buf.getvalue()


def row(path: str, blob: object, sentence: object = "one two three four") -> dict:
    return {"client_id": "c", "path": path, "audio": blob, "sentence": sentence, "up_votes": 2,
            "down_votes": 0, "age": "", "gender": "", "accent": "", "locale": "en", "segment": "",
            "variant": ""}


def test_every_row_gets_one_result_with_a_reason() -> None:
    good = flac()
    rows = [row("ok.flac", {"bytes": good, "path": "ok.flac"}),
            row("empty.mp3", {"bytes": b"", "path": "e"}),
            row("none.mp3", None),
            row("text.mp3", {"bytes": b"just some text", "path": "t"}),
            row("cut.flac", {"bytes": good[:50] + b"\x00" * 300, "path": "c"}),
            row("nosentence.flac", {"bytes": good, "path": "n"}, sentence=None)]
    t = pa.Table.from_pylist(rows, schema=sample.schema())
    out = process.process_table(t).to_pylist()
    got = {r["path"]: (r["status"], r["reason"]) for r in out}
    assert got["ok.flac"][0] in ("kept", "dropped")
    assert got["empty.mp3"] == ("error", "empty_audio")
    assert got["none.mp3"] == ("error", "empty_audio")
    assert got["text.mp3"] == ("error", "unknown_format")
    assert got["cut.flac"] == ("error", "corrupt_audio")
    assert got["nosentence.flac"] == ("error", "wrong_type:sentence")
    ok = next(r for r in out if r["path"] == "ok.flac")
    assert ok["duration_s"] == pytest.approx(2.0) and ok["format"] == "flac" and ok["words"] == 4
    assert ok["reason"] == quality.drop_reason(ok)


def test_missing_required_column_and_wrong_audio_type() -> None:
    t = pa.table({"path": ["a", "b"], "audio": [{"bytes": flac()}, {"bytes": flac()}]})
    assert {r["reason"] for r in process.process_table(t).to_pylist()} == {"missing_column:sentence"}
    t = pa.table({"path": ["a"], "audio": ["not bytes"], "sentence": ["x"]})
    assert process.process_table(t).to_pylist()[0]["reason"] == "wrong_type:audio"
    # plain binary audio (no struct) is accepted
    t = pa.table({"path": ["a"], "audio": [flac()], "sentence": ["x y"]})
    assert process.process_table(t).to_pylist()[0]["status"] != "error"


@pytest.mark.parametrize(("schema", "problem"), [
    (sample.schema(), None),
    (pa.schema([("path", pa.string()), ("audio", pa.binary()), ("sentence", pa.large_string())]), None),
    (pa.schema([("path", pa.string()), ("audio", pa.struct([("bytes", pa.binary())]))]),
     "missing_column:sentence"),
    (pa.schema([("path", pa.string()), ("audio", pa.string()), ("sentence", pa.string())]),
     "wrong_type:audio"),
    (pa.schema([("path", pa.int64()), ("audio", pa.binary()), ("sentence", pa.string())]), "wrong_type:path"),
    (pa.schema([("path", pa.string()), ("audio", pa.binary()), ("sentence", pa.string()),
                ("up_votes", pa.string())]), "wrong_type:up_votes"),
])
def test_schema_problem(schema: pa.Schema, problem: str | None) -> None:
    assert sources.schema_problem(schema) == problem


def test_scan_leaves_out_bad_files_with_their_row_counts(tmp_path: Path) -> None:
    good = pa.Table.from_pylist([row("a.flac", {"bytes": flac(), "path": "a"})], schema=sample.schema())
    pq.write_table(good, tmp_path / "0.parquet")
    pq.write_table(good.drop_columns(["sentence"]), tmp_path / "1.parquet")
    pq.write_table(good.drop_columns(["accent"]), tmp_path / "2.parquet")
    (tmp_path / "3.parquet").write_bytes(b"not parquet at all")
    src = sources.open_source(str(tmp_path))
    scan = sources.scan(src, sources.list_parquet(src))
    assert [Path(p).name for p in scan.good] == ["0.parquet", "2.parquet"]
    assert scan.good_rows == 2
    assert {(Path(i.path).name, i.rows, i.reason) for i in scan.issues} == {
        ("1.parquet", 1, "missing_column:sentence"), ("3.parquet", 0, "unreadable_file")}
    assert "accent" not in scan.columns and "sentence" in scan.columns  # absent from one good file
    assert any("accent" in n for n in scan.notes)


def test_open_source_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(RaylabError, match="does not exist"):
        sources.open_source(str(tmp_path / "nope"))
    with pytest.raises(RaylabError, match="not a folder or an s3:// URI"):
        sources.open_source("gs://bucket/x")
    with pytest.raises(RaylabError, match="no .parquet files"):
        sources.list_parquet(sources.open_source(str(tmp_path)))


def test_summary_counts_and_group_stats_add_up() -> None:
    rows = [
        {"status": "kept", "reason": None, "duration_s": 4.0, "snr_db": 30.0, "format": "mp3", "accent": "A"},
        {"status": "kept", "reason": None, "duration_s": 6.0, "snr_db": 20.0, "format": "flac",
         "accent": "A"},
        {"status": "dropped", "reason": "low_snr", "duration_s": 5.0, "snr_db": 3.0, "format": "mp3",
         "accent": ""},
        {"status": "error", "reason": "corrupt_audio", "duration_s": None, "snr_db": None, "format": None,
         "accent": "A"},
    ]
    issues = [sources.FileIssue("x.parquet", 3, "missing_column:sentence")]
    s = report.summarize(rows, issues, quality.DEFAULT, seconds=2.0)
    assert (s["clips"], s["kept"], s["dropped"], s["errors"], s["decoded"]) == (7, 2, 1, 4, 3)
    assert s["errors_by_reason"] == {"corrupt_audio": 1, "missing_column:sentence": 3}
    assert s["dropped_by_reason"] == {"low_snr": 1}
    assert s["kept_hours"] == pytest.approx(10.0 / 3600, abs=1e-6)
    accent = {g["accent"]: g for g in s["by"]["accent"]}
    assert accent["A"] == {"accent": "A", "clips": 3, "kept": 2, "dropped": 0, "errors": 1,
                           "mean_duration_s": 5.0, "mean_snr_db": 25.0, "kept_hours": round(10 / 3600, 6)}
    assert accent["unknown"]["dropped"] == 1
    assert any("unreadable: corrupt_audio 1" in line for line in report.human_lines(s))
