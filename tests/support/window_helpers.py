"""Helpers for the fault-window regression tests (tests/e2e/test_fault_windows.py).

- `apiserver_count`: read a counter from the real kube-apiserver's /metrics, to measure
  how often Herald writes (a hot loop shows as hundreds of PATCHes a second).
- `metric_samples`: the samples of a Herald process's own /metrics endpoint.
- `TrickleN8n`: the fake n8n, plus a reply that sends its headers at once and then its
  body one byte at a time, slower than any sane deadline.
- `RestrictedUser`: a client-certificate user whose RBAC a test grants step by step.
- `extra_crd_field` / `extra_status_field`: add an optional spec or status field to the
  live CRD for one test, as a newer Herald's CRD would, and take it away again afterwards.
- `refused_status_writes`: an admission policy refusing status writes with a chosen
  reason (HTTP status), for one test.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n, Received, Reply

CRD_NAME = "scheduledposts.herald.dev"


# --- metrics ---------------------------------------------------------------------------


def parse_samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def apiserver_count(client: httpx.Client, name: str, **labels: str) -> float:
    """Sum of the kube-apiserver's metric `name` over the series matching `labels`."""
    response = client.get("/metrics")
    response.raise_for_status()
    return sum(
        s.value
        for s in parse_samples(response.text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def status_patches(client: httpx.Client, code: str) -> float:
    """PATCHes of scheduledposts/status the API server answered with `code`, so far."""
    return apiserver_count(
        client,
        "apiserver_request_total",
        resource="scheduledposts",
        subresource="status",
        verb="PATCH",
        code=code,
    )


def metric_samples(port: int) -> list[Sample]:
    """The samples a Herald process exports on 127.0.0.1:`port`/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_samples(response.read().decode())


# --- a fake n8n that answers slowly ------------------------------------------------------


@dataclass(frozen=True)
class Trickle:
    """Answer `status` with headers at once, then `body` one byte every `every` seconds."""

    status: int = 200
    body: bytes = b'{"status":"accepted"}'
    every: float = 0.5


class TrickleN8n(FakeN8n):
    """FakeN8n whose scripts may also hold `Trickle` replies.

    `finished[name]` records when each trickled answer was fully written (or the client
    hung up: then the time it noticed), so a test can tell how long the client waited.
    """

    def __init__(self, default: Reply | None = None) -> None:
        self._trickles: dict[str, list[Trickle]] = {}
        self.finished: dict[str, list[tuple[float, bool]]] = {}
        super().__init__(default)

    def __enter__(self) -> TrickleN8n:
        self.start()
        return self

    def trickle(self, name: str, reply: Trickle) -> None:
        with self._lock:
            self._trickles.setdefault(name, []).append(reply)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        fake = self

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                name = str(body.get("name", ""))
                with fake._lock:
                    queue = fake._trickles.get(name)
                    reply = queue.pop(0) if queue else None
                if reply is None:
                    # Not trickled: hand the request to FakeN8n's own handling.
                    self._replay(raw, body)
                    return
                fake._record(Received(time.time(), self.path, dict(self.headers), raw, body))
                complete = True
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.flush()
                    for i in range(len(reply.body)):
                        if fake._stopping.wait(reply.every):
                            complete = False
                            break
                        self.wfile.write(reply.body[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    complete = False  # the client gave up
                with fake._lock:
                    fake.finished.setdefault(name, []).append((time.time(), complete))

            def _replay(self, raw: bytes, body: dict[str, Any]) -> None:
                fake._record(Received(time.time(), self.path, dict(self.headers), raw, body))
                reply = fake._next_reply(str(body.get("name", "")))
                if reply.delay and fake._stopping.wait(reply.delay):
                    return
                payload = json.dumps(reply.body or {}).encode()
                with contextlib.suppress(OSError):
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

        return Handler


# --- RBAC for a user of our own ----------------------------------------------------------


class RestrictedUser:
    """A client-certificate user with the operator's chart permissions except `patch` on
    scheduledposts/status, which `grant_status_patch()` adds later (a Role of its own)."""

    def __init__(self, cp: ControlPlane, namespace: str, workdir: Path) -> None:
        self.cp, self.namespace = cp, namespace
        self.name = f"herald-restricted-{namespace}"
        self.kubeconfig = cp.write_kubeconfig(workdir / "restricted.kubeconfig", self.name)
        subject = [{"kind": "User", "name": self.name, "apiGroup": "rbac.authorization.k8s.io"}]
        self._apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": self.name},
                "rules": [
                    {
                        "apiGroups": ["apiextensions.k8s.io"],
                        "resources": ["customresourcedefinitions"],
                        "verbs": ["list", "watch"],
                    },
                    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": self.name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": self.name,
                },
                "subjects": subject,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "herald-read", "namespace": namespace},
                "rules": [
                    {
                        "apiGroups": ["herald.dev"],
                        "resources": ["scheduledposts"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {
                        "apiGroups": ["herald.dev"],
                        "resources": ["scheduledposts/status"],
                        "verbs": ["get"],
                    },
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                ],
            },
            self._binding("herald-read", subject),
        )

    def _binding(self, role: str, subject: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": self.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": subject,
        }

    def _apply(self, *docs: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def can_patch_status(self) -> bool:
        out = self.cp.kubectl(
            "auth",
            "can-i",
            "patch",
            "scheduledposts.herald.dev",
            "--subresource=status",
            "-n",
            self.namespace,
            f"--as={self.name}",
            check=False,
        )
        return out.stdout.strip() == "yes"

    def grant_status_patch(self) -> None:
        subject = [{"kind": "User", "name": self.name, "apiGroup": "rbac.authorization.k8s.io"}]
        self._apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "herald-write-status", "namespace": self.namespace},
                "rules": [
                    {
                        "apiGroups": ["herald.dev"],
                        "resources": ["scheduledposts/status"],
                        "verbs": ["patch"],
                    }
                ],
            },
            self._binding("herald-write-status", subject),
        )

    def cleanup(self) -> None:
        """The cluster-scoped objects (the namespaced ones die with the etcd)."""
        for kind in ("clusterrolebinding", "clusterrole"):
            self.cp.kubectl("delete", kind, self.name, "--ignore-not-found", check=False)


# --- a CRD with one more status field -------------------------------------------------


@contextlib.contextmanager
def extra_crd_field(
    cp: ControlPlane, section: str, field: str, timeout: float = 20.0
) -> Iterator[None]:
    """Add optional string field `<section>.<field>` (section: spec or status) to the CRD
    for the block's duration, as a newer Herald's CRD would.

    Waits until the CRD is Established (the API server re-reads the structural schema
    asynchronously: a write may still prune the field for a moment), and removes it
    again afterwards so that other tests see the CRD the suite installed.
    """
    path = f"/spec/versions/0/schema/openAPIV3Schema/properties/{section}/properties/{field}"
    add = [{"op": "add", "path": path, "value": {"type": "string"}}]
    cp.kubectl("patch", "crd", CRD_NAME, "--type", "json", "-p", json.dumps(add))
    try:
        cp.wait_established(CRD_NAME, timeout)
        yield
    finally:
        remove = [{"op": "remove", "path": path}]
        cp.kubectl("patch", "crd", CRD_NAME, "--type", "json", "-p", json.dumps(remove))


def extra_status_field(
    cp: ControlPlane, field: str, timeout: float = 20.0
) -> contextlib.AbstractContextManager[None]:
    """`extra_crd_field` for a status field."""
    return extra_crd_field(cp, "status", field, timeout)


@contextlib.contextmanager
def refused_status_writes(
    cp: ControlPlane,
    client: httpx.Client,
    namespace: str,
    probe_url: str,
    reason: str = "RequestEntityTooLarge",
    timeout: float = 20.0,
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses every status update of ScheduledPosts in
    `namespace` with `reason` (RequestEntityTooLarge: HTTP 413, an answer Herald has no
    special case for). Returns once a status write to `probe_url` (a post) is refused;
    afterwards the policy and its binding are deleted, and the block waits until that
    post's status can be written again."""
    name = f"herald-refuse-status-{namespace}"[:63]
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["herald.dev"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["scheduledposts/status"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "false",
                        "reason": reason,
                        "message": "status writes refused by a test's admission policy",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]
    cp.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    try:
        deadline = time.monotonic() + timeout
        while True:
            response = client.patch(
                probe_url + "/status",
                json={"status": {"message": "probe"}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            if response.status_code >= 400:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the admission policy is not enforced after {timeout}s")
            time.sleep(0.2)
        yield
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            cp.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        # Deleting the policy also takes a moment to reach the admission chain.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = client.patch(
                probe_url + "/status",
                json={"status": {}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            if response.status_code < 400:
                break
            time.sleep(0.2)


def set_status_field_until_kept(
    client: httpx.Client, url: str, field: str, value: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Merge-patch `status.<field>` until the API server stops pruning it (the CRD
    update takes a moment to reach the handler); return the object as stored."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.patch(
            url + "/status",
            json={"status": {field: value}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()
        obj: dict[str, Any] = response.json()
        if (obj.get("status") or {}).get(field) == value:
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"the API server still prunes status.{field} after {timeout}s")
        time.sleep(0.3)
