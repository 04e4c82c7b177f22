"""The callback sidecar reads time from the `herald.clock.Clock` it is given (issue 16):
the times it writes are the clock's, so its tests can run on a FakeClock."""

from __future__ import annotations

import datetime as dt
from typing import Any

from herald.callbacks import CallbackBody, CallbackServer
from herald.clock import FakeClock
from herald.config import Settings
from herald.metrics import Metrics
from tests.support.fake_kube import FakeKube


async def test_the_sidecar_writes_the_clock_s_time() -> None:
    clock = FakeClock(dt.datetime(2031, 7, 1, 12, 0, 0, 250000, tzinfo=dt.UTC))
    kube = FakeKube()
    kube.create("ns", "p", {"publishAt": "2031-07-01T11:59:00Z", "content": {"text": "hi"}})
    kube.set_status(
        "ns",
        "p",
        {
            "phase": "Publishing",
            "attempt": 1,
            "claimedAt": "2031-07-01T11:59:00Z",
            "claimedBy": "op/1",
            "dispatchedAt": "2031-07-01T11:59:01Z",
        },
    )
    settings = Settings(
        targets={"default": {"url": "http://n8n.test/webhook/herald"}},
        signing_key="whsec_" + "a" * 44,
        callback_key="callback-key",
        callback_url="http://127.0.0.1:1",
    )
    server = CallbackServer(settings, kube, Metrics(), clock=clock)  # type: ignore[arg-type]
    body = CallbackBody(namespace="ns", name="p", uid="uid-ns-p", attempt=1, status="published")
    assert await server._apply(body) == ("applied", "")
    status: dict[str, Any] = kube.get("ns", "p")["status"]
    assert status["phase"] == "Published"
    assert status["publishedAt"] == "2031-07-01T12:00:00.250Z"
