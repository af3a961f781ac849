"""What the rehearsal's patches of moto share (``cloud`` and ``fis``): attributes replaced on moto's
classes and put back, and an uninstall that runs once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


class Patches:
    """Attributes replaced on moto's classes, restored in reverse order."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, bool, Any]] = []

    def set(self, owner: type, name: str, value: Any) -> Any:
        """Replace ``owner.name``; returns what the class resolved before (its own or inherited)."""
        own = name in owner.__dict__
        before = owner.__dict__[name] if own else getattr(owner, name)
        self._saved.append((owner, name, own, owner.__dict__.get(name)))
        setattr(owner, name, value)
        return before

    def restore(self) -> None:
        while self._saved:
            owner, name, own, value = self._saved.pop()
            if own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)


def once_under(lock: AbstractContextManager[Any]) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """An uninstall that runs once, under ``lock``: a later call does nothing (nor after a failure)."""

    def deco(fn: Callable[[], None]) -> Callable[[], None]:
        done = threading.Event()

        def run() -> None:
            with lock:
                if done.is_set():
                    return
                done.set()
                fn()

        return run

    return deco
