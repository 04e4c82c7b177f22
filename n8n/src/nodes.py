"""Helpers that build n8n node JSON: shared by build.py and every branch module.

A branch module (`net_<channel>.py`) imports `node`, `code`, `if_true` and `request`
from here (build.py re-exports them too) and returns its nodes and edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent


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


def code(
    name: str, source: str, x: int, y: int, replace: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Code node running n8n/src/<source>.js; `replace` fills build-time placeholders."""
    text = js(source)
    for placeholder, value in (replace or {}).items():
        if placeholder not in text:
            raise KeyError(f"{source}.js has no {placeholder}")
        text = text.replace(placeholder, value)
    return node(name, "code", 2, x, y, jsCode=text)


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


def request(
    name: str,
    method: str,
    url: str,
    x: int,
    y: int,
    credential: tuple[str, dict[str, str]] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """An HTTP Request that never throws on a status: the full answer (status, headers,
    body) goes on to the next node, which decides. `credential` is (n8n credential type,
    {"id", "name"}) for the generic credential types (oAuth2Api, httpHeaderAuth)."""
    options = params.pop("options", {})
    auth: dict[str, Any] = {}
    extra: dict[str, Any] = {"onError": "continueRegularOutput"}
    if credential is not None:
        kind, ref = credential
        auth = {"authentication": "genericCredentialType", "genericAuthType": kind}
        extra["credentials"] = {kind: ref}
    return node(
        name,
        "httpRequest",
        4.2,
        x,
        y,
        method=method,
        url=url,
        **auth,
        options={
            "response": {"response": {"fullResponse": True, "neverError": True, **options}},
            "timeout": 30000,
        },
        **params,
        _extra=extra,
    )
