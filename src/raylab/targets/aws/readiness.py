"""When the AWS side is ready for `ray up`: IAM's eventual consistency, and how `ray up` is called.

A new instance profile can be refused by RunInstances for seconds after Terraform created it
(``InvalidParameterValue`` on ``iamInstanceProfile``); Ray's ``_create_node`` retries 5 times without
sleeping, and Ray itself sleeps 15 s after creating its own default profile. So before `ray up`:
wait until IAM returns each profile with its role, and until it is ``PROFILE_SETTLE_S`` old; if the
head's launch is still refused for that reason, run `ray up` again after a pause (a bounded number
of times). The decisions are pure; ``wait_profiles`` is the boto3 edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raylab.errors import RaylabError

PROFILE_SETTLE_S = 15.0  # what Ray waits after creating its own instance profile
PROFILE_WAIT_S = 120.0  # for IAM to return a profile with its role at all
RAY_UP_ATTEMPTS = 3
RAY_UP_RETRY_BASE_S = 15.0


def ray_up_args(config: Path | str, *, restart: bool = True) -> list[str]:
    """`ray up`'s arguments. ``restart=False`` re-applies a changed config to a running cluster
    without `ray stop`/`ray start` on the head (which would lose the GCS, the job history and the
    guard); autoscaler v2 re-reads the YAML by itself. ``--no-config-cache``: Ray's bootstrap runs
    on this file, not on a cached copy of an older one."""
    # --log-style record: timestamped lines, from which time-to-ready reads the head's SSH up and
    # setup done (raylab.observe.readiness); Ray picks it anyway without a TTY, this makes it sure.
    return ["up", "-y", "--no-config-cache", "--log-style", "record",
            *([] if restart else ["--no-restart"]), str(config)]


def profile_wait_s(created: datetime | None, has_role: bool, now: datetime,
                   settle_s: float = PROFILE_SETTLE_S) -> float | None:
    """None while IAM does not return the profile with its role (poll again); else the seconds still
    to wait until it is ``settle_s`` old (0 for an old profile: a re-run waits for nothing)."""
    if created is None or not has_role:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max(settle_s - (now - created).total_seconds(), 0.0)


def iam_not_ready(log_text: str) -> bool:
    """RunInstances refused the instance profile (IAM not propagated yet), as `ray up` logs it."""
    t = log_text.lower()
    return "invalidparametervalue" in t and "iaminstanceprofile" in t


def ray_up_retry_after(attempt: int, log_text: str, attempts: int = RAY_UP_ATTEMPTS,
                       base_s: float = RAY_UP_RETRY_BASE_S) -> float | None:
    """After failed attempt number ``attempt`` (1-based): seconds to wait before running `ray up`
    again, or None to give up (another cause, or no attempts left)."""
    if attempt >= attempts or not iam_not_ready(log_text):
        return None
    return base_s * attempt


def _code(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", type(e).__name__))


def wait_profiles(iam: Any, names: Iterable[str], *, timeout_s: float = PROFILE_WAIT_S,
                  settle_s: float = PROFILE_SETTLE_S, poll_s: float = 2.0,
                  sleep: Callable[[float], None] | None = None,
                  now: Callable[[], datetime] | None = None) -> float:
    """Wait until IAM returns every profile with a role and each is ``settle_s`` old. Returns the
    seconds waited; a RaylabError when a profile does not show up within ``timeout_s``."""
    sleep = sleep or time.sleep
    now = now or (lambda: datetime.now(UTC))
    waited = 0.0
    for name in names:
        while True:
            created, has_role = None, False
            try:
                p = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
                created, has_role = p.get("CreateDate"), bool(p.get("Roles"))
            except Exception as e:
                if _code(e) != "NoSuchEntity":
                    raise
            left = profile_wait_s(created, has_role, now(), settle_s)
            if left is not None:
                if left > 0:
                    sleep(left)
                    waited += left
                break
            if waited >= timeout_s:
                raise RaylabError(
                    f"instance profile {name} is not usable after {int(timeout_s)} s "
                    f"({'no role attached' if created else 'IAM does not return it'})",
                    "run `raylab stage 2 --target aws` again",
                )
            sleep(poll_s)
            waited += poll_s
    return waited
