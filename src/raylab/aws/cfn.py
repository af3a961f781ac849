"""CloudFormation: create, update or leave a stack alone (noop), with live stack events.

Decisions are small pure functions (``plan_deploy``, ``is_terminal``...); the boto3 calls sit
in ``deploy_stack`` / ``delete_stack``. A stack left mid-operation by a killed run is waited
for and then converged, so re-running always finishes the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError

if TYPE_CHECKING:
    from raylab.ui import UI

NO_UPDATES = "No updates are to be performed"
STABLE_OK = {
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
}
# States from which the stack cannot be updated, only deleted and created again.
DEAD = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"}


def is_terminal(status: str) -> bool:
    return not status.endswith("_IN_PROGRESS")


def plan_deploy(status: str | None, same_template: bool, same_params: bool) -> str:
    """What to do with a stack: create | update | noop | recreate | wait."""
    if status is None or status == "DELETE_COMPLETE":
        return "create"
    if not is_terminal(status):
        return "wait"
    if status in DEAD:
        return "recreate"
    if status in STABLE_OK:
        return "noop" if same_template and same_params else "update"
    return "recreate"


def as_parameters(params: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())]


def as_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def outputs_of(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) or []}


def params_of(stack: Mapping[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", []) or []}


def same_params(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Every wanted parameter has the same value (template defaults are not re-sent)."""
    return all(current.get(k) == v for k, v in wanted.items())


def _is_missing(err: Exception) -> bool:
    return "does not exist" in str(err)


