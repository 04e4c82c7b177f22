"""Mastodon branch: media through POST /api/v2/media (with alt text), then
POST /api/v1/statuses with Mastodon's own Idempotency-Key header.

Credential: the Header Auth credential "Mastodon (Herald)" (`Authorization: Bearer <access
token>` of an application with the write:statuses and write:media scopes);
MASTODON_API_BASE_URL is the instance's URL.
"""

from __future__ import annotations

from typing import Any

from nodes import code, if_true, request

CREDENTIAL = ("httpHeaderAuth", {"id": "HeraldMastodon01", "name": "Mastodon (Herald)"})


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[tuple[str, int, str]], str, str]:
    nodes = [
        code("Mastodon: prepare", "mastodon-prepare", x, y),
        if_true("Mastodon: upload media?", "={{ $json.upload }}", x + 220, y),
        request(
            "Mastodon: upload media",
            "POST",
            "={{ $json.base }}/api/v2/media",
            x + 440,
            y - 100,
            CREDENTIAL,
            sendBody=True,
            contentType="multipart-form-data",
            bodyParameters={
                "parameters": [
                    {
                        "parameterType": "formBinaryData",
                        "name": "file",
                        "inputDataFieldName": "data",
                    },
                    {"name": "description", "value": "={{ $json.description }}"},
                ]
            },
        ),
        code("Mastodon: build post", "mastodon-build", x + 660, y),
        if_true("Mastodon: ready?", "={{ $json.ready }}", x + 880, y),
        request(
            "Mastodon: create status",
            "POST",
            "={{ $json.base }}/api/v1/statuses",
            x + 1100,
            y - 100,
            CREDENTIAL,
            sendHeaders=True,
            headerParameters={
                "parameters": [{"name": "Idempotency-Key", "value": "={{ $json.idempotencyKey }}"}]
            },
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("Mastodon: result", "mastodon-result", x + 1320, y),
    ]
    edges = [
        ("Mastodon: prepare", 0, "Mastodon: upload media?"),
        ("Mastodon: upload media?", 0, "Mastodon: upload media"),
        ("Mastodon: upload media?", 1, "Mastodon: build post"),
        ("Mastodon: upload media", 0, "Mastodon: build post"),
        ("Mastodon: build post", 0, "Mastodon: ready?"),
        ("Mastodon: ready?", 0, "Mastodon: create status"),
        ("Mastodon: ready?", 1, "Mastodon: result"),
        ("Mastodon: create status", 0, "Mastodon: result"),
    ]
    return nodes, edges, "Mastodon: prepare", "Mastodon: result"
