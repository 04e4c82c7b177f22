"""Dispatch signatures, checked by the official Standard Webhooks library as a receiver would.

A real `herald run` signs a real dispatch; the fake n8n keeps the headers and the raw body
exactly as received; a separate `python -c` with the `standardwebhooks` package verifies
them, knowing nothing of Herald's code.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Posts, in_seconds
from tests.support.fake_n8n import FakeN8n, Received
from tests.support.herald_proc import SIGNING_KEY, HeraldProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]

RECEIVER = """
import json, sys
from standardwebhooks import Webhook
key, headers = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps(Webhook(key).verify(sys.stdin.buffer.read(), headers)))
"""


def official_verify(key: str, received: Received, body: bytes | None = None) -> dict[str, object]:
    """Run the library's verify in its own interpreter; its output is the parsed body."""
    result = subprocess.run(
        [sys.executable, "-c", RECEIVER, key, json.dumps(received.headers)],
        input=received.raw if body is None else body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr.decode()[-2000:])
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_chart_style_key_generated_fresh() -> None:
    assert SIGNING_KEY.startswith("whsec_")
    assert len(base64.b64decode(SIGNING_KEY.removeprefix("whsec_"), validate=True)) == 32


def test_the_official_library_verifies_a_real_dispatch(
    posts: Posts, herald: Start, fake_n8n: FakeN8n
) -> None:
    proc = herald(fake_n8n.url)
    posts.create("signed", in_seconds(1))
    [received] = fake_n8n.wait_for("signed", 1)
    assert official_verify(SIGNING_KEY, received) == received.body
    assert received.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(AssertionError, match="No matching signature"):
        official_verify(SIGNING_KEY, received, received.raw.replace(b"Post signed", b"Post forged"))
    assert "deprecated" not in proc.log()


def test_a_deprecated_plain_key_still_verifies_as_its_whsec_form(
    posts: Posts, herald: Start, fake_n8n: FakeN8n
) -> None:
    plain = "legacy-plain-key-0123456789abcdef"
    proc = herald(fake_n8n.url, signing_key=plain)
    log = proc.log()
    assert "WARNING" in log and "deprecated" in log and "whsec_" in log, log[-2000:]
    assert plain not in log, "the key must never be logged"
    posts.create("legacy", in_seconds(1))
    [received] = fake_n8n.wait_for("legacy", 1)
    converted = "whsec_" + base64.b64encode(plain.encode()).decode()
    assert official_verify(converted, received) == received.body
    # What used to happen to every receiver: the plain key handed over as it is.
    with pytest.raises(AssertionError):
        official_verify(plain, received)
