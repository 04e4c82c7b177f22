"""Builds n8n/publish-*.json from the Code nodes' JavaScript in n8n/src/.

The workflow files are what users import; the JavaScript lives here as files so it can
be read and reviewed as code. Run `python n8n/src/build.py` after editing a .js file;
tests/n8n/test_workflows.py fails when the JSON is not current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent
OUT = SRC.parent

# Fixed ids keep re-imports idempotent: importing again updates, never duplicates.
ECHO_ID, LINKEDIN_ID = "HeraldEchoPub001", "HeraldLinkedIn01"
OAUTH_CREDENTIAL = {"id": "HeraldLinkedInOA", "name": "LinkedIn (Herald)"}


def js(name: str) -> str:
    return (SRC / f"{name}.js").read_text()


def node(name: str, kind: str, version: float, x: int, y: int, **params: Any) -> dict[str, Any]:
    extra = params.pop("_extra", {})
    return {
        "parameters": params,
        "name": name,
        "type": f"n8n-nodes-base.{kind}",
        "typeVersion": version,
        "position": [x, y],
        **extra,
    }


def code(name: str, source: str, x: int, y: int) -> dict[str, Any]:
    return node(name, "code", 2, x, y, jsCode=js(source))


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


def if_true(name: str, expression: str, x: int, y: int) -> dict[str, Any]:
    return node(
        name,
        "if",
        2.2,
        x,
        y,
        conditions={
            "options": {"caseSensitive": True, "leftValue": "", "typeValidation": "loose"},
            "conditions": [
                {
                    "id": f"{name}-cond",
                    "leftValue": expression,
                    "rightValue": "",
                    "operator": {"type": "boolean", "operation": "true", "singleValue": True},
                }
            ],
            "combinator": "and",
        },
        options={},
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


def linkedin_request(
    name: str, method: str, url: str, x: int, y: int, **params: Any
) -> dict[str, Any]:
    """An HTTP Request to LinkedIn with the OAuth2 credential; never throws on a status."""
    options = params.pop("options", {})
    return node(
        name,
        "httpRequest",
        4.2,
        x,
        y,
        method=method,
        url=url,
        authentication="genericCredentialType",
        genericAuthType="oAuth2Api",
        options={
            "response": {"response": {"fullResponse": True, "neverError": True, **options}},
            "timeout": 30000,
        },
        **params,
        _extra={
            "credentials": {"oAuth2Api": OAUTH_CREDENTIAL},
            "onError": "continueRegularOutput",
        },
    )


LINKEDIN_HEADERS = {
    "parameters": [
        {"name": "LinkedIn-Version", "value": "={{ $json.version }}"},
        {"name": "X-Restli-Protocol-Version", "value": "2.0.0"},
    ]
}
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


def linkedin() -> dict[str, Any]:
    nodes = [
        webhook("herald-linkedin", "6f4f0c3e-6c2b-4f7e-9d55-0e6b0c1e0a02"),
        code("Verify signature", "verify-signature", 220, 0),
        if_true("Signature valid?", "={{ $json.verified }}", 440, 0),
        respond("Reject", 401, REJECTED, 660, 160),
        respond("Accept", 202, ACCEPTED, 660, -60),
        code("De-duplicate", "dedup", 880, -60),
        if_true("Already published?", "={{ $json.duplicate }}", 1100, -60),
        code("Prepare", "prepare", 1320, 40),
        if_true("Has media?", "={{ $json.media !== null }}", 1540, 40),
        linkedin_request(
            "Initialize upload",
            "POST",
            "={{ $json.base }}/rest/images?action=initializeUpload",
            1760,
            -60,
            sendHeaders=True,
            headerParameters=LINKEDIN_HEADERS,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify({ initializeUploadRequest: { owner: $json.author } }) }}",
        ),
        node(
            "Download media",
            "httpRequest",
            4.2,
            1980,
            -60,
            url="={{ $('Prepare').item.json.media.url }}",
            options={
                "response": {
                    "response": {
                        "fullResponse": True,
                        "neverError": True,
                        "responseFormat": "file",
                    }
                },
                "timeout": 30000,
            },
            _extra={"onError": "continueRegularOutput"},
        ),
        linkedin_request(
            "Upload image",
            "PUT",
            "={{ $('Initialize upload').item.json.body.value.uploadUrl }}",
            2200,
            -60,
            sendBody=True,
            contentType="binaryData",
            inputDataFieldName="data",
        ),
        code("Build post", "build-post", 2420, 40),
        if_true("Ready to post?", "={{ $json.ready }}", 2640, 40),
        linkedin_request(
            "Create post",
            "POST",
            "={{ $json.base }}/rest/posts",
            2860,
            -60,
            sendHeaders=True,
            headerParameters=LINKEDIN_HEADERS,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("Outcome", "outcome", 3080, -60),
        callback(3300, 40),
    ]
    edges = [
        ("Herald webhook", 0, "Verify signature"),
        ("Verify signature", 0, "Signature valid?"),
        ("Signature valid?", 0, "Accept"),
        ("Signature valid?", 1, "Reject"),
        ("Accept", 0, "De-duplicate"),
        ("De-duplicate", 0, "Already published?"),
        ("Already published?", 0, "Call Herald back"),
        ("Already published?", 1, "Prepare"),
        ("Prepare", 0, "Has media?"),
        ("Has media?", 0, "Initialize upload"),
        ("Has media?", 1, "Build post"),
        ("Initialize upload", 0, "Download media"),
        ("Download media", 0, "Upload image"),
        ("Upload image", 0, "Build post"),
        ("Build post", 0, "Ready to post?"),
        ("Ready to post?", 0, "Create post"),
        ("Ready to post?", 1, "Call Herald back"),
        ("Create post", 0, "Outcome"),
        ("Outcome", 0, "Call Herald back"),
    ]
    return workflow(LINKEDIN_ID, "Herald: publish to LinkedIn", nodes, edges)


def render() -> dict[str, str]:
    return {
        name: json.dumps(flow, indent=2) + "\n"
        for name, flow in (("publish-echo.json", echo()), ("publish-linkedin.json", linkedin()))
    }


def main() -> int:
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote n8n/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
