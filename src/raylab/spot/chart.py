"""Chart of a spot drill: tasks and instances by market over time, with the faults and the guard's moves.

``drill_series`` turns the twin's events and the demo's executions into plain columns (pure);
``draw`` renders them as a PNG in the house style of the stress chart (observe/chart.py): tasks on
top, nodes below, legend outside, seconds since the drill started.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

MARKETS = ("on-demand", "spot")
COLOURS = {"on-demand": "tab:blue", "spot": "tab:orange"}
GUARD_KINDS = ("guard_cap", "guard_restore", "guard_note")
GONE_KINDS = ("terminate", "node_stop")


def _ids(e: dict[str, Any]) -> list[str]:
    if e.get("instance_ids"):
        return [str(i) for i in e["instance_ids"]]
    return [str(e["instance_id"])] if e.get("instance_id") else []


def instance_markets(events: list[dict[str, Any]], cluster: str | None = None) -> dict[str, str]:
    """instance id -> market for the cluster's worker launches (head and other instances left out)."""
    out: dict[str, str] = {}
    for e in events:
        if e.get("kind") != "launch" or e.get("node_kind") == "head":
            continue
        if (e.get("cluster") != cluster) if cluster is not None else not e.get("cluster"):
            continue
        for i in _ids(e):
            out[i] = str(e.get("market") or "on-demand")
    return out


def _steps(changes: list[tuple[float, str, int]], start: dict[str, int], t0: float, t1: float,
           markets: list[str]) -> dict[str, list[float]]:
    """Step columns (seconds since t0) from a start count per market and (t, market, +/-1) changes."""
    now = dict(start)
    cols: dict[str, list[float]] = {"t": [0.0], **{m: [float(now.get(m, 0))] for m in markets}}
    for t, m, d in sorted(changes):
        if t <= t0 or t > t1:
            continue
        now[m] = now.get(m, 0) + d
        rel = round(t - t0, 3)
        if cols["t"][-1] == rel:  # several changes at one instant: one point
            for k in markets:
                cols[k][-1] = float(now.get(k, 0))
            continue
        cols["t"].append(rel)
        for k in markets:
            cols[k].append(float(now.get(k, 0)))
    cols["t"].append(round(t1 - t0, 3))
    for k in markets:
        cols[k].append(float(now.get(k, 0)))
    return cols


def drill_series(events: list[dict[str, Any]], executions: list[dict[str, Any]], t0: float, t1: float,
                 cluster: str | None = None) -> dict[str, Any]:
    """Columns and markers of one drill between t0 and t1 (epoch seconds), times relative to t0 (pure).

    ``events`` are the twin's events from its start (instances already up at t0 count);
    ``executions`` are the demo's task attempts (instance_id, start, end or None if killed).
    """
    evs = sorted(events, key=lambda e: float(e.get("t", 0)))
    market = instance_markets(evs, cluster)
    up: dict[str, float] = {}
    gone: dict[str, float] = {}
    changes: list[tuple[float, str, int]] = []
    for e in evs:
        t = float(e["t"])
        for i in _ids(e):
            if i not in market:
                continue
            if e["kind"] == "launch" and i not in up:
                up[i] = t
                changes.append((t, market[i], +1))
            elif e["kind"] in GONE_KINDS and i in up and i not in gone:
                gone[i] = t
                changes.append((t, market[i], -1))
    start = {m: 0 for m in MARKETS}
    for i, t in up.items():
        if t <= t0 and gone.get(i, t1 + 1) > t0:
            start[market[i]] += 1
    inst = _steps(changes, start, t0, t1, list(MARKETS))

    tmarkets = list(MARKETS)
    tchanges: list[tuple[float, str, int]] = []
    tstart: dict[str, int] = {}
    for x in executions:
        m = market.get(str(x.get("instance_id")), "unknown")
        if m not in tmarkets:
            tmarkets.append(m)
        s = float(x["start"])
        end = x.get("end")
        e_t = float(end) if end is not None else gone.get(str(x.get("instance_id")), t1)
        if e_t <= s:
            continue
        if s <= t0 < e_t:
            tstart[m] = tstart.get(m, 0) + 1
        tchanges += [(s, m, +1), (e_t, m, -1)]
    tasks = _steps(tchanges, tstart, t0, t1, tmarkets)

    def rel(e: dict[str, Any]) -> float:
        return round(float(e["t"]) - t0, 3)

    inside = [e for e in evs if t0 <= float(e["t"]) <= t1]
    windows = []
    for e in evs:
        f = e.get("fault") or {}
        if e["kind"] == "fault_set" and f.get("until") is not None and float(e["t"]) <= t1 \
                and float(f["until"]) >= t0:
            windows.append((round(max(float(e["t"]), t0) - t0, 3), round(min(float(f["until"]), t1) - t0, 3),
                            str(f.get("market", "*"))))
    return {
        "t0": t0, "t1": t1, "duration_s": round(t1 - t0, 3),
        "instances": inst, "tasks": tasks,
        "capacity_windows": windows,
        "capacity_errors": [rel(e) for e in inside if e["kind"] == "capacity_error"],
        "reclaims": [{"t": rel(e), "instance_id": e.get("instance_id"), "notice_s": e.get("notice_s")}
                     for e in inside if e["kind"] == "spot_reclaim"],
        "notices": [{"t": rel(e), "instance_id": e.get("instance_id")}
                    for e in inside if e["kind"] == "spot_interruption_notice"],
        "guard": [{"t": rel(e), "kind": e["kind"], "message": str(e.get("message", ""))}
                  for e in inside if e["kind"] in GUARD_KINDS],
        "retried": sum(1 for x in executions if int(x.get("attempt") or 1) > 1),
        "retry_starts": sorted(round(float(x["start"]) - t0, 3) for x in executions
                               if int(x.get("attempt") or 1) > 1 and t0 <= float(x["start"]) <= t1),
    }


