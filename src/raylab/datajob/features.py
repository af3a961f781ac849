"""Per-clip measures from 16 kHz mono float32 samples. Pure functions of numpy arrays.

Frames are 25 ms with a 10 ms hop. A frame is *voiced* when its level is above an adaptive
threshold between the clip's noise floor (10th percentile of frame levels) and its speech level
(95th percentile): ``floor + 0.35 * (speech - floor)``, and never below -60 dBFS. The SNR
estimate is the mean power of voiced frames over the mean power of the other frames.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

FRAME_S = 0.025
HOP_S = 0.010
N_MELS = 40
N_FFT = 512
CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped (float full scale is 1.0)
EPS = 1e-10

FEATURE_COLUMNS = (
    "duration_s", "rms_dbfs", "peak_dbfs", "clip_ratio", "silence_ratio", "snr_db",
    "voiced_s", "words", "speaking_rate_wps", "logmel_mean", "logmel_std",
)

_WORD = re.compile(r"[A-Za-z0-9']+")


def frame_signal(x: np.ndarray, sr: int) -> np.ndarray:
    """Frames (n_frames, frame_len); a clip shorter than one frame gives one zero-padded frame."""
    n, hop = int(round(FRAME_S * sr)), int(round(HOP_S * sr))
    if x.shape[0] < n:
        x = np.pad(x, (0, n - x.shape[0]))
    count = 1 + (x.shape[0] - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    return x[idx]


def db(power: np.ndarray | float) -> np.ndarray | float:
    return 10.0 * np.log10(np.maximum(power, EPS))


def voiced_mask(frame_power_db: np.ndarray) -> np.ndarray:
    floor = float(np.percentile(frame_power_db, 10))
    speech = float(np.percentile(frame_power_db, 95))
    threshold = max(floor + 0.35 * (speech - floor), -60.0)
    return frame_power_db > threshold


@functools.lru_cache(maxsize=4)
def mel_filterbank(sr: int = 16_000, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-style mel filters, shape (n_mels, n_fft // 2 + 1)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sr / 2)), n_mels + 2)
    hz = mel_to_hz(mels)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, bins.shape[0]), dtype=np.float32)
    for m in range(n_mels):
        lo, mid, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (bins - lo) / max(mid - lo, EPS)
        down = (hi - bins) / max(hi - mid, EPS)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    return fb


def log_mel(frames: np.ndarray, sr: int) -> np.ndarray:
    """Log mel energies, shape (n_frames, N_MELS)."""
    window = np.hanning(frames.shape[1]).astype(np.float32)
    spec = np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=1)) ** 2
    return np.log(spec @ mel_filterbank(sr).T + EPS)


def count_words(sentence: str) -> int:
    return len(_WORD.findall(sentence or ""))


def compute(x: np.ndarray, sr: int, sentence: str, duration_s: float | None = None) -> dict[str, Any]:
    """All features of one clip. ``duration_s`` is the decoder's (source-rate) duration if known."""
    x = x.astype(np.float32, copy=False)
    frames = frame_signal(x, sr)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    pdb = np.asarray(db(power))
    voiced = voiced_mask(pdb)
    n_voiced = int(voiced.sum())
    voiced_power = float(power[voiced].mean()) if n_voiced else 0.0
    quiet = ~voiced
    other_power = float(power[quiet].mean()) if quiet.any() else float(np.percentile(power, 10))
    voiced_s = n_voiced * HOP_S
    words = count_words(sentence)
    mel = log_mel(frames, sr)
    return {
        "duration_s": float(duration_s if duration_s is not None else x.shape[0] / sr),
        "rms_dbfs": float(db(float(np.mean(x.astype(np.float64) ** 2)))),
        "peak_dbfs": float(20.0 * np.log10(max(float(np.max(np.abs(x))), EPS))),
        "clip_ratio": float(np.mean(np.abs(x) >= CLIP_LEVEL)),
        "silence_ratio": float(1.0 - n_voiced / power.shape[0]),
        "snr_db": float(db(voiced_power) - db(other_power)) if n_voiced else 0.0,
        "voiced_s": float(voiced_s),
        "words": words,
        "speaking_rate_wps": float(words / voiced_s) if voiced_s > 0 else 0.0,
        "logmel_mean": mel.mean(axis=0).astype(np.float32).tolist(),
        "logmel_std": mel.std(axis=0).astype(np.float32).tolist(),
    }
