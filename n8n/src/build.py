"""Builds n8n/publish-*.json from the Code nodes' JavaScript in n8n/src/.

The workflow files are what users import; the JavaScript lives here as files so it can
be read and reviewed as code. Run `python n8n/src/build.py` after editing a .js file;
tests/n8n/test_workflows.py fails when the JSON is not current.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent
OUT = SRC.parent
REPO = OUT.parent
for root in (SRC, REPO / "operator"):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

from nodes import code, if_true, js, node, request  # noqa: E402

from herald.statuses import RETRYABLE_4XX  # noqa: E402

__all__ = ["code", "if_true", "js", "node", "request"]

# Fixed ids keep re-imports idempotent: importing again updates, never duplicates.
ECHO_ID, PUBLISH_ID = "HeraldEchoPub001", "HeraldPublish001"
# Every channel the CRD accepts, in the order the router's outputs take when present.
CHANNELS = ("linkedin", "x", "mastodon", "bluesky", "facebook", "instagram", "threads")


def branches() -> list[tuple[str, Any]]:
    """The branch modules present (n8n/src/net_<channel>.py), in CHANNELS order."""
    found = []
    for channel in CHANNELS:
        if (SRC / f"net_{channel}.py").exists():
            found.append((channel, importlib.import_module(f"net_{channel}")))
    return found


def retryable_4xx() -> str:
    return json.dumps(sorted(RETRYABLE_4XX))


def webhook(path: str, webhook_id: str) -> dict[str, Any]:
    return node(
        "Herald webhook",
        "webhook",
        2.1,
        0,
        0,
        httpMethod="POST",
        path=path,
        responseMode="responseNode",
        options={"rawBody": True},
        _extra={"webhookId": webhook_id},
    )


def respond(name: str, status: int, body: str, x: int, y: int) -> dict[str, Any]:
    return node(
        name,
        "respondToWebhook",
        1.1,
        x,
        y,
        respondWith="json",
        responseBody=body,
        options={"responseCode": status},
    )


def callback(x: int, y: int) -> dict[str, Any]:
    """POST the result to the callback URL Herald sent, with its per-attempt token."""
    return node(
        "Call Herald back",
        "httpRequest",
        4.2,
        x,
        y,
        method="POST",
        url="={{ $json.callback.url }}",
        sendHeaders=True,
        headerParameters={
            "parameters": [
                {"name": "Authorization", "value": "={{ 'Bearer ' + $json.callback.token }}"}
            ]
        },
        sendBody=True,
        specifyBody="json",
        jsonBody="={{ JSON.stringify($json.result) }}",
        options={"timeout": 10000},
        # Herald answers 503 while its API server is unreachable: try again a little.
        # A callback that never arrives is not lost either: Herald's stale recovery
        # re-dispatches, and the de-duplication answers from its record.
        _extra={
            "retryOnFail": True,
            "maxTries": 3,
            "waitBetweenTries": 2000,
            "onError": "continueRegularOutput",
        },
    )


ACCEPTED = "={{ JSON.stringify({ status: 'accepted' }) }}"
REJECTED = "={{ JSON.stringify({ code: 'invalid_signature', message: $json.reason }) }}"


def workflow(
    wid: str, name: str, nodes: list[dict[str, Any]], edges: list[tuple[str, int, str]]
) -> dict[str, Any]:
    connections: dict[str, Any] = {}
    for source, output, target in edges:
        outs = connections.setdefault(source, {"main": []})["main"]
        while len(outs) <= output:
            outs.append([])
        outs[output].append({"node": target, "type": "main", "index": 0})
    return {
        "id": wid,
        "name": name,
        "nodes": nodes,
        "connections": connections,
        "settings": {"executionOrder": "v1", "saveManualExecutions": True},
        "active": False,
        "pinData": {},
        "tags": [],
    }


def echo() -> dict[str, Any]:
    nodes = [
        webhook("herald-echo", "6f4f0c3e-6c2b-4f7e-9d55-0e6b0c1e0a01"),
        code("Verify signature", "verify-signature", 220, 0),
        if_true("Signature valid?", "={{ $json.verified }}", 440, 0),
        respond("Reject", 401, REJECTED, 660, 160),
        respond("Accept", 202, ACCEPTED, 660, -60),
        code("Publish (echo)", "echo", 880, -60),
        callback(1100, -60),
    ]
    edges = [
        ("Herald webhook", 0, "Verify signature"),
        ("Verify signature", 0, "Signature valid?"),
        ("Signature valid?", 0, "Accept"),
        ("Signature valid?", 1, "Reject"),
        ("Accept", 0, "Publish (echo)"),
        ("Publish (echo)", 0, "Call Herald back"),
    ]
    return workflow(ECHO_ID, "Herald: publish (echo)", nodes, edges)


def publish() -> dict[str, Any]:
    """Webhook → signature → 202 → de-duplicate → prepare → media → route on channel →
    the channel's branch → outcome → callback. n8n/README.md describes each stage."""
    present = branches()
    replace = {"__RETRYABLE_4XX__": retryable_4xx()}
    nodes = [
        webhook("herald-publish", "6f4f0c3e-6c2b-4f7e-9d55-0e6b0c1e0a03"),
        code("Verify signature", "verify-signature", 220, 0),
        if_true("Signature valid?", "={{ $json.verified }}", 440, 0),
        respond("Reject", 401, REJECTED, 660, 160),
        respond("Accept", 202, ACCEPTED, 660, -60),
        code("De-duplicate", "dedup", 880, -60),
        if_true("Already handled?", "={{ $json.handled }}", 1100, -60),
        code(
            "Prepare",
            "prepare",
            1320,
            40,
            {"__BRANCHES__": json.dumps([channel for channel, _ in present])},
        ),
        if_true("Post valid?", "={{ $json.outcome === undefined }}", 1540, 40),
        if_true("Has media?", "={{ $json.hasMedia }}", 1650, -60),
        code("Download media", "download-media", 1760, -60, replace),
        if_true("Media ready?", "={{ $json.outcome === undefined }}", 1980, -60),
        node(
            "Route on channel",
            "switch",
            3.2,
            2200,
            -60,
            mode="expression",
            numberOutputs=len(present),
            output="={{ $json.route }}",
        ),
        code("Outcome", "outcome", 4600, 40, replace),
        callback(4820, 40),
    ]
    edges = [
        ("Herald webhook", 0, "Verify signature"),
        ("Verify signature", 0, "Signature valid?"),
        ("Signature valid?", 0, "Accept"),
        ("Signature valid?", 1, "Reject"),
        ("Accept", 0, "De-duplicate"),
        ("De-duplicate", 0, "Already handled?"),
        ("Already handled?", 0, "Call Herald back"),
        ("Already handled?", 1, "Prepare"),
        ("Prepare", 0, "Post valid?"),
        ("Post valid?", 0, "Has media?"),
        ("Has media?", 0, "Download media"),
        ("Has media?", 1, "Route on channel"),
        ("Post valid?", 1, "Outcome"),
        ("Download media", 0, "Media ready?"),
        ("Media ready?", 0, "Route on channel"),
        ("Media ready?", 1, "Outcome"),
        ("Outcome", 0, "Call Herald back"),
    ]
    for index, (_, module) in enumerate(present):
        branch_nodes, branch_edges, entry, exit_ = module.branch(2420, -60 + index * 400)
        nodes += branch_nodes
        edges += branch_edges
        edges += [("Route on channel", index, entry), (exit_, 0, "Outcome")]
    return workflow(PUBLISH_ID, "Herald: publish (routes on channel)", nodes, edges)


def render() -> dict[str, str]:
    return {
        name: json.dumps(flow, indent=2) + "\n"
        for name, flow in (("publish-echo.json", echo()), ("publish.json", publish()))
    }


def main() -> int:
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote n8n/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
