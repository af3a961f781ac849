"""Draw docs/images/speed-local.png: Ray worker nodes over time for two `raylab scale` runs that differ
only in upscaling_speed (1 vs 10), below the quota wall, from their recorded timelines.

Each run's timeline (``.raylab/scaling/<run>/timeline.jsonl``, reduced to ``t`` and ``workers`` and the
launch events) is kept in docs/lab/runs/speed-local.json, so the picture can be redrawn without a run:

    .venv/bin/python docs/lab/tools/speed_chart.py                   # from docs/lab/runs/speed-local.json
    .venv/bin/python docs/lab/tools/speed_chart.py RUN1_DIR RUN10_DIR  # reduce two runs first, then draw
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "docs" / "lab" / "runs" / "speed-local.json"


def reduce(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "timeline.jsonl").read_text().splitlines() if x.strip()]
    meta = next(x for x in lines if x.get("kind") == "meta")
    samples = [x for x in lines if x.get("kind") == "sample"]
    launches = [round(s["t"], 1) for s in samples for e in s.get("events", []) if e.get("kind") == "launch"
                for _ in range(int(e.get("count", 1)))]
    summary = run_dir / "job-summary.json"
    makespan = json.loads(summary.read_text()).get("makespan_s") if summary.exists() else None
    return {"upscaling_speed": meta.get("upscaling_speed"), "makespan_s": makespan,
            "quota_vcpus": meta.get("quota_vcpus"),
            "tasks": meta.get("tasks"), "duration_s": meta.get("duration_s"),
            "t": [round(s["t"], 1) for s in samples], "workers": [s.get("workers") or 0 for s in samples],
            "finished": [s.get("tasks", {}).get("finished", 0) for s in samples], "launch_t": launches}


def main() -> None:
    if len(sys.argv) == 3:
        runs = [reduce(Path(a)) for a in sys.argv[1:]]
        DATA.write_text(json.dumps({"_source": "raylab scale timelines, local target (see 05-scaling.md)",
                                    "runs": runs}, indent=1))
    runs = json.loads(DATA.read_text())["runs"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for r in runs:
        ax.step(r["t"], r["workers"], where="post", lw=2, label=f"upscaling_speed {r['upscaling_speed']:g}: "
                f"{len(r['launch_t'])} launches")
        ax.plot(r["launch_t"], [-0.4] * len(r["launch_t"]), "|", ms=10, color=ax.lines[-1].get_color())
    ax.set_xlabel("seconds since the job was submitted (ticks below 0: launch events)")
    ax.set_ylabel("Ray worker nodes up")
    r0 = runs[0]
    ax.set_title(f"{r0['tasks']} tasks x {r0['duration_s']:g} s, quota {r0['quota_vcpus']} vCPU "
                 "(below the wall): upscaling_speed 1 vs 10, local target")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "speed-local.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
