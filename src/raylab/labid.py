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
