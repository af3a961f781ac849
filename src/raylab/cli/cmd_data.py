"""`raylab data run|sample|schema`: the data stage's job, its local sample, the real layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raylab.cli.options import JsonOpt, QuietOpt
from raylab.ui import UI

AWS_SOURCE = "s3://anonymous@ray-example-data/common_voice_17/parquet/"

data_app = typer.Typer(
    help="Common Voice 17 on Ray Data: run the job, make a local sample, show the real layout.",
    no_args_is_help=True, rich_markup_mode=None, add_completion=False,
)


@data_app.command("run")
def run(
    source: Annotated[str, typer.Option("--source", help="Folder or s3:// URI of the parquet files.")],
    out: Annotated[str, typer.Option("--out", help="Folder, s3:// or local:// URI for the outputs.")],
    limit: Annotated[int | None, typer.Option("--limit", help="Process at most N clips.")] = None,
    asr: Annotated[bool, typer.Option("--asr", help="Transcribe (pocketsphinx) and compute WER.")] = False,
    blocks: Annotated[int | None, typer.Option("--blocks", help="Read units (override_num_blocks).")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray address (default: RAY_ADDRESS, else a new isolated local Ray).")] = None,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="CPUs of the new local Ray.")] = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode every clip, measure it, filter it, write the kept clips' features (parquet),
    a summary, per-accent/gender/age statistics and a chart under --out."""
    from raylab.datajob import pipeline, report

    ui = UI(json_mode=json_mode, quiet=quiet)
    opts = pipeline.JobOptions(source=source, out=out, limit=limit, asr=asr, num_blocks=blocks)
    with pipeline.ray_session(address=address, num_cpus=num_cpus) as where:
        ui.step(f"Common Voice job on {where}: {source} -> {out}")
        summary = pipeline.run(opts, progress=not (json_mode or quiet))
    for line in report.human_lines(summary):
        ui.info(line)
    ui.success(f"features of {summary['kept']} kept clips in {out}/features; summary.json, chart.png")
    ui.result({"ok": True, **summary})


@data_app.command("sample")
def sample(
    rows: Annotated[int, typer.Option("--rows", help="How many clips.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the parquet files.")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same rows.")] = 0,
    files: Annotated[int, typer.Option("--files", help="How many parquet files.")] = 2,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a local stand-in for Common Voice 17: the real parquet layout, speech synthesized
    by espeak-ng, encoded as MP3 and FLAC, with silence padding and noise."""
    from raylab.datajob import sample as sample_mod

    ui = UI(json_mode=json_mode, quiet=quiet)
    sample_mod.check_rows(rows)
    with ui.waiting(f"synthesizing {rows} clips with espeak-ng"):
        written = sample_mod.write_sample(out, rows, seed=seed, files=files)
    ui.success(f"{rows} clips in {len(written)} parquet file(s) under {out}")
    ui.result({"ok": True, "rows": rows, "seed": seed, "files": [str(p) for p in written]})


@data_app.command("schema")
def schema(
    source: Annotated[str, typer.Option("--source", help="Where to look (default: S3).")] = AWS_SOURCE,
    json_mode: JsonOpt = False,
) -> None:
    """Print the real schema, file sizes and the first bytes of a clip (reads parquet footers and
    one row; on the default source this is anonymous S3 traffic to us-west-2)."""
    from raylab.datajob import sources

    ui = UI(json_mode=json_mode)
    d = sources.describe(source)
    ui.result({"ok": True, **d})
    if json_mode:
        return
    ui.info(f"{len(d['files'])} files, {d['total_rows']} rows under {source}")
    rows = [[f["path"], f["rows"], f["row_groups"]] for f in d["files"]]
    ui.table(None, ["file", "rows", "row groups"], rows)
    for line in d["schema"]:
        ui.info(f"  {line}")
    fc = d["first_clip"]
    if fc:
        ui.info(f"first clip {fc.get('path')}: {fc.get('audio_bytes')} bytes, "
                f"starts {fc.get('first_bytes_hex')} -> {fc.get('sniffed_format')}")
    if d["schema_problem"]:
        ui.warning(f"this layout does not match what the job expects: {d['schema_problem']}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
