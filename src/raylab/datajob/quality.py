"""The quality filter: explicit thresholds; every dropped clip carries the first reason it failed.

Pure functions over the feature dict, so the counts can be recomputed from the features alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    min_duration_s: float = 1.0
    max_duration_s: float = 20.0
    min_rms_dbfs: float = -45.0
    max_clip_ratio: float = 0.001  # more than 0.1% of samples at full scale
    max_silence_ratio: float = 0.75
    min_snr_db: float = 10.0
    min_speaking_rate_wps: float = 0.5
    max_speaking_rate_wps: float = 7.0
    max_down_vote_share: float = 0.5  # community votes: down / (up + down) above this

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT = Thresholds()

# The order reasons are checked in (a clip reports the first one it fails).
REASONS = (
    "too_short", "too_long", "too_quiet", "clipped", "mostly_silent", "low_snr",
    "too_slow", "too_fast", "voted_down",
)


def reasons(f: Mapping[str, Any], t: Thresholds = DEFAULT) -> list[str]:
    """Every rule the clip fails, in ``REASONS`` order (empty: keep)."""
    up, down = int(f.get("up_votes") or 0), int(f.get("down_votes") or 0)
    rate = f["speaking_rate_wps"]
    checks = (
        ("too_short", f["duration_s"] < t.min_duration_s),
        ("too_long", f["duration_s"] > t.max_duration_s),
        ("too_quiet", f["rms_dbfs"] < t.min_rms_dbfs),
        ("clipped", f["clip_ratio"] > t.max_clip_ratio),
        ("mostly_silent", f["silence_ratio"] > t.max_silence_ratio),
        ("low_snr", f["snr_db"] < t.min_snr_db),
        ("too_slow", rate < t.min_speaking_rate_wps),
        ("too_fast", rate > t.max_speaking_rate_wps),
        ("voted_down", up + down > 0 and down / (up + down) > t.max_down_vote_share),
    )
    return [name for name, failed in checks if failed]


def drop_reason(f: Mapping[str, Any], t: Thresholds = DEFAULT) -> str | None:
    r = reasons(f, t)
    return r[0] if r else None
