"""Where the parquet lives (a local folder or S3, same code path) and which files are usable.

The footer of every file is read before the Ray job starts (metadata only: cheap even on S3).
A file whose schema cannot hold Common Voice rows (a required column missing, a column of the
wrong type) or that is not parquet at all is counted by reason and left out; the rest runs.
Ray's parquet reader would otherwise fail the whole job on such a file (measured in Ray 2.60:
"Unsupported cast from string to struct").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError

if TYPE_CHECKING:
    import pyarrow as pa

AWS_SOURCE = "s3://anonymous@ray-example-data/common_voice_17/parquet/"
AWS_REGION = "us-west-2"

# column -> the kinds of arrow type accepted ("struct_audio": struct with a binary `bytes` field)
REQUIRED_TYPES = {"path": "string", "audio": "audio", "sentence": "string"}
METADATA_TYPES = {"client_id": "string", "accent": "string", "gender": "string", "age": "string",
                  "locale": "string", "up_votes": "integer", "down_votes": "integer"}


@dataclass(frozen=True)
class Source:
    fs: Any  # pyarrow.fs.FileSystem; Ray reads the same paths through the same filesystem object
    base: str  # path inside ``fs`` (S3: "bucket/prefix", no scheme)
    uri: str  # as the user wrote it


@dataclass
class FileIssue:
    path: str
    rows: int
    reason: str


@dataclass
class Scan:
    good: list[str] = field(default_factory=list)
    good_rows: int = 0
    columns: list[str] = field(default_factory=list)  # what the Ray read asks for
    issues: list[FileIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def s3_endpoint(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """pyarrow's S3 options for the endpoint the AWS SDKs read from the environment
    (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``); {} for AWS's own (pure). pyarrow's
    ``S3FileSystem(...)`` ignores those variables when built explicitly, as raylab builds it."""
    import os
    from urllib.parse import urlsplit

    e = os.environ if env is None else env
    url = e.get("AWS_ENDPOINT_URL_S3") or e.get("AWS_ENDPOINT_URL")
    if not url:
        return {}
    u = urlsplit(url)
    return {"endpoint_override": u.netloc, "scheme": u.scheme or "https"}


def open_source(uri: str) -> Source:
    """A local folder, ``s3://bucket/prefix`` or ``s3://anonymous@bucket/prefix`` (no credentials)."""
    import pyarrow.fs as pafs

    if uri.startswith("s3://"):
        rest = uri[len("s3://"):]
        anonymous = rest.startswith("anonymous@")
        if anonymous:
            rest = rest[len("anonymous@"):]
        fs = (pafs.S3FileSystem(anonymous=anonymous, region=AWS_REGION, **s3_endpoint()) if anonymous
              else pafs.S3FileSystem(**s3_endpoint()))
        return Source(fs, rest.rstrip("/"), uri)
    if "://" in uri and not uri.startswith("local://"):
        raise RaylabError(f"source {uri!r} is not a folder or an s3:// URI", "use a local folder or s3://...")
    p = Path(uri.removeprefix("local://")).expanduser().resolve()
    if not p.exists():
        raise RaylabError(f"source folder {str(p)!r} does not exist",
                          "make one with `raylab data sample --rows 40 --out DIR`")
    return Source(pafs.LocalFileSystem(), str(p), uri)


def list_parquet(src: Source) -> list[str]:
    import pyarrow.fs as pafs

    info = src.fs.get_file_info(src.base)
    if info.type == pafs.FileType.File:
        return [src.base]
    sel = pafs.FileSelector(src.base, recursive=True, allow_not_found=True)
    paths = sorted(i.path for i in src.fs.get_file_info(sel)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if not paths:
        raise RaylabError(f"no .parquet files under {src.uri!r}", "point --source at the parquet folder")
    return paths


def type_kind(t: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "audio"
    if pa.types.is_struct(t):
        idx = t.get_field_index("bytes")
        inner = t.field(idx).type if idx >= 0 else None
        if inner is not None and (pa.types.is_binary(inner) or pa.types.is_large_binary(inner)):
            return "audio"
    return str(t)


def schema_problem(schema: pa.Schema) -> str | None:
    """The reason a file cannot be read as Common Voice rows, or None."""
    for col, kind in REQUIRED_TYPES.items():
        if col not in schema.names:
            return f"missing_column:{col}"
        if type_kind(schema.field(col).type) != kind:
            return f"wrong_type:{col}"
    for col, kind in METADATA_TYPES.items():
        if col in schema.names and type_kind(schema.field(col).type) != kind:
            return f"wrong_type:{col}"
    return None


def scan(src: Source, paths: list[str]) -> Scan:
    import pyarrow.parquet as pq

    out = Scan()
    present: dict[str, int] = dict.fromkeys(METADATA_TYPES, 0)
    for p in paths:
        try:
            with src.fs.open_input_file(p) as fh:
                meta = pq.ParquetFile(fh).metadata
                schema = meta.schema.to_arrow_schema()
        except Exception as e:  # noqa: BLE001 - any unreadable footer is one counted reason
            out.issues.append(FileIssue(p, 0, "unreadable_file"))
            out.notes.append(f"{p}: not a readable parquet file ({type(e).__name__})")
            continue
        problem = schema_problem(schema)
        if problem:
            out.issues.append(FileIssue(p, meta.num_rows, problem))
            continue
        out.good.append(p)
        out.good_rows += meta.num_rows
        for c in METADATA_TYPES:
            present[c] += c in schema.names
    shared = [c for c, n in present.items() if out.good and n == len(out.good)]
    for c, n in present.items():
        if 0 < n < len(out.good):
            out.notes.append(f"column {c!r} is absent from {len(out.good) - n} file(s): not used")
    out.columns = [*REQUIRED_TYPES, *shared]
    return out


def describe(uri: str) -> dict[str, Any]:
    """The real layout: files, rows, row groups, the first file's schema, and the first clip's
    first bytes with the format they sniff as. Reads footers and one record batch only."""
    import pyarrow.parquet as pq

    from raylab.datajob.audio import AudioError, sniff

    src = open_source(uri)
    paths = list_parquet(src)
    files = []
    for p in paths:
        with src.fs.open_input_file(p) as fh:
            meta = pq.ParquetFile(fh).metadata
        files.append({"path": p, "rows": meta.num_rows, "row_groups": meta.num_row_groups})
    first: dict[str, Any] = {}
    with src.fs.open_input_file(paths[0]) as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        cols = [c for c in ("path", "audio", "sentence") if c in schema.names]
        batch = next(pf.iter_batches(batch_size=1, columns=cols), None)
        if batch is not None and batch.num_rows:
            r = batch.to_pylist()[0]
            blob = r.get("audio")
            data = blob.get("bytes") if isinstance(blob, dict) else blob
            first = {"path": r.get("path"), "sentence": r.get("sentence"),
                     "audio_path": blob.get("path") if isinstance(blob, dict) else None}
            if isinstance(data, bytes):
                try:
                    fmt = sniff(data)
                except AudioError as e:
                    fmt = e.reason
                first.update(audio_bytes=len(data), first_bytes_hex=data[:16].hex(), sniffed_format=fmt)
    return {
        "source": uri, "files": files, "total_rows": sum(f["rows"] for f in files),
        "schema": [f"{f.name}: {f.type}" for f in schema], "schema_problem": schema_problem(schema),
        "first_clip": first,
    }
