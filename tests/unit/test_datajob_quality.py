"""The quality filter: each threshold drops for its own named reason, first reason wins."""

from __future__ import annotations

import pytest

from raylab.datajob import quality

GOOD = {"duration_s": 4.0, "rms_dbfs": -25.0, "clip_ratio": 0.0, "silence_ratio": 0.4, "snr_db": 25.0,
        "speaking_rate_wps": 3.0, "up_votes": 3, "down_votes": 0}


@pytest.mark.parametrize(("change", "reason"), [
    ({}, None),
    ({"duration_s": 0.6}, "too_short"),
    ({"duration_s": 25.0}, "too_long"),
    ({"rms_dbfs": -52.0}, "too_quiet"),
    ({"clip_ratio": 0.02}, "clipped"),
    ({"silence_ratio": 0.9}, "mostly_silent"),
    ({"snr_db": 4.0}, "low_snr"),
    ({"speaking_rate_wps": 0.2}, "too_slow"),
    ({"speaking_rate_wps": 9.0}, "too_fast"),
    ({"up_votes": 1, "down_votes": 3}, "voted_down"),
    ({"up_votes": 0, "down_votes": 0}, None),  # no votes yet is not a reason
    ({"up_votes": None, "down_votes": None}, None),
    ({"duration_s": 0.5, "snr_db": 2.0}, "too_short"),  # first reason in REASONS order
])
def test_drop_reason(change: dict, reason: str | None) -> None:
    assert quality.drop_reason({**GOOD, **change}) == reason


def test_all_failed_rules_are_listed_in_order() -> None:
    f = {**GOOD, "snr_db": 1.0, "silence_ratio": 0.95, "duration_s": 30.0}
    assert quality.reasons(f) == ["too_long", "mostly_silent", "low_snr"]
    assert set(quality.reasons(f)) <= set(quality.REASONS)


def test_thresholds_are_explicit_and_adjustable() -> None:
    strict = quality.Thresholds(min_snr_db=30.0)
    assert quality.drop_reason(GOOD, strict) == "low_snr"
    assert quality.DEFAULT.as_dict()["min_snr_db"] == 10.0
