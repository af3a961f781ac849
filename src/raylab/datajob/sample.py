"""A local stand-in for Common Voice 17: the real parquet layout, real synthesized speech.

Layout (the Hugging Face Common Voice layout; check it against the bucket with
``raylab data schema``): ``client_id, path, audio{bytes, path}, sentence, up_votes, down_votes,
age, gender, accent, locale, segment, variant``. ``audio.bytes`` holds a whole encoded file.

Speech comes from Debian ``espeak-ng`` (voice by accent and gender, varied speed), then gets
Common Voice-like imperfections: leading/trailing silence, background noise at a drawn SNR, a
few clipped, near-silent or down-voted clips. Clips are encoded as MP3 (most) and FLAC at 48 kHz
with soundfile. The same ``seed`` gives the same rows.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylab.errors import RaylabError

SOURCE_SR = 48_000

SENTENCES = (
    "The museum opens at nine in the morning on weekdays.",
    "She planted tomatoes and basil along the sunny fence.",
    "Our train was delayed by heavy snow near the mountain pass.",
    "Please bring a warm jacket because the evenings get cold.",
    "The library keeps old maps of the harbour in a locked room.",
    "He fixed the bicycle chain with a borrowed set of tools.",
    "A small boat drifted slowly toward the rocky island.",
    "Fresh bread from the corner bakery sells out before noon.",
    "The committee will announce its decision next Thursday.",
    "Children were playing football in the park after school.",
    "The river flooded the low fields twice that spring.",
    "Turn left at the church and follow the narrow road uphill.",
    "Several volunteers cleaned the beach on Saturday morning.",
    "The orchestra tuned their instruments before the concert.",
    "My grandmother wrote letters to her sister every week.",
    "The new bridge shortened the journey by almost an hour.",
    "Thunder rolled across the valley long after the storm passed.",
    "A quiet cafe on the square serves excellent coffee.",
    "The old lighthouse was painted red and white last summer.",
    "Farmers gathered at the market to sell cheese and honey.",
    "He read the instructions twice before assembling the shelf.",
    "The city council approved funding for a new playground.",
    "Bright lanterns hung from the trees during the festival.",
    "The scientist recorded the temperature every hour.",
)

ACCENTS = (  # (Common Voice accent label, espeak-ng voice)
    ("United States English", "en-us"),
    ("England English", "en-gb"),
    ("Scottish English", "en-gb-scotland"),
    ("Caribbean English", "en-029"),
    ("", "en-us"),
)
GENDERS = (("male_masculine", "m3"), ("female_feminine", "f3"), ("", "m1"))
AGES = ("teens", "twenties", "thirties", "fourties", "fifties", "sixties", "")


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one clip, drawn up front (so a seed fixes the whole sample)."""

    index: int
    sentence: str
    accent: str
    voice: str
    gender: str
    age: str
    speed_wpm: int
    lead_s: float
    trail_s: float
    snr_db: float
    gain: float
    fmt: str  # "MP3" | "FLAC"
    up_votes: int
    down_votes: int
    client: str


def plan(rows: int, seed: int = 0) -> list[ClipPlan]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        accent, voice = ACCENTS[int(rng.integers(len(ACCENTS)))]
        gender, variant = GENDERS[int(rng.integers(len(GENDERS)))]
        kind = rng.random()
        snr = float(rng.uniform(18, 40))
        gain, lead = float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.1, 1.0))
        trail = float(rng.uniform(0.2, 1.4))
        if kind < 0.08:  # noisy room
            snr = float(rng.uniform(0, 6))
        elif kind < 0.14:  # microphone gain far too high: clipped
            gain = float(rng.uniform(4, 8))
        elif kind < 0.20:  # forgot to stop recording
            trail = float(rng.uniform(9, 14))
        up = int(rng.integers(2, 6))
        down = int(rng.integers(0, 2)) if rng.random() > 0.06 else up + 2
        out.append(ClipPlan(
            index=i, sentence=SENTENCES[int(rng.integers(len(SENTENCES)))], accent=accent,
            voice=f"{voice}+{variant}", gender=gender, age=AGES[int(rng.integers(len(AGES)))],
            speed_wpm=int(rng.integers(130, 190)), lead_s=lead, trail_s=trail, snr_db=snr, gain=gain,
            fmt="FLAC" if rng.random() < 0.3 else "MP3", up_votes=up, down_votes=down,
            client=f"{int(rng.integers(0, 2**62)):016x}" * 8,
        ))
    return out


