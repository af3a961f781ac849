"""Per-clip features on signals whose true values are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from raylab.datajob import features

SR = 16_000


def tone(seconds: float, amp: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * rms).astype(np.float32)


def test_full_scale_sine_level_and_no_clipping() -> None:
    f = features.compute(tone(2.0, amp=0.5), SR, "")
    assert f["rms_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert f["peak_dbfs"] == pytest.approx(20 * np.log10(0.5), abs=0.05)
    assert f["clip_ratio"] == 0.0
    assert f["duration_s"] == pytest.approx(2.0)


def test_clipping_ratio_counts_samples_at_full_scale() -> None:
    x = np.clip(tone(1.0, amp=2.0), -1.0, 1.0)
    expected = float(np.mean(np.abs(x) >= features.CLIP_LEVEL))
    f = features.compute(x, SR, "")
    assert f["clip_ratio"] == pytest.approx(expected)
    assert 0.5 < f["clip_ratio"] < 0.8  # a sine at 2x full scale spends ~2/3 of its time clipped


@pytest.mark.parametrize("snr_db", [10.0, 20.0, 30.0])
def test_snr_estimate_follows_the_true_snr(snr_db: float) -> None:
    """1 s of noise, 2 s of tone + the same noise, 1 s of noise: the estimate is the tone's power
    over the noise's power (within 2 dB: the voiced frames also carry noise)."""
    amp = 0.3
    noise_rms = (amp / np.sqrt(2)) / 10 ** (snr_db / 20)
    x = noise(4.0, noise_rms)
    x[SR: 3 * SR] += tone(2.0, amp=amp)
    f = features.compute(x, SR, "")
    assert f["snr_db"] == pytest.approx(snr_db, abs=2.0)
    assert f["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert f["voiced_s"] == pytest.approx(2.0, abs=0.1)


def test_speaking_rate_is_words_over_voiced_seconds() -> None:
    x = np.concatenate([np.zeros(SR // 2, np.float32), tone(2.0), np.zeros(SR, np.float32)])
    x += noise(x.shape[0] / SR, 1e-4)
    f = features.compute(x, SR, "Six words, and two aren't here!")
    assert f["words"] == 6
    assert f["speaking_rate_wps"] == pytest.approx(6 / f["voiced_s"])
    assert f["voiced_s"] == pytest.approx(2.0, abs=0.1)


def test_decoder_duration_wins_over_sample_count() -> None:
    assert features.compute(tone(1.0), SR, "", duration_s=1.234)["duration_s"] == 1.234


def test_mel_filterbank_covers_the_band_and_logmel_has_one_value_per_band() -> None:
    fb = features.mel_filterbank(SR)
    assert fb.shape == (features.N_MELS, features.N_FFT // 2 + 1)
    assert (fb >= 0).all() and (fb.max(axis=1) > 0.5).all()
    f = features.compute(tone(1.0, hz=1000.0), SR, "")
    assert len(f["logmel_mean"]) == len(f["logmel_std"]) == features.N_MELS
    # the 1 kHz tone's energy sits in the band whose filter peaks nearest 1 kHz
    peak_band = int(np.argmax(f["logmel_mean"]))
    freqs = np.fft.rfftfreq(features.N_FFT, 1 / SR)
    assert abs(freqs[int(np.argmax(fb[peak_band]))] - 1000.0) < 150.0


def test_a_clip_shorter_than_one_frame_still_has_features() -> None:
    f = features.compute(tone(0.01), SR, "hi")
    assert f["duration_s"] == pytest.approx(0.01)
    assert all(np.isfinite(v) for k, v in f.items() if isinstance(v, float))
