"""Put one real local scenario run into docs/lab/runs/scenarios-local.json (what 06-scenarios.md's table
and docs/images/scenarios.png are drawn from).

The run is `raylab up --scenario S` + `raylab stress` on the local target. Its figures are the stress
record raylab kept (`.raylab/state.json`'s "stress", or a saved copy of that file) and the curve is its
timeline (`.raylab/stress/<run>/timeline.jsonl`). Nothing is typed by hand. Run from the repository root:

    .venv/bin/python docs/lab/tools/scenario_record.py mixed path/to/state.json [--timeline T.jsonl]
    .venv/bin/python docs/lab/tools/scenario_chart.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECORD = ROOT / "docs" / "lab" / "runs" / "scenarios-local.json"
KEYS = ("capacity_errors", "ideal_makespan_s", "makespan_s", "peak_workers", "quota_errors", "quota_vcpus",
        "reserved_vcpus", "task_duration_s", "tasks_completed", "tasks_retried", "tasks_total")


def entry(stress: dict, samples: list[dict]) -> dict:
    """The scenario's row and curve (pure): the stress record's figures, the timeline's workers."""
    peak: dict[str, int] = {"on-demand": 0, "spot": 0}
    for s in samples:
        for market, n in (s.get("instances") or {}).get("running", {}).items():
            peak[market] = max(peak.get(market, 0), n)
    return {**{k: stress[k] for k in KEYS}, "peak_instances_running_by_market": peak,
            "t": [round(s["t"], 1) for s in samples], "workers": [s["workers"] for s in samples]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=("static", "autoscale", "spot", "mixed"))
    ap.add_argument("state", type=Path, help="the run's .raylab/state.json (or a copy taken right after it)")
    ap.add_argument("--timeline", type=Path, help="default: the one the stress record names")
    a = ap.parse_args()
    stress = json.loads(a.state.read_text())["stress"]
    path = a.timeline or Path(stress["timeline"])
    samples = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "sample"]
    rec = json.loads(RECORD.read_text())
    rec["runs"][a.scenario] = {**entry(stress, samples), "recorded": time.strftime("%Y-%m-%d")}
    rec["_source"] = ("state.json 'stress' + timeline of one `raylab up --scenario S` + `raylab stress` per "
                      "scenario, local target, scale 4 (docs/lab/tools/scenario_record.py; static and "
                      "autoscale 2026-12-05, the others as 'recorded' says)")
    RECORD.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(f"{RECORD} <- {a.scenario}: {path}")


if __name__ == "__main__":
    main()
