"""Stage 7's local sample is synthesized once (espeak-ng, seeded) and copied by the next labs."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylab.context import Context
from raylab.stages import stage7_data as s7
from raylab.ui import UI


def test_the_sample_is_made_once_and_copied_into_each_lab(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from raylab.datajob import sample

    made: list[Path] = []

    def fake_write(folder: Path, rows: int, seed: int, files: int) -> None:
        made.append(folder)
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"clips %d %d" % (rows, seed))

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "write_sample", fake_write)
    ctx = Context(target_name="local", lab="t", ui=UI(json_mode=True, quiet=True), workdir=tmp_path / "w")
    for lab in ("a", "b"):
        s7._ensure_sample(ctx, tmp_path / lab / "sample")
        assert (tmp_path / lab / "sample" / "part-0.parquet").read_bytes() == b"clips 40 7"
        assert (tmp_path / lab / "sample" / "SAMPLE").exists()
    assert len(made) == 1, made  # the second lab copied the cached sample
    assert [r.phase for r in ctx.clock.rows] == ["sample clips", "sample clips"]
    assert not list((tmp_path / "cache").rglob("*.tmp")), "no half-written cache left"
