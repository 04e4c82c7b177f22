"""The publication ledger's pure decisions (herald.engine): the fingerprint, what a post
about to send its first attempt does about an existing record, and what a finished post
writes into its record. The I/O is herald.ledger's, tested on the real API server in
tests/e2e/test_ledger.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from herald import engine, writer
from herald.engine import Defaults, LedgerStep, Post
from herald.metrics import Metrics
from herald.models import (
    Channel,
    ConditionStatus,
    Phase,
    PublicationSpec,
    PublicationState,
    ScheduledPostStatus,
    parse_spec,
)

NOW = dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=dt.UTC)
UID, OTHER_UID = "uid-new", "uid-old"
ME = "herald-0/aaaa"
DEFAULTS = Defaults(stale_after_seconds=600, claim_timeout_seconds=30.0, ledger_recheck_seconds=5.0)
TAKEOVER_AFTER = 630.0  # claim timeout + stale time
SPEC: dict[str, Any] = {
    "publishAt": "2030-01-15T09:00:00Z",
    "channel": "linkedin",
    "account": "acme",
    "content": {
        "text": "Hello",
        "link": "https://acme.example/",
        "media": [{"url": "https://acme.example/a.png", "altText": "a"}],
    },
}


def post(spec: dict[str, Any] | None = None, uid: str = UID, **status: Any) -> Post:
    claimed = {
        "phase": Phase.PUBLISHING,
        "attempt": 1,
        "claimed_at": NOW,
        "claimed_by": ME,
        "claimed_generation": 1,
        "next_attempt_at": NOW,
        **status,
    }
    return Post("ns", "p", uid, 1, parse_spec(spec or SPEC), ScheduledPostStatus(**claimed))


def record(
    state: PublicationState, holder: str = OTHER_UID, since: float = -10.0
) -> PublicationSpec:
    return engine.new_publication(post(uid=holder), NOW + dt.timedelta(seconds=since)).model_copy(
        update={
            "state": state,
            "published_at": NOW - dt.timedelta(days=2)
            if state is PublicationState.PUBLISHED
            else None,
            "external_id": "42" if state is PublicationState.PUBLISHED else None,
            "external_url": "https://l.example/42" if state is PublicationState.PUBLISHED else None,
        }
    )


def changed(path: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {**SPEC, "content": {**SPEC["content"]}}
    if path.startswith("content."):
        spec["content"][path.split(".", 1)[1]] = value
    else:
        spec[path] = value
    return spec


# --- the fingerprint -------------------------------------------------------------------


def test_the_fingerprint_is_the_same_for_a_re_created_object() -> None:
    assert engine.fingerprint(post(uid="a")) == engine.fingerprint(post(uid="b"))
    assert engine.publication_name(post()) == f"pub-{engine.fingerprint(post())}"
    assert len(engine.publication_name(post())) <= 253


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("content.text", "Hello!"),
        ("content.link", "https://acme.example/other"),
        ("content.media", [{"url": "https://acme.example/b.png", "altText": "a"}]),
        ("content.media", [{"url": "https://acme.example/a.png", "altText": "b"}]),
        ("content.media", None),
        ("publishAt", "2030-01-15T09:00:01Z"),
        ("channel", "mastodon"),
        ("account", "other"),
        ("edition", 2),
    ],
)
def test_what_the_audience_sees_changes_the_fingerprint(path: str, value: Any) -> None:
    assert engine.fingerprint(post(changed(path, value))) != engine.fingerprint(post())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("target", "other"),
        ("ttlSecondsAfterFinished", 3),
        ("retry", {"maxAttempts": 1}),
        ("staleAfterSeconds", 5),
        ("publishAt", "2030-01-15T10:00:00+01:00"),  # the same instant
    ],
)
def test_plumbing_does_not_change_the_fingerprint(path: str, value: Any) -> None:
    assert engine.fingerprint(post(changed(path, value))) == engine.fingerprint(post())


def test_name_and_namespace_are_in_the_fingerprint() -> None:
    base = post()
    renamed = Post("ns", "q", UID, 1, base.spec, base.status)
    moved = Post("ns2", "p", UID, 1, base.spec, base.status)
    assert len({engine.fingerprint(p) for p in (base, renamed, moved)}) == 3


def test_the_idempotency_key_is_the_fingerprint_plus_the_retry_epoch() -> None:
    fp = engine.fingerprint(post())
    assert engine.idempotency_key(fp, 0) == fp
    assert engine.idempotency_key(fp, 2) == f"{fp}.2"


# --- before the first send: ledger_step ---------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "step", "until"),
    [
        (record(PublicationState.SENDING, holder=UID), LedgerStep.SEND, None),
        (record(PublicationState.FAILED, holder=UID), LedgerStep.TAKE_OVER, None),
        (record(PublicationState.FAILED), LedgerStep.TAKE_OVER, None),
        (record(PublicationState.SENDING, since=-10), LedgerStep.WAIT, 5.0),
        (record(PublicationState.SENDING, since=-TAKEOVER_AFTER + 2), LedgerStep.WAIT, 2.0),
        (record(PublicationState.SENDING, since=-TAKEOVER_AFTER), LedgerStep.TAKE_OVER, None),
        (record(PublicationState.PUBLISHED), LedgerStep.ALREADY_PUBLISHED, None),
        (record(PublicationState.PUBLISHED, holder=UID), LedgerStep.ALREADY_PUBLISHED, None),
    ],
    ids=[
        "own-sending",
        "own-failed(manual retry)",
        "other-failed",
        "other-sending",
        "other-sending-near-takeover",
        "other-sending-stale",
        "other-published",
        "own-published(crash before status)",
    ],
)
def test_ledger_step(existing: PublicationSpec, step: LedgerStep, until: float | None) -> None:
    decision = engine.ledger_step(post(), existing, NOW, DEFAULTS)
    assert decision.step is step
    if until is None:
        assert decision.until is None
    else:
        assert decision.until == NOW + dt.timedelta(seconds=until)
    if step is LedgerStep.TAKE_OVER:
        assert decision.record is not None
        assert (decision.record.holder_uid, decision.record.state) == (
            UID,
            PublicationState.SENDING,
        )
        assert decision.record.since == NOW


def test_already_published_copies_the_record_and_sends_nothing() -> None:
    existing = record(PublicationState.PUBLISHED)
    decision = engine.ledger_step(post(), existing, NOW, DEFAULTS).decision
    new = decision.status
    assert new is not None and decision.action is engine.Action.NONE
    assert new.phase is Phase.PUBLISHED
    assert (new.published_at, new.external_id, new.external_url) == (
        existing.published_at,
        "42",
        "https://l.example/42",
    )
    assert new.attempt == 0  # the claimed attempt never went out
    assert new.claimed_by is None and new.next_attempt_at is None
    cond = next(c for c in new.conditions or [] if c.type == engine.PUBLISHED)
    assert (cond.status, cond.reason) == (ConditionStatus.TRUE, "AlreadyPublished")
    [event] = decision.events
    assert (event.type, event.reason, event.routine) == ("Normal", "AlreadyPublished", False)
    assert "2030-01-13T09:00:00Z" in event.message and "https://l.example/42" in event.message
    # The write is the post's own: the record is not written again for it.
    assert engine.ledger_outcome(post(), decision) is None


# --- after the last attempt: what the record gets ----------------------------------------


def test_first_of_series() -> None:
    assert engine.first_of_series(post().status)
    assert not engine.first_of_series(post(attempt=2).status)
    assert engine.first_of_series(post(attempt=3, retry_base_attempt=2, retry_epoch=1).status)
    assert not engine.first_of_series(post(phase=Phase.SCHEDULED, attempt=0).status)


def test_a_published_outcome_is_recorded_whoever_holds_the_record() -> None:
    done = engine.dispatch_result(
        post(), NOW, engine.Accepted(engine.Published("7", "https://x/7")), DEFAULTS, ME
    )
    assert engine.ledger_outcome(post(), done) is Phase.PUBLISHED
    assert done.status is not None
    for holder in (UID, OTHER_UID):
        new = engine.finished_record(record(PublicationState.SENDING, holder), post(), done.status)
        assert new is not None
        assert (new.state, new.external_id, new.external_url, new.published_at) == (
            PublicationState.PUBLISHED,
            "7",
            "https://x/7",
            NOW,
        )


def test_published_is_never_overwritten() -> None:
    failed = post(phase=Phase.FAILED).status
    assert engine.finished_record(record(PublicationState.PUBLISHED, UID), post(), failed) is None


def test_failed_is_recorded_only_by_the_holder_of_a_sending_record() -> None:
    failed = post(phase=Phase.FAILED).status
    mine = engine.finished_record(record(PublicationState.SENDING, UID), post(), failed)
    assert mine is not None and mine.state is PublicationState.FAILED
    assert engine.finished_record(record(PublicationState.SENDING), post(), failed) is None


@pytest.mark.parametrize(
    ("state", "written"),
    [
        (PublicationState.SENDING, True),
        (PublicationState.FAILED, True),  # n8n published after all: that is the truth
        (PublicationState.PUBLISHED, False),
    ],
)
def test_a_callback_for_a_deleted_post_marks_its_record_published(
    state: PublicationState, written: bool
) -> None:
    published = engine.Published("9", "https://x/9")
    new = engine.published_record(record(state), published, NOW)
    assert (new is not None) is written
    if new is not None:
        assert (new.state, new.external_id, new.external_url, new.published_at) == (
            PublicationState.PUBLISHED,
            "9",
            "https://x/9",
            NOW,
        )
        assert new.holder_uid == OTHER_UID and new.since == record(state).since


def test_the_outcome_is_one_patch_guarded_by_holder_and_state() -> None:
    done = post(
        phase=Phase.PUBLISHED, published_at=NOW, external_id="7", external_url="https://x/7"
    ).status
    assert engine.finish_ops(post(), done) == [
        {"op": "test", "path": "/spec/holderUid", "value": UID},
        {"op": "test", "path": "/spec/state", "value": "Sending"},
        {"op": "add", "path": "/spec/state", "value": "Published"},
        {"op": "add", "path": "/spec/publishedAt", "value": "2030-01-15T09:00:00Z"},
        {"op": "add", "path": "/spec/externalId", "value": "7"},
        {"op": "add", "path": "/spec/externalUrl", "value": "https://x/7"},
    ]
    failed = engine.finish_ops(post(), post(phase=Phase.FAILED).status)
    assert failed is not None and failed[2:] == [
        {"op": "add", "path": "/spec/state", "value": "Failed"}
    ]
    assert engine.finish_ops(post(), post(phase=Phase.RETRYING).status) is None


def test_a_post_never_sent_writes_no_record() -> None:
    scheduled = post(phase=Phase.SCHEDULED, attempt=0, claimed_by=None, claimed_at=None)
    decision = engine._missed_deadline(scheduled, NOW, 100.0, 10)
    assert engine.ledger_outcome(scheduled, decision) is None


def test_the_record_keeps_what_makes_the_fingerprint() -> None:
    new = engine.new_publication(post(), NOW)
    assert (new.post, new.channel, new.account, new.publish_at) == (
        "p",
        Channel.LINKEDIN,
        "acme",
        NOW,
    )
    assert new.content_hash == engine.content_hash(post().spec)


@pytest.mark.parametrize(("days", "expired"), [(399.9, False), (400.1, True)])
def test_retention_counts_from_publication(days: float, expired: bool) -> None:
    published = record(PublicationState.PUBLISHED)
    assert published.published_at is not None
    now = published.published_at + dt.timedelta(days=days)
    assert engine.publication_expired(published, now, 400) is expired


def test_retention_of_a_record_never_published_counts_from_its_send() -> None:
    sending = record(PublicationState.SENDING, since=0)
    assert engine.publication_expired(sending, NOW + dt.timedelta(days=401), 400)
    assert not engine.publication_expired(sending, NOW + dt.timedelta(days=399), 400)


def test_each_edition_is_a_publication_of_its_own() -> None:
    editions = [post(changed("edition", n)) for n in (1, 2, 3)]
    assert len({engine.fingerprint(p) for p in [post(), *editions]}) == 4


def test_an_already_published_post_is_not_counted_as_a_new_publication() -> None:
    """herald_published_total and the lateness histogram count what Herald published; a
    re-created object matched to its record published nothing (and its lateness would be
    the record's, counted a second time)."""
    metrics = Metrics(CollectorRegistry())
    claimed = post()
    decision = engine.ledger_step(claimed, record(PublicationState.PUBLISHED), NOW, DEFAULTS)
    writer.count(metrics, claimed, decision.decision)
    assert metrics.published.labels("linkedin")._value.get() == 0
    assert metrics.time_to_published._sum.get() == 0