def describe(cfn: Any, name: str) -> dict[str, Any] | None:
    """The live stack by name, or None when there is none (or only a deleted one)."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as e:  # botocore ClientError: ValidationError "... does not exist"
        if _is_missing(e):
            return None
        raise
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def _template_of(cfn: Any, name: str) -> str:
    body = cfn.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
    if isinstance(body, str):
        return body
    import json

    return json.dumps(body)


def format_event(ev: Mapping[str, Any]) -> str:
    reason = ev.get("ResourceStatusReason")
    return (
        f"  {ev.get('LogicalResourceId', '?')} ({ev.get('ResourceType', '?')}): "
        f"{ev.get('ResourceStatus', '?')}" + (f" - {reason}" if reason else "")
    )


@dataclass
class EventFollower:
    """Prints each stack event once, oldest first (the live view of a stack operation)."""

    cfn: Any
    stack_id: str
    emit: Callable[[str], None]

    def __post_init__(self) -> None:
        self.seen: set[str] = set()

    def prime(self) -> None:
        """Mark every existing event as seen (only the new operation's events are shown)."""
        for ev in self._events():
            self.seen.add(ev["EventId"])

    def _events(self) -> list[dict[str, Any]]:
        try:
            return list(self.cfn.describe_stack_events(StackName=self.stack_id)["StackEvents"])
        except Exception as e:  # noqa: BLE001 - a deleted stack has no events to follow
            if _is_missing(e):
                return []
            raise

    def poll(self) -> None:
        new = [ev for ev in self._events() if ev["EventId"] not in self.seen]
        for ev in sorted(new, key=lambda e: e.get("Timestamp") or 0):
            self.seen.add(ev["EventId"])
            self.emit(format_event(ev))


def wait_terminal(
    cfn: Any, stack_id: str, follower: EventFollower | None, timeout_s: float, poll_s: float = 2.0
) -> str:
    """Poll until the stack leaves *_IN_PROGRESS; returns the final status (DELETE_COMPLETE if gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            st = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
        except Exception as e:  # noqa: BLE001
            if _is_missing(e):
                return "DELETE_COMPLETE"
            raise
        if follower is not None:
            follower.poll()
        if is_terminal(st):
            return st
        if time.monotonic() > deadline:
            raise RaylabError(
                f"stack {stack_id} still {st} after {int(timeout_s)} s",
                "check the CloudFormation console; re-run to keep waiting",
            )
        time.sleep(poll_s)


def _failure_reason(cfn: Any, stack_id: str) -> str:
    try:
        evs = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
    except Exception:  # noqa: BLE001
        return "unknown"
    for ev in evs:  # newest first
        if ev.get("ResourceStatus", "").endswith("FAILED") and ev.get("ResourceStatusReason"):
            return f"{ev['LogicalResourceId']}: {ev['ResourceStatusReason']}"
    return "unknown"


def delete_failed_resources(events: list[Mapping[str, Any]], stack_name: str) -> list[str]:
    """The resources the newest delete could not remove, as "LogicalId: reason" (pure; events newest
    first, as describe_stack_events returns them; stops at the start of that delete)."""
    out: list[str] = []
    for ev in events:
        lid = ev.get("LogicalResourceId", "?")
        status = ev.get("ResourceStatus", "")
        if lid == stack_name and status == "DELETE_IN_PROGRESS":
            break
        if status == "DELETE_FAILED" and lid != stack_name:
            line = f"{lid}: {ev.get('ResourceStatusReason') or 'no reason given'}"
            if line not in out:
                out.append(line)
    return out


def delete_failed_error(name: str, failed: list[str]) -> RaylabError:
    """One line for a stack stuck in DELETE_FAILED: what holds it, and what to do."""
    what = "; ".join(f[:200] for f in failed[:3]) or "see the stack's events"
    more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
    return RaylabError(
        f"stack {name} is stuck in DELETE_FAILED: {what}{more}",
        "remove what still uses those resources (e.g. instances or network interfaces left in the VPC), "
        "then re-run `raylab down`",
    )


def _delete_failed(cfn: Any, stack_id: str, name: str) -> RaylabError:
    try:
        evs = list(cfn.describe_stack_events(StackName=stack_id)["StackEvents"])
    except Exception:  # noqa: BLE001 - the line is still worth giving
        evs = []
    return delete_failed_error(name, delete_failed_resources(evs, name))


def deploy_stack(
    cfn: Any,
    *,
    name: str,
    template_body: str,
    parameters: Mapping[str, str],
    tags: Mapping[str, str],
    ui: UI,
    timeout_s: float = 1800.0,
    poll_s: float = 2.0,
) -> tuple[str, dict[str, str]]:
    """Create, update or leave the stack; returns (action, outputs). action: created|updated|noop."""
    for _ in range(3):  # wait -> re-plan, recreate -> create
        cur = describe(cfn, name)
        status = cur["StackStatus"] if cur else None
        same_t = same_p = False
        if cur and status in STABLE_OK:
            same_t = _template_of(cfn, name).strip() == template_body.strip()
            same_p = same_params(params_of(cur), parameters)
        action = plan_deploy(status, same_t, same_p)
        if action == "wait":
            assert cur is not None
            ui.info(f"stack {name} is {status} (a previous run?): waiting for it to settle")
            wait_terminal(cfn, cur["StackId"], EventFollower(cfn, cur["StackId"], ui.info), timeout_s, poll_s)
            continue
        if action == "recreate":
            assert cur is not None
            ui.warning(f"stack {name} is {status}: deleting it to create it again")
            if delete_and_wait(cfn, cur["StackId"], ui, timeout_s, poll_s) == "DELETE_FAILED":
                raise _delete_failed(cfn, cur["StackId"], name)
            continue
        break
    else:
        raise RaylabError(f"stack {name} did not settle", "re-run; if it persists, delete the stack")

    if action == "noop":
        assert cur is not None
        ui.noop(f"noop: stack {name} already {status} with the same template and parameters")
        return "noop", outputs_of(cur)

    kw = {
        "StackName": name,
        "TemplateBody": template_body,
        "Parameters": as_parameters(parameters),
        "Tags": as_tags(tags),
    }
    if action == "create":
        ui.info(f"creating stack {name}")
        stack_id = cfn.create_stack(**kw, OnFailure="ROLLBACK")["StackId"]
        follower = EventFollower(cfn, stack_id, ui.info)
        done, verb = "CREATE_COMPLETE", "created"
    else:
        assert cur is not None
        stack_id = cur["StackId"]
        follower = EventFollower(cfn, stack_id, ui.info)
        follower.prime()
        ui.info(f"updating stack {name}")
        try:
            cfn.update_stack(**kw)
        except Exception as e:
            if NO_UPDATES in str(e):
                ui.noop(f"noop: stack {name}: {NO_UPDATES.lower()}")
                return "noop", outputs_of(cur)
            raise
        done, verb = "UPDATE_COMPLETE", "updated"
    final = wait_terminal(cfn, stack_id, follower, timeout_s, poll_s)
    if final != done:
        raise RaylabError(
            f"stack {name} ended {final}: {_failure_reason(cfn, stack_id)}",
            "fix the cause shown above and re-run (raylab deletes a rolled-back stack and retries)",
        )
    st = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
    ui.success(f"stack {name} {verb} ({final})")
    return verb, outputs_of(st)


def delete_or_explain(cfn: Any, stack_id: str, name: str, ui: UI, timeout_s: float = 1800.0,
                      poll_s: float = 2.0) -> str:
    """``delete_and_wait``, and a stack that ends DELETE_FAILED becomes one clear RaylabError."""
    final = delete_and_wait(cfn, stack_id, ui, timeout_s, poll_s)
    if final == "DELETE_FAILED":
        raise _delete_failed(cfn, stack_id, name)
    return final


def delete_and_wait(cfn: Any, stack_id: str, ui: UI, timeout_s: float = 1800.0, poll_s: float = 2.0) -> str:
    """Delete the stack and wait. Returns the final status (DELETE_COMPLETE when gone).

    Raises the service's error as is when the delete call itself is refused (moto refuses a
    VPC stack with DependencyViolation); callers decide how to converge.
    """
    follower = EventFollower(cfn, stack_id, ui.info)
    follower.prime()
    cfn.delete_stack(StackName=stack_id)
    return wait_terminal(cfn, stack_id, follower, timeout_s, poll_s)
