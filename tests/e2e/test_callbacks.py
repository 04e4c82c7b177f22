"""The callback sidecar end to end: real API server, real `herald callback-server`."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald import signing
from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n
from tests.support.herald_proc import CALLBACK_KEY, HeraldProcess
from tests.support.window_helpers import extra_crd_field, refused_status_writes

pytestmark = pytest.mark.e2e
Sidecar = Callable[..., tuple[HeraldProcess, str]]
Start = Callable[..., HeraldProcess]


def token(posts: Posts, name: str, uid: str, attempt: int) -> str:
    return signing.callback_token(CALLBACK_KEY.encode(), posts.namespace, name, uid, attempt)


def set_status(posts: Posts, name: str, **status: Any) -> dict[str, Any]:
    r = posts.client.patch(
        posts.url(name) + "/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def publishing(posts: Posts, name: str, attempt: int = 1, **spec: Any) -> dict[str, Any]:
    """A post that the operator has dispatched, waiting for n8n's callback."""
    posts.create(name, in_seconds(3600), **spec)
    return set_status(
        posts,
        name,
        phase="Publishing",
        attempt=attempt,
        claimedAt=in_seconds(0),
        claimedBy="op/1",
        dispatchedAt=in_seconds(0),
    )


def callback(
    base: str,
    posts: Posts,
    obj: dict[str, Any],
    status: str = "published",
    attempt: int | None = None,
    tok: str | None = None,
    **extra: Any,
) -> httpx.Response:
    meta = obj["metadata"]
    attempt = attempt if attempt is not None else obj["status"]["attempt"]
    body = {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "attempt": attempt,
        "status": status,
        **extra,
    }
    tok = tok or token(posts, meta["name"], meta["uid"], attempt)
    return httpx.post(
        f"{base}/v1/callbacks", json=body, headers={"Authorization": f"Bearer {tok}"}, timeout=10
    )


def test_happy_path_dispatch_callback_published(
    posts: Posts, herald: Start, sidecar: Sidecar, control_plane: ControlPlane, namespace: str
) -> None:
    _, base = sidecar()
    with FakeN8n(auto_callback=True) as n8n:
        herald(n8n.url, callback_url=base)
        posts.create("happy", in_seconds(1))
        status = posts.wait_phase("happy", "Published", timeout=15)
        # The fake records the sidecar's answer after the status is already written.
        deadline = time.monotonic() + 5
        while not n8n.callback_results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert n8n.callback_results and n8n.callback_results[0][0] == 200
    assert status["externalUrl"].startswith("https://www.linkedin.com/feed/update/")
    assert status["publishedAt"]
    wide = control_plane.kubectl("get", "sp", "happy", "-n", namespace, "-o", "wide").stdout
    assert status["externalUrl"] in wide
    described = control_plane.kubectl("describe", "sp", "happy", "-n", namespace).stdout
    assert "Published" in described and status["externalUrl"] in described


