"""X branch: media through POST /2/media/upload (alt text through POST /2/media/metadata),
then POST /2/tweets (API v2).

Credential: the generic OAuth2 credential "X (Herald)" (OAuth 2.0 user context with
tweet.write, users.read, media.write, offline.access); X_API_BASE_URL points the branch
elsewhere (tests: a fake).
"""

from __future__ import annotations

from typing import Any

from nodes import code, if_true, request

CREDENTIAL = ("oAuth2Api", {"id": "HeraldXOAuth2001", "name": "X (Herald)"})


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[tuple[str, int, str]], str, str]:
    nodes = [
        code("X: prepare", "x-prepare", x, y),
        if_true("X: upload media?", "={{ $json.upload }}", x + 220, y),
        request(
            "X: upload media",
            "POST",
            "={{ $json.base }}/2/media/upload",
            x + 440,
            y - 100,
            CREDENTIAL,
            sendBody=True,
            contentType="multipart-form-data",
            bodyParameters={
                "parameters": [
                    {
                        "parameterType": "formBinaryData",
                        "name": "media",
                        "inputDataFieldName": "data",
                    },
                    {"name": "media_category", "value": "={{ $json.category }}"},
                    {"name": "media_type", "value": "={{ $json.mediaType }}"},
                ]
            },
        ),
        code("X: alt texts", "x-alt-text", x + 660, y - 100),
        if_true("X: set alt text?", "={{ $json.skip !== true }}", x + 880, y - 100),
        request(
            "X: set alt text",
            "POST",
            "={{ $json.base }}/2/media/metadata",
            x + 1100,
            y - 200,
            CREDENTIAL,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("X: build post", "x-build", x + 1320, y),
        if_true("X: ready?", "={{ $json.ready }}", x + 1540, y),
        request(
            "X: create post",
            "POST",
            "={{ $json.base }}/2/tweets",
            x + 1760,
            y - 100,
            CREDENTIAL,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("X: result", "x-result", x + 1980, y),
    ]
    edges = [
        ("X: prepare", 0, "X: upload media?"),
        ("X: upload media?", 0, "X: upload media"),
        ("X: upload media?", 1, "X: build post"),
        ("X: upload media", 0, "X: alt texts"),
        ("X: alt texts", 0, "X: set alt text?"),
        ("X: set alt text?", 0, "X: set alt text"),
        ("X: set alt text?", 1, "X: build post"),
        ("X: set alt text", 0, "X: build post"),
        ("X: build post", 0, "X: ready?"),
        ("X: ready?", 0, "X: create post"),
        ("X: ready?", 1, "X: result"),
        ("X: create post", 0, "X: result"),
    ]
    return nodes, edges, "X: prepare", "X: result"
