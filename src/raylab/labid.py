"""The lab id: every resource raylab creates carries it, so a room can share one account."""

from __future__ import annotations

import getpass
import os
import re

from raylab.errors import RaylabError

_VALID = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


def default_lab_id() -> str:
    """Derived from the OS user: lowercase, [a-z0-9-], starts with a letter, at most 20 chars."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = os.environ.get("USER", "") or "lab"
    slug = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"u-{slug}" if slug else "lab"
    return slug[:20].rstrip("-")


def check_lab_id(lab: str) -> str:
    if not _VALID.match(lab) or lab.endswith("-"):
        raise RaylabError(
            f"lab id {lab!r} is not valid",
            "use 1-20 chars of a-z, 0-9 and '-', starting with a letter, e.g. --lab kim",
        )
    return lab


def names(lab: str) -> dict[str, str]:
    """The names of everything raylab creates for one lab id (one place, so nothing drifts)."""
    return {
        "stack": f"raylab-{lab}-network",
        "cluster": f"raylab-{lab}",
        "head_role": f"raylab-{lab}-ray-head",
        "head_profile": f"ray-instance-profile-{lab}",
        "worker_role": f"raylab-{lab}-ray-worker",
        "worker_profile": f"ray-worker-profile-{lab}",
        "key_pair": f"raylab-{lab}",
    }


# What a working directory records of a lab that still has something to tear down (state sections).
HOLDING_SECTIONS = ("network", "identity", "cluster", "twin")


def lab_for_workdir(held: dict[str, object], lab_given: str | None, target: str, default: str) -> str:
    """The lab id a command acts on in a working directory (pure).

    ``held`` is the directory's state. It records its owner (``lab``: id and target); while one of
    ``HOLDING_SECTIONS`` is there, that lab is what the directory holds. Without ``--lab`` a command
    acts on it (``raylab down`` after ``raylab lab --lab kim --keep`` tears down kim's lab, not the
    OS user's); another ``--lab`` or target is refused before anything happens, as acting on it
    would leave the held lab's resources behind. Nothing held: the given lab, else ``default``."""
    owner = held.get("lab")
    if not isinstance(owner, dict) or not any(held.get(s) for s in HOLDING_SECTIONS):
        return lab_given or default
    held_lab, held_target = str(owner.get("id", "")), str(owner.get("target", ""))
    if lab_given and lab_given != held_lab:
        raise RaylabError(
            f"this working directory holds lab {held_lab!r} ({held_target}), not {lab_given!r}",
            f"run `raylab down --lab {held_lab}` first, or give lab {lab_given!r} its own --workdir",
        )
    if held_target and target != held_target:
        raise RaylabError(
            f"this working directory holds lab {held_lab!r} on the {held_target} target, not {target}",
            f"add --target {held_target}",
        )
    return held_lab
