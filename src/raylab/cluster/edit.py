"""Edit the autoscaling knobs of a cluster YAML in place, keeping its comments and layout.

The lab's stage 5 turns these knobs (and the autoscaler re-reads the file on its next loop), and a
trainee's file is full of comments worth keeping, so edits go through ruamel.yaml's round-trip
mode. Every edit is validated (``raylab.cluster.validate``) before anything is written: an edit that
would add an ERROR raises RaylabError and leaves the file untouched.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from raylab.errors import RaylabError

_LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 3, 1))  # mapping, sequence, offset


def _load(path: Path) -> tuple[Any, Any]:
    """Parse for a round trip; pick the indentation layout that reproduces the file best."""
    from ruamel.yaml import YAML

    if not path.is_file():
        raise RaylabError(f"{path}: no such file" if not path.exists() else f"{path} is not a file",
                          "pass the cluster YAML file to edit")
    text = path.read_text(encoding="utf-8")
    best: tuple[float, Any, Any] | None = None
    for mapping, sequence, offset in _LAYOUTS:
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True
        yaml.width = 4096  # never re-wrap long lines (commands, ARNs)
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            doc = yaml.load(text)
        except Exception as e:  # noqa: BLE001 - ruamel's parser errors have no common base worth naming
            raise RaylabError(f"{path}: cannot parse it: {str(e).splitlines()[0]}",
                              f"run `raylab config check {path}`") from e
        if not isinstance(doc, dict):
            raise RaylabError(f"{path}: not a cluster config (no mapping at the top)",
                              f"run `raylab config check {path}`")
        out = _dump(yaml, doc)
        if out == text:
            return yaml, doc
        score = difflib.SequenceMatcher(None, out.splitlines(), text.splitlines()).ratio()
        if best is None or score > best[0]:
            best = (score, yaml, doc)
    assert best is not None
    return best[1], best[2]


def _dump(yaml: Any, doc: Any) -> str:
    import io

    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def _plain(obj: Any) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values (what validate reads)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    return obj


def _set(target: Any, key: str, value: Any, label: str, changes: list[str]) -> None:
    had = key in target
    old = _plain(target.get(key)) if had else None
    if had and old == value and type(old) is type(value):
        return
    target[key] = value
    changes.append(f"{label}: {old if had else 'unset'} -> {value}")


def set_scaling(path: Path | str, *, upscaling_speed: float | None = None,
                idle_timeout_minutes: float | None = None, min_workers: int | None = None,
                max_workers: int | None = None, node_type: str | None = None) -> list[str]:
    """Set autoscaling knobs in a cluster YAML; returns what changed ("key: old -> new").

    ``upscaling_speed`` and ``idle_timeout_minutes`` are cluster-wide. ``min_workers`` and
    ``max_workers`` apply to ``node_type`` when given; without it ``max_workers`` is the global cap
    and ``min_workers`` is refused (Ray 2.x has no global minimum). Nothing is written when nothing
    changes, or when the edit would add an ERROR finding (RaylabError says which).
    """
    from raylab.cluster.validate import ERROR, validate

    p = Path(path)
    if all(v is None for v in (upscaling_speed, idle_timeout_minutes, min_workers, max_workers)):
        raise RaylabError("nothing to change", "pass upscaling_speed, idle_timeout_minutes, min_workers or "
                          "max_workers")
    if min_workers is not None and node_type is None:
        raise RaylabError("min_workers needs a node type: Ray 2.x has no cluster-wide minimum",
                          "name the node type, e.g. ray.worker.ondemand")
    yaml, doc = _load(p)
    before = _plain(doc)
    changes: list[str] = []
    if upscaling_speed is not None:
        _set(doc, "upscaling_speed", upscaling_speed, "upscaling_speed", changes)
    if idle_timeout_minutes is not None:
        _set(doc, "idle_timeout_minutes", idle_timeout_minutes, "idle_timeout_minutes", changes)
    if node_type is None:
        if max_workers is not None:
            _set(doc, "max_workers", max_workers, "max_workers", changes)
    else:
        nts = doc.get("available_node_types")
        if not isinstance(nts, dict) or node_type not in nts or not isinstance(nts[node_type], dict):
            known = [str(k) for k in nts] if isinstance(nts, dict) else []
            close = difflib.get_close_matches(node_type, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(known) or '-'}"
            raise RaylabError(f"no node type {node_type!r} in {p}", hint)
        label = f"available_node_types[{node_type}]"
        if min_workers is not None:
            _set(nts[node_type], "min_workers", min_workers, f"{label}.min_workers", changes)
        if max_workers is not None:
            _set(nts[node_type], "max_workers", max_workers, f"{label}.max_workers", changes)
    if not changes:
        return []
    old_errors = {(f.path, f.message) for f in validate(before) if f.level == ERROR}
    new_errors = [f for f in validate(_plain(doc))
                  if f.level == ERROR and (f.path, f.message) not in old_errors]
    if new_errors:
        first = new_errors[0]
        more = f" (and {len(new_errors) - 1} more)" if len(new_errors) > 1 else ""
        raise RaylabError(f"refused, {p} is unchanged: {first.path}: {first.message}{more}", first.hint)
    _write(yaml, doc, p)
    return changes


def _write(yaml: Any, doc: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.raylab-tmp")
    tmp.write_text(_dump(yaml, doc), encoding="utf-8")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
