"""One batch of Common Voice rows -> one row of results per clip, never an exception per clip.

This is the function Ray Data maps over the dataset, and the plain loop the benchmark compares
against. Every input row gives exactly one output row with ``status`` 'kept', 'dropped' or
'error' and a ``reason`` (the quality rule that dropped it, or what was wrong with the data:
``missing_column:<name>``, ``wrong_type:<name>``, ``empty_audio``, ``unknown_format``,
``corrupt_audio``). The output schema is fixed, whatever the input looked like.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raylab.datajob import audio, features, quality

if TYPE_CHECKING:
    import pyarrow as pa

REQUIRED = ("path", "audio", "sentence")
METADATA = ("client_id", "accent", "gender", "age", "up_votes", "down_votes", "locale")


def output_schema() -> pa.Schema:
    import pyarrow as pa

    f64, s = pa.float64(), pa.string()
    return pa.schema([
        ("path", s), ("status", s), ("reason", s), ("format", s), ("source_rate", pa.int64()),
        ("duration_s", f64), ("rms_dbfs", f64), ("peak_dbfs", f64), ("clip_ratio", f64),
        ("silence_ratio", f64), ("snr_db", f64), ("voiced_s", f64), ("words", pa.int64()),
        ("speaking_rate_wps", f64), ("logmel_mean", pa.list_(pa.float32())),
        ("logmel_std", pa.list_(pa.float32())), ("transcript", s), ("wer", f64),
        ("sentence", s), ("client_id", s), ("accent", s), ("gender", s), ("age", s), ("locale", s),
        ("up_votes", pa.int64()), ("down_votes", pa.int64()),
    ])


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _count(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _audio_bytes(v: Any) -> bytes | None:
    """The encoded bytes from ``audio`` ({bytes, path} struct, or plain binary); None if wrong type."""
    if isinstance(v, dict):
        v = v.get("bytes")
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    return None


def process_row(r: dict[str, Any], missing: tuple[str, ...], thresholds: quality.Thresholds,
                asr: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": _text(r.get("path")), "sentence": _text(r.get("sentence")),
        **{k: _text(r.get(k)) for k in ("client_id", "accent", "gender", "age", "locale")},
        "up_votes": _count(r.get("up_votes")), "down_votes": _count(r.get("down_votes")),
    }

    def error(reason: str) -> dict[str, Any]:
        return {**out, "status": "error", "reason": reason}

    if missing:
        return error(f"missing_column:{missing[0]}")
    if out["path"] is None:
        return error("wrong_type:path")
    raw = r.get("audio")
    data = _audio_bytes(raw)
    if data is None:
        inner = raw.get("bytes") if isinstance(raw, dict) else raw
        return error("empty_audio" if inner is None else "wrong_type:audio")
    if out["sentence"] is None:
        return error("wrong_type:sentence")
    try:
        d = audio.decode(data)
    except audio.AudioError as e:
        return error(e.reason)
    f = features.compute(d.samples, d.sample_rate, out["sentence"], d.duration_s)
    out.update(f, format=d.fmt, source_rate=d.source_rate)
    if asr:
        from raylab.datajob import asr as asr_mod

        out["transcript"] = asr_mod.transcribe(d.samples, d.sample_rate)
        out["wer"] = asr_mod.wer(out["sentence"], out["transcript"])
    reason = quality.drop_reason(out, thresholds)
    return {**out, "status": "dropped" if reason else "kept", "reason": reason}


def process_table(table: pa.Table, thresholds: quality.Thresholds = quality.DEFAULT,
                  asr: bool = False) -> pa.Table:
    """Results for every row of ``table`` (any schema) in ``output_schema()``."""
    import pyarrow as pa

    names = set(table.column_names)
    missing = tuple(c for c in REQUIRED if c not in names)
    keep = [c for c in (*REQUIRED, *METADATA) if c in names]
    rows = table.select(keep).to_pylist()
    out = [process_row(r, missing, thresholds, asr) for r in rows]
    return pa.Table.from_pylist(out, schema=output_schema())
