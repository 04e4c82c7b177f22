"""A test-only workflow that runs each of the Bluesky, Facebook, Instagram and Threads
branches alone (tests/n8n/test_branches_b.py); imported next to publish.json in the
n8n of tests/n8n/conftest.py. Never shipped.

Per network: Webhook → a Code node that turns the request into the branch's entry item
(the post, its key, media as binary properties) → the branch → Respond to Webhook with
the branch's exit item.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

from tests.support.accounts import DEFAULT_HANDLES
from tests.support.controlplane import REPO
from tests.support.n8n_server import N8nServer

SRC = REPO / "n8n" / "src"
NETWORKS = ("bluesky", "facebook", "instagram", "threads")
HARNESS_ID = "HeraldNetBTest01"


def branch_module(network: str) -> Any:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    return importlib.import_module(f"net_{network}")


ENTRY_JS = """
// Test harness: the request body is the entry item; media bytes arrive base64-encoded.
const body = $input.first().json.body;
const binary = {};
const media = (body.media || []).map((m, i) => {
  const key = `media${i}`;
  binary[key] = { data: m.data, mimeType: m.mimeType, fileName: `media${i}` };
  return { url: m.url, altText: m.altText || '', mimeType: m.mimeType,
           bytes: Buffer.from(m.data, 'base64').length, binaryKey: key };
});
return [{ json: { post: body.post, idempotencyKey: body.idempotencyKey, media }, binary }];
"""


def harness() -> dict[str, Any]:
    """One workflow: per network Webhook → entry → branch → Respond with the exit item."""
    build = branch_module("bluesky").helpers()
    nodes: list[dict[str, Any]] = []
    edges: list[tuple[str, int, str]] = []
    for row, network in enumerate(NETWORKS):
        y = row * 800
        hook, entry, reply = f"{network} hook", f"{network} entry", f"{network} reply"
        branch_nodes, branch_edges, first, last = branch_module(network).branch(440, y)
        nodes += [
            build.node(
                hook,
                "webhook",
                2.1,
                0,
                y,
                httpMethod="POST",
                path=f"herald-test-{network}",
                responseMode="responseNode",
                options={},
                _extra={"webhookId": f"6f4f0c3e-6c2b-4f7e-9d55-0e6b0c1e0b{row:02d}"},
            ),
            build.node(entry, "code", 2, 220, y, jsCode=ENTRY_JS),
            *branch_nodes,
            build.node(
                reply,
                "respondToWebhook",
                1.1,
                440 + 18 * 220,
                y,
                respondWith="json",
                responseBody="={{ JSON.stringify($json) }}",
                options={"responseCode": 200},
            ),
        ]
        edges += [(hook, 0, entry), (entry, 0, first), *branch_edges, (last, 0, reply)]
    connections: dict[str, Any] = {}
    for source, output, target in edges:
        outs = connections.setdefault(source, {"main": []})["main"]
        outs.extend([] for _ in range(output + 1 - len(outs)))
        outs[output].append({"node": target, "type": "main", "index": 0})
    return {
        "id": HARNESS_ID,
        "name": "Herald netB branches (test)",
        "nodes": nodes,
        "connections": connections,
        "settings": {"executionOrder": "v1"},
        "active": False,
    }


def account_of(channel: str) -> dict[str, str]:
    """The resolved account Herald puts in the body: the branch posts as its handle."""
    return {
        "kind": "SocialAccount",
        "name": f"{channel}-default",
        "handle": {c.value: h for c, h in DEFAULT_HANDLES.items()}.get(channel, "@nobody"),
        "channel": channel,
    }


def entry(
    channel: str,
    text: str,
    *,
    link: str | None = None,
    media: list[tuple[str, bytes, str, str]] = (),  # type: ignore[assignment]
    publish_at: datetime | None = None,
) -> dict[str, Any]:
    """The branch's entry: a Herald post; media as (url, bytes, mime type, alt text)."""
    at = publish_at or datetime.now(UTC)
    content: dict[str, Any] = {"text": text}
    if link:
        content["link"] = link
    if media:
        content["media"] = [{"url": url, "altText": alt} for url, _, _, alt in media]
    return {
        "post": {
            "id": "5d1c6a38-0000-4000-8000-000000000001",
            "namespace": "default",
            "name": f"{channel}-post",
            "attempt": 1,
            "publishAt": at.isoformat().replace("+00:00", "Z"),
            "channel": channel,
            "account": account_of(channel),
            "content": content,
            "callback": {"url": "http://127.0.0.1:9/unused", "token": "unused"},
        },
        "idempotencyKey": f"key-{channel}-{time.monotonic_ns()}",
        "media": [
            {"url": url, "altText": alt, "mimeType": mime, "data": base64.b64encode(data).decode()}
            for url, data, mime, alt in media
        ],
    }


def wait_for_webhooks(n8n: N8nServer, timeout: float = 120.0) -> None:
    """n8n answers "starting up" for a while after /healthz; a post that fails in the
    branch's first node (no network call) tells that the webhooks are registered."""
    deadline = time.monotonic() + timeout
    probe = entry("bluesky", "x" * 301)
    while True:
        try:
            if run(n8n, "bluesky", probe)["code"] == "BlueskyTextTooLong":
                return
        except (OSError, ValueError, AssertionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def run(n8n: N8nServer, network: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send one entry item through the network's branch; the exit item's outcome."""
    request = urllib.request.Request(
        n8n.webhook_url(f"herald-test-{network}"),
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        exit_item = json.loads(response.read())
    assert set(exit_item) == {"outcome"}, exit_item
    outcome: dict[str, Any] = exit_item["outcome"]
    return outcome
