"""Regression tests for the fault windows of issues 10 and 16, on the real path.

Each test drives a real `herald run` against the real kube-apiserver (and a fake n8n for
fault injection) into one window where the operator used to misbehave, and asserts the
behaviour the fix promises. Every test is bounded: it fails by its own deadline rather
than waiting for the old behaviour to play out (some of it took five minutes).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from herald import signing
from tests.e2e.conftest import Posts, in_seconds, iso, parse_time
from tests.support.controlplane import ControlPlane, free_port
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.faults import after_2xx
from tests.support.herald_proc import HeraldProcess, herald_env, start_operator
from tests.support.window_helpers import (
    RestrictedUser,
    Trickle,
    TrickleN8n,
    extra_status_field,
    metric_samples,
    set_status_field_until_kept,
    status_patches,
)

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]


def iso_at(unix: float) -> str:
    return iso(dt.datetime.fromtimestamp(unix, dt.UTC))


RETRY_ANNOTATION = "herald.dev/retry-requested-at"
TRICKLED_BODY = b'{"status":"accepted"}'


def test_window1_status_write_denied_at_first_is_retried_after_the_grant(
    posts: Posts,
    fake_n8n: FakeN8n,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Window 1: a new post whose first status write fails is stranded.

    The operator runs as a user that may read posts but not (yet) patch their status, so
    accepting a new post (suspended: the write a new post needs before its claim) fails
    with 403. Once `patch` is granted, the post must be accepted (Suspended) within
    ~10 s, with no edit of the post and no restart.
    """
    user = RestrictedUser(control_plane, namespace, tmp_path)
    op: HeraldProcess | None = None
    try:
        assert not user.can_patch_status()
        posts.create("canary", in_seconds(86400), suspend=True)
        op = start_operator(
            user.kubeconfig,
            fake_n8n.url,
            tmp_path / "operator.log",
            namespaces=json.dumps([namespace]),
        )
        op.wait_for_log("watch is live")
        posts.create("denied", in_seconds(3600), suspend=True)
        # Long enough for the operator to try (and fail) a few times.
        time.sleep(3.0)
        assert posts.status("denied").get("phase") == "Pending", (
            "the write was not denied: the test proves nothing"
        )
        user.grant_status_patch()
        granted = time.time()
        assert user.can_patch_status()
        deadline = granted + 12.0
        status: dict[str, object] = {}
        while time.time() < deadline:
            status = posts.status("denied")
            if status.get("phase") == "Suspended":
                break
            time.sleep(0.1)
        waited = time.time() - granted
        assert status.get("phase") == "Suspended", (
            f"post stranded: still no status {waited:.1f}s after `patch` on "
            f"scheduledposts/status was granted (status={status}); operator log tail:\n"
            + op.log()[-1500:]
        )
        print(f"window 1: Suspended {waited:.1f}s after the grant")
        assert waited <= 10.5, f"accepted only {waited:.1f}s after the grant"
    finally:
        if op is not None:
            op.stop()
        user.cleanup()


def test_window2_rejected_status_write_does_not_loop_hot(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, admin_client: httpx.Client
) -> None:
    """Window 2: a write the API server rejects loops hot.

    A replica whose HERALD_IDENTITY is longer than status.claimedBy's maxLength (253)
    can see a post (Pending: no write before the claim) but never claim it: the claim's status write
    fails schema validation (422). Retrying it at once, over and over, loads the API
    server for nothing. The rate of those 422s must stay bounded, and a Warning Event
    with reason StatusWriteRejected must say what was rejected.
    """
    # The API server's counters are per session: only increases from here on count.
    baseline = status_patches(admin_client, "422")
    herald(fake_n8n.url, identity="x" * 250)
    posts.create("unclaimable", in_seconds(1))
    assert posts.status("unclaimable")["phase"] == "Pending"
    # Let the claim come due and the first rejections happen, then measure ten seconds.
    deadline = time.monotonic() + 15
    while status_patches(admin_client, "422") == baseline and time.monotonic() < deadline:
        time.sleep(0.2)
    before = status_patches(admin_client, "422")
    assert before > baseline, "no status write was rejected: the test proves nothing"
    time.sleep(10.0)
    rejected = status_patches(admin_client, "422") - before
    assert fake_n8n.for_post("unclaimable") == [], "an unclaimed post was sent"
    print(f"window 2: {rejected:.0f} rejected status PATCHes in 10 s")
    assert rejected <= 10, (
        f"hot loop: {rejected:.0f} rejected (422) PATCHes of scheduledposts/status in 10 s "
        f"({rejected / 10:.0f}/s) for one post whose status can never be written"
    )
    event = posts.wait_event("unclaimable", "StatusWriteRejected", timeout=5)
    assert event["type"] == "Warning"
    assert "claimedBy" in event["message"], event["message"]