def espeak_path() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RaylabError("espeak-ng is not installed: the sample's speech is made with it",
                          "run `make sysdeps` (or apt-get install espeak-ng)")
    return exe


def speak(text: str, voice: str, speed_wpm: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    p = subprocess.run([espeak_path(), "--stdout", "-v", voice, "-s", str(speed_wpm), text],
                       capture_output=True, timeout=60, check=False)
    if p.returncode != 0 or not p.stdout:
        raise RaylabError(f"espeak-ng failed for voice {voice!r}: {p.stderr.decode(errors='replace')[:200]}",
                          "check `espeak-ng --voices=en`")
    x, sr = sf.read(io.BytesIO(p.stdout), dtype="float32")
    return x, int(sr)


def render(p: ClipPlan, seed: int) -> bytes:
    """The encoded clip (MP3 or FLAC bytes) for one plan."""
    import soundfile as sf
    import soxr

    speech, sr = speak(p.sentence, p.voice, p.speed_wpm)
    speech = soxr.resample(speech, sr, SOURCE_SR).astype(np.float32)
    speech *= p.gain / max(float(np.max(np.abs(speech))), 1e-6)
    x = np.concatenate([np.zeros(int(p.lead_s * SOURCE_SR), np.float32), speech,
                        np.zeros(int(p.trail_s * SOURCE_SR), np.float32)])
    rng = np.random.default_rng([seed, p.index])
    speech_power = float(np.mean(np.asarray(speech, dtype=np.float64) ** 2))
    noise: np.ndarray = rng.standard_normal(int(x.shape[0])).astype(np.float32)
    noise = np.convolve(noise, np.ones(4, np.float32) / 4, mode="same")  # a little less hiss-like
    noise *= np.sqrt(speech_power / 10 ** (p.snr_db / 10) / max(float(np.mean(noise ** 2)), 1e-12))
    x = np.clip(x + noise, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x, SOURCE_SR, format=p.fmt)
    return buf.getvalue()


def row(p: ClipPlan, seed: int) -> dict[str, Any]:
    ext = p.fmt.lower()
    name = f"common_voice_en_{40_000_000 + p.index}.{ext}"
    return {
        "client_id": p.client, "path": name, "audio": {"bytes": render(p, seed), "path": name},
        "sentence": p.sentence, "up_votes": p.up_votes, "down_votes": p.down_votes, "age": p.age,
        "gender": p.gender, "accent": p.accent, "locale": "en", "segment": "", "variant": "",
    }


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("client_id", pa.string()), ("path", pa.string()),
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("sentence", pa.string()), ("up_votes", pa.int64()), ("down_votes", pa.int64()),
        ("age", pa.string()), ("gender", pa.string()), ("accent", pa.string()), ("locale", pa.string()),
        ("segment", pa.string()), ("variant", pa.string()),
    ])


def check_rows(rows: int) -> None:
    if rows < 1:
        raise RaylabError(f"--rows {rows} is not a positive number", "use e.g. --rows 40")


def write_sample(out: Path, rows: int, seed: int = 0, files: int = 2, row_group_rows: int = 5) -> list[Path]:
    """Write ``rows`` clips as ``files`` parquet files named 0.parquet, 1.parquet, ... under ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_rows(rows)
    files = max(1, min(files, rows))
    out.mkdir(parents=True, exist_ok=True)
    plans = plan(rows, seed)
    written = []
    for k in range(files):
        part = plans[k::files]
        table = pa.Table.from_pylist([row(p, seed) for p in part], schema=schema())
        path = out / f"{k}.parquet"
        pq.write_table(table, path, row_group_size=row_group_rows)
        written.append(path)
    return written