def test_hundred_identical_callbacks_make_one_transition(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar(routine_events="true")  # the Published Event counts transitions
    obj = publishing(posts, "storm")
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(
            pool.map(lambda _: callback(base, posts, obj, externalId="urn:1"), range(100))
        )
    assert {r.status_code for r in responses} == {200}
    results = Counter(r.json()["result"] for r in responses)
    assert results == {"applied": 1, "duplicate": 99}
    status = posts.status("storm")
    assert status["phase"] == "Published" and status["externalId"] == "urn:1"
    published_events = [e for e in posts.events("storm") if e["reason"] == "Published"]
    assert len(published_events) == 1
    assert [h["outcome"] for h in status["history"]] == ["Published"]


def test_stale_attempt_is_409_and_changes_nothing(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar()
    obj = publishing(posts, "third", attempt=3)
    r = callback(base, posts, obj, attempt=2)
    assert r.status_code == 409
    assert r.json()["code"] == "conflict" and "attempt 2" in r.json()["message"]
    assert posts.get("third")["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_token_for_another_post_is_401(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar()
    obj = publishing(posts, "mine")
    other = publishing(posts, "theirs")
    r = callback(base, posts, obj, tok=token(posts, "theirs", other["metadata"]["uid"], 1))
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    no_token = httpx.post(f"{base}/v1/callbacks", json={}, timeout=5)
    assert no_token.status_code == 401
    assert posts.status("mine")["phase"] == "Publishing"


def test_callback_for_deleted_and_recreated_post(
    posts: Posts, sidecar: Sidecar, control_plane: ControlPlane, namespace: str
) -> None:
    _, base = sidecar()
    old = publishing(posts, "phoenix")
    control_plane.kubectl("delete", "sp", "phoenix", "-n", namespace)
    new = publishing(posts, "phoenix")
    r = callback(base, posts, old)
    assert r.status_code == 404 and "re-created" in r.json()["message"]
    assert posts.get("phoenix")["metadata"]["resourceVersion"] == new["metadata"]["resourceVersion"]


def test_failed_retryable_and_not(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar(backoff_seconds=30, max_backoff_seconds=600, jitter_ratio=0)
    obj = publishing(posts, "again", retry={"backoffSeconds": 100, "maxBackoffSeconds": 1000})
    before = time.time()
    r = callback(
        base,
        posts,
        obj,
        "failed",
        error={"message": "LinkedIn 503", "code": "LinkedIn503", "retryable": True},
    )
    assert r.json() == {"result": "applied"}
    status = posts.status("again")
    assert status["phase"] == "Retrying"
    delay = posts_time(status["nextAttemptAt"]) - before
    assert 99 <= delay <= 102, delay  # the post's own policy: 100 s for attempt 1, no jitter
    assert status["lastError"]["code"] == "LinkedIn503"

    obj = publishing(posts, "never")
    r = callback(
        base,
        posts,
        obj,
        "failed",
        error={"message": "token revoked", "code": "AuthRevoked", "retryable": False},
    )
    assert r.json() == {"result": "applied"}
    status = posts.status("never")
    assert status["phase"] == "Failed"
    assert status["lastError"] == {
        **status["lastError"],
        "class": "Permanent",
        "code": "AuthRevoked",
        "message": "token revoked",
    }
    again = callback(
        base, posts, obj, "failed", error={"message": "token revoked", "code": "AuthRevoked"}
    )
    assert again.json() == {"result": "duplicate"}
    late = callback(base, posts, posts.get("never"), "published")
    assert late.status_code == 200  # n8n did publish it after all: believe n8n


def posts_time(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()


def test_failed_after_published_is_409(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar()
    obj = publishing(posts, "done")
    assert callback(base, posts, obj).json() == {"result": "applied"}
    r = callback(base, posts, obj, "failed", error={"message": "x", "code": "y"})
    assert r.status_code == 409
    assert posts.status("done")["phase"] == "Published"


def test_bad_requests_get_json_errors(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar(callback_max_body_bytes=2048)
    obj = publishing(posts, "strict")
    auth = {"Authorization": "Bearer v1.whatever"}
    wrong_type = httpx.post(
        f"{base}/v1/callbacks",
        content=b"hi",
        timeout=5,
        headers={**auth, "Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415 and wrong_type.json()["code"] == "unsupported_media_type"
    huge = httpx.post(
        f"{base}/v1/callbacks", timeout=5, headers=auth, json={"namespace": "x" * 5000}
    )
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    not_json = httpx.post(
        f"{base}/v1/callbacks",
        content=b"{",
        timeout=5,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_json"
    bad_field = callback(base, posts, obj, status="maybe")
    assert bad_field.status_code == 400
    assert bad_field.json()["field"] == "status" and "status" in bad_field.json()["message"]
    unknown = httpx.get(f"{base}/nope", timeout=5)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert posts.get("strict")["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_health_ready_metrics_openapi(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar()
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    obj = publishing(posts, "counted")
    callback(base, posts, obj)
    metrics = httpx.get(f"{base}/metrics").text
    assert 'herald_callbacks_total{result="applied"} 1.0' in metrics
    assert "herald_callback_duration_seconds_bucket" in metrics
    doc = httpx.get(f"{base}/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/v1/callbacks" in doc["paths"]


def test_metrics_answer_openmetrics_when_asked_and_plain_text_otherwise(
    posts: Posts, sidecar: Sidecar
) -> None:
    _, base = sidecar()
    obj = publishing(posts, "scraped")
    assert callback(base, posts, obj).json() == {"result": "applied"}

    plain = httpx.get(f"{base}/metrics", timeout=10)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'herald_callbacks_total{result="applied"} 1.0' in plain.text
    assert "# EOF" not in plain.text

    om = httpx.get(
        f"{base}/metrics",
        timeout=10,
        headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    assert om.status_code == 200
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n")
    # OpenMetrics names the counter family without _total and keeps the sample's name.
    assert "# TYPE herald_callbacks counter" in om.text
    assert 'herald_callbacks_total{result="applied"} 1.0' in om.text
    assert "herald_callback_duration_seconds_count 1.0" in om.text

    # What Prometheus itself sends: OpenMetrics preferred, text as the fallback.
    prom = httpx.get(
        f"{base}/metrics",
        timeout=10,
        headers={
            "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
            "Accept-Encoding": "gzip",
        },
    )
    assert prom.headers["content-type"].startswith("application/openmetrics-text")
    assert prom.headers.get("content-encoding") == "gzip"
    assert prom.text.endswith("# EOF\n")  # httpx has decompressed it

    only_some = httpx.get(
        f"{base}/metrics", params={"name[]": "herald_callbacks_total"}, timeout=10
    )
    assert "herald_callbacks_total" in only_some.text
    assert "herald_callback_duration_seconds" not in only_some.text


def test_readyz_fails_when_the_api_server_is_unreachable(
    sidecar: Sidecar, tmp_path: Any, control_plane: ControlPlane
) -> None:
    broken = control_plane.write_kubeconfig(tmp_path / "broken", "x", ["system:masters"])
    text = broken.read_text().replace(control_plane.server, "https://127.0.0.1:1")
    broken.write_text(text)
    from tests.support.herald_proc import start_callback_server

    proc, base = start_callback_server(broken, tmp_path / "broken-sidecar.log")
    try:
        r = httpx.get(f"{base}/readyz", timeout=10)
        assert r.status_code == 503 and r.json()["code"] == "unavailable"
        body = {"namespace": "a", "name": "b", "uid": "c", "attempt": 1, "status": "published"}
        tok = signing.callback_token(CALLBACK_KEY.encode(), "a", "b", "c", 1)
        r = httpx.post(
            f"{base}/v1/callbacks",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {tok}"},
        )
        assert r.status_code == 503 and r.headers["Retry-After"]
    finally:
        proc.stop()


def test_sigterm_exits_cleanly(sidecar: Sidecar) -> None:
    proc, _ = sidecar()
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=15) == 0


# `alone`: both orders of the race must happen, which needs the operator to act within
# 0.3 s of the stale deadline; beside a busy neighbour it fell late (12 of 12 one way).
@pytest.mark.alone
def test_stale_recovery_racing_a_late_callback(
    posts: Posts, herald: Start, sidecar: Sidecar, fake_n8n: FakeN8n
) -> None:
    """The design notes' race: the operator declares an attempt stale at the very moment
    n8n's callback arrives. Whichever write wins, the other must see it: no lost update,
    and the post ends Published exactly once."""
    _, base = sidecar(backoff_seconds=30, max_backoff_seconds=600)
    herald(
        fake_n8n.url,
        stale_after_seconds=2,
        backoff_seconds=30,
        max_backoff_seconds=600,
        callback_url=base,
    )
    names = [f"race-{i}" for i in range(12)]
    objs = {}
    for name in names:
        posts.create(name, in_seconds(3600))
    for name in names:
        posts.wait_phase(name, "Pending")  # the CRD's default; the operator writes nothing
        objs[name] = set_status(
            posts,
            name,
            phase="Publishing",
            attempt=1,
            claimedAt=in_seconds(-1.5),
            claimedBy="op/1",
            dispatchedAt=in_seconds(-1.0),
        )
    # The operator's stale deadline is dispatchedAt + 2 s; fire the callbacks then.
    fire_at = posts_time(objs[names[0]]["status"]["dispatchedAt"]) + 2.0
    results: dict[str, httpx.Response] = {}

    # Spread the callbacks from 0.3 s before to 0.3 s after the stale deadline, so both
    # orders of the race happen.
    offsets = {name: -0.3 + 0.6 * i / (len(names) - 1) for i, name in enumerate(names)}

    def fire(name: str) -> None:
        time.sleep(max(0.0, fire_at + offsets[name] - time.time()))
        results[name] = callback(base, posts, objs[name], externalUrl=f"https://x.test/{name}")

    threads = [threading.Thread(target=fire, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    outcomes: Counter[str] = Counter()
    for name in names:
        assert results[name].status_code == 200, results[name].text
        status = posts.wait_phase(name, "Published", timeout=10)
        assert status["externalUrl"] == f"https://x.test/{name}"
        history = [h["outcome"] for h in status["history"]]
        outcomes["stale-first" if "Stale" in history else "callback-first"] += 1
        assert history in (["Published"], ["Stale", "Published"]), history
        # Published is credited to attempt 1, the one n8n published. The retry may have
        # been claimed ahead meanwhile (attempt 2), but never sent: the callback won.
        assert status["history"][-1]["attempt"] == 1
        assert status["attempt"] in (1, 2)
    time.sleep(1)
    assert fake_n8n.requests == [], "nothing was re-dispatched"
    print("race outcomes:", dict(outcomes))
    assert outcomes["stale-first"] and outcomes["callback-first"], outcomes


def test_fuzzed_requests_never_5xx_and_never_change_status(posts: Posts, sidecar: Sidecar) -> None:
    _, base = sidecar()
    obj = publishing(posts, "fuzzed", attempt=3)
    # Published, so any authorised callback is either a duplicate or an impossible
    # transition: nothing a fuzzer sends may change it.
    obj = set_status(posts, "fuzzed", phase="Published", publishedAt=in_seconds(0))
    rv = obj["metadata"]["resourceVersion"]
    meta = obj["metadata"]
    good_token = token(posts, "fuzzed", meta["uid"], 3)
    sent: Counter[int] = Counter()

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operation = schema["/v1/callbacks"]["POST"]

    @settings(
        max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def generated(case: Any) -> None:
        response = case.call(base_url=base, timeout=10)
        sent[response.status_code] += 1
        assert response.status_code < 500, response.text
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), (response.status_code, content_type)

    authorised = st.fixed_dictionaries(
        {
            "namespace": st.just(posts.namespace),
            "name": st.just("fuzzed"),
            "uid": st.just(meta["uid"]),
            "attempt": st.just(3),
            "status": st.one_of(st.sampled_from(["published", "failed"]), st.text(max_size=10)),
        },
        optional={
            "externalId": st.one_of(st.none(), st.text(max_size=600), st.integers()),
            "externalUrl": st.one_of(st.none(), st.text(max_size=50), st.just("https://ok.test")),
            "error": st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["message", "code", "retryable", "other"]),
                    st.one_of(st.text(max_size=20), st.booleans(), st.integers()),
                ),
            ),
            "extra": st.text(max_size=5),
        },
    )

    @settings(
        max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=authorised)
    def with_valid_token(body: dict[str, Any]) -> None:
        response = httpx.post(
            f"{base}/v1/callbacks",
            content=json.dumps(body),
            timeout=10,
            headers={"Authorization": f"Bearer {good_token}", "Content-Type": "application/json"},
        )
        sent[response.status_code] += 1
        assert response.status_code < 500, response.text
        assert response.status_code in (200, 400, 409), response.text

    generated()
    with_valid_token()
    total = sum(sent.values())
    assert total >= 1000, sent
    assert posts.get("fuzzed")["metadata"]["resourceVersion"] == rv, "a request changed the post"
    print(f"fuzz: {total} requests, by status {dict(sent)}")


# --- hostile input: every malformed request is a 4xx JSON error, never a 500 ----------


def no_unexpected_errors(proc: HeraldProcess) -> None:
    assert "unexpected error" not in proc.log(), proc.log()[-3000:]


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_non_ascii_bearer_token_is_401_not_500(posts: Posts, sidecar: Sidecar) -> None:
    """Header bytes that are not ASCII (not even UTF-8) reach the token check as
    surrogate-escaped text; comparing them must reject the token, not crash."""
    proc, base = sidecar()
    obj = publishing(posts, "latin")
    meta = obj["metadata"]
    body = json.dumps(
        {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "attempt": 1,
            "status": "published",
        }
    ).encode()
    for raw_token in (b"v1.\xff\xfe\xfd", "v1.é".encode(), b"\xc3\x28", "ключ".encode()):
        r = httpx.post(
            f"{base}/v1/callbacks",
            content=body,
            timeout=10,
            headers=[
                (b"Content-Type", b"application/json"),
                (b"Authorization", b"Bearer " + raw_token),
            ],
        )
        assert_json_error(r, 401, "unauthorized")
    no_unexpected_errors(proc)
    assert posts.get("latin")["metadata"]["resourceVersion"] == meta["resourceVersion"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 30000 + b"]" * 30000, id="nested-arrays"),
        pytest.param(b'{"a":' * 10000 + b"1" + b"}" * 10000, id="nested-objects"),
        pytest.param(
            b'{"namespace":"a","name":"b","uid":"c","attempt":1,"status":"published","error":'
            + b'{"message":' * 4000
            + b'"x"'
            + b"}" * 4001,
            id="nested-inside-a-valid-body",
        ),
        pytest.param(b'{"name":"\xff\xfe"}', id="not-utf8"),
        pytest.param(b'{"name":"\\ud800"}', id="lone-surrogate"),
    ],
)
def test_hostile_json_without_a_valid_token_is_400_not_500(sidecar: Sidecar, raw: bytes) -> None:
    proc, base = sidecar()
    assert len(raw) < 65536  # under the default body limit: it reaches the parser
    r = httpx.post(
        f"{base}/v1/callbacks",
        content=raw,
        timeout=10,
        headers={"Content-Type": "application/json", "Authorization": "Bearer v1.forged"},
    )
    assert_json_error(r, 400, "invalid_json")
    no_unexpected_errors(proc)


@pytest.mark.parametrize(
    ("bad_namespace", "name", "field"),
    [
        pytest.param(None, "x/..", "name", id="slash-dotdot"),
        pytest.param(None, ".", "name", id="dot"),
        pytest.param(None, "..", "name", id="dotdot"),
        pytest.param(None, "a\r\nX-Injected: 1", "name", id="crlf"),
        pytest.param(None, "a\n", "name", id="trailing-newline"),
        pytest.param(None, "Upper", "name", id="uppercase"),
        pytest.param(None, "a?watch=true", "name", id="query"),
        pytest.param(None, "a#b", "name", id="fragment"),
        pytest.param(None, "%2e%2e", "name", id="percent-encoded"),
        pytest.param(None, "-a", "name", id="leading-dash"),
        pytest.param(None, "a" * 254, "name", id="too-long"),
        pytest.param("..", "ok", "namespace", id="namespace-dotdot"),
        pytest.param("a.b", "ok", "namespace", id="namespace-with-dot"),
        pytest.param("ns/x", "ok", "namespace", id="namespace-slash"),
        pytest.param("a\r\n", "ok", "namespace", id="namespace-crlf"),
        pytest.param("a" * 64, "ok", "namespace", id="namespace-too-long"),
    ],
)
def test_names_that_are_not_kubernetes_names_are_400_even_with_a_valid_token(
    posts: Posts, sidecar: Sidecar, bad_namespace: str | None, name: str, field: str
) -> None:
    proc, base = sidecar()
    ns = bad_namespace if bad_namespace is not None else posts.namespace
    uid = "0b1f6a52-0000-4000-8000-000000000000"
    tok = signing.callback_token(CALLBACK_KEY.encode(), ns, name, uid, 1)
    r = httpx.post(
        f"{base}/v1/callbacks",
        json={"namespace": ns, "name": name, "uid": uid, "attempt": 1, "status": "published"},
        timeout=10,
        headers={"Authorization": f"Bearer {tok}"},
    )
    body = assert_json_error(r, 400, "invalid_body")
    assert body["field"] == field, body
    no_unexpected_errors(proc)


def test_fuzzed_names_with_valid_tokens_never_5xx(posts: Posts, sidecar: Sidecar) -> None:
    """An attacker holding a valid token for whatever names it likes: every answer is a
    4xx JSON error (400 for a name Kubernetes would refuse, 404 for one that is absent)."""
    proc, base = sidecar()
    sent: Counter[int] = Counter()
    names = st.one_of(
        st.text(max_size=20),
        st.text(alphabet="abc-./\r\n%?#\\ \t\x00é", max_size=12),
        st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True),
    )

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(namespace=st.one_of(names, st.just(posts.namespace)), name=names)
    def attack(namespace: str, name: str) -> None:
        uid = "0b1f6a52-0000-4000-8000-000000000000"
        tok = signing.callback_token(CALLBACK_KEY.encode(), namespace, name, uid, 1)
        r = httpx.post(
            f"{base}/v1/callbacks",
            json={
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "attempt": 1,
                "status": "published",
            },
            timeout=10,
            headers={"Authorization": f"Bearer {tok}"},
        )
        sent[r.status_code] += 1
        assert r.status_code in (400, 404), (namespace, name, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")

    attack()
    no_unexpected_errors(proc)
    assert sent[400] and sent[404], sent
    print(f"name fuzz: {sum(sent.values())} requests, by status {dict(sent)}")


# --- issue 15: the network's rate-limit reset and actionable failure codes ---------------


def test_retry_after_seconds_sets_the_next_attempt(posts: Posts, sidecar: Sidecar) -> None:
    """A 429 with a reset in 1 h, on a post with backoffSeconds 4 (and the sidecar's
    maxBackoffSeconds 10): retried no earlier than 1 h from now, one attempt spent."""
    _, base = sidecar()
    obj = publishing(posts, "limited", retry={"backoffSeconds": 4})
    before = time.time()
    r = callback(
        base,
        posts,
        obj,
        "failed",
        error={
            "message": "LinkedIn: daily limit reached",
            "code": "HTTP429",
            "retryable": True,
            "retryAfterSeconds": 3600,
        },
    )
    after = time.time()
    assert r.json() == {"result": "applied"}, r.text
    status = posts.status("limited")
    assert (status["phase"], status["attempt"]) == ("Retrying", 1)
    next_at = posts_time(status["nextAttemptAt"])
    # nextAttemptAt is written with millisecond precision.
    assert before + 3600 - 0.001 <= next_at <= after + 3600 + 0.001, next_at - before
    assert status["lastError"]["code"] == "HTTP429"
    assert "the network asked to wait 3600s" in status["message"]
    assert [(h["attempt"], h["outcome"]) for h in status["history"]] == [(1, "Transient")]


@pytest.mark.parametrize(
    ("value", "why"),
    [(-1, "greater than or equal to 0"), (604801, "less than or equal to 604800"), ("1h", "")],
)
def test_retry_after_seconds_out_of_bounds_is_400(
    posts: Posts, sidecar: Sidecar, value: Any, why: str
) -> None:
    _, base = sidecar()
    obj = publishing(posts, "bounded")
    err = {"message": "slow down", "code": "HTTP429", "retryable": True, "retryAfterSeconds": value}
    r = callback(base, posts, obj, "failed", error=err)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "error.retryAfterSeconds" and why in r.json()["message"]
    assert posts.get("bounded")["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_actionable_failure_codes_are_counted_by_reason(posts: Posts, sidecar: Sidecar) -> None:
    """ReconnectAccount (an expired token) ends Failed and is counted under its own reason;
    a code Herald does not know stays PermanentFailure, keeping the label bounded."""
    _, base = sidecar()
    expired = publishing(posts, "expired")
    message = "LinkedIn answered 401: reconnect the n8n credential 'LinkedIn company-page'"
    r = callback(
        base,
        posts,
        expired,
        "failed",
        error={"message": message, "code": "ReconnectAccount", "retryable": False},
    )
    assert r.json() == {"result": "applied"}
    status = posts.status("expired")
    assert status["phase"] == "Failed"
    assert (status["lastError"]["code"], status["lastError"]["message"]) == (
        "ReconnectAccount",
        message,
    )
    odd = publishing(posts, "odd")
    r = callback(base, posts, odd, "failed", error={"message": "?", "code": "SomethingNew42"})
    assert r.json() == {"result": "applied"}
    lines = httpx.get(f"{base}/metrics", timeout=5).text.splitlines()
    assert 'herald_failed_total{reason="ReconnectAccount"} 1.0' in lines
    assert 'herald_failed_total{reason="PermanentFailure"} 1.0' in lines
    assert 'herald_failed_total{reason="Duplicate"} 0.0' in lines
    assert not [line for line in lines if "SomethingNew42" in line]


# --- issue 16, window 8: the sidecar's answers ---------------------------------------------


def test_a_spec_field_of_a_newer_crd_does_not_stop_the_callback(
    posts: Posts, sidecar: Sidecar, control_plane: ControlPlane
) -> None:
    """During a rolling update the CRD is newer than this sidecar: a post may carry a spec
    field it does not know. Its callback is applied as usual, not answered 500."""
    _, base = sidecar()
    with extra_crd_field(control_plane, "spec", "futureSpecField"):
        deadline = time.monotonic() + 20
        while True:  # the API server prunes the field until it has re-read the schema
            name = f"newer-{int(time.monotonic() * 1000) % 100000}"
            obj = publishing(posts, name, futureSpecField="from-a-newer-herald")
            if obj["spec"].get("futureSpecField") or time.monotonic() > deadline:
                break
        assert obj["spec"].get("futureSpecField") == "from-a-newer-herald", obj["spec"]
        response = callback(base, posts, obj, externalUrl="https://x.test/newer")
        assert response.status_code == 200, (
            f"callback for a post with a spec field of a newer CRD: {response.status_code} "
            f"{response.text}"
        )
        assert response.json() == {"result": "applied"}
        assert posts.status(name)["phase"] == "Published"


def test_an_api_refusal_is_503_with_retry_after(
    posts: Posts,
    sidecar: Sidecar,
    control_plane: ControlPlane,
    admin_client: httpx.Client,
    namespace: str,
) -> None:
    """An API server answer Herald has no special case for (here 413, from an admission
    policy) is the server's problem, not the callback's: 503 with a JSON error and a
    Retry-After, so n8n tries again, rather than 500. Nothing is written."""
    _, base = sidecar()
    obj = publishing(posts, "refused")
    with refused_status_writes(control_plane, admin_client, namespace, posts.url("refused")):
        response = callback(base, posts, obj)
    assert response.status_code == 503, f"{response.status_code} {response.text}"
    assert response.headers.get("Retry-After")
    body = response.json()
    assert body["code"] == "api_error", body
    assert posts.status("refused")["phase"] == "Publishing"
    # Once the API server takes the write again, n8n's retry is applied.
    again = callback(base, posts, obj)
    assert again.status_code == 200, again.text
    assert posts.status("refused")["phase"] == "Published"


def test_a_late_permanent_failure_after_a_stale_recovery_fails_the_post(
    posts: Posts, sidecar: Sidecar
) -> None:
    """The operator gave up waiting for attempt 1 (Stale) and scheduled attempt 2; then
    n8n reports that attempt 1 failed for good. The post must end Failed, not be
    retried as if the report were a duplicate."""
    _, base = sidecar()
    obj = publishing(posts, "stale-then-failed")
    obj = set_status(
        posts,
        "stale-then-failed",
        phase="Retrying",
        dispatchedAt=None,
        nextAttemptAt=in_seconds(3600),
        history=[
            {
                "attempt": 1,
                "claimedAt": obj["status"]["claimedAt"],
                "finishedAt": in_seconds(0),
                "outcome": "Stale",
                "code": "CallbackTimeout",
                "message": "No callback from n8n within 600s of dispatch",
            }
        ],
    )
    response = callback(
        base,
        posts,
        obj,
        status="failed",
        error={"code": "LinkedIn401", "message": "token revoked", "retryable": False},
    )
    assert response.status_code == 200, response.text
    status = posts.status("stale-then-failed")
    assert (response.json()["result"], status["phase"]) == ("applied", "Failed"), (
        f"n8n's permanent failure of a stale attempt was {response.json()['result']}; "
        f"the post is {status['phase']} (next attempt {status.get('nextAttemptAt')})"
    )
    assert status["lastError"]["code"] == "LinkedIn401"
    assert status["history"][-1]["outcome"] == "Permanent"
