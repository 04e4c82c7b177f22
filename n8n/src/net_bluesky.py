"""The Bluesky branch of the publish workflow: AT Protocol XRPC calls to the account's PDS.

createSession (handle + app password from the "Bluesky (Herald)" Custom Auth credential)
→ resolveHandle per @mention → listRecords (was this post made already?) → uploadBlob
per image → createRecord of an app.bsky.feed.post with link, hashtag and mention facets
and an images or external embed. The JavaScript is in bluesky-*.js; build.py places the
branch with `branch(x, y)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent
PREFIX = "Bluesky"
CREDENTIAL = {"id": "HeraldBlueskyApp", "name": "Bluesky (Herald)"}
BASE = "$('Bluesky: prepare').first().json.bluesky.base"
BEARER = "={{ 'Bearer ' + $('Bluesky: create session').first().json.body.accessJwt }}"

Edge = tuple[str, int, str]


def helpers() -> Any:
    """build.py's node helpers (or nodes.py's, once they move), imported late: build.py
    imports this module, so importing it at the top would be circular."""
    try:
        import nodes  # type: ignore[import-not-found]
    except ImportError:
        import build as nodes  # type: ignore[import-not-found,no-redef]
    return nodes


def source(*names: str) -> str:
    return "\n".join((SRC / f"{name}.js").read_text() for name in names)


def code(name: str, files: tuple[str, ...], x: int, y: int) -> dict[str, Any]:
    node: dict[str, Any] = helpers().node(name, "code", 2, x, y, jsCode=source(*files))
    return node


def request(name: str, method: str, url: str, x: int, y: int, **params: Any) -> dict[str, Any]:
    """An HTTP Request that answers with status, headers and body and never throws."""
    extra: dict[str, Any] = {"onError": "continueRegularOutput"}
    credential = params.pop("_credential", False)
    if credential:
        params |= {"authentication": "genericCredentialType", "genericAuthType": "httpCustomAuth"}
        extra["credentials"] = {"httpCustomAuth": CREDENTIAL}
    node: dict[str, Any] = helpers().node(
        name,
        "httpRequest",
        4.2,
        x,
        y,
        method=method,
        url=url,
        options={
            "response": {"response": {"fullResponse": True, "neverError": True}},
            "timeout": 30000,
        },
        **params,
        _extra=extra,
    )
    return node


def bearer() -> dict[str, Any]:
    return {"sendHeaders": True, "headerParameters": {"parameters": [
        {"name": "Authorization", "value": BEARER}]}}  # fmt: skip


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[Edge], str, str]:
    """(nodes, edges, entry node, exit node) with the first node at (x, y)."""
    h = helpers()
    answer = "bluesky-answer"
    step = 220
    nodes = [
        code("Bluesky: prepare", ("bluesky-prepare",), x, y),
        h.if_true("Bluesky: valid?", "={{ !$json.outcome }}", x + step, y),
        request(
            "Bluesky: create session",
            "POST",
            "={{ $json.bluesky.base }}/xrpc/com.atproto.server.createSession",
            x + 2 * step,
            y - 100,
            sendBody=True,
            specifyBody="json",
            # identifier and password come from the credential (merged into this body).
            jsonBody="{}",
            _credential=True,
        ),
        h.if_true("Bluesky: signed in?", "={{ $json.statusCode === 200 }}", x + 3 * step, y - 100),
        code("Bluesky: mentions", ("bluesky-mentions",), x + 4 * step, y - 100),
        h.if_true("Bluesky: mentions?", "={{ $json.resolve }}", x + 5 * step, y - 100),
        request(
            "Bluesky: resolve mention",
            "GET",
            f"={{{{ {BASE} }}}}/xrpc/com.atproto.identity.resolveHandle?handle="
            "{{ encodeURIComponent($json.handle) }}",
            x + 6 * step,
            y - 200,
            **bearer(),
        ),
        code("Bluesky: mentions resolved", (answer, "bluesky-resolved"), x + 7 * step, y - 200),
        h.if_true("Bluesky: resolved?", "={{ !$json.outcome }}", x + 8 * step, y - 200),
        request(
            "Bluesky: recent posts",
            "GET",
            f"={{{{ {BASE} }}}}/xrpc/com.atproto.repo.listRecords?repo="
            "{{ encodeURIComponent($('Bluesky: create session').first().json.body.did) }}"
            "&collection=app.bsky.feed.post&limit=10",
            x + 9 * step,
            y - 200,
            **bearer(),
        ),
        code("Bluesky: plan", (answer, "bluesky-plan"), x + 10 * step, y - 200),
        h.if_true("Bluesky: new post?", "={{ !$json.outcome }}", x + 11 * step, y - 200),
        h.if_true("Bluesky: images?", "={{ $json.upload }}", x + 12 * step, y - 300),
        request(
            "Bluesky: upload image",
            "POST",
            f"={{{{ {BASE} }}}}/xrpc/com.atproto.repo.uploadBlob",
            x + 13 * step,
            y - 400,
            **bearer(),
            sendBody=True,
            contentType="binaryData",
            inputDataFieldName="={{ $json.binaryKey }}",
        ),
        code("Bluesky: build post", (answer, "bluesky-build"), x + 14 * step, y - 300),
        h.if_true("Bluesky: ready?", "={{ !$json.outcome }}", x + 15 * step, y - 300),
        request(
            "Bluesky: create post",
            "POST",
            f"={{{{ {BASE} }}}}/xrpc/com.atproto.repo.createRecord",
            x + 16 * step,
            y - 400,
            **bearer(),
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.request) }}",
        ),
        code("Bluesky: outcome", (answer, "bluesky-outcome"), x + 17 * step, y),
    ]
    edges: list[Edge] = [
        ("Bluesky: prepare", 0, "Bluesky: valid?"),
        ("Bluesky: valid?", 0, "Bluesky: create session"),
        ("Bluesky: valid?", 1, "Bluesky: outcome"),
        ("Bluesky: create session", 0, "Bluesky: signed in?"),
        ("Bluesky: signed in?", 0, "Bluesky: mentions"),
        ("Bluesky: mentions", 0, "Bluesky: mentions?"),
        ("Bluesky: mentions?", 0, "Bluesky: resolve mention"),
        ("Bluesky: mentions?", 1, "Bluesky: recent posts"),
        ("Bluesky: resolve mention", 0, "Bluesky: mentions resolved"),
        ("Bluesky: mentions resolved", 0, "Bluesky: resolved?"),
        ("Bluesky: resolved?", 0, "Bluesky: recent posts"),
        ("Bluesky: resolved?", 1, "Bluesky: outcome"),
        ("Bluesky: signed in?", 1, "Bluesky: outcome"),
        ("Bluesky: recent posts", 0, "Bluesky: plan"),
        ("Bluesky: plan", 0, "Bluesky: new post?"),
        ("Bluesky: new post?", 0, "Bluesky: images?"),
        ("Bluesky: new post?", 1, "Bluesky: outcome"),
        ("Bluesky: images?", 0, "Bluesky: upload image"),
        ("Bluesky: images?", 1, "Bluesky: build post"),
        ("Bluesky: upload image", 0, "Bluesky: build post"),
        ("Bluesky: build post", 0, "Bluesky: ready?"),
        ("Bluesky: ready?", 0, "Bluesky: create post"),
        ("Bluesky: ready?", 1, "Bluesky: outcome"),
        ("Bluesky: create post", 0, "Bluesky: outcome"),
    ]
    return nodes, edges, "Bluesky: prepare", "Bluesky: outcome"
