"""The CRD on a real kube-apiserver: validation, printer columns, explain, CAS primitives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from herald import models
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "apiVersion": "herald.dev/v1alpha1",
    "kind": "ScheduledPost",
    "metadata": {"name": "valid"},
    "spec": {
        "publishAt": "2030-01-01T09:00:00Z",
        "content": {"text": "hello"},
    },
}


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """VALID with `value` set at the dotted `path` (a value of DELETE removes the key)."""
    doc = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


DELETE = object()

# (case id, manifest, substrings the server's error message must contain)
INVALID = [
    ("missing-text", _mutate("spec.content.text", DELETE), ["spec.content.text", "Required"]),
    ("empty-text", _mutate("spec.content.text", ""), ["spec.content.text"]),
    ("text-too-long", _mutate("spec.content.text", "x" * 3001), ["spec.content.text", "3000"]),
    (
        "publishAt-without-offset",
        _mutate("spec.publishAt", "2030-01-01T09:00:00"),
        ["spec.publishAt"],
    ),
    ("publishAt-not-a-date", _mutate("spec.publishAt", "next tuesday"), ["spec.publishAt"]),
    (
        "bad-channel-enum",
        _mutate("spec.channel", "myspace"),
        ["spec.channel", "Unsupported value", "linkedin"],
    ),
    (
        "too-many-media",
        _mutate("spec.content.media", [{"url": f"https://example.com/{i}.png"} for i in range(10)]),
        ["spec.content.media", "9"],
    ),
    (
        "negative-deadline",
        _mutate("spec.startingDeadlineSeconds", -5),
        ["spec.startingDeadlineSeconds", "greater than or equal to 0"],
    ),
    (
        "negative-backoff",
        _mutate("spec.retry", {"backoffSeconds": -1}),
        ["spec.retry.backoffSeconds"],
    ),
    (
        "maxBackoff-below-backoff",
        _mutate("spec.retry", {"backoffSeconds": 60, "maxBackoffSeconds": 10}),
        ["spec.retry.maxBackoffSeconds", "greater than or equal to backoffSeconds"],
    ),
    ("unknown-field", _mutate("spec.bogus", 1), ["spec.bogus", "unknown field"]),
    ("zero-attempts", _mutate("spec.retry", {"maxAttempts": 0}), ["spec.retry.maxAttempts"]),
    ("target-not-a-name", _mutate("spec.target", "http://evil.example.com/hook"), ["spec.target"]),
    (
        "media-url-not-http",
        _mutate("spec.content.media", [{"url": "file:///etc/passwd"}]),
        ["spec.content.media[0].url"],
    ),
    ("missing-spec", {k: v for k, v in VALID.items() if k != "spec"}, ["spec", "Required"]),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_every_sample_applies(control_plane: ControlPlane, namespace: str, sample: Path) -> None:
    out = control_plane.kubectl("apply", "-n", namespace, "-f", str(sample)).stdout
    assert "created" in out


@pytest.mark.parametrize(("case", "manifest", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(
    control_plane: ControlPlane,
    namespace: str,
    case: str,
    manifest: dict[str, Any],
    expected: list[str],
) -> None:
    proc = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert proc.returncode != 0, f"{case} was accepted"
    for needle in expected:
        assert needle in proc.stderr, f"{case}: {needle!r} not in {proc.stderr!r}"
    got = control_plane.kubectl("get", "sp", "-n", namespace, "-o", "name").stdout
    assert got.strip() == "", "nothing may be stored from a rejected manifest"


def test_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(SAMPLES[0]))
    plain = control_plane.kubectl("get", "sp", "-n", namespace).stdout.splitlines()
    assert plain[0].split() == ["NAME", "PHASE", "PUBLISH", "AT", "ATTEMPTS", "AGE"]
    wide = control_plane.kubectl("get", "scheduledposts", "-n", namespace, "-o", "wide").stdout
    header = wide.splitlines()[0]
    for column in ("TARGET", "NEXT ATTEMPT", "URL", "MESSAGE"):
        assert column in header
    assert "default" in wide.splitlines()[1]  # the defaulted target
    by_category = control_plane.kubectl("get", "herald", "-n", namespace, "-o", "name").stdout
    assert "scheduledpost.herald.dev/" in by_category


def test_explain_prints_descriptions(control_plane: ControlPlane) -> None:
    spec = control_plane.kubectl("explain", "scheduledpost.spec").stdout
    assert "What to publish, where, and when." in spec
    assert "startingDeadlineSeconds" in spec
    content = control_plane.kubectl("explain", "scheduledpost.spec.content").stdout
    assert "1 to 3000 characters" in content
    status = control_plane.kubectl("explain", "sp.status.phase").stdout
    assert "Publishing" in status


def test_field_selector_on_phase(
    control_plane: ControlPlane, namespace: str, admin_client: httpx.Client
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(SAMPLES[0]))
    name = yaml.safe_load(SAMPLES[0].read_text())["metadata"]["name"]
    url = f"/apis/herald.dev/v1alpha1/namespaces/{namespace}/scheduledposts/{name}/status"
    patch = [{"op": "add", "path": "/status", "value": {"phase": "Failed", "attempt": 1}}]
    r = admin_client.patch(url, json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    failed = control_plane.kubectl(
        "get", "sp", "-n", namespace, "--field-selector", "status.phase=Failed", "-o", "name"
    ).stdout.split()
    scheduled = control_plane.kubectl(
        "get", "sp", "-n", namespace, "--field-selector", "status.phase=Scheduled", "-o", "name"
    ).stdout.split()
    assert failed == [f"scheduledpost.herald.dev/{name}"]
    assert scheduled == []


def test_status_json_patch_test_op_and_stale_resource_version(
    control_plane: ControlPlane, namespace: str, admin_client: httpx.Client
) -> None:
    """The two primitives the operator's compare-and-swap relies on."""
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(VALID))
    base = f"/apis/herald.dev/v1alpha1/namespaces/{namespace}/scheduledposts/valid"
    json_patch = {"Content-Type": "application/json-patch+json"}
    seed = [{"op": "add", "path": "/status", "value": {"phase": "Scheduled", "attempt": 0}}]
    first = admin_client.patch(f"{base}/status", json=seed, headers=json_patch)
    assert first.status_code == 200, first.text

    claim = [
        {"op": "test", "path": "/status/phase", "value": "Scheduled"},
        {"op": "test", "path": "/status/attempt", "value": 0},
        {"op": "replace", "path": "/status/phase", "value": "Publishing"},
        {"op": "replace", "path": "/status/attempt", "value": 1},
    ]
    won = admin_client.patch(f"{base}/status", json=claim, headers=json_patch)
    assert won.status_code == 200, won.text
    # The schema's defaults fill in the counters the write left out.
    defaults = {"retryEpoch": 0, "retryBaseAttempt": 0}
    assert won.json()["status"] == {"phase": "Publishing", "attempt": 1, **defaults}
    lost = admin_client.patch(f"{base}/status", json=claim, headers=json_patch)
    assert lost.status_code == 422, lost.text
    assert lost.json()["reason"] == "Invalid"

    stale_rv = first.json()["metadata"]["resourceVersion"]
    merge = {"metadata": {"resourceVersion": stale_rv}, "status": {"phase": "Failed"}}
    conflict = admin_client.patch(
        f"{base}/status", json=merge, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert conflict.status_code == 409, conflict.text
    final = admin_client.get(base).json()["status"]
    assert final == {"phase": "Publishing", "attempt": 1, **defaults}, "the losers changed nothing"


def test_status_is_a_subresource(
    control_plane: ControlPlane, namespace: str, admin_client: httpx.Client
) -> None:
    """A user's write to the main resource cannot forge status."""
    doc = copy.deepcopy(VALID)
    doc["status"] = {"phase": "Published", "attempt": 9}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    obj = admin_client.get(
        f"/apis/herald.dev/v1alpha1/namespaces/{namespace}/scheduledposts/valid"
    ).json()
    assert "status" not in obj or obj["status"].get("phase") is None
    assert obj["spec"]["channel"] == models.Channel.LINKEDIN.value  # defaulted by the server