def test_window4a_request_deadline_covers_a_trickled_response(posts: Posts, herald: Start) -> None:
    """Window 4a: the target's timeout must be a deadline for the whole request.

    n8n sends its headers at once, then the body one byte every 0.5 s for ~10 s. With the
    target's timeout at 2 s the operator must give up ~2 s after sending (attempt failed
    with code Timeout, post Retrying) instead of waiting for the last byte: a per-read
    timeout never fires, since every read gets a byte within 0.5 s.
    """
    with TrickleN8n() as fake:
        herald(fake.url, backoff_seconds=30, max_backoff_seconds=60)  # timeout: 2 s
        fake.trickle("trickled", Trickle(200, TRICKLED_BODY, every=0.5))
        posts.create("trickled", in_seconds(1))
        (request,) = fake.wait_for("trickled", 1, timeout=15)
        status = posts.wait(
            "trickled",
            lambda s: bool(s.get("lastError") or s.get("dispatchedAt")),
            timeout=15,
            what="the attempt's outcome recorded",
        )
        error = status.get("lastError") or {}
        if error:
            gave_up = parse_time(error["at"]) - request.at
            outcome = f"gave up after {gave_up:.1f}s with {error.get('code')}"
        else:
            gave_up = parse_time(status["dispatchedAt"]) - request.at
            outcome = f"waited {gave_up:.1f}s for the trickled answer and recorded it accepted"
        assert error.get("code") == "Timeout", (
            f"no deadline: the operator {outcome} (target timeout 2 s, response trickled "
            f"over {len(TRICKLED_BODY) * 0.5:.1f}s); status={status}"
        )
        print(f"window 4a: {outcome}")
        assert gave_up <= 3.0, f"the 2 s deadline fired only after {gave_up:.1f}s"
        first = status["history"][-1]
        assert (first["attempt"], first["outcome"], first["code"]) == (1, "Transient", "Timeout")
        # Attempt 2 goes out after the backoff (30 s ±10%). The operator may already have
        # claimed it (claims are taken up to claimAheadSeconds before the send time), so
        # the phase is Retrying, or Publishing for an attempt 2 not sent yet.
        retry_at = parse_time(status["nextAttemptAt"]) - parse_time(error["at"])
        assert 26.9 <= retry_at <= 33.1, f"attempt 2 planned {retry_at:.1f}s after the timeout"
        if status["phase"] == "Publishing":
            assert (status["attempt"], status.get("dispatchedAt")) == (2, None), status
        else:
            assert status["phase"] == "Retrying", status
        assert len(fake.for_post("trickled")) == 1, "attempt 2 was sent before its time"


