"""What `raylab status` says about the capacity guard, read on the operator's side of its files.

The guard (``guard.py``, run next to the autoscaler) appends its decisions to ``guard-events.jsonl``
and keeps its per-type state in ``guard-state.json``; ``recent_events`` reads the last decisions
of such a file and ``report`` (pure) folds events, state and whether the guard runs into the shape
`raylab status` prints. Nothing here is copied to the nodes: ``guard.py`` never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def recent_events(path: Path, n: int = 5) -> list[dict[str, Any]]:
    """The guard's last ``n`` decisions (for `raylab status`): [{t, kind, node_type, message, ...}]."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines()[-n:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def report(events: list[dict[str, Any]], state: dict[str, Any] | None,
           running: bool | None) -> dict[str, Any]:
    """What `raylab status` says about the guard (pure): whether it runs, each spot type's state
    (ok | capped | probing, with the cap and until when) and its last decisions, newest last."""
    types = {}
    for name, st in ((state or {}).get("states") or {}).items():
        types[name] = {"status": st.get("status", "ok"), "max_workers": st.get("cap"),
                       "until": st.get("until") if st.get("status") in ("capped", "probing") else None,
                       "failures": st.get("failures", 0), "code": st.get("code", "")}
    recent = [{"t": e.get("t"), "kind": e.get("kind"), "node_type": e.get("node_type"),
               "message": e.get("message", "")}
              for e in events if str(e.get("kind", "")).startswith("guard_")]
    return {"running": running, "types": types, "recent": recent[-5:]}
