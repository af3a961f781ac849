"""Draw a timeline as a PNG a trainee reads at a glance: tasks on top, nodes below, the quota wall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylab.observe import timeline as tl

MARKERS = {  # event kind -> (label, marker, colour)
    "launch": ("instance launched", "^", "tab:green"),
    "quota_error": ("VcpuLimitExceeded (quota)", "x", "tab:red"),
    "capacity_error": ("InsufficientInstanceCapacity", "X", "tab:orange"),
    "launch_failed": ("launch failed", "x", "tab:brown"),
    "termination": ("instance terminated", "v", "tab:gray"),
}


def series(samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Columns for plotting (pure)."""
    return {
        "t": [float(s["t"]) for s in samples],
        "pending": [float(s.get("tasks", {}).get("pending") or 0) for s in samples],
        "running": [float(s.get("tasks", {}).get("running") or 0) for s in samples],
        "finished": [float(s.get("tasks", {}).get("finished") or 0) for s in samples],
        "workers": [float(s.get("workers") or 0) for s in samples],
        "instances": [float(sum((s.get("instances") or {}).get("running", {}).values())) for s in samples],
    }


def event_points(meta: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Event times in seconds since the run started, by kind (pure)."""
    start = float(meta.get("started", samples[0]["ts"] - samples[0]["t"] if samples else 0))
    out: dict[str, list[float]] = {}
    for e in tl.events(samples):
        at = max(0.0, float(e["ts"]) - start)
        out.setdefault(e["kind"], []).extend([at] * max(1, int(e.get("count", 1))))
    return out


def stacked(ts: list[float], within: float = 1.0) -> list[tuple[float, int]]:
    """Events drawn at one spot: (time, how many) per group of times closer than ``within`` s (pure).
    Several launches in one sample would otherwise print as one marker while the legend counts them all."""
    out: list[tuple[float, int]] = []
    for t in sorted(ts):
        if out and t - out[-1][0] < within:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((t, 1))
    return out


def draw(path: Path, meta: dict[str, Any], samples: list[dict[str, Any]], title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(samples)
    cap = tl.quota_cap(meta)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    ax1.plot(s["t"], s["pending"], label="tasks pending (queued)", color="tab:orange", lw=2)
    ax1.plot(s["t"], s["running"], label="tasks running", color="tab:blue", lw=2)
    ax1.plot(s["t"], s["finished"], label="tasks finished", color="tab:green", lw=1, ls="--")
    ax1.set_ylabel("tasks")
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    ax1.grid(alpha=0.3)

    ax2.step(s["t"], s["workers"], where="post", label="Ray worker nodes up", color="tab:blue", lw=2)
    ax2.step(s["t"], s["instances"], where="post", label="EC2 instances running (incl. head)",
             color="tab:purple", lw=1, ls="--")
    if meta.get("quota_vcpus") is not None:
        ax2.axhline(cap, color="tab:red", ls=":", lw=1.5,
                    label=f"quota wall: {meta['quota_vcpus']} vCPU = {tl.reserved_of(meta)} in use before "
                          f"(head, bastion) + {cap} workers")
    top = max([cap, *s["workers"], *s["instances"], 1]) + 1.5
    ev = event_points(meta, samples)
    for kind, (label, marker, colour) in MARKERS.items():
        ts = ev.get(kind, [])
        if not ts:
            continue
        y = {"launch": top - 0.5, "termination": top - 0.5}.get(kind, cap + 0.5)
        groups = stacked(ts)
        numbered = kind != "quota_error" and any(n > 1 for _, n in groups)  # quota errors: hundreds
        ax2.scatter([t for t, _ in groups], [y] * len(groups), marker=marker, color=colour, s=30, zorder=3,
                    label=f"{label} ({len(ts)}{'; number: that many at once' if numbered else ''})")
        for t, n in groups if numbered else []:
            if n > 1:
                ax2.annotate(str(n), (t, y), xytext=(0, 5), textcoords="offset points", ha="center",
                             fontsize=7, color=colour)
    ax2.set_ylim(0, top + 0.5)
    ax2.set_ylabel("nodes")
    ax2.set_xlabel("seconds since the job was submitted")
    ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    ax2.grid(alpha=0.3)

    n = meta.get("tasks", "?")
    quota = meta.get("quota_vcpus")
    quota_s = f"quota {quota} vCPU" if quota is not None else "quota unknown"
    fig.suptitle(title or (f"raylab stress: {n} tasks x 1 CPU x {float(meta.get('duration_s', 0)):g} s on "
                           f"{meta.get('cpus_per_worker', '?')}-CPU workers "
                           f"(max_workers {meta.get('max_workers', '?')}, {quota_s}, "
                           f"{meta.get('target', '')} target, scale {meta.get('scale', '?')})"), fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
