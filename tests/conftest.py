"""Shared fixtures: one real control plane per test session, a namespace per test.

`make test` runs the suite in pytest-xdist workers: each worker is a session of its own,
with its own control plane (and real n8n, tests/n8n/conftest.py), so nothing here is
shared between workers but the read-only `.tools/`.
"""

from __future__ import annotations

import itertools
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import default_accounts
from tests.support.controlplane import REPO, ControlPlane, RetryingTransport

CRD = REPO / "crds" / "scheduledposts.herald.dev.yaml"
PUBLICATION_CRD = REPO / "crds" / "publications.herald.dev.yaml"
ACCOUNT_CRDS = [
    REPO / "crds" / "socialaccounts.herald.dev.yaml",
    REPO / "crds" / "clustersocialaccounts.herald.dev.yaml",
]
_counter = itertools.count()

# The fault-injection figures (tests/faults/conftest.py `report`) travel in the report's
# user_properties under this name, so the summary sees them from xdist workers too.
FIGURES_PROPERTY = "fault_figures"
_FIGURES: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _FIGURES.extend(v for k, v in report.user_properties if k == FIGURES_PROPERTY)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault-injection figures")
    for record in sorted(_FIGURES, key=lambda r: str(r.get("test"))):
        terminalreporter.write_line(json.dumps(record, default=str))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("control-plane"))
    cp.start()
    try:
        accounts = [arg for crd in ACCOUNT_CRDS for arg in ("-f", str(crd))]
        cp.kubectl("apply", "-f", str(CRD), "-f", str(PUBLICATION_CRD), *accounts)
        cp.wait_established("scheduledposts.herald.dev")
        cp.wait_established("publications.herald.dev")
        cp.wait_established("socialaccounts.herald.dev")
        cp.wait_established("clustersocialaccounts.herald.dev")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def admin_client(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A raw HTTP client with the admin's client certificate."""
    cert, key = control_plane.user_credentials("test-admin", ["system:masters"])
    pem = tmp_path_factory.mktemp("admin") / "admin.pem"
    pem.write_bytes(cert + key)
    tls = ssl.create_default_context(cafile=str(control_plane.ca_file))
    tls.load_cert_chain(str(pem))
    transport = RetryingTransport(verify=tls)
    with httpx.Client(base_url=control_plane.server, transport=transport, timeout=10) as client:
        yield client


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace with a default SocialAccount per channel (tests.support.accounts).
    There is no namespace controller, so it is never emptied: the whole etcd is thrown
    away at the end of the session."""
    name = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    # Every post publishes as an account: one default per channel, as before accounts.
    items = {"apiVersion": "v1", "kind": "List", "items": default_accounts(name)}
    control_plane.kubectl("create", "-f", "-", input=json.dumps(items))
    return name


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
