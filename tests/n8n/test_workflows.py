"""The shipped n8n workflows are current with their sources and wired as documented.

No n8n needed: these read the JSON. tests/e2e/test_n8n.py runs them in a real n8n.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest

from tests.support.controlplane import REPO

N8N = REPO / "n8n"


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("n8n_build", N8N / "src" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((N8N / name).read_text())
    return data


def test_workflow_files_are_current_with_their_sources() -> None:
    for name, text in build_module().render().items():
        assert (N8N / name).read_text() == text, f"run `python n8n/src/build.py` ({name})"


@pytest.mark.parametrize("name", ["publish-echo.json", "publish-linkedin.json"])
def test_every_connection_joins_existing_nodes(name: str) -> None:
    flow = load(name)
    names = {n["name"] for n in flow["nodes"]}
    assert len(names) == len(flow["nodes"]), "node names must be unique"
    for source, outputs in flow["connections"].items():
        assert source in names
        for output in outputs["main"]:
            for edge in output:
                assert edge["node"] in names, (source, edge)


@pytest.mark.parametrize(
    ("name", "path"),
    [("publish-echo.json", "herald-echo"), ("publish-linkedin.json", "herald-linkedin")],
)
def test_webhook_verifies_the_raw_body_and_answers_from_the_workflow(name: str, path: str) -> None:
    flow = load(name)
    (hook,) = [n for n in flow["nodes"] if n["type"] == "n8n-nodes-base.webhook"]
    assert hook["parameters"]["path"] == path
    assert hook["parameters"]["httpMethod"] == "POST"
    # The signature covers the exact bytes: the raw body must reach the Code node.
    assert hook["parameters"]["options"]["rawBody"] is True
    assert hook["parameters"]["responseMode"] == "responseNode"
    first = flow["connections"][hook["name"]]["main"][0][0]["node"]
    assert first == "Verify signature"


def test_linkedin_requests_use_the_oauth2_credential() -> None:
    flow = load("publish-linkedin.json")
    to_linkedin = [n for n in flow["nodes"] if "$json.base" in n["parameters"].get("url", "")]
    assert {n["name"] for n in to_linkedin} == {"Initialize upload", "Create post"}
    for node in [*to_linkedin, next(n for n in flow["nodes"] if n["name"] == "Upload image")]:
        assert node["parameters"]["authentication"] == "genericCredentialType"
        assert node["credentials"]["oAuth2Api"]["name"] == "LinkedIn (Herald)"
