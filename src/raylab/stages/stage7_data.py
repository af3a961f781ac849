"""Stage 7, data: the Common Voice 17 job on Ray Data (``workloads/common_voice.py``).

- local: generate a small sample (real layout, espeak-ng speech) under ``.raylab/data/sample``
  and run the job as a Ray Job on the lab's cluster if it is up (the autoscaler sees the map
  tasks' demand); with no cluster, in a subprocess on an isolated local Ray it starts and stops.
- aws: the real 113,800 clips from ``s3://anonymous@ray-example-data/common_voice_17/parquet/``
  as a Ray Job on the lab's cluster; the outputs stay on the head (``local://``).

Verify reads what the job wrote (features parquet, clips.parquet, summary) and checks that the
counts agree with each other and with the features, and that every kept clip has a duration.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.datajob.submit import DATA_PIP  # the job's packages on AWS nodes (runtime_env pip)
from raylab.errors import RaylabError
from raylab.stages import BY_NAME
from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.context import Context

JOB_STATE = "data_job"  # the running data job, in the state (a killed run's is stopped by the next)

AWS_SOURCE = "s3://anonymous@ray-example-data/common_voice_17/parquet/"
AWS_OUT = "local:///tmp/raylab-cv17"
LOCAL_ROWS, LOCAL_SEED, LOCAL_FILES, LOCAL_BLOCKS = 40, 7, 2, 8  # 5 clips per block: 8 map tasks
AWS_BLOCKS = 1920  # 4 per vCPU of 30 x c7i.4xlarge (~59 clips each): the autoscaler sees the demand


def data_dir(ctx: Context) -> Path:
    return ctx.workdir / "data"


def on_cluster_only(ctx: Context) -> bool:
    """The target's data lives on S3: the job runs on the lab's cluster, never on an isolated Ray here."""
    return ctx.target.data_source == "s3"


def job_plan(ctx: Context) -> dict[str, Any]:
    if on_cluster_only(ctx):
        return {"source": AWS_SOURCE, "out": AWS_OUT, "blocks": AWS_BLOCKS,
                "limit": None, "sample_rows": None, "timeout_s": 3600}
    d = data_dir(ctx)
    return {"source": str(d / "sample"), "out": str(d / "out"), "blocks": LOCAL_BLOCKS,
            "limit": None, "sample_rows": LOCAL_ROWS, "timeout_s": 600}


def cluster_dashboard(ctx: Context) -> str | None:
    """Where the lab cluster's dashboard answers, as the target says (aws: an SSH tunnel through the
    bastion to the head, bound to 127.0.0.1; local: the head's port). None when no cluster is up
    (local then runs the job on an isolated Ray); on aws that is an error."""
    if not ctx.state.get("cluster"):
        if on_cluster_only(ctx):
            raise RaylabError("stage 7 on aws runs on the lab's cluster, and no cluster is up",
                              "run `raylab up --target aws` (stage 3) first")
        return None
    try:
        return ctx.target.dashboard_url(ctx)
    except RaylabError as e:
        if on_cluster_only(ctx):
            raise RaylabError(f"stage 7 cannot reach the cluster's dashboard: {e.message}", e.hint) from None
        return None


def sample_cache(want: str) -> Path:
    """Where the generated sample is kept between labs (it is the same for the same ``want``)."""
    import hashlib

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raylab" / "cv-sample"
    return root / hashlib.sha256(want.encode()).hexdigest()[:16]


def _ensure_sample(ctx: Context, folder: Path) -> None:
    """The local sample in ``folder``: synthesized once with espeak-ng (seeded, so every lab gets the
    same clips), kept in the user's cache, and copied from there by the next labs."""
    from raylab.datajob import sample

    marker = folder / "SAMPLE"
    want = f"rows={LOCAL_ROWS} seed={LOCAL_SEED} files={LOCAL_FILES}"
    if marker.exists() and marker.read_text().strip() == want:
        ctx.ui.noop(f"noop: sample of {LOCAL_ROWS} clips already in {folder}")
        return
    shutil.rmtree(folder, ignore_errors=True)
    cache = sample_cache(want)
    with ctx.clock.phase("sample clips"):
        if not (cache / "SAMPLE").exists():
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with ctx.ui.waiting(f"synthesizing {LOCAL_ROWS} clips with espeak-ng (kept in {cache.parent})"):
                sample.write_sample(tmp, LOCAL_ROWS, seed=LOCAL_SEED, files=LOCAL_FILES)
            (tmp / "SAMPLE").write_text(want + "\n")
            try:
                tmp.rename(cache)
            except OSError:  # another lab cached it first: same content
                shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cache, folder)
    ctx.ui.success(f"sample of {LOCAL_ROWS} clips in {folder}")


