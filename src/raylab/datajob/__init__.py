"""The data stage's job: Common Voice 17 parquet -> decoded audio -> per-clip features -> filter.

Modules: ``audio`` (sniff + decode from bytes), ``features`` (per-clip measures), ``quality``
(the filter and its reasons), ``pipeline`` (Ray Data), ``sample`` (a local stand-in made with
espeak-ng), ``asr`` (optional offline transcription + WER), ``chart`` (PNG).
Heavy imports (numpy, soundfile, pyarrow, ray) live inside functions or in these modules only;
nothing here is imported by ``raylab --help``.

A piece: may import other pieces and the base; never targets, stages or the CLI.
"""
