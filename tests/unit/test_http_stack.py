"""The HTTP stack under Herald's clients does no failing import on its hot path.

httpcore 1.0.9 asks `sniffio` which async library runs each time it creates a lock, an
event or a cancellation shield (`current_async_library`, encode/httpcore#1103); without
sniffio installed each ask is an `import` that searches sys.path and fails, thousands of
times a second under load. Herald declares sniffio, so the import is found once and then
served from sys.modules."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import httpcore


class _Spy(importlib.abc.MetaPathFinder):
    """Counts the searches for one module; finds nothing itself."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.searches = 0

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.name:
            self.searches += 1
        return None


async def test_httpcore_locks_search_for_sniffio_at_most_once() -> None:
    spy = _Spy("sniffio")
    sys.meta_path.insert(0, spy)
    try:
        for _ in range(100):
            async with httpcore._synchronization.AsyncLock():
                pass
            event = httpcore._synchronization.AsyncEvent()
            event.set()
            await event.wait()
    finally:
        sys.meta_path.remove(spy)
    # Once, for the first import in a process that had not imported it yet; then never.
    assert spy.searches <= 1, f"{spy.searches} searches for sniffio: it is not installed"
    assert "sniffio" in sys.modules