def checks_for(summary: Mapping[str, Any], features: Sequence[Mapping[str, Any]] | None,
               clips: Sequence[Mapping[str, Any]] | None) -> list[Check]:
    """Stage 7's checks (pure): on the summary, and on the written rows when they are readable."""
    s = summary
    out = [Check("counts add up", s["kept"] + s["dropped"] + s["errors"] == s["clips"] and s["clips"] > 0,
                 f"{s['clips']} clips = {s['kept']} kept + {s['dropped']} dropped + {s['errors']} unreadable",
                 "the job lost or double-counted clips: see summary.json")]
    if features is None or clips is None:
        out.append(Check("features written", s["kept"] > 0, f"{s['kept']} kept clips' features at {s['out']}",
                         "no clip was kept: see dropped_by_reason in the summary"))
        return out
    paths = [r["path"] for r in features]
    written = len(features) == s["kept"] > 0 and len(set(paths)) == len(paths)
    out.append(Check("features parquet written", written,
                     f"{len(features)} rows (summary: {s['kept']} kept), {len(set(paths))} distinct paths",
                     "the features parquet does not match the summary: re-run `raylab stage 7`"))
    status = Counter(r["status"] for r in clips)
    reasons = Counter(r["reason"] for r in clips if r["status"] == "dropped")
    ok = (status["kept"] == s["kept"] and status["dropped"] == s["dropped"]
          and dict(reasons) == dict(s["dropped_by_reason"]))
    out.append(Check("counts match the rows", ok,
                     f"clips.parquet: {dict(status)}; dropped by reason {dict(reasons)}",
                     "summary.json and clips.parquet disagree: re-run `raylab stage 7`"))
    bad = [r["path"] for r in features if not (r.get("duration_s") or 0) > 0]
    total = sum(r["duration_s"] or 0 for r in features)
    out.append(Check("durations present", not bad,
                     f"{len(features) - len(bad)}/{len(features)} kept clips have a duration; "
                     f"{total:.1f} s in all",
                     f"clips without a duration: {bad[:3]}"))
    return out


NOOP_KEYS = ("where", "clips", "kept", "out")  # a re-run that finds the job done reports these


def applied_json(where: str, job_id: str | None, summary: Mapping[str, Any], out: str) -> dict[str, Any]:
    """Stage 7's result as `raylab stage 7 --json` reports it (its keys are pinned by a test; pure)."""
    return {"where": where, "job_id": job_id, "clips": summary["clips"], "kept": summary["kept"], "out": out}


class DataStage:
    number, name, summary, verified_by = BY_NAME["data"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.datajob import submit
        from raylab.observe.job import note_job, stop_orphaned_job

        plan = job_plan(ctx)
        if plan["sample_rows"]:
            _ensure_sample(ctx, Path(plan["source"]))
        prev = ctx.state.get("data")
        summary_file = Path(plan["out"]) / "summary.json"  # a sample's output is on this machine
        if (prev.get("ok") and prev.get("source") == plan["source"] and plan["sample_rows"]
                and summary_file.exists()):
            ctx.ui.noop(f"noop: the data job already ran ({prev.get('kept')} clips kept, {plan['out']})")
            return {k: prev.get(k) for k in NOOP_KEYS}
        script = ctx.root / "workloads" / "common_voice.py"
        args = submit.job_args(plan["source"], plan["out"], blocks=plan["blocks"], limit=plan["limit"])
        url = cluster_dashboard(ctx)
        job_id = None
        if url and submit.dashboard_up(url):
            runtime_env, python = None, _local_python()
            if ctx.target.ships_code:
                import raylab

                runtime_env = {"working_dir": str(script.parent), "pip": DATA_PIP,
                               "py_modules": [str(Path(raylab.__file__).parent)]}
                python = "python"
            where = f"Ray Job on the lab's cluster ({url})"
            # a killed run's job would write the same output beside this one: stop it first
            stop_orphaned_job(ctx.state, ctx.ui, JOB_STATE, url, "data job")
            ctx.ui.info(f"submitting the data job: {where}")
            # named in the state before Ray accepts it: a run killed while Ray accepts it leaves a job
            # the next run can still name and stop
            sub_id = submit.new_submission_id()
            note_job(ctx.state, JOB_STATE, sub_id, str(url))
            with ctx.ui.waiting("data job running (Ray Data map tasks; the autoscaler may add workers)"), \
                    ctx.clock.phase("data job"):
                try:
                    summary, job_id, _ = submit.run_as_job(
                        url, script, args, runtime_env=runtime_env, python=python,
                        timeout=plan["timeout_s"], save_to=ctx.workdir / "logs" / "data-job.log",
                        submission_id=sub_id)
                finally:
                    ctx.state.drop(JOB_STATE)
        elif on_cluster_only(ctx):
            raise RaylabError(f"stage 7 on aws runs on the lab's cluster, and its dashboard ({url}) does not "
                              "answer", "check the head: `raylab status --target aws`")
        else:
            where = "an isolated local Ray (no lab cluster is up)"
            with ctx.ui.waiting(f"data job running on {where}"):
                summary, _ = submit.run_isolated(script, [*args, "--num-cpus", "2"])
        from raylab.datajob import report

        for line in report.human_lines(summary):
            ctx.ui.info(line)
        ctx.state.put("data", {**summary, "ok": True, "where": where, "job_id": job_id})
        return applied_json(where, job_id, summary, plan["out"])

    def verify(self, ctx: Context) -> list[Check]:
        s = ctx.state.get("data")
        if not s:
            return [Check("data job ran", False, "no result recorded", "run `raylab stage 7`")]
        out = str(s.get("out", ""))
        if "://" in out:  # on the cluster's head (aws) or in S3: the summary is what we have
            return checks_for(s, None, None)
        import pyarrow.parquet as pq

        feats = Path(out) / "features"
        clips = Path(out) / "clips.parquet"
        if not feats.is_dir() or not clips.exists():
            return [Check("features parquet written", False, f"nothing at {feats}",
                          "re-run `raylab stage 7`")]
        return checks_for(s, pq.read_table(feats, columns=["path", "duration_s"]).to_pylist(),
                          pq.read_table(clips, columns=["path", "status", "reason"]).to_pylist())

    def destroy(self, ctx: Context) -> None:
        shutil.rmtree(data_dir(ctx), ignore_errors=True)
        ctx.state.drop("data")


def _local_python() -> str:
    import sys

    return sys.executable


STAGE = DataStage()
