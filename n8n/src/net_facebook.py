"""The Facebook Page branch of the publish workflow, and what the three Meta branches share.

Facebook Page: GET /me (the Page the token belongs to) → POST /{page-id}/photos per image
(multipart, the downloaded bytes) → POST /{page-id}/feed (message and link, or several
photos attached). Instagram and Threads (net_instagram.py, net_threads.py) use
`container_branch`: GET /me → recent posts → container per image → carousel → publish.
Every request carries n8n's "Facebook Graph API" credential (the token as access_token).
The JavaScript is in facebook-*.js; build.py places a branch with `branch(x, y)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent
CREDENTIAL = {"id": "HeraldFacebookPg", "name": "Facebook Page (Herald)"}
STEP = 220

Edge = tuple[str, int, str]


def helpers() -> Any:
    """build.py's node helpers (or nodes.py's, once they move), imported late: build.py
    imports this module, so importing it at the top would be circular."""
    try:
        import nodes  # type: ignore[import-not-found]
    except ImportError:
        import build as nodes  # type: ignore[import-not-found,no-redef]
    return nodes


@dataclass(frozen=True)
class Net:
    name: str  # node-name prefix and error-code prefix: "Instagram"
    credential: dict[str, str]
    text_field: str = "text"  # what the listing calls the post's text

    def code(self, node: str, files: tuple[str, ...], x: int, y: int) -> dict[str, Any]:
        """A Code node whose JavaScript starts with this network's NET constant."""
        config = {
            "name": self.name,
            "credential": self.credential["name"],
            "textField": self.text_field,
        }
        text = "\n".join(
            [f"const NET = {json.dumps(config)};"]
            + [(SRC / f"{name}.js").read_text() for name in files]
        )
        result: dict[str, Any] = helpers().node(
            f"{self.name}: {node}", "code", 2, x, y, jsCode=text
        )
        return result

    def request(
        self, node: str, method: str, path: str, x: int, y: int, **params: Any
    ) -> dict[str, Any]:
        """An HTTP Request to `<base><path>` with the credential; never throws on a status."""
        base = f"$('{self.name}: prepare').first().json.graph.base"
        result: dict[str, Any] = helpers().node(
            f"{self.name}: {node}",
            "httpRequest",
            4.2,
            x,
            y,
            method=method,
            url=f"={{{{ {base} }}}}{path}",
            authentication="predefinedCredentialType",
            nodeCredentialType="facebookGraphApi",
            options={
                "response": {"response": {"fullResponse": True, "neverError": True}},
                "timeout": 30000,
            },
            **params,
            _extra={
                "credentials": {"facebookGraphApi": self.credential},
                "onError": "continueRegularOutput",
            },
        )
        return result

    def if_true(self, node: str, expression: str, x: int, y: int) -> dict[str, Any]:
        result: dict[str, Any] = helpers().if_true(f"{self.name}: {node}", expression, x, y)
        return result

    def account(self) -> str:
        """The account id, in an expression: GET /me's id (user_id on Instagram)."""
        me = f"$('{self.name}: find account').first().json.body"
        return f"{{{{ {me}.user_id || {me}.id }}}}"


JSON_BODY = {"sendBody": True, "specifyBody": "json"}


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[Edge], str, str]:
    """The Facebook Page branch: (nodes, edges, entry node, exit node)."""
    net = Net("Facebook", CREDENTIAL)
    page = net.account()
    graph = "facebook-graph"
    nodes = [
        net.code("prepare", ("facebook-prepare",), x, y),
        net.if_true("valid?", "={{ !$json.outcome }}", x + STEP, y),
        net.request("find account", "GET", "/me?fields=id,name", x + 2 * STEP, y - 100),
        net.if_true("account found?", "={{ $json.statusCode === 200 }}", x + 3 * STEP, y - 100),
        net.code("plan", (graph, "facebook-plan"), x + 4 * STEP, y - 200),
        net.if_true("images?", "={{ $json.upload }}", x + 5 * STEP, y - 200),
        net.request(
            "upload photo",
            "POST",
            f"/{page}/photos",
            x + 6 * STEP,
            y - 300,
            sendBody=True,
            contentType="multipart-form-data",
            bodyParameters={
                "parameters": [
                    {
                        "parameterType": "formBinaryData",
                        "name": "source",
                        "inputDataFieldName": "={{ $json.binaryKey }}",
                    },
                    {
                        "parameterType": "formData",
                        "name": "published",
                        "value": "={{ $json.published }}",
                    },
                    {
                        "parameterType": "formData",
                        "name": "message",
                        "value": "={{ $json.message }}",
                    },
                    {
                        "parameterType": "formData",
                        "name": "alt_text_custom",
                        "value": "={{ $json.altText }}",
                    },
                ]
            },
        ),
        net.code("build post", (graph, "facebook-build"), x + 7 * STEP, y - 200),
        net.if_true("ready?", "={{ !$json.outcome }}", x + 8 * STEP, y - 200),
        net.request(
            "create post",
            "POST",
            f"/{page}/feed",
            x + 9 * STEP,
            y - 300,
            **JSON_BODY,
            jsonBody="={{ JSON.stringify($json.request) }}",
        ),
        net.code("outcome", (graph, "facebook-outcome"), x + 10 * STEP, y),
    ]
    n = "Facebook: "
    edges: list[Edge] = [
        (n + "prepare", 0, n + "valid?"),
        (n + "valid?", 0, n + "find account"),
        (n + "valid?", 1, n + "outcome"),
        (n + "find account", 0, n + "account found?"),
        (n + "account found?", 0, n + "plan"),
        (n + "account found?", 1, n + "outcome"),
        (n + "plan", 0, n + "images?"),
        (n + "images?", 0, n + "upload photo"),
        (n + "images?", 1, n + "build post"),
        (n + "upload photo", 0, n + "build post"),
        (n + "build post", 0, n + "ready?"),
        (n + "ready?", 0, n + "create post"),
        (n + "ready?", 1, n + "outcome"),
        (n + "create post", 0, n + "outcome"),
    ]
    return nodes, edges, n + "prepare", n + "outcome"


