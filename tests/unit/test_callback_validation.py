"""What the callback sidecar refuses before anything else (herald.callbacks, no server)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from herald import callbacks, statuses
from herald.callbacks import CallbackBody

VALID: dict[str, Any] = {
    "namespace": "marketing",
    "name": "launch.v2-final",
    "uid": "0b1f6a52-0000-4000-8000-000000000000",
    "attempt": 1,
    "status": "published",
}


def first_error(raw: bytes) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        CallbackBody.model_validate_json(raw)
    error: dict[str, Any] = dict(caught.value.errors()[0])
    return error


@pytest.mark.parametrize(
    "name",
    ["a", "0", "launch", "launch-2", "a.b.c", "x" * 253, "1-2.3-4", "a" * 63 + "." + "b" * 63],
)
def test_kubernetes_names_are_accepted(name: str) -> None:
    assert CallbackBody.model_validate({**VALID, "name": name}).name == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dotdot"),
        pytest.param("x/..", id="slash-dotdot"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\r\nb", id="crlf"),
        pytest.param("a\n", id="trailing-newline"),
        pytest.param("\na", id="leading-newline"),
        pytest.param("A", id="uppercase"),
        pytest.param("a_b", id="underscore"),
        pytest.param("-a", id="leading-dash"),
        pytest.param("a-", id="trailing-dash"),
        pytest.param("a..b", id="empty-label"),
        pytest.param(".a", id="leading-dot"),
        pytest.param("a.", id="trailing-dot"),
        pytest.param("a?b", id="query"),
        pytest.param("a#b", id="fragment"),
        pytest.param("%2e", id="percent"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a b", id="space"),
        pytest.param("a\x00", id="nul"),
        pytest.param("x" * 254, id="too-long"),
    ],
)
def test_names_kubernetes_would_refuse_are_invalid(name: str) -> None:
    error = first_error(json.dumps({**VALID, "name": name}).encode())
    assert error["loc"] == ("name",)


@pytest.mark.parametrize(
    "namespace",
    ["", ".", "..", "a.b", "a/b", "A", "a\n", "a\r\n", "-a", "a-", "a" * 64, "kube system"],
)
def test_namespaces_must_be_dns_labels(namespace: str) -> None:
    error = first_error(json.dumps({**VALID, "namespace": namespace}).encode())
    assert error["loc"] == ("namespace",)


def test_namespace_and_name_are_checked_before_the_other_fields() -> None:
    error = first_error(json.dumps({"namespace": "..", "name": "/", "attempt": "x"}).encode())
    assert error["loc"] == ("namespace",)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 30000 + b"]" * 30000, id="nested-arrays"),
        pytest.param(b'{"a":' * 10000 + b"1" + b"}" * 10000, id="nested-objects"),
        pytest.param(b"\xff", id="not-utf8"),
        pytest.param(b'{"name":"\\ud800"}', id="lone-surrogate"),
        pytest.param(b"{", id="truncated"),
    ],
)
def test_hostile_json_is_a_json_error_not_an_exception(raw: bytes) -> None:
    assert first_error(raw)["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer v1.abc", "v1.abc"),
        ("bearer  v1.abc ", "v1.abc"),
        ("Basic v1.abc", None),
        ("Bearer ", None),
        ("", None),
    ],
)
def test_bearer(header: str, token: str | None) -> None:
    assert callbacks._bearer(header) == token


def test_shipped_openapi_document_is_current() -> None:
    shipped = json.loads(resources.files("herald").joinpath("openapi.json").read_text())
    assert shipped == callbacks.openapi(), (
        "regenerate: python -c 'import json; from herald.callbacks import openapi; "
        "print(json.dumps(openapi(), indent=2, sort_keys=True))' > operator/herald/openapi.json"
    )


def test_openapi_document_carries_the_name_rules() -> None:
    props = callbacks.openapi()["components"]["schemas"]["CallbackBody"]["properties"]
    assert props["namespace"]["pattern"] == callbacks.DNS1123_LABEL
    assert props["name"]["pattern"] == callbacks.DNS1123_SUBDOMAIN


# --- error.retryAfterSeconds and the README's contract (issue 15) -------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (3600, True), (0.5, True), (604800, True), (-1, False), (604801, False)],
)
def test_retry_after_seconds_bounds(value: float, ok: bool) -> None:
    error = {"code": "HTTP429", "retryable": True, "retryAfterSeconds": value}
    raw = json.dumps({**VALID, "status": "failed", "error": error}).encode()
    if not ok:
        assert first_error(raw)["loc"] == ("error", "retryAfterSeconds")
        return
    failure = CallbackBody.model_validate_json(raw).to_engine().failure
    assert failure is not None and failure.retryable
    # The network's reset, honoured in full: not n8n's own (capped) Retry-After.
    assert (failure.not_before_seconds, failure.retry_after_seconds) == (value, None)


def test_readme_retryable_table_is_statuses_table() -> None:
    """The README's status → retryable table says what herald.statuses decides."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("| Network's answer | Retryable |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines()[2:]]
    table = {cells[0].strip(): cells[1].strip() for cells in rows}
    listed_4xx = next(k for k in table if k[:1] == "4" and table[k] == "yes")
    assert {int(code) for code in listed_4xx.split(", ")} == set(statuses.RETRYABLE_4XX)
    assert table["5xx"] == "yes" and all(statuses.is_retryable(s) for s in range(500, 600))
    assert table["no answer (connection refused, timeout)"] == "yes"
    assert statuses.is_retryable(None)
    other = next(k for k in table if k.startswith("any other status"))
    assert table[other] == "no"
    for code in (int(c) for c in other.split("(", 1)[1].split(",") if c.strip().isdigit()):
        assert not statuses.is_retryable(code), code
