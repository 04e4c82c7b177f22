"""One real n8n for tests/n8n: the shipped publish.json and the branch harness
(tests/n8n/harness.py) side by side, every network faked on 127.0.0.1. n8n takes long
to start; one for the session keeps CI short."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.n8n.harness import harness, wait_for_webhooks
from tests.support.callback_relay import CallbackRelay
from tests.support.fake_x import FakeX
from tests.support.n8n_server import PUBLISH, N8nServer, Networks

SIGNING_KEY = "whsec_" + base64.b64encode(b"herald-n8n-net-signing-key-32byt").decode()
HOOK = "herald-publish"


class Fakes(Networks):
    """Every network, a host inside n8n's network (never allowed) and a callback sink."""

    def __init__(self) -> None:
        super().__init__()
        self.intranet = FakeX()
        self.sink = CallbackRelay(None)

    def __enter__(self) -> Fakes:
        super().__enter__()
        self._stack.enter_context(self.intranet)
        self._stack.enter_context(self.sink)
        return self

    def reset(self) -> None:
        super().reset()
        self.intranet.reset()
        with self.sink._lock:
            self.sink.seen.clear()


@pytest.fixture(scope="session")
def networks() -> Iterator[Fakes]:
    with Fakes() as fakes:
        yield fakes


@pytest.fixture(scope="session")
def n8n(networks: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[N8nServer]:
    workdir = tmp_path_factory.mktemp("n8n-networks")
    server = N8nServer(workdir, env_extra={"HERALD_SIGNING_KEY": SIGNING_KEY, **networks.env()})
    flow = workdir / "harness.json"
    flow.write_text(json.dumps(harness()))
    server.setup([PUBLISH, flow], credentials=networks.credentials())
    try:
        server.start(probe_path=HOOK)
        wait_for_webhooks(server)
        yield server
    finally:
        server.stop()
