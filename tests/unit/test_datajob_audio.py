"""Sniffing and decoding clips from bytes, checked against soundfile's own view of each file."""

from __future__ import annotations

import io

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from raylab.datajob import audio  # noqa: E402


def encode(fmt: str, seconds: float = 1.5, sr: int = 48_000, subtype: str | None = None) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(("head", "fmt"), [
    (b"fLaC\x00\x00\x00\x22", "flac"),
    (b"ID3\x04\x00\x00\x00\x00", "mp3"),
    (b"\xff\xfb\x94\xc4\x00\x00", "mp3"),  # MPEG-1 layer III frame sync, no ID3 tag
    (b"\xff\xf3\x64\xc4\x00\x00", "mp3"),  # MPEG-2 layer III
    (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
    (b"OggS\x00\x02\x00\x00", "ogg"),
])
def test_sniff_known_formats(head: bytes, fmt: str) -> None:
    assert audio.sniff(head) == fmt


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty_audio"),
    (b"hello world, this is text", "unknown_format"),
    (b"RIFF\x24\x08\x00\x00AVI LIST", "unknown_format"),  # RIFF but not WAVE
    (b"\xff\xf9\x00\x00", "unknown_format"),  # sync bits but layer 'reserved' (ADTS AAC)
])
def test_sniff_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(audio.AudioError) as e:
        audio.sniff(data)
    assert e.value.reason == reason


@pytest.mark.parametrize(("fmt", "subtype", "sniffed"), [
    ("WAV", "PCM_16", "wav"), ("FLAC", None, "flac"), ("MP3", None, "mp3"), ("OGG", "VORBIS", "ogg"),
])
def test_decode_matches_soundfile_info_and_resamples(fmt: str, subtype: str | None, sniffed: str) -> None:
    data = encode(fmt, subtype=subtype)
    d = audio.decode(data)
    info = sf.info(io.BytesIO(data))
    assert d.fmt == sniffed
    assert d.source_rate == 48_000 and d.sample_rate == 16_000
    assert d.duration_s == pytest.approx(info.duration, rel=0.01)
    assert d.samples.dtype == np.float32
    assert d.samples.shape[0] == pytest.approx(info.duration * 16_000, rel=0.01)
    # a 220 Hz tone at 0.3 amplitude keeps its level through decode + resample
    rms = float(np.sqrt(np.mean(d.samples[2000:-2000] ** 2)))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


def test_truncated_flac_is_corrupt() -> None:
    data = encode("FLAC")
    with pytest.raises(audio.AudioError) as e:
        audio.decode(data[:60] + b"\x00" * 400)
    assert e.value.reason == "corrupt_audio"


def test_stereo_is_mixed_to_mono() -> None:
    x = np.stack([np.full(16_000, 0.5, np.float32), np.full(16_000, -0.1, np.float32)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV")
    d = audio.decode(buf.getvalue())
    assert d.samples.ndim == 1 and d.duration_s == pytest.approx(1.0)
    assert float(np.median(d.samples)) == pytest.approx(0.2, abs=1e-3)
