"""The engine's side of issue 20, items 5 and 6 (builders are test_engine.py's).

- The operator's default starting deadline: a post with no deadline of its own that the
  operator can first dispatch more than `Defaults.starting_deadline_seconds` after its
  publishAt fails with MissedDeadline; the post's own deadline overrides the default.
- The kstatus conditions: Ready (True when Scheduled, Suspended or Published, else False
  with the reason), Reconciling (True while Publishing or Retrying, absent otherwise) and
  Stalled (True when Failed, absent otherwise), set by every entry point on the writes it
  makes anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from herald import engine
from herald.engine import Accepted, Action, Callback, Decision, Failure, Guard, Post, Published
from herald.models import ConditionStatus, ErrorClass, Phase, ScheduledPostStatus
from tests.unit.test_engine import (
    DEFAULTS,
    ME,
    NOW,
    at,
    failed,
    post,
    publishing,
    retrying,
    round_trip,
    scheduled,
)

DAY = 86400
WITH_DEFAULT = dataclasses.replace(DEFAULTS, starting_deadline_seconds=DAY)


def due(seconds_ago: float, **spec: Any) -> Post:
    """A Scheduled post whose publishAt (and send time) was `seconds_ago` before NOW."""
    return post(scheduled(next_attempt_at=at(-seconds_ago)), publish_at=at(-seconds_ago), **spec)


# --- the default starting deadline ------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "defaults", "fails"),
    [
        pytest.param(due(3 * DAY), WITH_DEFAULT, True, id="three-days-late-fails"),
        pytest.param(due(DAY + 1), WITH_DEFAULT, True, id="a-second-past-the-default-fails"),
        pytest.param(due(DAY), WITH_DEFAULT, False, id="exactly-the-default-claims"),
        pytest.param(due(30), WITH_DEFAULT, False, id="thirty-seconds-late-claims"),
        pytest.param(due(0), WITH_DEFAULT, False, id="on-time-claims"),
        pytest.param(due(3 * DAY), DEFAULTS, False, id="no-default-publishes-late"),
        pytest.param(
            due(3 * DAY, starting_deadline_seconds=4 * DAY),
            WITH_DEFAULT,
            False,
            id="own-longer-deadline-overrides-the-default",
        ),
        pytest.param(
            due(120, starting_deadline_seconds=60),
            WITH_DEFAULT,
            True,
            id="own-shorter-deadline-overrides-the-default",
        ),
        pytest.param(
            due(5, starting_deadline_seconds=0),
            WITH_DEFAULT,
            True,
            id="own-zero-deadline-means-no-lateness-at-all",
        ),
        pytest.param(
            # publish-now sets publishAt to now: due at once, whatever the default.
            due(0.5),
            dataclasses.replace(WITH_DEFAULT, starting_deadline_seconds=60),
            False,
            id="publish-now",
        ),
        pytest.param(
            post(retrying(attempt=1, next_attempt_at=at(-3 * DAY)), publish_at=at(-4 * DAY)),
            WITH_DEFAULT,
            False,
            id="not-applied-to-retries-of-failed-attempts",
        ),
    ],
)
def test_default_starting_deadline(p: Post, defaults: engine.Defaults, fails: bool) -> None:
    decision = engine.act(p, NOW, defaults, ME)
    if not fails:
        assert decision.action is Action.CLAIM, decision
        return
    assert decision.action is Action.NONE
    assert decision.status is not None
    round_trip(decision.status)
    assert decision.status.phase is Phase.FAILED
    assert decision.status.attempt == 0  # nothing was claimed: nothing went to n8n
    assert decision.status.last_error is not None
    assert decision.status.last_error.code == "MissedDeadline"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "MissedDeadline")]


def test_missed_default_deadline_says_how_late_and_which_setting() -> None:
    decision = engine.act(due(3 * DAY + 7200), NOW, WITH_DEFAULT, ME)
    assert decision.events[0].message == (
        "First dispatch possible 266400s (3d 2h) after the scheduled time, past the "
        "operator's defaultStartingDeadlineSeconds=86400 (spec.startingDeadlineSeconds "
        "overrides it): not publishing late"
    )


def test_missed_own_deadline_names_the_spec_field_and_hours() -> None:
    decision = engine.act(due(5400, starting_deadline_seconds=60), NOW, WITH_DEFAULT, ME)
    assert decision.events[0].message == (
        "First dispatch possible 5400s (1h 30m) after the scheduled time, past "
        "startingDeadlineSeconds=60: not publishing late"
    )


def test_manual_retry_of_a_missed_deadline_publishes_now() -> None:
    """The way out of MissedDeadline: a retry counts from its own request, not publishAt."""
    missed = engine.act(due(3 * DAY), NOW, WITH_DEFAULT, ME)
    assert missed.status is not None
    p = post(missed.status, retry_request="r1", publish_at=at(-3 * DAY))
    retried = engine.plan(p, NOW, WITH_DEFAULT)
    assert retried.status is not None and retried.status.phase is Phase.SCHEDULED
    p = engine.replace_status(p, retried.status)
    assert engine.act(p, at(1), WITH_DEFAULT, ME).action is Action.CLAIM


def test_failed_post_is_not_touched_by_the_default_deadline() -> None:
    assert engine.act(post(failed()), NOW, WITH_DEFAULT, ME) == engine.NOTHING


# --- kstatus conditions -------------------------------------------------------------------

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


def kstatus(st: ScheduledPostStatus) -> dict[str, tuple[ConditionStatus, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions or [] if c.type in engine.KSTATUS}


def written(p: Post, decision: Decision) -> Post:
    assert decision.status is not None, decision
    round_trip(decision.status)
    return engine.replace_status(p, decision.status)


def test_kstatus_conditions_through_a_post_s_life() -> None:
    """Every phase, reached through the entry points the operator and sidecar call."""
    p = post(publish_at=at(5))
    # Pending, nothing written: no conditions and no observedGeneration, which kstatus
    # reads as Current (Flux's health check passes); the claim is the first write.
    assert engine.plan(p, NOW, DEFAULTS) == engine.NOTHING
    assert p.status.phase is Phase.PENDING and kstatus(p.status) == {}
    assert engine.kstatus_conditions(p.status, NOW) is None

    claim = engine.act(p, NOW, DEFAULTS, ME)
    assert claim.action is Action.CLAIM
    p = written(p, claim)
    assert kstatus(p.status) == {"Ready": (F, "Publishing"), "Reconciling": (T, "Publishing")}

    # n8n's 2xx recorded: only dispatchedAt, no condition touched (it commutes with a
    # callback that may have written the conditions meanwhile).
    record = engine.dispatch_result(p, at(6), Accepted(), DEFAULTS, ME)
    assert record.guard is Guard.CLAIM
    assert record.status is not None
    assert record.status.conditions == p.status.conditions
    p = written(p, record)

    transient = Failure(ErrorClass.TRANSIENT, "HTTP503", "n8n busy")
    p = written(p, engine.callback(p, at(7), Callback(1, failure=transient), DEFAULTS).decision)
    assert p.status.phase is Phase.RETRYING
    assert kstatus(p.status) == {"Ready": (F, "Retrying"), "Reconciling": (T, "Retrying")}

    again = engine.act(p, at(200), DEFAULTS, ME)
    p = written(p, again)
    permanent = Failure(ErrorClass.PERMANENT, "HTTP400", "text refused")
    p = written(p, engine.dispatch_result(p, at(201), permanent, DEFAULTS, ME))
    assert p.status.phase is Phase.FAILED
    assert kstatus(p.status) == {
        "Ready": (F, "PermanentFailure"),
        "Stalled": (T, "PermanentFailure"),
    }

    retried = engine.Post(
        p.namespace, p.name, p.uid, p.generation, p.spec, p.status, retry_request="r1"
    )
    p = written(retried, engine.plan(retried, at(300), DEFAULTS))
    assert p.status.phase is Phase.SCHEDULED
    assert kstatus(p.status) == {"Ready": (T, "Scheduled")}

    p = written(p, engine.act(p, at(300), DEFAULTS, ME))
    assert p.status.phase is Phase.PUBLISHING
    done = Callback(p.status.attempt, published=Published("urn:1", "https://x.test/1"))
    p = written(p, engine.callback(p, at(301), done, DEFAULTS).decision)
    assert p.status.phase is Phase.PUBLISHED
    assert kstatus(p.status) == {"Ready": (T, "Published")}
    ready = next(c for c in p.status.conditions or [] if c.type == "Ready")
    assert ready.last_transition_time == at(301)


def test_kstatus_suspended_and_resumed() -> None:
    p = post(suspend=True)
    p = written(p, engine.plan(p, NOW, DEFAULTS))
    assert p.status.phase is Phase.SUSPENDED
    assert kstatus(p.status) == {"Ready": (T, "Suspended")}


def test_kstatus_missed_deadline_is_stalled() -> None:
    decision = engine.act(due(3 * DAY), NOW, WITH_DEFAULT, ME)
    assert decision.status is not None
    assert kstatus(decision.status) == {
        "Ready": (F, "MissedDeadline"),
        "Stalled": (T, "MissedDeadline"),
    }


def test_kstatus_deferred_claim_is_no_longer_reconciling() -> None:
    p = post(publishing(next_attempt_at=at(5), claimed_at=at(-1)), publish_at=at(5))
    p = engine.replace_status(p, engine.with_kstatus(Decision(p.status), NOW).status or p.status)
    assert "Reconciling" in kstatus(p.status)
    given_back = engine.defer_claim(p, NOW, at(60), "the target's circuit is open")
    assert given_back.status is not None
    assert kstatus(given_back.status) == {"Ready": (T, "Scheduled")}


def edit(p: Post, **changes: Any) -> Post:
    spec = p.spec.model_copy(update=changes)
    return engine.Post(p.namespace, p.name, p.uid, p.generation + 1, spec, p.status)


def test_ready_keeps_its_transition_time_while_the_phase_stays() -> None:
    p = post(publish_at=at(120), suspend=True)
    p = written(p, engine.plan(p, NOW, DEFAULTS))  # accepted as Suspended: Ready
    resumed = written(edit(p, suspend=False), engine.plan(edit(p, suspend=False), NOW, DEFAULTS))
    assert resumed.status.phase is Phase.SCHEDULED
    assert kstatus(resumed.status) == {"Ready": (T, "Scheduled")}
    edited = edit(resumed, publish_at=at(240))
    replanned = written(edited, engine.plan(edited, at(10), DEFAULTS))
    ready = next(c for c in replanned.status.conditions or [] if c.type == "Ready")
    assert ready.last_transition_time == NOW  # still Ready since the accept
    assert ready.observed_generation == 3  # but for the new generation
    assert ready.message == replanned.status.message  # "Publishes at …": says when
    assert "2030-01-15T09:04:00Z" in ready.message


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: engine.plan(post(scheduled()), NOW, DEFAULTS), id="plan"),
        pytest.param(lambda: engine.act(post(scheduled()), NOW, DEFAULTS, ME), id="act-early"),
        pytest.param(lambda: engine.act(post(failed()), NOW, DEFAULTS, ME), id="act-failed"),
    ],
)
def test_kstatus_adds_no_write(make: Any) -> None:
    """A decision that writes nothing still writes nothing: the conditions only ride on
    writes that happen anyway (status writes per post are unchanged)."""
    assert make() == engine.NOTHING