def test_window4c_sigterm_lets_the_request_in_flight_finish(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    """Window 4c: shutdown lets in-flight requests finish.

    n8n answers 2xx after 2 s; the operator gets SIGTERM 0.5 s after the request
    arrived. The request must complete and its acknowledgement be recorded
    (status.dispatchedAt, or Published) before the process exits; and a replacement
    operator (another identity) must not send the post again: no request after n8n's 2xx
    with the same Idempotency-Key (a take-over would use a new webhook-id).
    """
    # The request's deadline (5 s) comfortably covers n8n's 2 s answer.
    first = herald(fake_n8n.url, identity="leaving", targets__default__timeout_seconds=5)
    fake_n8n.script("in-flight", Reply(200, {"status": "accepted"}, delay=2.0))
    posts.create("in-flight", in_seconds(1))
    (request,) = fake_n8n.wait_for("in-flight", 1, timeout=15)
    time.sleep(max(0.0, request.at + 0.5 - time.time()))
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    signalled = time.time()
    try:
        code = first.proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        first.proc.kill()
        raise AssertionError("the operator did not exit within 40 s of SIGTERM") from None
    exited = time.time() - signalled
    answer_due = request.at + 2.0 - signalled  # when n8n's 2xx was due, after SIGTERM
    after_exit = posts.status("in-flight")
    recorded = bool(after_exit.get("dispatchedAt")) or after_exit.get("phase") == "Published"

    claimed_at = parse_time(after_exit["claimedAt"]) if after_exit.get("claimedAt") else signalled
    herald(fake_n8n.url, identity="replacement")
    # An orphaned claim is taken over after claim_timeout (target timeout + grace, at
    # most ~20 s in either version): watch that long for a second send of the attempt.
    watch_until = max(claimed_at, signalled) + 25.0
    while time.time() < watch_until and len(fake_n8n.for_post("in-flight")) < 2:
        time.sleep(0.2)
    uid = posts.get("in-flight")["metadata"]["uid"]
    sent = fake_n8n.for_post("in-flight")
    sends = Counter(r.headers.get("webhook-id") for r in sent)
    # A take-over sends a new attempt (a new webhook-id) under the same Idempotency-Key:
    # what counts is any request after n8n's 2xx for that key.
    resent = [(ok.message, r.message, round(r.at - ok.at, 2)) for ok, r in after_2xx(sent)]
    print(f"window 4c: exited {exited:.1f}s after SIGTERM; sends {dict(sends)}")
    assert recorded and not resent, (
        f"SIGTERM 0.5 s into a 2 s request: process exited {exited:.1f}s later (code {code}), "
        f"n8n's answer was due {answer_due:.1f}s after SIGTERM; "
        f"acknowledgement recorded before exit: {recorded} "
        f"(phase={after_exit.get('phase')}, dispatchedAt={after_exit.get('dispatchedAt')}); "
        f"sent again after n8n's 2xx for the same Idempotency-Key ((uid, attempt) accepted, "
        f"(uid, attempt) re-sent, seconds later): {resent}; sends per webhook-id: "
        f"{dict(sends)} (first was {signing.message_id(uid, 1)})"
    )


def test_window7_manual_retry_gets_a_new_attempt_and_key(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, control_plane: ControlPlane, namespace: str
) -> None:
    """Window 7: a manual retry reused attempt numbers.

    A post fails permanently (n8n answers 400); then someone asks for a retry with the
    annotation. n8n must see attempt 2 (a new message, webhook-id msg_<uid>_2), with an
    Idempotency-Key different from the first, so an n8n that de-duplicates does not drop
    the retry someone asked for, and the two attempts stay apart in the history.
    """
    herald(fake_n8n.url)
    fake_n8n.script("retried", Reply(400, {"message": "token expired"}))
    posts.create("retried", in_seconds(0.5))
    posts.wait_phase("retried", "Failed", timeout=15)
    control_plane.kubectl(
        "annotate",
        "sp",
        "retried",
        "-n",
        namespace,
        f"{RETRY_ANNOTATION}={dt.datetime.now(dt.UTC).isoformat()}",
        "--overwrite",
    )
    first, second = fake_n8n.wait_for("retried", 2, timeout=15)
    uid = posts.get("retried")["metadata"]["uid"]
    keys = (first.headers["Idempotency-Key"], second.headers["Idempotency-Key"])
    assert second.body["attempt"] == 2, (
        f"manual retry re-sent attempt {second.body['attempt']} "
        f"(webhook-id {second.headers['webhook-id']}, the first was "
        f"{first.headers['webhook-id']}), Idempotency-Keys {keys}"
    )
    assert second.headers["webhook-id"] == signing.message_id(uid, 2)
    assert keys[0] != keys[1], f"the retry reuses Idempotency-Key {keys[0]}"


def test_window8_unknown_target_fails_without_metric_series(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    """Window 8: a post naming a target the operator does not have.

    It must end Failed with lastError.code UnknownTarget, and must not create metric
    series for that target: spec.target is user input, so series per unknown target
    would let any namespace's users grow the operator's metrics without bound.
    """
    port = free_port()
    herald(fake_n8n.url, metrics_port=port)
    posts.create("lost", in_seconds(0.5), target="nope")
    status = posts.wait_phase("lost", "Failed", timeout=15)
    assert status["lastError"]["code"] == "UnknownTarget", status["lastError"]
    assert fake_n8n.for_post("lost") == []
    time.sleep(0.5)
    series = sorted({s.name for s in metric_samples(port) if s.labels.get("target") == "nope"})
    assert series == [], f"metrics with series for target='nope': {series}"


def test_window9_status_fields_of_a_newer_version_survive(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    admin_client: httpx.Client,
) -> None:
    """Window 9: version skew during a rolling update.

    A newer Herald's CRD has a status field this version does not know, and a newer
    replica has written it. When this version moves the post to another phase, the
    field must survive (the old code replaced .status whole and dropped it).
    """
    # The CRD first, as a rolling update applies it before replacing the replicas. (An
    # operator already watching when the CRD changes stops seeing events for a while:
    # kopf re-establishes its watch; that is not the window under test.)
    with extra_status_field(control_plane, "futureField"):
        herald(fake_n8n.url)
        posts.create("skewed", in_seconds(3600))
        posts.wait_phase("skewed", "Pending")  # the CRD's default: nothing written yet
        set_status_field_until_kept(
            admin_client, posts.url("skewed"), "futureField", "written-by-a-newer-herald"
        )
        posts.patch_spec("skewed", {"suspend": True})
        status = posts.wait_phase("skewed", "Suspended", timeout=15)
        assert status.get("futureField") == "written-by-a-newer-herald", (
            f"the operator's Pending -> Suspended write dropped status.futureField: "
            f"status keys now {sorted(status)}"
        )


@pytest.mark.timeout(150)
def test_window12_short_outage_delays_posts_by_seconds_not_minutes(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, control_plane: ControlPlane, namespace: str
) -> None:
    """Window 12: a short outage does not delay posts for minutes.

    Default circuit-breaker settings. n8n answers 503 for 20 s, long enough for a dozen
    posts due meanwhile to fail and open the circuit; then it is back. Every post must
    be Published within 40 s after n8n is back (the old breaker stayed open 300 s).
    """
    fake_n8n.default = Reply(503, {"message": "n8n is restarting"})
    herald(fake_n8n.url)
    outage_started = time.time()
    names = [f"outage-{i}" for i in range(14)]
    docs = "\n---\n".join(
        json.dumps(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "ScheduledPost",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "publishAt": in_seconds(1 + i * 0.5),
                    "content": {"text": f"during the outage {i}"},
                    "retry": {"maxAttempts": 20, "backoffSeconds": 1, "maxBackoffSeconds": 10},
                },
            }
        )
        for i, name in enumerate(names)
    )
    control_plane.kubectl("apply", "-f", "-", input=docs)
    time.sleep(max(0.0, outage_started + 20.0 - time.time()))
    failures = sum(1 for r in fake_n8n.requests if r.body.get("name") in names)
    fake_n8n.default = Reply(200, {"status": "published"})
    back = time.time()
    assert failures >= 10, f"only {failures} failed requests: the circuit never opened"

    phases: dict[str, str] = {}
    while time.time() < back + 40.0:
        phases = {n: posts.status(n).get("phase", "?") for n in names}
        if all(p == "Published" for p in phases.values()):
            break
        time.sleep(1.0)
    late = {n: p for n, p in phases.items() if p != "Published"}
    if not late:
        print(f"window 12: all Published {time.time() - back:.1f}s after n8n was back")
    requests_after = sum(
        1 for r in fake_n8n.requests if r.body.get("name") in names and r.at >= back
    )
    assert not late, (
        f"{len(late)} of {len(names)} posts not Published 40 s after n8n came back "
        f"({failures} failures during the 20 s outage; {requests_after} requests since): "
        f"{Counter(late.values())}"
    )


