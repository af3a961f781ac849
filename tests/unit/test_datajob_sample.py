"""The local sample: the real Common Voice layout, real speech, deterministic by seed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

sf = pytest.importorskip("soundfile")
pq = pytest.importorskip("pyarrow.parquet")

from raylab.datajob import audio, sample  # noqa: E402
from tests.conftest import json_out, run_cli  # noqa: E402

LAYOUT = ["client_id", "path", "audio", "sentence", "up_votes", "down_votes", "age", "gender", "accent",
          "locale", "segment", "variant"]


def test_sample_cli_writes_the_real_layout_with_decodable_speech(tmp_path: Path) -> None:
    p = run_cli("data", "sample", "--rows", "6", "--out", str(tmp_path / "s"), "--seed", "3", "--json")
    assert p.returncode == 0, p.stderr
    out = json_out(p)
    assert out["rows"] == 6 and len(out["files"]) == 2
    t = pq.read_table(tmp_path / "s")
    assert t.num_rows == 6
    assert t.schema.names == LAYOUT
    assert str(t.schema.field("audio").type) == "struct<bytes: binary, path: string>"
    for r in t.to_pylist():
        data = r["audio"]["bytes"]
        fmt = audio.sniff(data)
        assert fmt == r["path"].rsplit(".", 1)[1] and fmt in ("mp3", "flac")
        info = sf.info(io.BytesIO(data))
        assert info.samplerate == sample.SOURCE_SR and 1.5 < info.duration < 20
        assert r["sentence"] in sample.SENTENCES and r["locale"] == "en"


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path) -> None:
    a = sample.write_sample(tmp_path / "a", 3, seed=5, files=1)[0]
    b = sample.write_sample(tmp_path / "b", 3, seed=5, files=1)[0]
    c = sample.write_sample(tmp_path / "c", 3, seed=6, files=1)[0]
    ta, tb, tc = (pq.read_table(x).to_pylist() for x in (a, b, c))
    assert ta == tb
    assert [r["audio"]["bytes"] for r in ta] != [r["audio"]["bytes"] for r in tc]


def test_plan_draws_common_voice_like_imperfections() -> None:
    plans = sample.plan(300, seed=0)
    assert sum(p.snr_db < 6 for p in plans) > 5  # noisy rooms
    assert sum(p.gain > 1 for p in plans) > 5  # clipped
    assert sum(p.trail_s > 8 for p in plans) > 5  # long silences
    assert {p.fmt for p in plans} == {"MP3", "FLAC"}
    assert all(p.lead_s >= 0.1 for p in plans)


def test_bad_rows_argument_is_one_line_error(tmp_path: Path) -> None:
    p = run_cli("data", "sample", "--rows", "0", "--out", str(tmp_path / "s"))
    assert p.returncode == 2
    assert p.stderr.strip() == "error: --rows 0 is not a positive number (use e.g. --rows 40)"


@pytest.mark.parametrize(("env", "want"), [
    ({}, {}),
    ({"AWS_ENDPOINT_URL": "http://169.254.169.254:4566"},
     {"endpoint_override": "169.254.169.254:4566", "scheme": "http"}),
    ({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://s3.example:443"},
     {"endpoint_override": "s3.example:443", "scheme": "https"}),
])
def test_s3_reads_go_where_the_aws_sdks_would(env: dict[str, str], want: dict[str, str]) -> None:
    """pyarrow's explicit S3FileSystem ignores AWS_ENDPOINT_URL; the data job passes it (found by the
    AWS rehearsal: stage 7 read real S3's name instead of the twin's)."""
    from raylab.datajob.sources import s3_endpoint

    assert s3_endpoint(env) == want
