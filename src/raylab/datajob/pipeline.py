"""The Ray Data job: parquet -> decode + features + filter (map_batches) -> kept clips' features.

Outputs under ``out`` (a local folder, ``s3://...`` or ``local://...`` = the driver's disk):
- ``features/``: parquet, one row per kept clip keyed by ``path``, with
  ``duration_s``, the features and the clip's metadata;
- ``clips.parquet``: every clip's status, reason and scalar features (the audit trail);
- ``summary.json``: counts by status and reason, per-accent/gender/age statistics, timings;
- ``chart.png``: duration and SNR distributions, kept vs dropped.

Read parallelism: 10 large files would be 10 blocks, so 10 map tasks for the whole cluster.
``override_num_blocks`` (``--blocks``; default 2 per CPU present) makes Ray split each file's output
into many blocks, so the CPU-heavy map runs as many tasks and the autoscaler sees demand for many CPUs.
Measured in Ray 2.60: its default Parquet reader (DataSourceV2) ignores ``override_num_blocks``
(it bin-packs row groups into 128 MiB read units: one unit, one map task for a small sample) and
reads the footers on an actor pool first (seconds of fixed cost per job). The job therefore uses
the V1 Parquet reader (``DataContext.use_datasource_v2 = False``), which honours it, and turns off
Ray Data's per-operator CPU reservation (the read is light, the map is heavy).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from raylab.datajob import process, quality, report, sources
from raylab.errors import RaylabError

SMALL_COLUMNS_DROP = ("logmel_mean", "logmel_std")


@dataclass(frozen=True)
class JobOptions:
    source: str
    out: str
    limit: int | None = None
    asr: bool = False
    num_blocks: int | None = None
    batch_size: int = 32  # Ray Data's per-batch cost is ~ms: 8 clips per call cost ~10% more CPU (bench)
    thresholds: quality.Thresholds = field(default_factory=quality.Thresholds)


def default_num_blocks(files: int, rows: int, cluster_cpus: int) -> int:
    """Two blocks per CPU the cluster has now, never blocks of fewer than ~4 clips, never fewer
    blocks than files. Each block costs a task and a scheduling gap (measured: ~60 ms on a busy
    core), so more blocks than CPUs only pays when the cluster will grow: then pass ``--blocks``
    for the size it will reach (stage 7 on aws: 4 per vCPU of 30 x c7i.4xlarge = 1920)."""
    return max(files, min(max(rows // 4, 1), 2 * max(cluster_cpus, 1)))


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                object_store_mb: int = 1024) -> Iterator[str]:
    """Connect to ``address`` (or ``RAY_ADDRESS``, as set for a Ray Job); otherwise start a NEW
    isolated local instance with its own temp dir, and stop it (and only it) at the end."""
    import ray

    if ray.is_initialized():
        yield "already connected"
        return
    target = address or os.environ.get("RAY_ADDRESS")
    tmp = None
    if target:
        ray.init(address=target, log_to_driver=True)
        where = f"cluster at {target}"
    else:
        for attempt in (1, 2):  # Ray gives a new node 30 s to register: a saturated host can miss it
            tmp = tempfile.mkdtemp(prefix="rl-cv-", dir="/tmp")
            try:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         _temp_dir=tmp, object_store_memory=object_store_mb * 1024 * 1024)
                break
            except Exception as e:  # noqa: BLE001 - ray.init raises a bare Exception on time-outs
                ray.shutdown()
                _kill_started_under(tmp)  # a failed init leaves its GCS/raylet running
                shutil.rmtree(tmp, ignore_errors=True)
                if attempt == 2:
                    raise RaylabError(f"a local Ray instance did not start: {str(e).splitlines()[0]}",
                                      "the machine may be overloaded: see `uptime`, then retry") from None
        where = f"isolated local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPU, {tmp})"
    try:
        yield where
    finally:
        ray.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _kill_started_under(tmp: str) -> None:
    """SIGKILL the processes of a failed local start: our children whose command line names ``tmp``
    (the temp dir is new and unique to this attempt, so nothing else matches)."""
    import signal

    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tmp in cmd:
            with contextlib.suppress(OSError):
                os.kill(int(d), signal.SIGKILL)


def _filter_kept(t: Any) -> Any:
    import pyarrow.compute as pc

    kept = t.filter(pc.equal(t["status"], "kept"))
    return kept.drop_columns(["status", "reason"])


def _out_writer(out: str) -> tuple[Any, str]:
    """(pyarrow filesystem, base path) for the driver's own writes under ``out``."""
    import pyarrow.fs as pafs

    if out.startswith("s3://"):
        from raylab.datajob.sources import s3_endpoint

        return pafs.S3FileSystem(**s3_endpoint()), out[len("s3://"):].rstrip("/")
    path = os.path.abspath(os.path.expanduser(out.removeprefix("local://")))
    os.makedirs(path, exist_ok=True)
    return pafs.LocalFileSystem(), path