# --- issue 16 ------------------------------------------------------------------------------


def test_issue16_window3_an_auth_header_httpx_cannot_send_never_strands_a_post(
    posts: Posts, fake_n8n: FakeN8n, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Window 3's trigger: the target's auth header value is not ASCII, which httpx cannot
    send (it raised UnicodeEncodeError from inside the dispatch, and every post for the
    target stayed Publishing forever). Either the operator refuses to start, naming the
    setting, or the post ends Failed with a reason that names the header problem; it is
    never left Publishing."""
    if "canary" not in posts.names():
        posts.create("canary", in_seconds(86400), suspend=True)
    env = herald_env(
        control_plane.kubeconfig,
        fake_n8n.url,
        namespaces=json.dumps([namespace]),
        targets__default__auth_header_name="X-Herald-Auth",
        targets__default__auth_header_value="Bearer s\u00e9cret",
        backoff_seconds=1,
        max_backoff_seconds=10,
    )
    op = HeraldProcess("run", env, tmp_path / "operator.log").start()
    try:
        deadline = time.monotonic() + 30
        while op.running and "watch is live" not in op.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not op.running:
            assert op.proc is not None and op.proc.returncode != 0
            log = op.log()
            print(f"window 3: refused at startup: {log.strip().splitlines()[-1]}")
            assert "targets.default.auth_header_value" in log, log[-2000:]
            assert "not ASCII" in log, log[-2000:]
            return
        posts.create("bad-header", in_seconds(1))
        try:
            status = posts.wait_phase("bad-header", "Failed", timeout=20)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nthe post is stuck; n8n saw {len(fake_n8n.for_post('bad-header'))} "
                f"requests; operator log tail:\n{op.log()[-1500:]}"
            ) from None
        message = status["lastError"]["message"]
        assert "auth_header" in message or "header" in message.lower(), status["lastError"]
    finally:
        op.stop()


LEFT = {"delete": "deleted", "suspend": "suspended"}


@pytest.mark.parametrize("how", sorted(LEFT))
def test_issue16_window5_a_parked_post_that_leaves_does_not_strand_the_next(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, how: str
) -> None:
    """Window 5: target concurrency 1; "a" is at n8n (6 s), "b" and "c" wait behind the
    target's limit. "b" is deleted (or suspended) meanwhile. When a's request completes,
    "c" must be sent at once, not when some other send to the target ends."""
    herald(fake_n8n.url, targets__default__concurrency=1, targets__default__timeout_seconds=10)
    fake_n8n.script("a-slow", Reply(200, {"status": "accepted"}, delay=6.0))
    due = time.time() + 4.0
    posts.create("a-slow", iso_at(due))
    posts.create("b-parked", iso_at(due + 0.3))
    posts.create("c-parked", iso_at(due + 0.6))
    (a,) = fake_n8n.wait_for("a-slow", 1, timeout=20)
    time.sleep(max(0.0, a.at + 2.0 - time.time()))
    assert fake_n8n.for_post("b-parked") == [] and fake_n8n.for_post("c-parked") == [], (
        "b or c was sent beside a: the target's limit did not park them (the test proves nothing)"
    )
    if how == "delete":
        posts.client.delete(posts.url("b-parked")).raise_for_status()
    else:
        posts.patch_spec("b-parked", {"suspend": True})
    deadline = a.at + 6.0 + 5.0
    while time.time() < deadline and not fake_n8n.for_post("c-parked"):
        time.sleep(0.05)
    sent = fake_n8n.for_post("c-parked")
    finished = a.answered_at or a.at + 6.0
    assert sent, (
        f"c-parked not sent {time.time() - finished:.1f}s after a's request completed "
        f"(b was {LEFT[how]} while parked): status {posts.status('c-parked')}"
    )
    print(f"window 5 ({how}): c sent {sent[0].at - finished:.2f}s after a's request completed")
    assert sent[0].at - finished <= 2.0
