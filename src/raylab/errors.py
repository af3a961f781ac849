"""User-facing errors: one line, a hint, an exit code. Never a traceback."""

from __future__ import annotations


class RaylabError(Exception):
    """An error the user can act on.

    ``message`` is one line saying what is wrong (quote the value); ``hint`` says what to do.
    The CLI prints ``error: <message> (<hint>)`` and exits with ``exit_code``.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class StageFailed(RaylabError):
    """A stage's verify found a failed check; the lab stops there."""

    def __init__(self, stage: str, check: str, detail: str, hint: str | None = None) -> None:
        super().__init__(f"stage {stage}: check '{check}' failed: {detail}", hint, exit_code=1)
        self.stage = stage
        self.check = check