def run(opts: JobOptions, progress: bool = True) -> dict[str, Any]:
    """Run the job on the connected Ray cluster; return the summary (also written to ``out``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from raylab.datajob import chart

    if opts.limit is not None and opts.limit < 1:
        raise RaylabError(f"--limit {opts.limit} is not a positive number", "leave it out to process all")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.use_datasource_v2 = False  # see the module's docstring: V1 honours override_num_blocks
    # Ray Data reserves a share of the CPUs for each operator; with a light read and a heavy map that
    # idles CPUs the map could use (measured on 2 CPUs: ~1.4 map tasks at a time instead of 2).
    ctx.op_resource_reservation_enabled = False
    t0 = time.monotonic()
    src = sources.open_source(opts.source)
    scan = sources.scan(src, sources.list_parquet(src))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    rows_in = min(scan.good_rows, opts.limit) if opts.limit else scan.good_rows
    blocks = opts.num_blocks or default_num_blocks(len(scan.good), rows_in, cpus)
    rows: list[dict[str, Any]] = []
    fs_out, base = _out_writer(opts.out)
    table = pa.Table.from_pylist([], schema=process.output_schema())
    if scan.good:
        ds = ray.data.read_parquet(scan.good, filesystem=src.fs, columns=scan.columns,
                                   override_num_blocks=blocks)
        if opts.limit:
            ds = ds.limit(opts.limit)
        results = ds.map_batches(process.process_table, fn_kwargs={"thresholds": opts.thresholds,
                                                                   "asr": opts.asr},
                                 batch_format="pyarrow", batch_size=opts.batch_size, zero_copy_batch=True)
        # The results are small (no audio: ~0.5 KB per clip, ~60 MB for 113,800 clips): they come back
        # to the driver, which writes the outputs. One Ray Data execution, no second pass.
        parts = [t for t in ray.get(results.to_arrow_refs()) if t.num_rows]
        if parts:
            table = pa.concat_tables(parts)
    t_processed = time.monotonic()
    fs_out.delete_dir_contents(f"{base}/features", missing_dir_ok=True)
    fs_out.create_dir(f"{base}/features")
    with fs_out.open_output_stream(f"{base}/features/part-00000.parquet") as fh:
        pq.write_table(_filter_kept(table), fh)
    small = table.drop_columns(list(SMALL_COLUMNS_DROP))
    rows = small.to_pylist()
    seconds = time.monotonic() - t0
    summary = report.summarize(rows, scan.issues, opts.thresholds, seconds, extra={
        "source": opts.source, "out": opts.out, "files": len(scan.good) + len(scan.issues),
        "read_blocks": blocks, "cluster_cpus": cpus,
        "cluster_cpus_end": int(ray.cluster_resources().get("CPU", 0)),  # the autoscaler's reaction
        "process_seconds": round(t_processed - t0, 3),
        "notes": scan.notes, "asr": opts.asr, "limit": opts.limit,
    })
    with fs_out.open_output_stream(f"{base}/clips.parquet") as fh:
        pq.write_table(small, fh)
    with fs_out.open_output_stream(f"{base}/summary.json") as fh:
        fh.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    with fs_out.open_output_stream(f"{base}/chart.png") as fh:
        fh.write(chart.png(rows))
    return summary