def container_branch(
    net: Net, prepare: str, me_fields: str, listing: str, container: str, publish: str,
    x: int, y: int,
) -> tuple[list[dict[str, Any]], list[Edge], str, str]:  # fmt: skip
    """Instagram's and Threads' shape: find account → recent posts → a container per
    image (or text) → a carousel container when there are several → publish."""
    uid = net.account()
    graph = "facebook-graph"
    nodes = [
        net.code("prepare", (prepare,), x, y),
        net.if_true("valid?", "={{ !$json.outcome }}", x + STEP, y),
        net.request("find account", "GET", f"/me?fields={me_fields}", x + 2 * STEP, y - 100),
        net.if_true("account found?", "={{ $json.statusCode === 200 }}", x + 3 * STEP, y - 100),
        net.request(
            "recent posts",
            "GET",
            f"/{uid}/{listing}?fields=id,{net.text_field},timestamp,permalink&limit=10",
            x + 4 * STEP,
            y - 200,
        ),
        net.code("plan", (graph, "facebook-graph-plan"), x + 5 * STEP, y - 200),
        net.if_true("new post?", "={{ !$json.outcome }}", x + 6 * STEP, y - 200),
        net.request(
            "create container",
            "POST",
            f"/{uid}/{container}",
            x + 7 * STEP,
            y - 300,
            **JSON_BODY,
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        net.code("containers", (graph, "facebook-graph-containers"), x + 8 * STEP, y - 300),
        net.if_true("containers made?", "={{ !$json.outcome }}", x + 9 * STEP, y - 300),
        net.if_true("carousel?", "={{ !!$json.carousel }}", x + 10 * STEP, y - 400),
        net.request(
            "create carousel",
            "POST",
            f"/{uid}/{container}",
            x + 11 * STEP,
            y - 500,
            **JSON_BODY,
            jsonBody="={{ JSON.stringify($json.carousel) }}",
        ),
        net.code("carousel made", (graph, "facebook-graph-carousel"), x + 12 * STEP, y - 500),
        net.if_true("carousel ready?", "={{ !$json.outcome }}", x + 13 * STEP, y - 500),
        net.request(
            "publish",
            "POST",
            f"/{uid}/{publish}",
            x + 14 * STEP,
            y - 400,
            **JSON_BODY,
            jsonBody="={{ JSON.stringify($json.publish) }}",
        ),
        net.code("outcome", (graph, "facebook-graph-outcome"), x + 15 * STEP, y),
    ]
    n = f"{net.name}: "
    edges: list[Edge] = [
        (n + "prepare", 0, n + "valid?"),
        (n + "valid?", 0, n + "find account"),
        (n + "valid?", 1, n + "outcome"),
        (n + "find account", 0, n + "account found?"),
        (n + "account found?", 0, n + "recent posts"),
        (n + "account found?", 1, n + "outcome"),
        (n + "recent posts", 0, n + "plan"),
        (n + "plan", 0, n + "new post?"),
        (n + "new post?", 0, n + "create container"),
        (n + "new post?", 1, n + "outcome"),
        (n + "create container", 0, n + "containers"),
        (n + "containers", 0, n + "containers made?"),
        (n + "containers made?", 0, n + "carousel?"),
        (n + "containers made?", 1, n + "outcome"),
        (n + "carousel?", 0, n + "create carousel"),
        (n + "carousel?", 1, n + "publish"),
        (n + "create carousel", 0, n + "carousel made"),
        (n + "carousel made", 0, n + "carousel ready?"),
        (n + "carousel ready?", 0, n + "publish"),
        (n + "carousel ready?", 1, n + "outcome"),
        (n + "publish", 0, n + "outcome"),
    ]
    return nodes, edges, n + "prepare", n + "outcome"
