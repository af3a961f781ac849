"""A job submitted right after the head starts: Ray answers 500 "No available agent to submit job,
please try again later" until the head's dashboard agent has registered (seen in CI); raylab asks again."""

from __future__ import annotations

from typing import Any

import pytest

from raylab.datajob.submit import submit_when_ready

NOT_READY = RuntimeError("Request failed with status code 500: No available agent to submit job, "
                         "please try again later..")


class Client:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    def submit_job(self, **job: Any) -> str:
        self.calls.append(job)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return str(a)


def test_asks_again_while_no_agent_is_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    c = Client([NOT_READY, NOT_READY, "raylab-data-1"])
    assert submit_when_ready(c, entrypoint="python x.py", submission_id="raylab-data-1") == "raylab-data-1"
    assert len(c.calls) == 3 and all(k["submission_id"] == "raylab-data-1" for k in c.calls)


def test_any_other_error_is_raised_at_once() -> None:
    c = Client([RuntimeError("Job with submission_id raylab-data-1 already exists"), "never"])
    with pytest.raises(RuntimeError, match="already exists"):
        submit_when_ready(c, entrypoint="python x.py")
    assert len(c.calls) == 1


def test_gives_up_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    c = Client([NOT_READY] * 3)
    with pytest.raises(RuntimeError, match="No available agent"):
        submit_when_ready(c, wait_s=-1.0, entrypoint="python x.py")
    assert len(c.calls) == 1