GUARD_STYLE = {  # kind -> (short label, colour)
    "guard_cap": ("guard caps spot", "tab:red"),
    "guard_restore": ("guard restores spot", "tab:green"),
    "guard_note": ("no spot error since the restore", "tab:olive"),
}


def _mark(ax: Any, t: float, text: str, colour: str) -> None:
    ax.axvline(t, color=colour, ls=":", lw=1.3)
    ax.text(t, 0.97, f" {text}", transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right",
            fontsize=8, color=colour)


def drill_title(drill: str, res: dict[str, Any]) -> str:
    """One line that says what the drill did and how it ended (pure)."""
    done = f"{res.get('tasks_completed', '?')}/{res.get('tasks_total', '?')} tasks done"
    if drill == "capacity":
        ratio = f" ({res['makespan_ratio']}x without failures)" if res.get("makespan_ratio") else ""
        after = res.get("after") or {}
        then = f"; after it, {after.get('spot_launched', 0)} spot launched" if after else ""
        return (f"spot capacity drill: spot launches fail for {float(res.get('window_s', 0)):g} s; "
                f"{res.get('capacity_errors', 0)} capacity errors, "
                f"{res.get('ondemand_launched_in_window', 0)} on-demand launched in the window; "
                f"{done} in {res.get('makespan_s', '?')} s{ratio}{then}")
    how = f"with a {float(res['notice_s']):g} s notice" if res.get("notice_s") else "without notice"
    return (f"reclaim drill ({how}): {len(res.get('reclaimed', []))} spot worker(s) reclaimed; "
            f"{res.get('tasks_retried', 0)} task(s) retried, {res.get('replacements', 0)} replacement(s); "
            f"{done}")


def draw(series: dict[str, Any], title: str, path: Path) -> Path:
    """Write the drill chart as a PNG at ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    tk, ins = series["tasks"], series["instances"]
    markets = [m for m in tk if m != "t"]
    ax1.stackplot(tk["t"], *[tk[m] for m in markets], step="post",
                  colors=[COLOURS.get(m, "tab:gray") for m in markets], alpha=0.8,
                  labels=[f"tasks running on {m} nodes" for m in markets])
    ax1.set_ylabel("tasks running")
    ax1.grid(alpha=0.3)

    for m, dy in zip(MARKETS, (-0.04, 0.04), strict=True):  # nudged apart so equal counts both show
        ax2.step(ins["t"], [v + dy for v in ins[m]], where="post", color=COLOURS[m], lw=2.2,
                 label=f"{m} worker instances running")
    top = max([*ins["on-demand"], *ins["spot"], 1.0]) + 1.5
    ttop = max([sum(v) for v in zip(*[tk[m] for m in markets], strict=True)] or [1.0]) * 1.15 + 1
    for ax in (ax1, ax2):
        for i, (a, b, mk) in enumerate(series["capacity_windows"]):
            ax.axvspan(a, b, color="tab:red", alpha=0.08,
                       label=f"{mk} capacity gone ({b - a:.0f} s window)" if i == 0 and ax is ax2 else None)
    ce = series["capacity_errors"]
    if ce:
        ax2.scatter(ce, [top - 0.6] * len(ce), marker="x", color="tab:red", s=60, zorder=4,
                    label=f"InsufficientInstanceCapacity ({len(ce)})")
    rc = series["reclaims"]
    if rc:
        ax2.scatter([r["t"] for r in rc], [top - 0.6] * len(rc), marker="v", color="tab:gray", s=80, zorder=4,
                    label=f"spot instance reclaimed ({len(rc)})")
    nt = series["notices"]
    if nt:
        ax2.scatter([n["t"] for n in nt], [top - 0.6] * len(nt), marker="$!$", color="tab:purple", s=90,
                    zorder=4, label=f"spot interruption notice ({len(nt)})")
        for n in nt:
            _mark(ax1, n["t"], "interruption notice", "tab:purple")
    for r in rc:
        _mark(ax1, r["t"], "spot reclaimed", "dimgray")
    rs = series.get("retry_starts", [])
    if rs:  # the reclaim's cost in tasks: each one re-run on another node, where it started again
        ax1.scatter(rs, [ttop * 0.04] * len(rs), marker="o", facecolors="none", edgecolors="black", s=40,
                    zorder=4, label=f"task re-run after its node was lost ({len(rs)})")
    for a, b, mk in series["capacity_windows"]:
        ax1.text((a + b) / 2, 0.97, f"{mk} capacity gone", transform=ax1.get_xaxis_transform(), ha="center",
                 va="top", fontsize=9, color="tab:red")
    seen: set[str] = set()
    for g in series["guard"]:
        label, colour = GUARD_STYLE.get(g["kind"], (g["kind"], "tab:gray"))
        for ax in (ax1, ax2):
            ax.axvline(g["t"], color=colour, ls="--", lw=1.3,
                       label=label if ax is ax2 and g["kind"] not in seen else None)
        seen.add(g["kind"])
        ax2.annotate(label, (g["t"], 0.2), xytext=(3, 0), textcoords="offset points", rotation=90,
                     fontsize=8, color=colour, va="bottom")
    ax1.set_ylim(0, ttop)
    ax2.set_ylim(0, top)
    ax2.set_xlim(0, series["duration_s"])
    ax2.set_ylabel("worker instances")
    ax2.set_xlabel("seconds since the drill started")
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.suptitle("\n".join(textwrap.wrap(title, 130)), fontsize=11)  # a long verdict never runs off
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
