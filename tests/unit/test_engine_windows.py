"""The engine's side of issue 16's windows 6, 7 and 8, each as the sequence of decisions
that used to go wrong (the builders are test_engine.py's).

- Window 6: `startingDeadlineSeconds` is measured from publishAt (or from a manual
  retry's request), never from nextAttemptAt, which a given-back claim moves.
- Window 7: a manual retry made while suspended, whose attempt fails again, ends Failed
  with a new lastTransitionTime, so the TTL after failing counts from the new failure.
- Window 8: n8n's late report that an attempt the operator gave up on (stale) failed
  permanently ends the post Failed, instead of being dropped as a duplicate.
"""

from __future__ import annotations

import dataclasses

from herald import engine
from herald.engine import Callback, CallbackResult, Failure
from herald.models import ConditionStatus, ErrorClass, Phase
from tests.unit.test_engine import (
    DEFAULTS,
    ME,
    NOW,
    at,
    cond,
    failed,
    post,
    rec,
    retrying,
    round_trip,
    scheduled,
)

TTL_DEFAULTS = dataclasses.replace(DEFAULTS, ttl_after_failed=3600)


def _write(p: engine.Post, decision: engine.Decision) -> engine.Post:
    assert decision.status is not None
    round_trip(decision.status)
    return engine.replace_status(p, decision.status)


# --- window 6 ----------------------------------------------------------------------------


def test_deadline_counts_from_publish_at_not_from_a_moved_send_time() -> None:
    """A post due 10 minutes ago whose claim was given back (circuit open) a second ago:
    its send time moved, its lateness did not. With a 60 s deadline it must fail."""
    claimed = post(
        scheduled(next_attempt_at=at(-600)), publish_at=at(-600), starting_deadline_seconds=60
    )
    claim = engine.act(claimed, at(-599), DEFAULTS, ME)
    assert claim.action is engine.Action.DISPATCH
    claimed = _write(claimed, claim)
    given_back = engine.defer_claim(claimed, at(-1), at(-1), "the target's circuit is open")
    assert given_back.status is not None
    assert given_back.status.next_attempt_at == at(-1)
    p = post(given_back.status, publish_at=at(-600), starting_deadline_seconds=60)
    decision = engine.act(p, NOW, DEFAULTS, ME)
    assert decision.status is not None and decision.status.phase is Phase.FAILED, (
        f"a post 600 s past publishAt with startingDeadlineSeconds=60 was "
        f"{decision.action.value!r}ed ({decision.status and decision.status.phase})"
    )
    assert decision.status.last_error is not None
    assert decision.status.last_error.code == "MissedDeadline"
    assert "600s after the scheduled time" in (decision.status.message or "")


def test_deadline_after_a_manual_retry_counts_from_the_request() -> None:
    """The first attempt after a manual retry is due when the retry was asked for."""
    p = post(failed(), retry_request="r1", publish_at=at(-86400), starting_deadline_seconds=60)
    p = _write(p, engine.plan(p, at(-120), DEFAULTS))
    assert p.status.phase is Phase.SCHEDULED
    claim = engine.act(p, at(-120), DEFAULTS, ME)
    assert claim.action is engine.Action.DISPATCH
    p = _write(p, claim)
    # Given back a second ago: the send time is fresh, the request is 120 s old.
    p = _write(p, engine.defer_claim(p, at(-1), at(-1), "the target's circuit is open"))
    late = engine.act(p, NOW, DEFAULTS, ME)
    assert late.status is not None and late.status.phase is Phase.FAILED
    assert late.status.last_error is not None
    assert late.status.last_error.code == "MissedDeadline"
    # Within a longer deadline it is claimed as usual.
    patient = dataclasses.replace(
        p, spec=p.spec.model_copy(update={"starting_deadline_seconds": 600})
    )
    assert engine.act(patient, NOW, DEFAULTS, ME).action is engine.Action.DISPATCH


def test_deadline_does_not_apply_to_retries_of_failed_attempts() -> None:
    p = post(retrying(attempt=1, next_attempt_at=at(-86400)), starting_deadline_seconds=60)
    assert engine.act(p, NOW, DEFAULTS, ME).action is engine.Action.DISPATCH


# --- window 7 ----------------------------------------------------------------------------


