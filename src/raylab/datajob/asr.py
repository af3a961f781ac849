"""Optional offline transcription (PyPI ``pocketsphinx``: its en-us model ships inside the wheel;
no download) and word error rate against the clip's ``sentence``. Install with ``.[asr]``.

Expect ~0.5-2.5 s of CPU per clip and a high WER on synthetic or noisy speech: pocketsphinx is
a small recognizer; the point is a real per-clip model cost for the cluster to scale on.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from raylab.errors import RaylabError

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words (Levenshtein)."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


@functools.lru_cache(maxsize=1)
def _decoder() -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RaylabError("--asr needs the pocketsphinx package", "pip install 'raylab[asr]'") from None
    return Decoder(loglevel="FATAL")


def transcribe(samples: np.ndarray, sample_rate: int) -> str:
    """Text recognized in 16 kHz mono float samples ('' when nothing is recognized)."""
    if sample_rate != 16_000:
        raise ValueError(f"pocketsphinx's en-us model needs 16 kHz audio, got {sample_rate}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    dec = _decoder()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return hyp.hypstr if hyp is not None else ""
