"""Herald's operator run in the test process, under kopf's KopfRunner.

`herald run` reads its settings from the environment and hands them to the handlers in
kopf's memo. KopfRunner cannot pass a memo, so the startup handler loads the same
settings from the environment (herald.controller.startup). `prepare` sets them, and it
records every memo a handler passes to `controller._runtime` without changing it. A test
reads the runtime there: what startup built, and what the dispatcher holds.
"""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from herald import controller
from tests.support.herald_proc import herald_env


def prepare(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, n8n_url: str, **settings: str | int | float
) -> list[kopf.Memo]:
    """Set a `herald run`'s environment; return the list the memos will be recorded in."""
    env = herald_env(kubeconfig, n8n_url, **settings)
    for key, value in env.items():
        if key.startswith("HERALD_") or key == "KUBECONFIG":
            monkeypatch.setenv(key, value)
    memos: list[kopf.Memo] = []
    real_runtime = controller._runtime

    def recording_runtime(memo: kopf.Memo) -> controller.Runtime:
        memos.append(memo)
        return real_runtime(memo)

    monkeypatch.setattr(controller, "_runtime", recording_runtime)
    return memos
