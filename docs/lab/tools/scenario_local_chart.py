"""Draw docs/images/scenarios-local.png: Ray worker nodes over time for the same stress job
(120 x 1 CPU x 30 s, local target, scale 4) on each scenario, from docs/lab/runs/scenarios-local.json
(reduced from one real `raylab up --scenario S` + `raylab stress` per scenario).

Run from the repository root: .venv/bin/python docs/lab/tools/scenario_local_chart.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    runs = json.loads((ROOT / "docs" / "lab" / "runs" / "scenarios-local.json").read_text())["runs"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for s in ("static", "autoscale", "spot", "mixed"):
        r = runs[s]
        ax.step(r["t"], r["workers"], where="post", lw=2,
                label=f"{s}: peak {r['peak_workers']}, makespan {r['makespan_s']:.0f} s")
        ax.axvline(r["makespan_s"], color=ax.lines[-1].get_color(), ls=":", lw=1)
    ax.set_xlabel("seconds since the job was submitted (dotted: all tasks done)")
    ax.set_ylabel("Ray worker nodes up")
    ax.set_title("raylab stress on each scenario: 120 tasks x 1 CPU x 30 s, local target (real runs)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "scenarios-local.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
