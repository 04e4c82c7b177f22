"""The CRD on a real kube-apiserver: validation, printer columns, explain, CAS primitives."""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from herald import models
from tests.support.controlplane import REPO, ControlPlane

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
    (
        "text-longer-than-any-channel",
        _mutate("spec.content.text", "x" * 65537),
        ["spec.content.text", "65536"],
    ),
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
        _mutate("spec.content.media", [{"url": f"https://example.com/{i}.png"} for i in range(33)]),
        ["spec.content.media", "32"],
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


# --- per-channel limits (issue 15 item 3) ------------------------------------------------
# Each network's documented limits, written out here rather than read from
# herald.models.CHANNEL_LIMITS, so a wrong number in the table fails this test.
# channel: (characters, media items)
NETWORK_LIMITS: dict[str, tuple[int, int]] = {
    "linkedin": (3000, 20),
    "x": (280, 4),
    "mastodon": (500, 4),
    "bluesky": (300, 4),
    "facebook": (63206, 20),  # Facebook documents no maximum of photos: Herald's cap
    "instagram": (2200, 10),
    "threads": (500, 20),
}


def _images(n: int) -> list[dict[str, str]]:
    return [{"url": f"https://example.com/{i}.png", "altText": f"image {i}"} for i in range(n)]


def _post(channel: str, text: str = "hello", media: int = 0, link: str | None = None) -> Any:
    # Instagram publishes nothing without an image: give its other cases one.
    content: dict[str, Any] = {"text": text}
    if media or channel == "instagram":
        content["media"] = _images(media or 1)
    if link is not None:
        content["link"] = link
    return {**VALID["spec"], "channel": channel, "content": content}


def _limit_cases() -> list[tuple[str, dict[str, Any], list[str] | None]]:
    """(name, spec, None if the API server accepts it, else what its message must say)."""
    cases: list[tuple[str, dict[str, Any], list[str] | None]] = []
    for channel, (chars, media) in NETWORK_LIMITS.items():
        # Bluesky: emoji, one code point (four UTF-8 bytes) each, to show what is counted.
        unit = "\N{SLIGHTLY SMILING FACE}" if channel == "bluesky" else "a"
        cases.append((f"{channel}-text-{chars}", _post(channel, unit * chars), None))
        cases.append(
            (
                f"{channel}-text-{chars + 1}",
                _post(channel, unit * (chars + 1)),
                ["spec.content.text", f"channel {channel}", f"limited to {chars} characters"],
            )
        )
        cases.append((f"{channel}-media-{media}", _post(channel, media=media), None))
        cases.append(
            (
                f"{channel}-media-{media + 1}",
                _post(channel, media=media + 1),
                ["spec.content.media", f"channel {channel}", f"limited to {media} items"],
            )
        )
    instagram_text_only = {**VALID["spec"], "channel": "instagram", "content": {"text": "hi"}}
    cases.append(
        (
            "instagram-without-media",
            instagram_text_only,
            ["spec.content.media", "channel instagram", "at least 1 image or video"],
        )
    )
    link = "https://example.com/blog"
    cases.append(("linkedin-link-1-image", _post("linkedin", media=1, link=link), None))
    cases.append(
        (
            "linkedin-link-2-images",
            _post("linkedin", media=2, link=link),
            ["spec.content.media", "channel linkedin", "content.link", "at most 1 media item"],
        )
    )
    # Other channels take a link with several images.
    cases.append(("x-link-4-images", _post("x", media=4, link=link), None))
    return cases


LIMIT_CASES = _limit_cases()


