"""One output object for the whole CLI (the Hatch pattern).

Human output goes to stderr, machine output (``--json``) to stdout as one JSON object.
Rich never interprets data as markup. Spinners and live views degrade to plain lines when
stderr is not a terminal (CI).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class UI:
    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._err: Console | None = None

    @property
    def err(self) -> Console:
        if self._err is None:  # rich is imported on first output, not at CLI start
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.json_mode

    # --- human lines (stderr) ---------------------------------------------------------
    def _line(self, prefix: str, text: str, style: str) -> None:
        if self.quiet:
            return
        self.err.print(f"{prefix}{text}", style=style, markup=False)

    def info(self, text: str) -> None:
        self._line("", text, "")

    def step(self, text: str) -> None:
        self._line("→ ", text, "bold")

    def success(self, text: str) -> None:
        self._line("✓ ", text, "green")

    def warning(self, text: str) -> None:
        self._line("! ", text, "yellow")

    def error(self, text: str) -> None:
        # errors are shown even in quiet/json mode: they explain a non-zero exit
        self.err.print(f"error: {text}", style="red", markup=False)

    def noop(self, text: str) -> None:
        self._line("· ", text, "dim")

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.quiet:
            return
        from rich.table import Table

        t = Table(title=title, show_header=True, header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*[str(v) for v in r])
        self.err.print(t)

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A spinner on a terminal, a plain line elsewhere."""
        if self.quiet:
            yield
            return
        if self.interactive:
            with self.err.status(text):
                yield
        else:
            self._line("… ", text, "")
            yield

    def confirm(self, question: str, assume_yes: bool) -> bool:
        if assume_yes:
            return True
        if not sys.stdin.isatty():
            return False
        from rich.prompt import Confirm

        return Confirm.ask(question, console=self.err)

    # --- machine output (stdout) --------------------------------------------------------
    def result(self, obj: dict[str, Any]) -> None:
        """Print the command's machine-readable result (only in --json mode)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(obj, default=str, sort_keys=True) + "\n")
            sys.stdout.flush()
