"""The live view while a job runs: a Rich Live panel on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylab.ui import UI


def fmt_counts(d: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(d.items()) if v) or "-"


def plain_line(sample: dict[str, Any]) -> str:
    """One line per sample for logs/CI: time, tasks, workers, instances, latest events."""
    t = sample.get("tasks", {})
    inst = sample.get("instances") or {}
    inst_s = ", ".join(f"{st}: {fmt_counts(m)}" for st, m in sorted(inst.items())) or "-"
    ev = sample.get("events", [])
    ev_s = f" | events: {fmt_counts(_count_kinds(ev))}" if ev else ""
    return (f"[{sample.get('t', 0):6.0f}s] tasks pending {t.get('pending', '?')} "
            f"running {t.get('running', '?')} "
            f"done {t.get('finished', '?')}/{t.get('total', '?')} | workers {sample.get('workers', '?')} | "
            f"instances {inst_s}{ev_s} | job {sample.get('job', '?')}")


def _count_kinds(events: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["kind"]] = out.get(e["kind"], 0) + int(e.get("count", 1))
    return out


def render(sample: dict[str, Any], recent: list[dict[str, Any]], title: str) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    t = sample.get("tasks", {})
    tasks = Text(f"pending {t.get('pending', '?')}   running {t.get('running', '?')}   "
                 f"finished {t.get('finished', '?')}/{t.get('total', '?')}   failed {t.get('failed', 0)}")
    nodes = Table(title="Ray nodes", show_header=True, header_style="bold", expand=False)
    nodes.add_column("node type")
    nodes.add_column("states")
    for typ, states in sorted((sample.get("nodes") or {}).items()):
        nodes.add_row(typ, fmt_counts(states))
    inst = Table(title="EC2 instances", show_header=True, header_style="bold", expand=False)
    inst.add_column("state")
    inst.add_column("market")
    for st, m in sorted((sample.get("instances") or {}).items()):
        inst.add_row(st, fmt_counts(m))
    ev = Table(title="recent events", show_header=True, header_style="bold", expand=False)
    ev.add_column("time")
    ev.add_column("event")
    ev.add_column("detail", overflow="fold")
    for e in recent[-6:]:
        ev.add_row(time.strftime("%H:%M:%S", time.localtime(e["ts"])), e["kind"], e.get("detail", ""))
    return Panel(Group(tasks, nodes, inst, ev),
                 title=f"{title} · {sample.get('t', 0):.0f}s · job {sample.get('job', '?')}")


# Events the cloud repeats every autoscaler loop while a wall stands (Ray retries each loop): they are
# added up into the next line rather than printing one line per loop.
REPEATING = frozenset({"quota_error", "capacity_error"})


def plain_due(events: list[dict[str, Any]], workers: Any, last_workers: Any, since_s: float,
              every_s: float) -> bool:
    """Is a plain line due (pure)? On news (an event that is not a repeat of a standing wall, or a change
    in workers) or when ``every_s`` has passed since the last line."""
    news = any(e.get("kind") not in REPEATING for e in events) or workers != last_workers
    return news or since_s >= every_s


class LiveView:
    """Use as a context manager; call ``update(sample)`` after each sample."""

    def __init__(self, ui: UI, title: str, plain_every_s: float = 10.0) -> None:
        self.ui = ui
        self.title = title
        self.plain_every_s = plain_every_s
        self._live: Any = None
        self._recent: list[dict[str, Any]] = []
        self._last_plain = -1e9
        self._last_workers: Any = object()  # the first sample is always news
        self._unprinted: list[dict[str, Any]] = []  # events since the last plain line

    def __enter__(self) -> LiveView:
        if self.ui.interactive and not self.ui.quiet:
            from rich.live import Live

            self._live = Live(console=self.ui.err, refresh_per_second=1, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, sample: dict[str, Any], force_plain: bool = False) -> None:
        self._recent.extend(sample.get("events", []))
        self._recent = self._recent[-50:]
        if self._live is not None:
            self._live.update(render(sample, self._recent, self.title))
            return
        now = time.monotonic()
        self._unprinted.extend(sample.get("events", []))
        workers = sample.get("workers")
        if force_plain or plain_due(self._unprinted, workers, self._last_workers, now - self._last_plain,
                                    self.plain_every_s):
            self._last_plain, self._last_workers = now, workers
            self.ui.info(plain_line({**sample, "events": self._unprinted}))
            self._unprinted = []
