"""Audio blobs as stored in Common Voice parquet: sniff the container from its bytes, decode
with soundfile (libsndfile from the wheel; no system ffmpeg), resample to 16 kHz with soxr.

Common Voice ships MP3; Ray's own benchmark says ``format="flac"``. Neither is trusted: the
first bytes decide (``fLaC``, ``ID3`` or an MPEG frame sync, ``RIFF....WAVE``, ``OggS``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TARGET_SR = 16_000


class AudioError(Exception):
    """A clip that cannot be decoded; ``reason`` is a short stable key used in the counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def sniff(data: bytes) -> str:
    """The container format from the first bytes: 'flac' | 'mp3' | 'wav' | 'ogg'.

    Raises ``AudioError('empty_audio')`` for no bytes, ``AudioError('unknown_format')`` otherwise.
    """
    if not data:
        raise AudioError("empty_audio", "0 bytes")
    head = bytes(data[:12])
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3"):
        return "mp3"
    # MPEG audio frame sync: 11 set bits (0xFFE), then a layer field that is not 'reserved'
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0:
        return "mp3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    raise AudioError("unknown_format", f"first bytes {head[:8].hex()}")


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # float32 mono at ``sample_rate``
    sample_rate: int
    source_rate: int
    frames: int  # frames at the source rate, as decoded
    fmt: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.source_rate if self.source_rate else 0.0


def decode(data: bytes, target_sr: int = TARGET_SR) -> Decoded:
    """Decode an encoded clip to float32 mono at ``target_sr``.

    Raises ``AudioError`` with reason 'empty_audio', 'unknown_format' or 'corrupt_audio'.
    """
    import numpy as np
    import soundfile as sf
    import soxr

    fmt = sniff(data)
    try:
        x, sr = sf.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for bad data
        raise AudioError("corrupt_audio", f"{fmt}: {type(e).__name__}: {e}") from None
    if x.shape[0] == 0 or sr <= 0:
        raise AudioError("corrupt_audio", f"{fmt}: no audio frames")
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    frames = int(mono.shape[0])
    if sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    return Decoded(np.ascontiguousarray(mono, dtype=np.float32), target_sr, int(sr), frames, fmt)
