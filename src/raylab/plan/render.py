"""Human output for a forecast: summary lines, a table of launch rounds, a text chart; optional PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylab.ui import UI

BARS = "▁▂▃▄▅▆▇█"


def sparkline(points: list[list[float]] | list[tuple[float, int]], width: int = 60) -> str:
    """Workers over time as one line of block characters (max per column), scaled to the peak."""
    values = [int(p[1]) for p in points]
    if not values:
        return ""
    peak = max(values) or 1
    step = max(1, -(-len(values) // width))
    cols = [max(values[i:i + step]) for i in range(0, len(values), step)]
    return "".join(" " if v == 0 else BARS[min(len(BARS) - 1, (v * len(BARS) - 1) // peak)] for v in cols)


def _mmss(s: float | None) -> str:
    if s is None:
        return "not done"
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


def _short(node_type: str) -> str:
    return node_type.removeprefix("ray.worker.").removeprefix("ray.")


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{v} {_short(k)}" for k, v in d.items() if v) or "-"


def _other(q: dict[str, Any]) -> str:
    n = q.get("other_vcpus")
    return f", plus {n} for other instances such as the bastion" if n else ""


def quota_line(q: dict[str, Any]) -> str:
    if not q.get("limited"):
        if q.get("quota_vcpus") is None:
            return f"quota: no {q.get('market', 'on-demand')} vCPU quota given; nothing limits the scale-up"
        return (f"quota: {q['market']} {q['quota_vcpus']} vCPUs is enough "
                f"(needs {q.get('needed_vcpus')} vCPUs, head included)")
    return (f"quota WALL: {q['market']} quota {q['quota_vcpus']} vCPUs stops the scale-up at "
            f"{q['reached_workers']} of {q['wanted_workers']} workers ({q['capped_workers']} short); "
            f"the job needs {q['needed_vcpus']} vCPUs (head included{_other(q)}): {q['request']} "
            f"(Service Quotas: {q['quota_name']})")


def show(ui: UI, f: dict[str, Any], title: str = "forecast") -> None:
    cost = f["cost"]
    inp = f["inputs"]
    ui.step(f"{title}: {inp['tasks']} tasks x {inp['cpus']} CPU x {inp['duration_s']:g} s, "
            f"upscaling_speed {inp['upscaling_speed']:g}, max_workers {inp['max_workers']}, "
            f"boot {inp['boot_seconds']:g} s")
    rounds = f["rounds"]
    rows = [[_mmss(r["t_s"]) if r["t_s"] >= 0 else f"-{_mmss(-r['t_s'])}", _counts(r["requested"]),
             _counts(r["launched"]), _counts(r["failed_by_quota"])] for r in rounds]
    if len(rows) > 14:
        hidden = len(rows) - 12
        rows = [*rows[:10], [f"... {hidden} more", "", "", ""], *rows[-2:]]
    ui.table(f"launch rounds ({len(rounds)})",
             ["t (after submit)", "requested", "launched", "failed (quota)"], rows)
    ui.info(f"workers  {sparkline(f['workers_over_time'])}  peak {f['peak_workers']}")
    ui.info(f"peak workers {f['peak_workers']} ({_counts(f['peak_by_type'])}); "
            f"makespan {_mmss(f['makespan_s'])}; "
            f"back to the floor at {_mmss(f['scale_down_s'])} (idle timeout "
            f"{inp['idle_timeout_minutes']:g} min); {f['failed_launch_calls']} failed launch calls")
    q = f["quota"]
    (ui.warning if q.get("limited") else ui.info)(quota_line(q))
    ui.info(f"cost per trainee ${cost['per_trainee']:.2f} as configured "
            f"(all on-demand ${cost['ondemand_usd']:.2f}, "
            f"workers on spot ${cost['spot_usd']:.2f}); {cost['trainees']} trainee(s): ${cost['total']:.2f}")
    ui.noop(f"prices: {cost['price_note']}")


def show_compare(ui: UI, param: str, values: list[float], results: list[dict[str, Any]]) -> None:
    cols = ["", *[f"{param}={v:g}" for v in values]]
    def row(label: str, fn: Any) -> list[str]:
        return [label, *[str(fn(r)) for r in results]]
    rows = [
        row("peak workers", lambda r: r["peak_workers"]),
        row("launch rounds", lambda r: r["round_count"]),
        row("failed launch calls", lambda r: r["failed_launch_calls"]),
        row("makespan", lambda r: _mmss(r["makespan_s"])),
        row("back to floor", lambda r: _mmss(r["scale_down_s"])),
        row("quota limited",
            lambda r: "yes: " + r["quota"]["request"] if r["quota"].get("limited") else "no"),
        row("cost / trainee", lambda r: f"${r['cost']['per_trainee']:.2f}"),
        row("cost total", lambda r: f"${r['cost']['total']:.2f}"),
    ]
    ui.table(f"compare {param}", cols, rows)
    for v, r in zip(values, results, strict=True):
        ui.info(f"{param}={v:<6g} {sparkline(r['workers_over_time'])}  peak {r['peak_workers']}")
    ui.noop(f"prices: {results[0]['cost']['price_note']}")


def write_png(path: Path, labelled: list[tuple[str, dict[str, Any]]]) -> Path:
    """Workers over time (step plot), one line per forecast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for label, f in labelled:
        pts = f["workers_over_time"]
        ax.step([p[0] / 60 for p in pts], [p[1] for p in pts], where="post", label=label)
    ax.set_xlabel("minutes after the job is submitted")
    ax.set_ylabel("Ray worker nodes")
    ax.set_title("raylab plan: forecast of Ray 2.60 autoscaler v2")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
