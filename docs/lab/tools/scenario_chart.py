"""Draw docs/images/scenarios-plan.png: workers over time for the four scenarios, from `raylab plan`.

Every curve is `raylab plan --scenario S --json` (Ray 2.60's own autoscaler against the simulated
cloud: 480 x 1 CPU x 300 s, on-demand quota 160 with the bastion's 2 vCPUs, spot quota unlimited).
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


def forecast(scenario: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "raylab", "plan", "--scenario", scenario, "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for s in SCENARIOS:
        d = forecast(s)
        xs = [t / 60 for t, _ in d["workers_over_time"]]  # t: seconds since the job was submitted
        ys = [n for _, n in d["workers_over_time"]]
        mk = d["makespan_s"] / 60
        ax.step(xs, ys, where="post", label=f"{s}: peak {d['peak_workers']}, makespan {mk:.1f} min, "
                f"${d['cost']['per_trainee']:.2f}")
        ax.axvline(mk, color=ax.lines[-1].get_color(), ls=":", lw=1)
    ax.axhline(8, color="red", ls="--", lw=1, label="on-demand quota wall: 8 workers (160 vCPU)")
    ax.set_xlabel("minutes since the job was submitted (dotted: job done)")
    ax.set_ylabel("worker nodes")
    ax.set_xlim(left=0)
    ax.set_title("raylab plan: 480 tasks x 1 CPU x 300 s, four scenarios (forecast, c7i.4xlarge)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    out = ROOT / "docs" / "images" / "scenarios-plan.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
