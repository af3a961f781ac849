"""Common Voice 17 on Ray Data: decode, measure, filter, write the kept clips' features.

Run it standalone (starts its own isolated local Ray unless --address or RAY_ADDRESS is set):

    python workloads/common_voice.py --source s3://anonymous@ray-example-data/common_voice_17/parquet/ \\
        --out /tmp/cv17-out

or as a Ray Job on a cluster (the job supervisor sets RAY_ADDRESS):

    ray job submit --address http://127.0.0.1:8265 -- python workloads/common_voice.py --source ... --out ...

The last stdout line is ``RAYLAB_SUMMARY {json}``: the summary, for whoever reads the job's logs.
"""

from __future__ import annotations

import argparse
import json
import sys

SUMMARY_MARKER = "RAYLAB_SUMMARY "


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="folder or s3:// URI of Common Voice parquet files")
    p.add_argument("--out", required=True, help="folder, s3:// or local:// URI for the outputs")
    p.add_argument("--limit", type=int, default=None, help="process at most N clips")
    p.add_argument("--asr", action="store_true", help="transcribe with pocketsphinx and compute WER")
    p.add_argument("--blocks", type=int, default=None, help="read units (override_num_blocks)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per map_batches call")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the new local Ray instance")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from raylab.datajob import pipeline, report
    from raylab.errors import RaylabError

    a = parse(argv)
    opts = pipeline.JobOptions(source=a.source, out=a.out, limit=a.limit, asr=a.asr,
                               num_blocks=a.blocks, batch_size=a.batch_size)
    try:
        with pipeline.ray_session(address=a.address, num_cpus=a.num_cpus) as where:
            print(f"running on {where}", file=sys.stderr)
            summary = pipeline.run(opts, progress=not a.no_progress)
    except RaylabError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    for line in report.human_lines(summary):
        print(line, file=sys.stderr)
    print(SUMMARY_MARKER + json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
