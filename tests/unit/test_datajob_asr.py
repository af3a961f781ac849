"""Word error rate (pure) and the optional offline recognizer (pocketsphinx, model in its wheel)."""

from __future__ import annotations

import io
import subprocess

import pytest

from raylab.datajob import asr


@pytest.mark.parametrize(("ref", "hyp", "expected"), [
    ("the cat sat", "the cat sat", 0.0),
    ("The cat, sat.", "the cat sat", 0.0),  # case and punctuation do not count
    ("the cat sat", "the bat sat", 1 / 3),  # one substitution
    ("the cat sat", "the sat", 1 / 3),  # one deletion
    ("the cat sat", "the cat sat down", 1 / 3),  # one insertion
    ("the cat sat", "", 1.0),
    ("", "", 0.0),
    ("", "noise", 1.0),
    ("a b c d", "d c b a", 1.0),  # reversed: 4 edits (one word can match)
    ("a b c d", "a x c d", 0.25),
])
def test_wer(ref: str, hyp: str, expected: float) -> None:
    assert asr.wer(ref, hyp) == pytest.approx(expected)


def test_transcribe_real_speech_returns_words() -> None:
    pytest.importorskip("pocketsphinx")
    sf = pytest.importorskip("soundfile")
    from raylab.datajob import audio

    wav = subprocess.run(["espeak-ng", "--stdout", "-v", "en-us", "-s", "140", "hello world"],
                         capture_output=True, check=True, timeout=30).stdout
    sf.info(io.BytesIO(wav))  # a real WAV
    d = audio.decode(wav)
    text = asr.transcribe(d.samples, d.sample_rate)
    assert isinstance(text, str) and asr.words(text)  # something was recognized
    assert 0.0 <= asr.wer("hello world", text) <= max(1.0, len(asr.words(text)) / 2)
    with pytest.raises(ValueError, match="16 kHz"):
        asr.transcribe(d.samples, 8000)


def test_asr_option_fills_transcript_and_wer_per_clip() -> None:
    pytest.importorskip("pocketsphinx")
    pa = pytest.importorskip("pyarrow")
    from raylab.datajob import process, quality, report, sample

    wav = subprocess.run(["espeak-ng", "--stdout", "-v", "en-us", "-s", "140", "good morning everyone"],
                         capture_output=True, check=True, timeout=30).stdout
    r = {"client_id": "c", "path": "a.wav", "audio": {"bytes": wav, "path": "a.wav"},
         "sentence": "Good morning everyone", "up_votes": 1, "down_votes": 0, "age": "", "gender": "",
         "accent": "", "locale": "en", "segment": "", "variant": ""}
    out = process.process_table(pa.Table.from_pylist([r], schema=sample.schema()), asr=True).to_pylist()[0]
    assert out["format"] == "wav" and isinstance(out["transcript"], str)
    assert out["wer"] == pytest.approx(asr.wer("Good morning everyone", out["transcript"]))
    summary = report.summarize([out], [], quality.DEFAULT, seconds=1.0)
    assert summary["mean_wer"] == pytest.approx(round(out["wer"], 4))
