"""Low-rate sweeps over objects the operator does not hold in memory.

The publication ledger's retention and the TTL of Published posts (which the operator's
watch excludes) are both a list in pages (limit/continue, so only one page is held at a
time, however many objects there are) and a delete with uid and resourceVersion
preconditions for each object past its time (one changed since it was listed is kept).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from herald.kube import Conflict, NotFound

Page = tuple[list[dict[str, Any]], str | None]
Lister = Callable[[str | None, int, str | None], Awaitable[Page]]
"""(namespace or None for all, limit, continue token) -> (items, next token or None)."""


@dataclass
class Sweep:
    """What one sweep did."""

    pages: int = 0
    seen: int = 0
    deleted: int = 0
    changed: int = 0
    """Expired when listed, but changed or gone before the delete (its precondition)."""

    async def pages_of(
        self, list_page: Lister, namespaces: list[str], page_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of `namespaces` (all namespaces when empty), one at a time; counts
        pages and objects. Raises KubeError when a list fails (the next sweep starts
        again from the first page)."""
        scopes: list[str | None] = [*namespaces] if namespaces else [None]
        for namespace in scopes:
            token: str | None = None
            while True:
                items, token = await list_page(namespace, page_size, token)
                self.pages += 1
                self.seen += len(items)
                yield items
                if token is None:
                    break

    async def delete(self, call: Awaitable[None]) -> bool:
        """Count a precondition delete: True when it deleted, False when the object had
        changed or gone meanwhile. Other KubeErrors propagate."""
        try:
            await call
        except (Conflict, NotFound):
            self.changed += 1
            return False
        self.deleted += 1
        return True
