"""The fault-injection harness itself, without a control plane: the fake n8n's faults
do what they say, and the audit catches what it is meant to catch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from herald import engine
from tests.support.fake_n8n import FakeN8n, Received
from tests.support.faults import after_2xx, audit, overlapping

pytestmark = pytest.mark.faults


def dispatch(url: str, uid: str, attempt: int, timeout: float = 5.0, **body: Any) -> int:
    headers = {"Idempotency-Key": uid, "webhook-id": f"msg_{uid}_{attempt}"}
    payload = {"id": uid, "name": f"post-{uid}", "attempt": attempt, **body}
    return httpx.post(url, json=payload, headers=headers, timeout=timeout).status_code


def _until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s"
        time.sleep(0.05)


def _state(url: str) -> str:
    """ "refused", "up", or "dropped" (accepted while the listener was being closed)."""
    try:
        dispatch(url, "probe", 0, timeout=1)
    except httpx.ConnectError:
        return "refused"
    except httpx.TransportError:
        return "dropped"
    return "up"


def test_outage_windows_answer_503_then_refuse_then_recover() -> None:
    with FakeN8n() as fake:
        now = time.time()
        fake.outage(now, now + 0.5, "503")
        assert dispatch(fake.url, "u1", 1) == 503
        time.sleep(0.6)
        window = fake.outage(time.time(), time.time() + 1.5, "refuse")
        _until("connection refused", lambda: _state(fake.url) == "refused")
        time.sleep(max(0.0, window.end - time.time()))
        _until("listening again", lambda: _state(fake.url) == "up")
        assert dispatch(fake.url, "u1", 3) == 200
        got = [(r.message, r.answered) for r in fake.snapshot() if r.message[0] != "probe"]
        assert got == [(("u1", 1), 503), (("u1", 3), 200)]
        assert {r.idempotency_key for r in fake.snapshot()} >= {"u1"}


def test_a_delayed_answer_the_client_gave_up_on_is_not_accepted() -> None:
    with FakeN8n() as fake:
        fake.delays["slow"] = 1.0
        with pytest.raises(httpx.ReadTimeout):
            dispatch(fake.url_for("slow"), "u2", 1, timeout=0.3)
        assert dispatch(fake.url_for("fast"), "u3", 1) == 200
        time.sleep(1.0)
        slow, fast = sorted(fake.snapshot(), key=lambda r: r.target != "slow")
        assert (slow.target, slow.abandoned, slow.accepted) == ("slow", True, False)
        assert (fast.target, fast.accepted) == ("fast", True)


@pytest.fixture
def sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A callback receiver that answers 503 to the first request, then 200."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status = 503 if len(got) == 1 else 200
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/callbacks", got
    server.shutdown()
    server.server_close()


def test_callbacks_are_copied_spread_and_retried(sink: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = sink
    with FakeN8n(auto_callback=True, callback_copies=3, callback_spread=0.5, seed=1) as fake:
        for attempt in (1, 2):
            dispatch(fake.url, "u4", attempt, namespace="ns", callback={"url": url, "token": "t"})
        deadline = time.monotonic() + 5
        while not fake.callbacks_settled() and time.monotonic() < deadline:
            time.sleep(0.05)
        statuses = sorted(d.status for d in fake.deliveries)
    assert statuses == [200] * 6 + [503], "6 copies, the one answered 503 retried"
    assert sorted(c["attempt"] for c in got) == sorted([1, 1, 1, 2, 2, 2, got[0]["attempt"]])


# The posts of the audit tests, by uid: their names make their fingerprints differ.
NAMES = {"a": "fine", "b": "stale", "c": "twice", "d": "stuck", "e": "mute", "f": "retried"}
NAMES |= {"g": "taken", "h": "manual", "k": "overlap"}


def _key(uid: str) -> str:
    """The Idempotency-Key Herald sends for the audit tests' post `uid`: its fingerprint."""
    return engine.fingerprint(engine.from_object(_post(NAMES[uid], uid, "Scheduled", [])))


def _request(uid: str, attempt: int, at: float, status: int | None) -> Received:
    headers = {"Idempotency-Key": _key(uid), "webhook-id": f"msg_{uid}_{attempt}"}
    return Received(at, "/webhook/herald", headers, b"", {"id": uid}, answered=status)


def _post(name: str, uid: str, phase: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": uid, "namespace": "ns"},
        "spec": {"publishAt": "2026-01-01T00:00:00Z", "content": {"text": f"Post {name}"}},
        "status": {"phase": phase, "history": history},
    }


def test_the_audit_tells_a_stale_resend_from_a_duplicate() -> None:
    objs = [
        _post("fine", "a", "Published", []),
        _post("stale", "b", "Published", [{"attempt": 1, "outcome": "Stale"}]),
        _post("twice", "c", "Published", []),
        _post("stuck", "d", "Publishing", []),
        _post("retried", "f", "Published", [{"attempt": 1, "outcome": "Transient"}]),
        _post("mute", "e", "Failed", []),
    ]
    requests = [
        _request("a", 1, 1.0, 503),
        _request("a", 2, 2.0, 200),
        _request("b", 1, 1.0, 200),
        _request("b", 2, 9.0, 200),
        _request("c", 1, 1.0, 200),
        _request("c", 1, 2.0, 200),
        _request("d", 1, 1.0, None),
        _request("f", 1, 1.0, 200),
        _request("f", 2, 3.0, 200),
    ]
    result = audit(objs, requests, expected=6)
    f = result.figures
    assert (f["duplicated_attempts"], f["resent_after_2xx"], f["stale_resends"]) == (1, 1, 1)
    assert f["retries_after_failed_callback"] == 1
    assert f["unfinished"] == 1
    text = " | ".join(result.violations)
    assert "twice#1x2" in text and "twice attempt 1 sent" in text
    assert "stuck" in text and "mute" in text
    assert all(f"'{ok}'" not in text for ok in ("fine", "stale", "retried"))


def test_a_take_over_after_a_2xx_is_a_resend_whatever_its_webhook_id() -> None:
    """A take-over sends a new attempt (a new webhook-id) under the same Idempotency-Key:
    that is the publication sent again. A manual retry's new key is not."""
    taken_over = [_request("g", 1, 1.0, 200), _request("g", 2, 20.0, 200)]
    retried = [_request("h", 1, 1.0, 200)]
    manual = _request("h", 2, 30.0, 200)
    manual.headers["Idempotency-Key"] = f"{_key('h')}.1"
    pairs = after_2xx([*taken_over, *retried, manual])
    assert [(ok.message, r.message) for ok, r in pairs] == [(("g", 1), ("g", 2))]
    result = audit(
        [
            _post("taken", "g", "Published", [{"attempt": 1, "outcome": "Orphaned"}]),
            _post("manual", "h", "Published", []),
        ],
        [*taken_over, *retried, manual],
        expected=2,
    )
    assert result.figures["resent_after_2xx"] == 1
    assert "taken attempt 2 sent 19.00s after n8n accepted attempt 1" in " ".join(result.violations)


def test_overlapping_requests_of_one_publication() -> None:
    first = _request("k", 1, 1.0, 200)
    first.answered_at = 4.0
    second = _request("k", 2, 3.0, 200)  # sent while the first was still at n8n
    second.answered_at = 6.0
    third = _request("k", 3, 7.0, 200)
    assert [(a.message, b.message) for a, b in overlapping([first, second, third], 5.0)] == [
        (("k", 1), ("k", 2))
    ]
