"""Draw docs/images/data-workers-local.png from docs/lab/runs/data-status-local.json.

That file is `raylab status --json` sampled while `raylab stage 7` ran on the local lab cluster:
Ray Data's map tasks become pending CPU demand, and the autoscaler adds a worker for them.
Run from the repository root: .venv/bin/python docs/lab/tools/data_workers_chart.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    s = json.loads((ROOT / "docs" / "lab" / "runs" / "data-status-local.json").read_text())["samples"]
    t = [r["t"] for r in s]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.step(t, [r["pending_cpu_demand"] for r in s], where="post", color="tab:orange",
            label="pending demand (1-CPU map tasks waiting)")
    ax.step(t, [r["pending_launches"] for r in s], where="post", color="tab:green", ls="--",
            label="pending launches")
    ax.step(t, [r["workers"] for r in s], where="post", color="tab:blue", lw=2, label="Ray worker nodes")
    ax.plot(t, [r["workers"] for r in s], "o", color="tab:blue", ms=3)
    ax.set_xlabel("seconds since `raylab stage 7` started (one sample per `raylab status`)")
    ax.set_ylabel("count")
    ax.set_ylim(-0.2, max(3, max(r["pending_cpu_demand"] for r in s) + 1))
    ax.set_title("raylab stage 7 on the lab cluster: demand, then a worker")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "data-workers-local.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
