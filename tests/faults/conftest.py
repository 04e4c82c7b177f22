"""Fixtures of the fault-injection suite: Herald processes, fake n8n servers, figures.

Every scenario runs against the session's real control plane (tests/conftest.py), real
`herald run` / `herald callback-server` subprocesses, and a fake n8n
(tests/support/fake_n8n.py). It ends with `finish()`, which waits for every post to
settle, audits the end state (tests/support/faults.py) and records the figures; the
`report` fixture writes them to `<tmp_path>/figures.json`, prints them, appends them to
$HERALD_FAULTS_FIGURES (JSON lines) if set, and attaches them to the test's report, from
which the terminal summary (tests/conftest.py) lists them all, with or without `-s`, and
with or without pytest-xdist workers.

Sizes: each scenario reads its post count from $HERALD_FAULTS_<NAME> (see `size()`), so
a longer soak needs no code change.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIGURES_PROPERTY
from tests.support.controlplane import ControlPlane, free_port
from tests.support.fake_n8n import FakeN8n
from tests.support.faults import (
    Audit,
    audit,
    create_canary,
    list_posts,
    wait_terminal,
    write_details,
)
from tests.support.herald_proc import HeraldProcess, start_callback_server, start_operator

StartN8n = Callable[..., FakeN8n]


def size(name: str, default: int) -> int:
    """A scenario's size, overridable with $HERALD_FAULTS_<NAME>."""
    return int(os.environ.get(f"HERALD_FAULTS_{name.upper()}", default))


# --- figures -------------------------------------------------------------------------


@dataclass
class Report:
    """What one scenario measured; written out whether it passed or not."""

    test: str
    data: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def update(self, values: dict[str, Any]) -> None:
        self.data.update(values)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.stash[_CALL_REPORT] = rep


_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.fixture
def report(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Report]:
    rep = Report(request.node.nodeid)
    started = time.monotonic()
    yield rep
    rep.data["wall_seconds"] = round(time.monotonic() - started, 1)
    call = request.node.stash.get(_CALL_REPORT, None)
    rep.data["result"] = call.outcome if call is not None else "error"
    if call is not None and call.failed:
        crash = getattr(call.longrepr, "reprcrash", None)
        rep.data["failure"] = (crash.message if crash else str(call.longrepr))[:2000]
    record = {"test": rep.test, **rep.data}
    line = json.dumps(record, default=str)
    (tmp_path / "figures.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"\nFAULTS-FIGURES {line}")
    target = os.environ.get("HERALD_FAULTS_FIGURES")
    if target:
        with Path(target).open("a") as out:
            out.write(line + "\n")
    # The teardown report carries it to the terminal summary, across xdist workers too.
    request.node.user_properties.append((FIGURES_PROPERTY, json.loads(line)))


# --- fake n8n ------------------------------------------------------------------------


@pytest.fixture
def n8n() -> Iterator[StartN8n]:
    """Start fake n8n servers (FakeN8n's keyword arguments); all stopped at the end."""
    started: list[FakeN8n] = []

    def start(**kwargs: Any) -> FakeN8n:
        fake = FakeN8n(**kwargs).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


# --- Herald --------------------------------------------------------------------------


@dataclass
class Operator:
    """One `herald run` process and where its metrics are."""

    identity: str
    process: HeraldProcess
    metrics_url: str

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> int | None:
        return self.process.stop()

    @property
    def running(self) -> bool:
        return self.process.running


class Herald:
    """Herald's processes for one test's namespace: a sidecar and any number of operators."""

    def __init__(self, cp: ControlPlane, client: httpx.Client, namespace: str, tmp: Path) -> None:
        self.cp, self.client, self.namespace, self.tmp = cp, client, namespace, tmp
        self.processes: list[HeraldProcess] = []
        self.callback_base: str | None = None
        self.sidecar_metrics: str | None = None
        self._count = 0
        create_canary(client, namespace)

    def sidecar(self, **settings: str | int | float) -> str:
        """Start the callback sidecar; operators started later send n8n its URL."""
        self._count += 1
        proc, base = start_callback_server(
            self.cp.kubeconfig, self.tmp / f"sidecar-{self._count}.log", **settings
        )
        self.processes.append(proc)
        self.callback_base = base
        self.sidecar_metrics = f"{base}/metrics"
        return base

    def operator(
        self, n8n_url: str, identity: str, *, timeout: float = 60.0, **settings: str | int | float
    ) -> Operator:
        """Start `herald run` as `identity` and wait until its watch is live."""
        self._count += 1
        port = free_port()
        settings.setdefault("namespaces", json.dumps([self.namespace]))
        settings.setdefault("identity", identity)
        settings.setdefault("metrics_port", port)
        if self.callback_base is not None:
            settings.setdefault("callback_url", self.callback_base)
        log = self.tmp / f"operator-{self._count}-{identity[:40]}.log"
        proc = start_operator(self.cp.kubeconfig, n8n_url, log, **settings)
        self.processes.append(proc)
        proc.wait_for_log("watch is live", timeout=timeout)
        return Operator(identity, proc, f"http://127.0.0.1:{settings['metrics_port']}/metrics")

    def log_counts(self, needles: dict[str, str]) -> dict[str, int]:
        """{figure: how many lines of all this test's Herald logs contain the needle}."""
        logs = [p.log() for p in self.processes]
        return {
            key: sum(line.count(needle) for log in logs for line in log.splitlines())
            for key, needle in needles.items()
        }

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()

    def finish(
        self,
        fake: FakeN8n,
        expected: int,
        report: Report,
        *,
        timeout: float,
        grace: float = 2.0,
    ) -> tuple[Audit, list[dict[str, Any]]]:
        """Wait for every post to settle (or `timeout`), let stragglers arrive, audit.

        The figures go into `report`; the caller asserts on the Audit."""
        objs, waited = wait_terminal(self.client, self.namespace, expected, timeout)
        deadline = time.monotonic() + grace + 10
        time.sleep(grace)  # a duplicate dispatch or callback still on its way
        while not fake.callbacks_settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        objs = list_posts(self.client, self.namespace)
        requests = fake.snapshot()
        result = audit(objs, requests, expected=expected)
        write_details(self.tmp / "posts.json", objs, requests, result)
        report.update(result.figures)
        report["settle_seconds"] = round(waited, 1)
        report["violations"] = result.violations
        return result, objs


@pytest.fixture
def herald(
    control_plane: ControlPlane, admin_client: httpx.Client, namespace: str, tmp_path: Path
) -> Iterator[Herald]:
    h = Herald(control_plane, admin_client, namespace, tmp_path)
    try:
        yield h
    finally:
        h.stop_all()
