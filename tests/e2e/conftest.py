"""Fixtures for end-to-end tests: a fake n8n, Herald processes, and post helpers."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n
from tests.support.herald_proc import HeraldProcess, start_callback_server, start_operator

API = "/apis/herald.dev/v1alpha1"


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def in_seconds(seconds: float) -> str:
    return iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


@pytest.fixture
def fake_n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as fake:
        yield fake


class Posts:
    """Create and observe ScheduledPosts in one namespace."""

    def __init__(self, cp: ControlPlane, client: httpx.Client, namespace: str) -> None:
        self.cp, self.client, self.namespace = cp, client, namespace

    def url(self, name: str) -> str:
        return f"{API}/namespaces/{self.namespace}/scheduledposts/{name}"

    def create(self, name: str, publish_at: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"publishAt": publish_at, "content": {"text": f"Post {name}"}, **spec},
        }
        response = self.client.post(f"{API}/namespaces/{self.namespace}/scheduledposts", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def get(self, name: str) -> dict[str, Any]:
        response = self.client.get(self.url(name))
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def names(self) -> list[str]:
        response = self.client.get(f"{API}/namespaces/{self.namespace}/scheduledposts")
        response.raise_for_status()
        return [item["metadata"]["name"] for item in response.json()["items"]]

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(name).get("status") or {}
        return status

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.cp.kubectl(
            "patch",
            "sp",
            name,
            "-n",
            self.namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    def wait(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20.0,
        what: str = "condition",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"{name}: {what} not reached in {timeout}s; status={status}")

    def wait_phase(self, name: str, phase: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("phase") == phase, timeout, f"phase {phase}")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={name}",
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])

    def wait_event(self, name: str, reason: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if event["reason"] == reason:
                    return event
            time.sleep(0.1)
        raise AssertionError(
            f"no {reason} event for {name}: {[e['reason'] for e in self.events(name)]}"
        )


@pytest.fixture
def posts(control_plane: ControlPlane, admin_client: httpx.Client, namespace: str) -> Posts:
    return Posts(control_plane, admin_client, namespace)


@pytest.fixture
def herald(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, posts: Posts
) -> Iterator[Callable[..., HeraldProcess]]:
    """Start operators (each watching only this test's namespace); all stopped at the end.

    Returns once the operator's watch is live: a suspended canary post in the namespace
    guarantees there is an event for it to see.
    """
    started: list[HeraldProcess] = []
    if "canary" not in posts.names():
        posts.create("canary", in_seconds(86400), suspend=True)

    def start(n8n_url: str, **settings: str | int | float) -> HeraldProcess:
        settings.setdefault("namespaces", json.dumps([namespace]))
        settings.setdefault("backoff_seconds", 1)
        settings.setdefault("max_backoff_seconds", 10)
        log = tmp_path / f"operator-{len(started)}.log"
        proc = start_operator(control_plane.kubeconfig, n8n_url, log, **settings)
        started.append(proc)
        proc.wait_for_log("watch is live")
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def sidecar(
    control_plane: ControlPlane, tmp_path: Path
) -> Iterator[Callable[..., tuple[HeraldProcess, str]]]:
    started: list[HeraldProcess] = []

    def start(**settings: str | int | float) -> tuple[HeraldProcess, str]:
        settings.setdefault("backoff_seconds", 1)
        settings.setdefault("max_backoff_seconds", 10)
        proc, base = start_callback_server(
            control_plane.kubeconfig, tmp_path / f"sidecar-{len(started)}.log", **settings
        )
        started.append(proc)
        return proc, base

    yield start
    for proc in started:
        proc.stop()
