"""Draw docs/images/scenarios.png: the four scenarios side by side, one colour each, in two panels.

Left: workers over time as `raylab plan --scenario S --json` forecasts them (Ray 2.60's own autoscaler
against the simulated cloud: 480 x 1 CPU x 300 s, on-demand quota 160 with the bastion's 2 vCPUs, spot
quota unlimited). Right: Ray worker nodes in one real local run per scenario (`raylab up --scenario S`
+ `raylab stress`: 120 x 1 CPU x 30 s, scale 4), from docs/lab/runs/scenarios-local.json.
Nothing is drawn by hand. Run from the repository root:

    .venv/bin/python docs/lab/tools/scenario_chart.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ("static", "autoscale", "spot", "mixed")
COLOURS = dict(zip(SCENARIOS, ("tab:gray", "tab:blue", "tab:orange", "tab:green"), strict=True))


def forecast(scenario: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "raylab", "plan", "--scenario", scenario, "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    runs = json.loads((ROOT / "docs" / "lab" / "runs" / "scenarios-local.json").read_text())["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    for s in SCENARIOS:
        c = COLOURS[s]
        d = forecast(s)
        xs = [t / 60 for t, _ in d["workers_over_time"]]  # t: seconds since the job was submitted
        ys = [n for _, n in d["workers_over_time"]]
        mk = d["makespan_s"] / 60
        left.step(xs, ys, where="post", color=c, lw=2, label=f"{s}: peak {d['peak_workers']}, "
                  f"makespan {mk:.1f} min, ${d['cost']['per_trainee']:.2f}")
        left.axvline(mk, color=c, ls=":", lw=1)
        r = runs[s]
        right.step(r["t"], r["workers"], where="post", color=c, lw=2,
                   label=f"{s}: peak {r['peak_workers']}, makespan {r['makespan_s']:.0f} s, "
                         f"{r['quota_errors']} quota errors")
        right.axvline(r["makespan_s"], color=c, ls=":", lw=1)
    left.axhline(8, color="red", ls="--", lw=1, label="on-demand quota wall: 8 workers (160 vCPU)")
    left.set(xlabel="minutes since the job was submitted (dotted: job done)", ylabel="worker nodes",
             title="forecast: raylab plan, 480 tasks x 1 CPU x 300 s (c7i.4xlarge)")
    right.axhline(8, color="red", ls="--", lw=1, label="on-demand quota wall: 8 workers")
    right.axhline(10, color="darkred", ls="-.", lw=1, label="local spot quota wall: 10 workers (160 vCPU)")
    right.set(xlabel="seconds since the job was submitted (dotted: all tasks done)",
              ylabel="Ray worker nodes up", title="real local runs: raylab stress, 120 tasks x 1 CPU x 30 s")
    for ax, where in ((left, "center right"), (right, "lower right")):  # where no curve runs
        ax.set_xlim(left=0)
        ax.legend(fontsize=8, loc=where)
        ax.grid(alpha=0.3)
    fig.suptitle("The same job on four cluster shapes: static / autoscale / spot / mixed")
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "scenarios.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