def test_ttl_after_a_retry_made_while_suspended_counts_from_the_new_failure() -> None:
    first_failure = at(-7200)
    p = post(
        failed(
            attempt=1,
            conditions=[
                cond("Published", ConditionStatus.FALSE, "PermanentFailure", first_failure)
            ],
        ),
        retry_request="r1",
        suspend=True,
        publish_at=at(-86400),
    )
    p = _write(p, engine.plan(p, at(-600), TTL_DEFAULTS))  # retry asked while suspended
    assert p.status.phase is Phase.SUSPENDED
    resumed = dataclasses.replace(
        p, spec=p.spec.model_copy(update={"suspend": False}), generation=2
    )
    p = _write(resumed, engine.plan(resumed, at(-300), TTL_DEFAULTS))
    claim = engine.act(p, at(-300), TTL_DEFAULTS, ME)
    assert claim.action is engine.Action.DISPATCH
    p = _write(p, claim)
    failure = Failure(ErrorClass.PERMANENT, "HTTP400", "token expired")
    p = _write(p, engine.dispatch_result(p, NOW, failure, TTL_DEFAULTS, ME))
    assert p.status.phase is Phase.FAILED
    assert engine.finished_at(p.status) == NOW, (
        f"finished_at {engine.finished_at(p.status)} is the first failure's time, "
        f"not the new failure's ({NOW}): the TTL would delete the post at once"
    )
    assert engine.wake_at(p, TTL_DEFAULTS, ME) == at(3600)


# --- window 8: a late permanent failure after a stale recovery ----------------------------


def _stale_recovered() -> engine.Post:
    """Attempt 1 was accepted by n8n, no callback came, the operator gave up (Stale)."""
    return post(
        retrying(
            attempt=1,
            dispatched_at=None,
            history=[rec(1, "Stale", "CallbackTimeout")],
            next_attempt_at=at(60),
        )
    )


def test_late_permanent_failure_after_a_stale_recovery_fails_the_post() -> None:
    p = _stale_recovered()
    cb = Callback(1, failure=Failure(ErrorClass.PERMANENT, "LinkedIn401", "token revoked"))
    verdict = engine.callback(p, NOW, cb, DEFAULTS)
    assert verdict.result is CallbackResult.APPLIED, (
        f"n8n's permanent failure of attempt 1 was {verdict.result.value}: the post would "
        "be retried although n8n says it can never work"
    )
    status = verdict.decision.status
    assert status is not None
    round_trip(status)
    assert status.phase is Phase.FAILED
    assert status.next_attempt_at is None
    assert status.last_error is not None and status.last_error.code == "LinkedIn401"
    assert (status.history or [])[-1].attempt == 1
    assert (status.history or [])[-1].outcome == "Permanent"
    published = next(c for c in status.conditions or [] if c.type == "Published")
    assert (published.status, published.reason) == (ConditionStatus.FALSE, "PermanentFailure")
    assert engine.finished_at(status) == NOW


def test_late_permanent_failure_after_the_next_attempt_started_is_a_conflict() -> None:
    p = _stale_recovered()
    later = engine.replace_status(
        p,
        p.status.model_copy(update={"phase": Phase.PUBLISHING, "attempt": 2, "claimed_by": ME}),
    )
    cb = Callback(1, failure=Failure(ErrorClass.PERMANENT, "LinkedIn401", "token revoked"))
    assert engine.callback(later, NOW, cb, DEFAULTS).result is CallbackResult.CONFLICT


def test_late_transient_failure_after_a_stale_recovery_stays_a_duplicate() -> None:
    cb = Callback(1, failure=Failure(ErrorClass.TRANSIENT, "LinkedIn503", "try later"))
    assert engine.callback(_stale_recovered(), NOW, cb, DEFAULTS).result is (
        CallbackResult.DUPLICATE
    )


def test_permanent_failure_of_an_attempt_that_failed_on_its_own_stays_a_duplicate() -> None:
    p = post(retrying(attempt=1))  # history: attempt 1 ended Transient (HTTP503)
    cb = Callback(1, failure=Failure(ErrorClass.PERMANENT, "HTTP400", "bad"))
    assert engine.callback(p, NOW, cb, DEFAULTS).result is CallbackResult.DUPLICATE
