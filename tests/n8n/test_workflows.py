"""The shipped n8n workflows are current with their sources and wired as documented.

No n8n needed: these read the JSON. tests/e2e/test_n8n.py runs them in a real n8n.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from types import ModuleType
from typing import Any

import pytest

from herald import statuses
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


@pytest.mark.parametrize("name", ["publish-echo.json", "publish.json"])
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
    [("publish-echo.json", "herald-echo"), ("publish.json", "herald-publish")],
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


def node_named(flow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in flow["nodes"] if n["name"] == name)


def test_every_network_request_uses_its_networks_credential() -> None:
    """Each branch's HTTP requests carry the n8n credential of that network (no secret in
    the JSON), and every request of a branch is named after its network."""
    flow = load("publish.json")
    wanted = {
        "LinkedIn": ("oAuth2Api", "LinkedIn (Herald)"),
        "X": ("oAuth2Api", "X (Herald)"),
        "Mastodon": ("httpHeaderAuth", "Mastodon (Herald)"),
    }
    requests = [n for n in flow["nodes"] if n["type"] == "n8n-nodes-base.httpRequest"]
    for node in requests:
        if node["name"] == "Call Herald back":
            assert "credentials" not in node
            continue
        network = node["name"].split(":")[0]
        if network not in wanted:
            continue  # another helper's branch: its own tests
        kind, name = wanted[network]
        assert node["parameters"]["authentication"] == "genericCredentialType", node["name"]
        assert node["parameters"]["genericAuthType"] == kind, node["name"]
        assert node["credentials"][kind]["name"] == name, node["name"]
    assert {n["name"].split(":")[0] for n in requests} >= {*wanted, "Call Herald back"}


def test_the_router_has_one_output_per_branch_module_in_the_prepare_order() -> None:
    build = build_module()
    flow = load("publish.json")
    channels = [channel for channel, _ in build.branches()]
    assert channels[:3] == ["linkedin", "x", "mastodon"]
    router = node_named(flow, "Route on channel")
    assert router["parameters"]["numberOutputs"] == len(channels)
    prepare = node_named(flow, "Prepare")["parameters"]["jsCode"]
    assert f"const BRANCHES = {json.dumps(channels)};" in prepare
    outputs = flow["connections"]["Route on channel"]["main"]
    entries = [out[0]["node"] for out in outputs]
    names = {"linkedin": "LinkedIn", "x": "X", "mastodon": "Mastodon"}
    for channel, entry in zip(channels, entries, strict=True):
        if channel in names:
            assert entry == f"{names[channel]}: prepare"


RETRYABLE_JS = """
const RETRYABLE_4XX = %s;
const isRetryable = %s;
const out = {};
for (let s = 100; s < 600; s++) out[s] = isRetryable(s);
out.none = isRetryable(undefined);
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js (n8n's runtime)")
def test_the_workflows_status_table_is_herald_s() -> None:
    """The Outcome node's classification, run in Node, equals herald.statuses for every
    status; 408 is retryable on both sides."""
    code = node_named(load("publish.json"), "Outcome")["parameters"]["jsCode"]
    table = code.split("const RETRYABLE_4XX = ", 1)[1].split(";", 1)[0]
    assert json.loads(table) == sorted(statuses.RETRYABLE_4XX)
    function = code.split("const isRetryable = ", 1)[1].split(";\n", 1)[0]
    run = subprocess.run(
        ["node", "-e", RETRYABLE_JS % (table, function)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(run.stdout)
    for status in range(100, 600):
        assert result[str(status)] == statuses.is_retryable(status), status
    assert result["none"] is statuses.is_retryable(None) is True
    assert result["408"] is True