def test_channel_limits_at_apply_time(control_plane: ControlPlane, namespace: str) -> None:
    """Every per-channel limit: accepted at the limit, refused one past it, with a message
    naming the field, the channel and the limit. One kubectl apply for all the cases
    (kubectl applies each document and reports each refusal), so the file stays fast."""
    docs = [
        {
            "apiVersion": VALID["apiVersion"],
            "kind": VALID["kind"],
            "metadata": {"name": name},
            "spec": spec,
        }
        for name, spec, _ in LIMIT_CASES
    ]
    proc = control_plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
        timeout=120,
    )
    assert proc.returncode != 0, "no case was refused"
    # kubectl prints one error per refused document, each naming it.
    errors = {
        m.group(1): m.group(0)
        for m in re.finditer(r'ScheduledPost\S* "([^"]+)" is invalid.*', proc.stderr)
    }
    stored = set(control_plane.kubectl("get", "sp", "-n", namespace, "-o", "name").stdout.split())
    for name, _, expected in LIMIT_CASES:
        if expected is None:
            assert f"scheduledpost.herald.dev/{name}" in stored, (name, errors.get(name))
            assert name not in errors, errors[name]
            continue
        assert f"scheduledpost.herald.dev/{name}" not in stored, f"{name} was accepted"
        assert name in errors, f"{name}: no error in {proc.stderr[:2000]!r}"
        for needle in expected:
            assert needle in errors[name], f"{name}: {needle!r} not in {errors[name]!r}"


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
    assert "x 280" in content and "code points" in content
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


def test_a_new_post_shows_pending_without_any_write(
    control_plane: ControlPlane, namespace: str, admin_client: httpx.Client
) -> None:
    """The CRD's status default (issue 17, item 4): a post nobody has written reads back
    as Pending in `kubectl get` and in field selectors, and the operator's first write
    (the claim) tests that default like any status it read."""
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(VALID))
    shown = control_plane.kubectl(
        "get", "sp", "valid", "-n", namespace, "-o", "jsonpath={.status}"
    ).stdout
    assert json.loads(shown) == {
        "phase": "Pending",
        "attempt": 0,
        "retryEpoch": 0,
        "retryBaseAttempt": 0,
    }
    pending = control_plane.kubectl(
        "get", "sp", "-n", namespace, "--field-selector", "status.phase=Pending", "-o", "name"
    ).stdout.split()
    assert pending == ["scheduledpost.herald.dev/valid"]
    url = f"/apis/herald.dev/v1alpha1/namespaces/{namespace}/scheduledposts/valid/status"
    claim = [
        {"op": "test", "path": "/status/phase", "value": "Pending"},
        {"op": "replace", "path": "/status/phase", "value": "Publishing"},
        {"op": "replace", "path": "/status/attempt", "value": 1},
    ]
    headers = {"Content-Type": "application/json-patch+json"}
    won = admin_client.patch(url, json=claim, headers=headers)
    assert won.status_code == 200, won.text
    assert won.json()["status"]["phase"] == "Publishing"


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
    # The forged status is dropped; what is there is the CRD's default for a new post.
    assert obj["status"] == {
        "phase": "Pending",
        "attempt": 0,
        "retryEpoch": 0,
        "retryBaseAttempt": 0,
    }
    assert obj["spec"]["channel"] == models.Channel.LINKEDIN.value  # defaulted by the server


def test_a_new_crd_accepts_a_watch_once_waited_for(
    control_plane: ControlPlane, admin_client: httpx.Client, tmp_path: Path
) -> None:
    """`wait_established` (which `make up` and every session use before starting Herald)
    returns only once a watch is accepted: kopf logs a 429 "storage is (re)initializing"
    from a watch cache still filling at ERROR, and `make up` must start clean."""
    crd = yaml.safe_load((REPO / "crds" / "clustersocialaccounts.herald.dev.yaml").read_text())
    group = f"g{uuid.uuid4().hex[:8]}.herald.test"
    crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{group}"
    crd["spec"]["group"] = group
    path = tmp_path / "crd.yaml"
    path.write_text(yaml.safe_dump(crd))
    control_plane.kubectl("apply", "-f", str(path))
    control_plane.wait_established(crd["metadata"]["name"])
    version = crd["spec"]["versions"][0]["name"]
    url = f"/apis/{group}/{version}/{crd['spec']['names']['plural']}"
    with admin_client.stream("GET", url, params={"watch": "true", "timeoutSeconds": "1"}) as r:
        assert r.status_code == 200, r.read().decode()
