"""Which HTTP answers are worth another attempt: one table for Herald and its workflows.

The operator classifies n8n's own answer with it (`herald.n8n.classify`), and
`n8n/src/build.py` writes the same table into the shipped workflows, which classify the
social networks' answers with it; a test keeps the two in step. No answer at all
(connection refused, timeout) is retryable too.
"""

from __future__ import annotations

RETRYABLE_4XX: frozenset[int] = frozenset({408, 425, 429})
"""Client errors that say "not now" rather than "never": timeout, too early, rate limit."""


def is_retryable(status: int | None) -> bool:
    """True for no answer, 408/425/429 and every 5xx; False for every other status."""
    if status is None:
        return True
    return status in RETRYABLE_4XX or status >= 500
