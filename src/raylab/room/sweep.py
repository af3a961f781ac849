"""Which labs `raylab room sweep` tears down, and why it leaves the others (pure).

In: the rows of `room status` (``raylab.room.status.room_status``' ``labs``) and the command's choice
(``--expired``, ``--lab NAME...``, ``--all``, ``--force``). Out: the labs to sweep and one line per lab
left alone. Refused before anything is deleted: no choice or two, a lab id that is not valid, a lab
that is not in the region. Left alone: a row whose tag is not a raylab lab id (edited by hand), a lab
mid-command (its busy lease or its stack in progress) unless ``--force``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raylab.errors import RaylabError
from raylab.labid import check_lab_id


@dataclass(frozen=True)
class Choice:
    sweep: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # one line each: refused, mid-command
    skipped: list[str] = field(default_factory=list)  # one line each: not a lab raylab can sweep by id


def choose(labs: Sequence[Mapping[str, Any]], *, region: str, expired: bool = False,
           names: Sequence[str] = (), all_labs: bool = False, force: bool = False) -> Choice:
    modes = sum((bool(expired), bool(names), bool(all_labs)))
    if modes != 1:
        raise RaylabError("say which labs to sweep: one of --expired, --lab NAME (repeatable) or --all",
                          "see `raylab room status` for the labs and their expiry")
    by_id = {str(x["lab"]): x for x in labs}
    for n in names:
        check_lab_id(n)
        if n not in by_id:
            raise RaylabError(f"lab {n!r} is not in {region}: nothing there is tagged raylab-lab={n}",
                              "see `raylab room status`; nothing was deleted")
    out = Choice()
    for lab, row in sorted(by_id.items()):
        if names and lab not in names:
            continue
        try:
            check_lab_id(lab)
        except RaylabError:
            out.skipped.append(f"tag raylab-lab={lab!r} is not a raylab lab id (edited by hand?): not swept; "
                               "fix the tag, or delete those resources by hand")
            continue
        if expired and not row.get("expired"):
            bad = [f for f in row.get("findings", []) if f.startswith("tag raylab-expires")]
            if bad:
                out.skipped.append(f"lab {lab}: {bad[0]}")
            elif row.get("expired") is None:
                out.skipped.append(f"lab {lab} has no raylab-expires tag (no stack, or made before raylab "
                                   f"tagged expiry): not swept by --expired; --lab {lab} sweeps it")
            continue
        if row.get("busy") and not force:
            out.busy.append(f"lab {lab} is mid-command ({row.get('busy_by')}): not swept; --force sweeps it "
                            "anyway")
            continue
        out.sweep.append(lab)
    return out
