"""The job's summary: counts per status and reason, and per-accent/gender/age statistics.

Pure functions over the per-clip results (a list of dicts without the log-mel arrays), so a
test can recompute every number from the rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raylab.datajob.quality import Thresholds
from raylab.datajob.sources import FileIssue

GROUP_BY = ("accent", "gender", "age")


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def group_stats(rows: Iterable[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per value of ``key`` (empty/None -> "unknown"): clips, kept, dropped, errors, mean duration
    and SNR of decoded clips, hours kept."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r.get(key) or "unknown"].append(r)
    out = []
    for value, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        decoded = [r for r in rs if r["status"] != "error"]
        kept = [r for r in rs if r["status"] == "kept"]
        out.append({
            key: value, "clips": len(rs), "kept": len(kept),
            "dropped": sum(r["status"] == "dropped" for r in rs),
            "errors": sum(r["status"] == "error" for r in rs),
            "mean_duration_s": _mean([r["duration_s"] for r in decoded]),
            "mean_snr_db": _mean([r["snr_db"] for r in decoded]),
            "kept_hours": round(sum(r["duration_s"] for r in kept) / 3600, 6),
        })
    return out


def summarize(rows: Sequence[Mapping[str, Any]], issues: list[FileIssue], thresholds: Thresholds,
              seconds: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    status = Counter(r["status"] for r in rows)
    dropped = Counter(r["reason"] for r in rows if r["status"] == "dropped")
    errors = Counter(r["reason"] for r in rows if r["status"] == "error")
    for i in issues:  # rows of files left out (schema) count as errors of that reason
        if i.rows:
            errors[i.reason] += i.rows
    error_total = sum(errors.values())
    kept = [r for r in rows if r["status"] == "kept"]
    decoded = [r for r in rows if r["status"] != "error"]
    wers = [r["wer"] for r in decoded if r.get("wer") is not None]
    return {
        "clips": len(rows) + sum(i.rows for i in issues),
        "decoded": len(decoded),
        "kept": status["kept"],
        "dropped": status["dropped"],
        "errors": error_total,
        "dropped_by_reason": dict(sorted(dropped.items())),
        "errors_by_reason": dict(sorted(errors.items())),
        "files_left_out": [{"path": i.path, "rows": i.rows, "reason": i.reason} for i in issues],
        "kept_hours": round(sum(r["duration_s"] for r in kept) / 3600, 6),
        "decoded_audio_s": round(sum(r["duration_s"] for r in decoded), 3),
        "formats": dict(sorted(Counter(r["format"] for r in decoded).items())),
        "mean_wer": _mean(wers),
        "seconds": round(seconds, 3),
        "clips_per_s": round(len(rows) / seconds, 3) if seconds > 0 else None,
        "thresholds": thresholds.as_dict(),
        "by": {k: group_stats(rows, k) for k in GROUP_BY},
        **(extra or {}),
    }


def human_lines(s: Mapping[str, Any]) -> list[str]:
    """A few lines a person reads at the end of the job."""
    cpus, cpus_end = s.get("cluster_cpus"), s.get("cluster_cpus_end", s.get("cluster_cpus"))
    lines = [
        f"{s['clips']} clips: {s['kept']} kept, {s['dropped']} dropped, {s['errors']} unreadable "
        f"({s['seconds']:.1f} s, {s.get('clips_per_s') or 0:.1f} clips/s; cluster CPUs "
        f"{cpus} at the start, {cpus_end} at the end)",
        f"kept audio: {s['kept_hours'] * 3600:.1f} s ({s['kept_hours']:.3f} h); formats {s['formats']}",
    ]
    if s["dropped_by_reason"]:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in s["dropped_by_reason"].items()))
    if s["errors_by_reason"]:
        lines.append("unreadable: " + ", ".join(f"{k} {v}" for k, v in s["errors_by_reason"].items()))
    for f in s.get("files_left_out", []):
        lines.append(f"left out {f['path']}: {f['reason']} ({f['rows']} rows)")
    if s.get("mean_wer") is not None:
        lines.append(f"mean word error rate: {s['mean_wer']:.2f}")
    return lines
