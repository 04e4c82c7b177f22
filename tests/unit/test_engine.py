"""The ScheduledPost state machine (herald.engine), transition by transition.

Every transition is a row in a table: a post as it is, an input, and the status fields
the decision must change (every other field must stay as it was), the events (type,
reason) it must emit and the action. `now` is fixed; jitter is off in the tables so that
retry times are exact. Every status a transition returns must survive the round trip
through the JSON the API server stores.

Posts are claimed ahead of their send time, by `claim_offset(uid, me, 30 s)`: a fixed
number of seconds in [10, 30] for the post and instance the tables use (AHEAD). Rows that
must claim put the send time at most 10 s ahead of `now`, rows that must not at least
31 s ahead, so they hold whatever the offset; only wake_at's exact times use AHEAD.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
import types
from typing import Any

import pytest

from herald import engine
from herald.engine import (
    NOTHING,
    Accepted,
    Action,
    Callback,
    CallbackResult,
    Decision,
    Defaults,
    Failure,
    Guard,
    Policy,
    Post,
    Published,
)
from herald.models import (
    HISTORY_LIMIT,
    RETRY_ANNOTATION,
    AttemptRecord,
    Condition,
    ConditionStatus,
    Content,
    ErrorClass,
    LastError,
    Phase,
    RetryPolicy,
    ScheduledPostSpec,
    ScheduledPostStatus,
)

# --- fixed time and identities ---------------------------------------------------------

NOW = dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=dt.UTC)
PUBLISH_AT = NOW + dt.timedelta(hours=1)  # 2030-01-15T10:00:00Z
EARLIER = NOW - dt.timedelta(days=1)  # when the existing conditions were set
ME = "herald-0/aaaa"
ME_BEFORE_RESTART = "herald-0/bbbb"
OTHER = "herald-1/cccc"
UID = "0b1f6a52-1c47-4c2e-9d7a-3f0e5c8a9d10"

# Jitter off so retry times are exact; three attempts so exhaustion is short.
DEFAULTS = Defaults(
    max_attempts=3,
    backoff_seconds=60,
    max_backoff_seconds=3600,
    stale_after_seconds=600,
    jitter_ratio=0.0,
    claim_timeout_seconds=30.0,
    claim_ahead_seconds=30.0,
)
# How long before its send time ME claims the post UID (tested on its own below).
AHEAD = engine.claim_offset(UID, ME, DEFAULTS.claim_ahead_seconds)

UNKNOWN, TRUE, FALSE = ConditionStatus.UNKNOWN, ConditionStatus.TRUE, ConditionStatus.FALSE
SCHEDULED_MSG = "Publishes at 2030-01-15T10:00:00Z via target default"


def at(seconds: float) -> dt.datetime:
    """NOW shifted by `seconds` (negative: in the past)."""
    return NOW + dt.timedelta(seconds=seconds)


# --- builders --------------------------------------------------------------------------


def spec(**changes: Any) -> ScheduledPostSpec:
    fields: dict[str, Any] = {"publish_at": PUBLISH_AT, "content": Content(text="hello")}
    fields.update(changes)
    return ScheduledPostSpec(**fields)


def cond(
    type_: str, status: ConditionStatus, reason: str, since: dt.datetime = EARLIER
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message="set earlier",
        last_transition_time=since,
        observed_generation=1,
    )


def rec(attempt: int, outcome: str, code: str | None = None) -> AttemptRecord:
    return AttemptRecord(
        attempt=attempt,
        claimed_at=EARLIER,
        finished_at=EARLIER + dt.timedelta(seconds=attempt),
        outcome=outcome,
        code=code,
        message=f"{outcome} earlier" if code else None,
    )


def error(klass: ErrorClass, code: str) -> LastError:
    return LastError(class_=klass, code=code, message="earlier failure", at=EARLIER)


def status(phase: Phase | None, **fields: Any) -> ScheduledPostStatus:
    return ScheduledPostStatus(phase=phase, **fields)


def scheduled(**fields: Any) -> ScheduledPostStatus:
    base: dict[str, Any] = {
        "attempt": 0,
        "next_attempt_at": PUBLISH_AT,
        "observed_generation": 1,
        "message": SCHEDULED_MSG,
        "conditions": [cond("Published", UNKNOWN, "Pending")],
    }
    return status(Phase.SCHEDULED, **{**base, **fields})


def publishing(attempt: int = 1, **fields: Any) -> ScheduledPostStatus:
    """Claimed by ME, whose send time (nextAttemptAt) came a second ago."""
    base: dict[str, Any] = {
        "attempt": attempt,
        "next_attempt_at": at(-1),
        "claimed_at": at(-1),
        "claimed_by": ME,
        "claimed_generation": 1,
        "observed_generation": 1,
        "message": f"Claimed attempt {attempt}: dispatching to target default at "
        "2030-01-15T08:59:59Z",
        "conditions": [cond("Published", UNKNOWN, "Pending")],
        "history": [rec(n, "Transient", "HTTP503") for n in range(1, attempt)] or None,
    }
    return status(Phase.PUBLISHING, **{**base, **fields})


def retrying(attempt: int = 1, **fields: Any) -> ScheduledPostStatus:
    base: dict[str, Any] = {
        "attempt": attempt,
        "next_attempt_at": at(100),
        "claimed_at": EARLIER,
        "claimed_by": ME,
        "claimed_generation": 1,
        "observed_generation": 1,
        "last_error": error(ErrorClass.TRANSIENT, "HTTP503"),
        "message": "retrying",
        "conditions": [cond("Published", UNKNOWN, "Pending")],
        "history": [rec(n, "Transient", "HTTP503") for n in range(1, attempt + 1)],
    }
    return status(Phase.RETRYING, **{**base, **fields})


def failed(attempt: int = 3, **fields: Any) -> ScheduledPostStatus:
    base: dict[str, Any] = {
        "attempt": attempt,
        "claimed_at": EARLIER,
        "claimed_by": ME,
        "claimed_generation": 1,
        "dispatched_at": EARLIER,
        "observed_generation": 1,
        "last_error": error(ErrorClass.PERMANENT, "HTTP400"),
        "message": "failed",
        "conditions": [cond("Published", FALSE, "PermanentFailure")],
        "history": [rec(n, "Transient", "HTTP503") for n in range(1, attempt)]
        + [rec(attempt, "Permanent", "HTTP400")],
    }
    return status(Phase.FAILED, **{**base, **fields})


def published(attempt: int = 1, **fields: Any) -> ScheduledPostStatus:
    base: dict[str, Any] = {
        "attempt": attempt,
        "claimed_at": EARLIER,
        "claimed_by": ME,
        "claimed_generation": 1,
        "dispatched_at": EARLIER,
        "published_at": EARLIER,
        "external_id": "urn:li:share:1",
        "external_url": "https://social.example/1",
        "observed_generation": 1,
        "message": "published",
        "conditions": [cond("Published", TRUE, "CallbackReceived")],
        "history": [rec(attempt, "Published")],
    }
    return status(Phase.PUBLISHED, **{**base, **fields})


def suspended(attempt: int = 0, **fields: Any) -> ScheduledPostStatus:
    base: dict[str, Any] = {
        "attempt": attempt,
        "observed_generation": 1,
        "message": "Suspended by spec.suspend",
        "conditions": [cond("Published", UNKNOWN, "Pending")],
    }
    return status(Phase.SUSPENDED, **{**base, **fields})


def post(
    st: ScheduledPostStatus | None = None,
    *,
    generation: int = 1,
    retry_request: str | None = None,
    uid: str = UID,
    **spec_changes: Any,
) -> Post:
    return Post(
        namespace="marketing",
        name="launch",
        uid=uid,
        generation=generation,
        spec=spec(**spec_changes),
        status=st if st is not None else ScheduledPostStatus(),
        retry_request=retry_request,
    )


# --- comparing decisions ---------------------------------------------------------------


class Has:
    """Equal to any string containing all of `parts`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and all(p in other for p in self.parts)

    def __hash__(self) -> int:
        return hash(self.parts)

    def __repr__(self) -> str:
        return f"Has{self.parts!r}"


def view(st: ScheduledPostStatus) -> dict[str, Any]:
    """Every status field as a plain, comparable value."""
    out: dict[str, Any] = {name: getattr(st, name) for name in ScheduledPostStatus.model_fields}
    # The kstatus conditions (Ready, Reconciling, Stalled) are a function of the phase,
    # checked for every phase by test_engine_gitops.py; the tables here are about the rest.
    out["conditions"] = (
        None
        if st.conditions is None
        else {
            c.type: (c.status.value, c.reason)
            for c in st.conditions
            if c.type not in engine.KSTATUS
        }
    )
    out["history"] = (
        None
        if st.history is None
        else [(r.attempt, r.outcome, r.code, r.finished_at) for r in st.history]
    )
    out["last_error"] = (
        None
        if st.last_error is None
        else (st.last_error.class_.value, st.last_error.code, st.last_error.at)
    )
    return out


def own(st: ScheduledPostStatus) -> list[Condition]:
    """The conditions other than the kstatus ones (tested in test_engine_gitops.py)."""
    return [c for c in st.conditions or [] if c.type not in engine.KSTATUS]


def round_trip(st: ScheduledPostStatus) -> None:
    """The status survives being written to, and read back from, the API server."""
    dumped = st.model_dump(by_alias=True, exclude_none=True, mode="json")
    back = ScheduledPostStatus.model_validate(dumped)
    assert back.model_dump(by_alias=True, exclude_none=True, mode="json") == dumped
    assert back == st


def check(
    decision: Decision,
    before: ScheduledPostStatus,
    changes: dict[str, Any] | None,
    events: list[tuple[str, str]],
    action: Action = Action.NONE,
) -> None:
    """`changes=None`: no status to write, only `action` (NOTHING for Action.NONE).
    Otherwise exactly `changes` differ."""
    if changes is None:
        assert decision == Decision(action=action)
        assert events == []
        return
    assert decision.status is not None
    assert {**view(before), **changes} == view(decision.status)
    assert [(e.type, e.reason) for e in decision.events] == events
    assert decision.action is action
    round_trip(decision.status)


# --- plan: accept ----------------------------------------------------------------------

# --- a new post: Pending (the CRD default), read as planned, no accept write -------------

AS_PLANNED = [
    pytest.param(
        post(),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": PUBLISH_AT,
            "observed_generation": 1,
            "message": SCHEDULED_MSG,
        },
        id="new-post-is-scheduled-at-publishAt",
    ),
    pytest.param(
        post(generation=4, target="eu-west"),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": PUBLISH_AT,
            "observed_generation": 4,
            "message": "Publishes at 2030-01-15T10:00:00Z via target eu-west",
        },
        id="new-post-records-its-generation-and-target",
    ),
    pytest.param(
        post(publish_at=at(-3600)),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": at(-3600),
            "observed_generation": 1,
            "message": "Publishes at 2030-01-15T08:00:00Z via target default",
        },
        id="new-post-in-the-past-is-due-at-once",
    ),
]


@pytest.mark.parametrize(("p", "changes"), AS_PLANNED)
def test_a_new_post_reads_as_scheduled_without_a_write(p: Post, changes: dict[str, Any]) -> None:
    """Pending is what the API server shows before any write; the state machine reads
    it as the accept would have written it, and plan() writes nothing."""
    assert p.status.phase is Phase.PENDING
    check(engine.plan(p, NOW, DEFAULTS), p.status, None, [])
    assert not engine.needs_plan(p)
    planned = engine.as_planned(p)
    assert {**view(p.status), **changes} == view(planned.status)
    assert engine.as_planned(planned) == planned


# --- plan: accept (a new post that needs a write before its claim) ---------------------

ACCEPT = [
    pytest.param(
        post(suspend=True),
        {
            "phase": Phase.SUSPENDED,
            "attempt": 0,
            "next_attempt_at": None,
            "observed_generation": 1,
            "message": "Suspended by spec.suspend",
            "conditions": {"Published": ("Unknown", "Pending")},
        },
        [("Normal", "Suspended")],
        id="new-suspended-post-is-suspended",
    ),
    pytest.param(
        post(retry_request="2030-01-01T00:00:00Z"),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": PUBLISH_AT,
            "observed_generation": 1,
            "message": SCHEDULED_MSG,
            "conditions": {"Published": ("Unknown", "Pending")},
            "last_handled_retry_request": "2030-01-01T00:00:00Z",
        },
        [("Normal", "Scheduled")],
        id="new-post-with-retry-annotation-marks-it-handled",
    ),
]


@pytest.mark.parametrize(("p", "changes", "events"), ACCEPT)
def test_accept(p: Post, changes: dict[str, Any], events: list[tuple[str, str]]) -> None:
    check(engine.plan(p, NOW, DEFAULTS), p.status, changes, events)


def test_accept_sets_published_condition_details() -> None:
    p = post(generation=2, retry_request="r0")
    decision = engine.plan(p, NOW.replace(microsecond=654321), DEFAULTS)
    assert decision.status is not None
    assert own(decision.status) == [
        Condition(
            type="Published",
            status=UNKNOWN,
            reason="Pending",
            message="Not published yet",
            last_transition_time=NOW,  # microseconds dropped
            observed_generation=2,
        )
    ]
    assert decision.events[0].message == SCHEDULED_MSG


# --- plan: spec changes (generation 2, observed 1) -------------------------------------

SPEC_CHANGED = [
    pytest.param(
        post(scheduled(), generation=2, publish_at=at(7200)),
        {
            "next_attempt_at": at(7200),
            "observed_generation": 2,
            "message": "Publishes at 2030-01-15T11:00:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        id="scheduled-replan-new-publishAt",
    ),
    pytest.param(
        post(scheduled(), generation=2, suspend=True),
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "observed_generation": 2,
            "message": "Suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        id="scheduled-suspend",
    ),
    pytest.param(
        post(retrying(attempt=2, next_attempt_at=at(100)), generation=2, publish_at=at(1000)),
        {
            "next_attempt_at": at(1000),
            "observed_generation": 2,
            "message": "Attempt 3 at 2030-01-15T09:16:40Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        id="retrying-replan-later-publishAt-moves-the-retry",
    ),
    pytest.param(
        post(retrying(attempt=2, next_attempt_at=at(100)), generation=2, publish_at=at(-50)),
        {
            "next_attempt_at": at(100),
            "observed_generation": 2,
            "message": "Attempt 3 at 2030-01-15T09:01:40Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        id="retrying-replan-earlier-publishAt-keeps-the-backoff",
    ),
    pytest.param(
        post(retrying(attempt=2), generation=2, suspend=True),
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "observed_generation": 2,
            "message": "Suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        id="retrying-suspend-keeps-the-attempt-count",
    ),
    pytest.param(
        post(suspended(attempt=0), generation=2),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": PUBLISH_AT,
            "observed_generation": 2,
            "message": SCHEDULED_MSG,
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Resumed")],
        id="suspended-resume-attempt-0-to-scheduled",
    ),
    pytest.param(
        post(suspended(attempt=0), generation=2, publish_at=at(-600)),
        {
            "phase": Phase.SCHEDULED,
            "next_attempt_at": at(-600),
            "observed_generation": 2,
            "message": "Publishes at 2030-01-15T08:50:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Resumed")],
        id="suspended-resume-attempt-0-past-publishAt",
    ),
    pytest.param(
        post(suspended(attempt=2), generation=2, publish_at=at(-600)),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": NOW,
            "observed_generation": 2,
            "message": "Attempt 3 at 2030-01-15T09:00:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Resumed")],
        id="suspended-resume-attempt-2-to-retrying-now",
    ),
    pytest.param(
        post(suspended(attempt=2), generation=2),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": PUBLISH_AT,
            "observed_generation": 2,
            "message": "Attempt 3 at 2030-01-15T10:00:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Resumed")],
        id="suspended-resume-attempt-2-future-publishAt",
    ),
    pytest.param(
        post(suspended(), generation=2, suspend=True, publish_at=at(99)),
        {"observed_generation": 2},
        [],
        id="suspended-edit-while-still-suspended",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-1)), generation=2, publish_at=at(7200)),
        {
            "observed_generation": 2,
            "conditions": {
                "Published": ("Unknown", "Pending"),
                "SpecApplied": ("False", "ChangedAfterDispatch"),
            },
        },
        [("Warning", "ChangedAfterDispatch")],
        id="publishing-dispatched-edit-has-no-effect",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-1)), generation=2, suspend=True),
        {
            "observed_generation": 2,
            "conditions": {
                "Published": ("Unknown", "Pending"),
                "SpecApplied": ("False", "ChangedAfterDispatch"),
            },
        },
        [("Warning", "ChangedAfterDispatch")],
        id="publishing-dispatched-suspend-has-no-effect",
    ),
    pytest.param(
        post(publishing(), generation=2, publish_at=at(7200)),
        None,
        [],
        id="publishing-unsent-edit-left-to-the-holder",
    ),
    pytest.param(
        post(published(), generation=2, content=Content(text="edited")),
        {
            "observed_generation": 2,
            "conditions": {
                "Published": ("True", "CallbackReceived"),
                "SpecApplied": ("False", "ChangedAfterDispatch"),
            },
        },
        [("Warning", "ChangedAfterDispatch")],
        id="published-edit-has-no-effect",
    ),
    pytest.param(
        post(failed(), generation=2, content=Content(text="fixed")),
        {"observed_generation": 2},
        [],
        id="failed-edit-only-observed",
    ),
    pytest.param(
        post(scheduled()),
        None,
        [],
        id="scheduled-unchanged-nothing",
    ),
    pytest.param(
        post(failed()),
        None,
        [],
        id="failed-unchanged-nothing",
    ),
]


@pytest.mark.parametrize(("p", "changes", "events"), SPEC_CHANGED)
def test_plan_spec_changes(
    p: Post, changes: dict[str, Any] | None, events: list[tuple[str, str]]
) -> None:
    check(engine.plan(p, NOW, DEFAULTS), p.status, changes, events)


# --- plan: spec changes while a claim is not sent yet (plan asked by `me`) -----------------

RELEASED = {
    "phase": Phase.SCHEDULED,
    "attempt": 0,
    "claimed_at": None,
    "claimed_by": None,
    "claimed_generation": None,
    "observed_generation": 2,
    "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
}
RELEASED_MSG = "Spec changed before the post was sent: attempt {} released unsent; "

PLAN_CLAIMED = [
    pytest.param(
        post(publishing(), generation=2, publish_at=at(7200)),
        ME,
        {
            **RELEASED,
            "next_attempt_at": at(7200),
            "message": RELEASED_MSG.format(1)
            + "Publishes at 2030-01-15T11:00:00Z via target default",
        },
        [("Normal", "Rescheduled")],
        id="holder-releases-attempt-1-to-scheduled-at-the-new-time",
    ),
    pytest.param(
        post(publishing(next_attempt_at=at(20)), generation=2, content=Content(text="fixed")),
        ME,
        {
            **RELEASED,
            "next_attempt_at": PUBLISH_AT,
            "message": RELEASED_MSG.format(1) + SCHEDULED_MSG,
        },
        [("Normal", "Rescheduled")],
        id="holder-releases-claimed-ahead-text-edit-replans-from-publishAt",
    ),
    pytest.param(
        post(
            publishing(attempt=2, next_attempt_at=at(100)),
            generation=2,
            content=Content(text="fixed"),
            publish_at=at(-50),
        ),
        ME,
        {
            **RELEASED,
            "phase": Phase.RETRYING,
            "attempt": 1,
            "next_attempt_at": at(100),
            "message": RELEASED_MSG.format(2)
            + "Attempt 2 at 2030-01-15T09:01:40Z via target default",
        },
        [("Normal", "Rescheduled")],
        id="holder-releases-attempt-2-to-retrying-keeping-the-backoff",
    ),
    pytest.param(
        post(
            publishing(attempt=4, retry_epoch=1, retry_base_attempt=3),
            generation=2,
            publish_at=at(-3600),
        ),
        ME,
        {
            **RELEASED,
            "attempt": 3,
            "next_attempt_at": NOW,
            "message": RELEASED_MSG.format(4)
            + "Publishes at 2030-01-15T09:00:00Z via target default",
        },
        [("Normal", "Rescheduled")],
        id="holder-releases-first-attempt-after-manual-retry-to-scheduled-now",
    ),
    pytest.param(
        post(publishing(), generation=2, suspend=True),
        ME,
        {
            **RELEASED,
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "conditions": {"Published": ("Unknown", "Pending")},
            "message": RELEASED_MSG.format(1) + "Suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        id="holder-releases-to-suspended",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER), generation=2, publish_at=at(7200)),
        ME,
        None,
        [],
        id="claimed-by-other-identity-nothing",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART), generation=2, publish_at=at(7200)),
        ME,
        None,
        [],
        id="claimed-by-my-previous-incarnation-nothing",
    ),
    pytest.param(
        post(publishing(), generation=2, publish_at=at(7200)),
        None,
        None,
        [],
        id="asked-by-no-instance-nothing",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-1)), generation=2, publish_at=at(7200)),
        ME,
        {
            "observed_generation": 2,
            "conditions": {
                "Published": ("Unknown", "Pending"),
                "SpecApplied": ("False", "ChangedAfterDispatch"),
            },
        },
        [("Warning", "ChangedAfterDispatch")],
        id="holder-of-a-dispatched-claim-cannot-release-it",
    ),
    pytest.param(
        post(publishing()),
        ME,
        None,
        [],
        id="holder-without-spec-change-nothing",
    ),
]


@pytest.mark.parametrize(("p", "me", "changes", "events"), PLAN_CLAIMED)
def test_plan_spec_change_of_an_unsent_claim(
    p: Post, me: str | None, changes: dict[str, Any] | None, events: list[tuple[str, str]]
) -> None:
    decision = engine.plan(p, NOW, DEFAULTS, me)
    check(decision, p.status, changes, events)
    if me is not None and decision != NOTHING:
        # act() plans first: the holder releases instead of sending the old spec.
        assert engine.act(p, NOW, DEFAULTS, me) == decision


def test_changed_after_dispatch_message_and_condition() -> None:
    decision = engine.plan(post(published(), generation=5), NOW, DEFAULTS)
    assert decision.status is not None
    applied = {c.type: c for c in decision.status.conditions or []}["SpecApplied"]
    assert applied.observed_generation == 5
    assert applied.last_transition_time == NOW
    assert applied.message == (
        "Spec changed (generation 5) after the post was dispatched: the post was published "
        "as it was dispatched; the change has no effect"
    )
    assert decision.events[0].message == applied.message


def test_replan_leaves_published_condition_time_alone() -> None:
    decision = engine.plan(post(scheduled(), generation=2, publish_at=at(60)), NOW, DEFAULTS)
    assert decision.status is not None
    conditions = {c.type: c for c in decision.status.conditions or []}
    assert conditions["Published"].last_transition_time == EARLIER
    assert conditions["SpecApplied"].last_transition_time == NOW
    assert [c.type for c in own(decision.status)] == ["Published", "SpecApplied"]


# --- plan: the retry annotation ----------------------------------------------------------


def retry_reset(base: int, epoch: int = 1, request: str = "r1") -> dict[str, Any]:
    """A manual retry: attempt numbers keep counting from `base`, the epoch moves on."""
    return {
        "phase": Phase.SCHEDULED,
        "retry_epoch": epoch,
        "retry_base_attempt": base,
        "next_attempt_at": NOW,
        "claimed_at": None,
        "claimed_by": None,
        "claimed_generation": None,
        "dispatched_at": None,
        "last_handled_retry_request": request,
        "message": f"Retry requested ({request}): attempts reset, dispatching now",
        "conditions": {"Published": ("Unknown", "RetryRequested")},
    }


RETRY = [
    pytest.param(
        post(failed(), retry_request="r1"),
        retry_reset(base=3),
        [("Normal", "RetryRequested")],
        id="failed-retry-keeps-attempt-and-starts-epoch-1",
    ),
    pytest.param(
        post(retrying(attempt=2), retry_request="r1"),
        retry_reset(base=2),
        [("Normal", "RetryRequested")],
        id="retrying-retry-starts-epoch-1-now",
    ),
    pytest.param(
        post(failed(last_handled_retry_request="r0"), retry_request="r1"),
        retry_reset(base=3),
        [("Normal", "RetryRequested")],
        id="failed-new-retry-value-resets-again",
    ),
    pytest.param(
        post(
            failed(attempt=6, retry_epoch=1, retry_base_attempt=3, last_handled_retry_request="r1"),
            retry_request="r2",
        ),
        retry_reset(base=6, epoch=2, request="r2"),
        [("Normal", "RetryRequested")],
        id="second-manual-retry-starts-epoch-2-at-the-current-attempt",
    ),
    pytest.param(
        post(failed(), generation=3, retry_request="r1", content=Content(text="fixed")),
        {**retry_reset(base=3), "observed_generation": 3},
        [("Normal", "RetryRequested")],
        id="failed-retry-with-edit-observes-generation",
    ),
    pytest.param(
        post(failed(), retry_request="r1", suspend=True),
        {
            **retry_reset(base=3),
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "message": "Retry requested (r1): attempts reset; suspended by spec.suspend",
            "conditions": {"Published": ("Unknown", "RetryRequested")},
        },
        [("Normal", "RetryRequested")],
        id="failed-retry-while-suspended-suspends",
    ),
    pytest.param(
        post(scheduled(), retry_request="r1"),
        {"last_handled_retry_request": "r1"},
        [("Warning", "RetryIgnored")],
        id="scheduled-retry-ignored",
    ),
    pytest.param(
        post(publishing(), retry_request="r1"),
        {"last_handled_retry_request": "r1"},
        [("Warning", "RetryIgnored")],
        id="publishing-retry-ignored",
    ),
    pytest.param(
        post(published(), retry_request="r1"),
        {"last_handled_retry_request": "r1"},
        [("Warning", "RetryIgnored")],
        id="published-retry-ignored",
    ),
    pytest.param(
        post(suspended(), retry_request="r1"),
        {"last_handled_retry_request": "r1"},
        [("Warning", "RetryIgnored")],
        id="suspended-retry-ignored",
    ),
    pytest.param(
        post(failed(last_handled_retry_request="r1"), retry_request="r1"),
        None,
        [],
        id="failed-same-retry-value-twice-nothing",
    ),
    pytest.param(
        post(published(last_handled_retry_request="r1"), retry_request="r1"),
        None,
        [],
        id="published-same-retry-value-twice-nothing",
    ),
    pytest.param(
        post(failed(last_handled_retry_request="r1"), retry_request=None),
        None,
        [],
        id="failed-annotation-removed-nothing",
    ),
]


@pytest.mark.parametrize(("p", "changes", "events"), RETRY)
def test_plan_retry_annotation(
    p: Post, changes: dict[str, Any] | None, events: list[tuple[str, str]]
) -> None:
    check(engine.plan(p, NOW, DEFAULTS), p.status, changes, events)


def test_retry_ignored_message_names_the_phase() -> None:
    decision = engine.plan(post(published(), retry_request="r1"), NOW, DEFAULTS)
    assert decision.events[0].message == (
        "Retry request ignored: the post is Published, retries apply to Failed posts"
    )


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(post(retry_request="r" * 300), id="accept"),
        pytest.param(post(failed(), retry_request="r" * 300), id="failed-retry"),
        pytest.param(post(published(), retry_request="r" * 300), id="retry-ignored"),
    ],
)
def test_long_retry_annotation_still_gives_a_valid_status(p: Post) -> None:
    """Annotation values are free text of any length, but lastHandledRetryRequest has
    maxLength 256 in the model and the CRD: echoing a 300-character value yields a status
    the API server rejects (and that does not validate back)."""
    decision = engine.plan(p, NOW, DEFAULTS)
    assert decision.status is not None
    round_trip(decision.status)
    # ...and handling it once is enough: the same value is not handled again.
    assert engine.plan(post(decision.status, retry_request="r" * 300), NOW, DEFAULTS) == NOTHING


def test_retry_of_failed_post_then_act_claims_the_next_attempt_number() -> None:
    first = engine.plan(post(failed(), retry_request="r1"), NOW, DEFAULTS)
    assert first.status is not None
    again = post(first.status, retry_request="r1")
    assert engine.plan(again, NOW, DEFAULTS) == NOTHING
    claim = engine.act(again, NOW, DEFAULTS, ME)
    assert claim.action is Action.CLAIM
    assert claim.status is not None
    # Attempt numbers are never reused: attempt 3's token and webhook-id stay spent.
    assert (claim.status.phase, claim.status.attempt) == (Phase.PUBLISHING, 4)
    assert (claim.status.retry_epoch, claim.status.retry_base_attempt) == (1, 3)
    assert engine.epoch_attempts(claim.status) == 1


def test_manual_retry_gets_a_full_set_of_attempts_and_a_new_idempotency_key() -> None:
    """Three attempts failed (max_attempts=3); after the retry, attempts 4, 5 and 6 are
    the new epoch's 1st, 2nd and 3rd, and the 3rd failure exhausts them again."""
    retried = engine.plan(post(failed(), retry_request="r1"), NOW, DEFAULTS).status
    assert retried is not None
    assert engine.idempotency_key(UID, retried.retry_epoch) == f"{UID}.1"
    assert engine.idempotency_key(UID, 0) == UID
    p = post(retried, retry_request="r1")
    seen: list[tuple[int, Phase | None, str | None]] = []
    for _ in range(3):
        claim = engine.act(p, NOW, DEFAULTS, ME)
        assert claim.action is Action.CLAIM, seen
        assert claim.status is not None
        p = post(claim.status, retry_request="r1")
        result = engine.dispatch_result(p, NOW, TRANSIENT, DEFAULTS, ME).status
        assert result is not None
        seen.append((result.attempt, result.phase, result.message))
        # Jump to the retry time so the next act() claims.
        p = post(result.model_copy(update={"next_attempt_at": NOW}), retry_request="r1")
    assert [(a, ph) for a, ph, _ in seen] == [
        (4, Phase.RETRYING),
        (5, Phase.RETRYING),
        (6, Phase.FAILED),
    ]
    assert seen[0][2] == Has("Attempt 4 failed (HTTP503)", "attempt 2 of 3 at 2030-01-15T09:01:00Z")
    assert seen[1][2] == Has("Attempt 5 failed (HTTP503)", "attempt 3 of 3 at 2030-01-15T09:02:00Z")
    assert seen[2][2] == "Attempt 3 of 3 failed (HTTP503): n8n answered 503: busy; no attempts left"


@pytest.mark.parametrize(
    ("attempt", "base", "expected"),
    [
        pytest.param(0, 0, 0, id="new-post"),
        pytest.param(3, 0, 3, id="no-manual-retry"),
        pytest.param(3, 3, 0, id="just-retried"),
        pytest.param(5, 3, 2, id="two-since-retry"),
        pytest.param(2, 3, 0, id="below-base-never-negative"),
    ],
)
def test_epoch_attempts(attempt: int, base: int, expected: int) -> None:
    st = status(Phase.RETRYING, attempt=attempt, retry_base_attempt=base)
    assert engine.epoch_attempts(st) == expected


@pytest.mark.parametrize(
    ("history", "base", "expected"),
    [
        pytest.param([rec(1, "Orphaned")], 0, 2, id="an-orphan-is-not-the-posts-failure"),
        pytest.param(
            [rec(1, "Orphaned"), rec(2, "Orphaned")], 0, 1, id="two-orphans-of-three-attempts"
        ),
        pytest.param([rec(1, "Orphaned")], 1, 2, id="orphan-before-the-manual-retry-counts-0"),
    ],
)
def test_orphaned_attempts_do_not_use_the_retry_budget(
    history: list[Any], base: int, expected: int
) -> None:
    st = status(Phase.RETRYING, attempt=3, retry_base_attempt=base, history=history)
    assert engine.epoch_attempts(st) == expected


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        pytest.param(0, UID, id="first-publication-is-the-uid"),
        pytest.param(1, f"{UID}.1", id="after-one-retry"),
        pytest.param(12, f"{UID}.12", id="after-twelve"),
    ],
)
def test_idempotency_key(epoch: int, expected: str) -> None:
    assert engine.idempotency_key(UID, epoch) == expected


def test_retry_of_failed_suspended_post_does_not_dispatch() -> None:
    """spec.suspend: "While true, the post is not dispatched" - a retry must not override it.

    A Failed post was suspended (the edit was observed while Failed), then someone asks
    for a retry. The retry resets the post to Scheduled at `now` without looking at
    spec.suspend, and act() then claims and dispatches the suspended post.
    """
    failed_and_suspended = post(failed(observed_generation=2), generation=2, suspend=True)
    assert engine.plan(failed_and_suspended, NOW, DEFAULTS) == NOTHING
    retried = engine.plan(
        post(failed(observed_generation=2), generation=2, suspend=True, retry_request="r1"),
        NOW,
        DEFAULTS,
    )
    assert retried.status is not None
    after = post(retried.status, generation=2, suspend=True, retry_request="r1")
    decision = engine.act(after, at(1), DEFAULTS, ME)
    assert decision.action is not Action.CLAIM, "a suspended post was dispatched"
    assert retried.status.phase is Phase.SUSPENDED


# --- act -------------------------------------------------------------------------------


def claimed(attempt: int, send: dt.datetime = NOW) -> dict[str, Any]:
    """ME claims `attempt` now, to send it at `send`."""
    return {
        "phase": Phase.PUBLISHING,
        "attempt": attempt,
        "claimed_at": NOW,
        "claimed_by": ME,
        "claimed_generation": 1,
        "dispatched_at": None,
        "next_attempt_at": send,
        "message": f"Claimed attempt {attempt}: dispatching to target default at "
        + send.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


CLAIM_1 = claimed(1)
DEADLINE_MSG = (
    "First dispatch possible 61s after the scheduled time, past startingDeadlineSeconds=60: "
    "not publishing late"
)
ORPHAN = "Claim by herald-1/cccc was orphaned: attempt 1 released unsent; "


def reclaimed(old: int, by: str = OTHER, send: dt.datetime = NOW) -> dict[str, Any]:
    """ME takes over the orphaned claim of attempt `old` (a `publishing(old)` post) and
    re-dispatches it as attempt old + 1, recording the orphan in the history."""
    return {
        "attempt": old + 1,
        "claimed_at": NOW,
        "claimed_by": ME,
        "next_attempt_at": send,
        "history": [
            *(
                (n, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=n))
                for n in range(1, old)
            ),
            (old, "Orphaned", None, NOW),
        ],
        "message": f"Re-dispatching as attempt {old + 1}: claim of attempt {old} by {by} "
        "was orphaned",
    }


ACT = [
    pytest.param(
        post(scheduled(next_attempt_at=at(31))),
        None,
        [],
        Action.NONE,
        id="scheduled-not-yet-in-the-claim-window",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(10))),
        claimed(1, send=at(10)),
        [],
        Action.CLAIM,
        id="scheduled-claimed-ahead-keeps-its-send-time",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW)),
        CLAIM_1,
        [],
        Action.CLAIM,
        id="scheduled-due-claims-attempt-1",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-86400))),
        CLAIM_1,
        [],
        Action.CLAIM,
        id="scheduled-overdue-without-deadline-claims-to-send-now",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW, observed_generation=3), generation=3),
        {**CLAIM_1, "claimed_generation": 3},
        [],
        Action.CLAIM,
        id="claim-records-the-generation-it-sends",
    ),
    pytest.param(
        post(retrying(attempt=2, next_attempt_at=at(-5))),
        claimed(3),
        [],
        Action.CLAIM,
        id="retrying-due-claims-next-attempt",
    ),
    pytest.param(
        post(retrying(attempt=2, next_attempt_at=at(5))),
        claimed(3, send=at(5)),
        [],
        Action.CLAIM,
        id="retrying-claimed-ahead",
    ),
    pytest.param(
        post(retrying(attempt=1, next_attempt_at=at(31))),
        None,
        [],
        Action.NONE,
        id="retrying-not-yet-in-the-claim-window",
    ),
    pytest.param(
        post(
            retrying(attempt=4, retry_epoch=1, retry_base_attempt=3, next_attempt_at=NOW),
        ),
        claimed(5),
        [],
        Action.CLAIM,
        id="after-manual-retry-attempt-numbers-keep-counting",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-61)), publish_at=at(-61), starting_deadline_seconds=60),
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Deadline", "MissedDeadline", NOW),
            "message": DEADLINE_MSG,
            "conditions": {"Published": ("False", "MissedDeadline")},
        },
        [("Warning", "MissedDeadline")],
        Action.NONE,
        id="missed-deadline-fails",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-60)), publish_at=at(-60), starting_deadline_seconds=60),
        CLAIM_1,
        [],
        Action.CLAIM,
        id="exactly-at-deadline-claims",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-30)), publish_at=at(-30), starting_deadline_seconds=60),
        CLAIM_1,
        [],
        Action.CLAIM,
        id="within-deadline-claims",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW), publish_at=NOW, starting_deadline_seconds=0),
        CLAIM_1,
        [],
        Action.CLAIM,
        id="deadline-0-on-time-claims",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(10)), publish_at=at(10), starting_deadline_seconds=0),
        claimed(1, send=at(10)),
        [],
        Action.CLAIM,
        id="deadline-0-claimed-ahead-claims",
    ),
    pytest.param(
        post(retrying(attempt=1, next_attempt_at=at(-86400)), starting_deadline_seconds=60),
        claimed(2),
        [],
        Action.CLAIM,
        id="deadline-not-applied-to-retries",
    ),
    pytest.param(
        post(
            scheduled(attempt=3, retry_epoch=1, retry_base_attempt=3, next_attempt_at=at(-120)),
            starting_deadline_seconds=60,
        ),
        claimed(4),
        [],
        Action.CLAIM,
        id="deadline-not-applied-after-manual-retry",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-600))),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(60),
            "dispatched_at": None,
            "last_error": ("Stale", "CallbackTimeout", NOW),
            "history": [(1, "Stale", "CallbackTimeout", NOW)],
            "message": "Attempt 1 failed (CallbackTimeout): No callback from n8n within 600s "
            "of dispatch; attempt 2 of 3 at 2030-01-15T09:01:00Z",
        },
        [("Warning", "StaleRecovered"), ("Warning", "RetryScheduled")],
        Action.NONE,
        id="stale-publishing-to-retrying",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-599))),
        None,
        [],
        Action.NONE,
        id="publishing-not-yet-stale",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-60), claimed_by=OTHER), stale_after_seconds=60),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(60),
            "dispatched_at": None,
            "last_error": ("Stale", "CallbackTimeout", NOW),
            "history": [(1, "Stale", "CallbackTimeout", NOW)],
            "message": Has("within 60s of dispatch", "attempt 2 of 3"),
        },
        [("Warning", "StaleRecovered"), ("Warning", "RetryScheduled")],
        Action.NONE,
        id="stale-after-spec-staleAfterSeconds-whoever-claimed",
    ),
    pytest.param(
        post(publishing(attempt=3, dispatched_at=at(-600))),
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Stale", "CallbackTimeout", NOW),
            "history": [
                (1, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=1)),
                (2, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=2)),
                (3, "Stale", "CallbackTimeout", NOW),
            ],
            "message": "Attempt 3 of 3 failed (CallbackTimeout): No callback from n8n within "
            "600s of dispatch; no attempts left",
            "conditions": {"Published": ("False", "RetriesExhausted")},
        },
        [("Warning", "StaleRecovered"), ("Warning", "Failed")],
        Action.NONE,
        id="stale-without-attempts-left-fails",
    ),
    pytest.param(
        post(
            publishing(
                dispatched_at=at(-600),
                conditions=[
                    cond("Published", UNKNOWN, "Pending"),
                    cond("SpecApplied", FALSE, "ChangedAfterDispatch"),
                ],
            ),
            suspend=True,
        ),
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "dispatched_at": None,
            "last_error": ("Stale", "CallbackTimeout", NOW),
            "history": [(1, "Stale", "CallbackTimeout", NOW)],
            "message": "Attempt 1 failed (CallbackTimeout); suspended by spec.suspend",
        },
        [("Warning", "StaleRecovered"), ("Normal", "Suspended")],
        Action.NONE,
        id="stale-while-suspended-suspends",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-29), next_attempt_at=at(-29))),
        None,
        [],
        Action.NONE,
        id="orphan-of-other-identity-before-claim-timeout",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-60), next_attempt_at=at(-29))),
        None,
        [],
        Action.NONE,
        id="orphan-claimed-ahead-timeout-counts-from-the-send-time",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30))),
        reclaimed(1),
        [("Warning", "Reclaimed")],
        Action.CLAIM,
        id="orphan-of-other-identity-after-claim-timeout",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-30), next_attempt_at=at(-40))),
        reclaimed(1),
        [("Warning", "Reclaimed")],
        Action.CLAIM,
        id="orphan-claimed-late-timeout-counts-from-the-claim",
    ),
    pytest.param(
        post(
            publishing(
                claimed_by=OTHER,
                claimed_at=at(-40),
                next_attempt_at=at(-30),
                claimed_generation=None,
                observed_generation=2,
            ),
            generation=2,
        ),
        reclaimed(1),
        [("Warning", "Reclaimed")],
        Action.CLAIM,
        id="orphan-without-claimedGeneration-is-reclaimed",
    ),
    pytest.param(
        post(publishing(attempt=2, claimed_by=ME_BEFORE_RESTART, claimed_at=at(-1))),
        None,
        [],
        Action.NONE,
        # Its send time has passed: the request may be at n8n (killed in the record
        # grace), so it waits for the take-over deadline like any peer's claim.
        id="orphan-of-my-previous-incarnation-after-its-send-time-waits",
    ),
    pytest.param(
        post(
            publishing(
                attempt=2,
                claimed_by=ME_BEFORE_RESTART,
                claimed_at=at(-31),
                next_attempt_at=at(-31),
            )
        ),
        reclaimed(2, by=ME_BEFORE_RESTART),
        [("Warning", "Reclaimed")],
        Action.CLAIM,
        id="orphan-of-my-previous-incarnation-past-the-deadline",
    ),
    pytest.param(
        post(
            publishing(
                attempt=4,
                retry_epoch=1,
                retry_base_attempt=3,
                claimed_by=OTHER,
                claimed_at=at(-40),
                next_attempt_at=at(-30),
            )
        ),
        reclaimed(4),  # retry_epoch and retry_base_attempt unchanged: same idempotency key
        [("Warning", "Reclaimed")],
        Action.CLAIM,
        id="orphan-after-a-manual-retry-keeps-the-epoch",
    ),
    pytest.param(
        post(
            publishing(
                claimed_by=OTHER,
                claimed_at=at(-40),
                next_attempt_at=at(-30),
                conditions=[cond("Published", UNKNOWN, "Pending")],
            ),
            generation=2,
            content=Content(text="fixed"),
        ),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": PUBLISH_AT,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "observed_generation": 2,
            "history": [(1, "Cancelled", None, NOW)],
            "message": ORPHAN + "Attempt 2 at 2030-01-15T10:00:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        Action.NONE,
        id="orphan-claimed-for-an-older-generation-is-released-spent",
    ),
    pytest.param(
        post(
            publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30)),
            generation=2,
            publish_at=at(-3600),
        ),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": NOW,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "observed_generation": 2,
            "history": [(1, "Cancelled", None, NOW)],
            "message": ORPHAN + "Attempt 2 at 2030-01-15T09:00:00Z via target default",
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        Action.NONE,
        id="orphan-released-spent-past-publishAt-retries-now",
    ),
    pytest.param(
        post(
            publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30)),
            generation=2,
            suspend=True,
        ),
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "observed_generation": 2,
            "history": [(1, "Cancelled", None, NOW)],
            "message": ORPHAN + "Suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        Action.NONE,
        id="orphan-released-spent-into-suspend",
    ),
    pytest.param(
        post(
            publishing(claimed_by=OTHER, claimed_at=at(-29), next_attempt_at=at(-29)), generation=2
        ),
        None,
        [],
        Action.NONE,
        id="orphan-for-older-generation-before-claim-timeout-nothing",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, claimed_at=at(-1))),
        None,
        [],
        Action.SEND,
        id="my-own-claim-at-its-send-time-sends",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, claimed_at=at(-20), next_attempt_at=at(1))),
        None,
        [],
        Action.NONE,
        id="my-own-claim-before-its-send-time-nothing",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, claimed_at=at(-300), next_attempt_at=at(-100))),
        None,
        [],
        Action.SEND,
        id="my-own-claim-long-after-send-time-is-sent-not-reclaimed",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, next_attempt_at=None)),
        None,
        [],
        Action.SEND,
        id="my-own-claim-without-nextAttemptAt-sends-at-once",
    ),
    pytest.param(
        post(published()),
        None,
        [],
        Action.NONE,
        id="published-nothing",
    ),
    pytest.param(
        post(failed()),
        None,
        [],
        Action.NONE,
        id="failed-nothing",
    ),
    pytest.param(
        post(suspended(next_attempt_at=at(-100))),
        None,
        [],
        Action.NONE,
        id="suspended-nothing",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-10)), generation=2, publish_at=at(3600)),
        {
            "next_attempt_at": at(3600),
            "observed_generation": 2,
            "message": SCHEDULED_MSG,
            "conditions": {"Published": ("Unknown", "Pending"), "SpecApplied": ("True", "Planned")},
        },
        [("Normal", "Rescheduled")],
        Action.NONE,
        id="due-but-spec-changed-plans-instead",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(-10)), generation=2, suspend=True),
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "observed_generation": 2,
            "message": "Suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        Action.NONE,
        id="due-but-suspended-plans-instead",
    ),
    pytest.param(
        post(retrying(next_attempt_at=at(-10)), retry_request="r1"),
        retry_reset(base=1),
        [("Normal", "RetryRequested")],
        Action.NONE,
        id="due-but-retry-requested-plans-instead",
    ),
    pytest.param(
        post(),
        None,
        [],
        Action.NONE,
        id="new-post-far-from-due-writes-nothing",
    ),
    pytest.param(
        post(publish_at=at(int(AHEAD))),
        {
            "phase": Phase.PUBLISHING,
            "attempt": 1,
            "next_attempt_at": at(int(AHEAD)),
            "claimed_at": NOW,
            "claimed_by": ME,
            "claimed_generation": 1,
            "observed_generation": 1,
            "message": "Claimed attempt 1: dispatching to target default at "
            + at(int(AHEAD)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": {"Published": ("Unknown", "Pending")},  # besides kstatus's
        },
        [],
        Action.CLAIM,
        id="new-post-due-is-claimed-by-its-first-write",
    ),
]


@pytest.mark.parametrize(("p", "changes", "events", "action"), ACT)
def test_act(
    p: Post, changes: dict[str, Any] | None, events: list[tuple[str, str]], action: Action
) -> None:
    decision = engine.act(p, NOW, DEFAULTS, ME)
    check(decision, p.status, changes, events, action)
    planned = engine.plan(p, NOW, DEFAULTS, ME)
    if planned is not NOTHING:
        assert decision == planned


def test_reclaim_takes_a_new_attempt_records_the_orphan_and_keeps_the_key() -> None:
    before = publishing(
        attempt=2,
        retry_epoch=1,
        retry_base_attempt=1,
        claimed_by=OTHER,
        claimed_at=at(-3600),
        next_attempt_at=at(-3600),
    )
    decision = engine.act(post(before), NOW, DEFAULTS, ME)
    assert decision.status is not None
    # A new number: (uid, attempt) never names two sends, the orphan's may have gone out.
    assert decision.status.attempt == 3
    assert decision.status.history == [
        *(before.history or []),
        AttemptRecord(attempt=2, claimed_at=at(-3600), finished_at=NOW, outcome="Orphaned"),
    ]
    # What the orphan's holder claimed is what is sent again (same generation, same key).
    assert decision.status.claimed_generation == 1
    assert (decision.status.retry_epoch, decision.status.retry_base_attempt) == (1, 1)
    assert engine.idempotency_key(UID, decision.status.retry_epoch) == engine.idempotency_key(
        UID, before.retry_epoch
    )
    assert (
        decision.events[0].message
        == decision.status.message
        == ("Re-dispatching as attempt 3: claim of attempt 2 by herald-1/cccc was orphaned")
    )


def test_orphan_without_claimed_at_or_send_time_is_taken_over_at_once() -> None:
    legacy = publishing(claimed_at=None, claimed_by=OTHER, next_attempt_at=None)
    wake = engine.wake_at(post(legacy), DEFAULTS, ME)
    assert wake is not None
    assert wake < NOW
    decision = engine.act(post(legacy), NOW, DEFAULTS, ME)
    assert decision.action is Action.CLAIM
    assert decision.status is not None
    assert (decision.status.claimed_by, decision.status.attempt) == (ME, 2)


def test_orphan_of_my_previous_incarnation_claimed_ahead_is_not_sent_early() -> None:
    """My previous container claimed the post 20 s ahead of its send time and died. The
    new incarnation takes the claim over at once (wake_at is the claim time), but the
    post must still go out at its send time, not 20 s before it."""
    ahead = publishing(claimed_by=ME_BEFORE_RESTART, claimed_at=at(-5), next_attempt_at=at(20))
    assert engine.wake_at(post(ahead), DEFAULTS, ME, NOW) == at(-5)
    decision = engine.act(post(ahead), NOW, DEFAULTS, ME)
    assert decision.action is Action.CLAIM
    assert decision.status is not None
    assert decision.status.claimed_by == ME
    assert decision.status.next_attempt_at == at(20), "re-claimed orphan sent before its time"
    taken = post(decision.status)
    assert engine.act(taken, NOW, DEFAULTS, ME) == NOTHING
    assert engine.act(taken, at(20), DEFAULTS, ME) == Decision(action=Action.SEND)


def test_orphan_released_spent_message_and_history() -> None:
    before = publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30))
    decision = engine.act(post(before, generation=2), NOW, DEFAULTS, ME)
    assert decision.status is not None
    assert decision.status.history == [
        AttemptRecord(attempt=1, claimed_at=at(-40), finished_at=NOW, outcome="Cancelled")
    ]
    assert decision.events[0].message == decision.status.message
    # The attempt number stays spent: the next claim is attempt 2.
    again = engine.act(
        post(decision.status.model_copy(update={"next_attempt_at": NOW}), generation=2),
        NOW,
        DEFAULTS,
        ME,
    )
    assert again.status is not None
    assert (again.status.attempt, again.status.claimed_generation) == (2, 2)


def test_missed_deadline_last_error_and_event() -> None:
    decision = engine.act(
        post(scheduled(next_attempt_at=at(-61)), publish_at=at(-61), starting_deadline_seconds=60),
        NOW,
        DEFAULTS,
        ME,
    )
    assert decision.status is not None
    assert decision.status.last_error == LastError(
        class_=ErrorClass.DEADLINE, code="MissedDeadline", message=DEADLINE_MSG, at=NOW
    )
    assert decision.events[0].message == DEADLINE_MSG
    assert decision.status.attempt == 0


# --- act: unknown targets -----------------------------------------------------------------

ONLY_DEFAULT = dataclasses.replace(DEFAULTS, targets=frozenset({"default", "eu-west"}))
UNKNOWN_TARGET_MSG = (
    "spec.target 'us-east' is not configured in the operator (configured: default, eu-west)"
)
UNKNOWN_TARGET = {
    "phase": Phase.FAILED,
    "next_attempt_at": None,
    "last_error": ("Permanent", "UnknownTarget", NOW),
    "message": UNKNOWN_TARGET_MSG,
    "conditions": {"Published": ("False", "UnknownTarget")},
}

TARGETS = [
    pytest.param(
        post(scheduled(next_attempt_at=NOW), target="us-east"),
        ONLY_DEFAULT,
        UNKNOWN_TARGET,
        [("Warning", "UnknownTarget")],
        Action.NONE,
        id="unknown-target-fails-at-claim-time",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(10)), target="us-east"),
        ONLY_DEFAULT,
        UNKNOWN_TARGET,
        [("Warning", "UnknownTarget")],
        Action.NONE,
        id="unknown-target-fails-when-claimed-ahead",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=at(31)), target="us-east"),
        ONLY_DEFAULT,
        None,
        [],
        Action.NONE,
        id="unknown-target-not-yet-due-nothing",
    ),
    pytest.param(
        post(retrying(attempt=2, next_attempt_at=NOW), target="us-east"),
        ONLY_DEFAULT,
        UNKNOWN_TARGET,
        [("Warning", "UnknownTarget")],
        Action.NONE,
        id="unknown-target-on-a-retry-fails",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW), target="us-east"),
        dataclasses.replace(DEFAULTS, targets=frozenset()),
        {
            **UNKNOWN_TARGET,
            "message": "spec.target 'us-east' is not configured in the operator (configured: none)",
        },
        [("Warning", "UnknownTarget")],
        Action.NONE,
        id="no-target-configured-names-none",
    ),
    pytest.param(
        post(
            scheduled(next_attempt_at=at(-61)),
            target="us-east",
            publish_at=at(-61),
            starting_deadline_seconds=60,
        ),
        ONLY_DEFAULT,
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Deadline", "MissedDeadline", NOW),
            "message": DEADLINE_MSG,
            "conditions": {"Published": ("False", "MissedDeadline")},
        },
        [("Warning", "MissedDeadline")],
        Action.NONE,
        id="missed-deadline-reported-before-unknown-target",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW), target="eu-west"),
        ONLY_DEFAULT,
        {
            **CLAIM_1,
            "message": "Claimed attempt 1: dispatching to target eu-west at 2030-01-15T09:00:00Z",
        },
        [],
        Action.CLAIM,
        id="configured-target-claims",
    ),
    pytest.param(
        post(scheduled(next_attempt_at=NOW), target="us-east"),
        DEFAULTS,
        {
            **CLAIM_1,
            "message": "Claimed attempt 1: dispatching to target us-east at 2030-01-15T09:00:00Z",
        },
        [],
        Action.CLAIM,
        id="targets-not-checked-when-not-given",
    ),
    pytest.param(
        post(
            publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30)),
            target="us-east",
        ),
        ONLY_DEFAULT,
        UNKNOWN_TARGET,
        [("Warning", "UnknownTarget")],
        Action.NONE,
        id="orphan-of-an-unknown-target-fails-instead-of-a-take-over",
    ),
]


@pytest.mark.parametrize(("p", "defaults", "changes", "events", "action"), TARGETS)
def test_act_checks_the_target_at_claim_time(
    p: Post,
    defaults: Defaults,
    changes: dict[str, Any] | None,
    events: list[tuple[str, str]],
    action: Action,
) -> None:
    check(engine.act(p, NOW, defaults, ME), p.status, changes, events, action)


def test_unknown_target_last_error_and_event() -> None:
    decision = engine.act(
        post(scheduled(next_attempt_at=NOW), target="us-east"), NOW, ONLY_DEFAULT, ME
    )
    assert decision.status is not None
    assert decision.status.last_error == LastError(
        class_=ErrorClass.PERMANENT, code="UnknownTarget", message=UNKNOWN_TARGET_MSG, at=NOW
    )
    assert [(e.message, e.routine) for e in decision.events] == [(UNKNOWN_TARGET_MSG, False)]
    assert decision.status.attempt == 0


# --- act: deleting finished posts (TTL) ----------------------------------------------------

DAY = 86400


def ttl(published: int | None = None, failed: int | None = None) -> Defaults:
    return dataclasses.replace(DEFAULTS, ttl_after_published=published, ttl_after_failed=failed)


# (post, defaults, wake_at, act's action). published() ended at EARLIER (publishedAt),
# failed() at EARLIER (its Published condition's lastTransitionTime): a day before NOW.
TTL = [
    pytest.param(post(published()), DEFAULTS, None, Action.NONE, id="published-kept-by-default"),
    pytest.param(post(failed()), DEFAULTS, None, Action.NONE, id="failed-kept-by-default"),
    pytest.param(
        post(published(), ttl_seconds_after_finished=3600),
        DEFAULTS,
        EARLIER + dt.timedelta(seconds=3600),
        Action.DELETE,
        id="published-spec-ttl-passed-deletes",
    ),
    pytest.param(
        post(published(), ttl_seconds_after_finished=DAY),
        DEFAULTS,
        NOW,
        Action.DELETE,
        id="published-spec-ttl-exactly-now-deletes",
    ),
    pytest.param(
        post(published(), ttl_seconds_after_finished=DAY + 1),
        DEFAULTS,
        at(1),
        Action.NONE,
        id="published-spec-ttl-not-yet",
    ),
    pytest.param(
        post(published(published_at=NOW), ttl_seconds_after_finished=0),
        DEFAULTS,
        NOW,
        Action.DELETE,
        id="published-spec-ttl-zero-deletes-at-once",
    ),
    pytest.param(
        post(published()),
        ttl(published=60),
        EARLIER + dt.timedelta(seconds=60),
        Action.DELETE,
        id="published-default-ttl-deletes",
    ),
    pytest.param(
        post(published()),
        ttl(failed=60),
        None,
        Action.NONE,
        id="published-not-deleted-by-the-failed-ttl",
    ),
    pytest.param(
        post(published(), ttl_seconds_after_finished=2 * DAY),
        ttl(published=60),
        EARLIER + dt.timedelta(days=2),
        Action.NONE,
        id="spec-ttl-overrides-the-default",
    ),
    pytest.param(
        post(failed()),
        ttl(failed=3600),
        EARLIER + dt.timedelta(seconds=3600),
        Action.DELETE,
        id="failed-default-ttl-counts-from-the-condition",
    ),
    pytest.param(
        post(failed()),
        ttl(published=60),
        None,
        Action.NONE,
        id="failed-not-deleted-by-the-published-ttl",
    ),
    pytest.param(
        post(failed(conditions=[cond("Published", FALSE, "PermanentFailure", since=at(-10))])),
        ttl(failed=60),
        at(50),
        Action.NONE,
        id="failed-recently-not-yet",
    ),
    pytest.param(
        post(failed(conditions=None)),
        ttl(failed=60),
        EARLIER + dt.timedelta(seconds=60),
        Action.DELETE,
        id="failed-without-condition-counts-from-last-error",
    ),
    pytest.param(
        post(failed(conditions=None, last_error=None)),
        ttl(failed=60),
        None,
        Action.NONE,
        id="failed-without-an-end-time-kept",
    ),
    pytest.param(
        post(failed(), ttl_seconds_after_finished=3600),
        DEFAULTS,
        EARLIER + dt.timedelta(seconds=3600),
        Action.DELETE,
        id="failed-spec-ttl-deletes",
    ),
    pytest.param(
        post(suspended(), ttl_seconds_after_finished=0),
        ttl(published=0, failed=0),
        None,
        Action.NONE,
        id="suspended-never-deleted",
    ),
    pytest.param(
        post(scheduled(), ttl_seconds_after_finished=0),
        ttl(published=0, failed=0),
        PUBLISH_AT - dt.timedelta(seconds=AHEAD),
        Action.NONE,
        id="scheduled-never-deleted",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-10)), ttl_seconds_after_finished=0),
        ttl(published=0, failed=0),
        at(590),
        Action.NONE,
        id="publishing-never-deleted",
    ),
]


@pytest.mark.parametrize(("p", "defaults", "wake", "action"), TTL)
def test_ttl_after_finished(
    p: Post, defaults: Defaults, wake: dt.datetime | None, action: Action
) -> None:
    assert engine.wake_at(p, defaults, ME) == wake
    assert engine.act(p, NOW, defaults, ME) == Decision(action=action)


def test_ttl_waits_for_a_pending_retry_request() -> None:
    """A Failed post whose TTL passed but that someone asked to retry is retried, not
    deleted: act() plans first."""
    p = post(failed(), retry_request="r1", ttl_seconds_after_finished=0)
    decision = engine.act(p, NOW, DEFAULTS, ME)
    assert decision.action is Action.NONE
    assert decision.status is not None
    assert decision.status.phase is Phase.SCHEDULED


# --- defer_claim -----------------------------------------------------------------------------

DEFER = [
    pytest.param(
        post(publishing(next_attempt_at=at(5))),
        at(60),
        {
            "phase": Phase.SCHEDULED,
            "attempt": 0,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "next_attempt_at": at(60),
            "message": "Attempt 1 not sent: circuit open; dispatching at 2030-01-15T09:01:00Z",
        },
        id="attempt-1-back-to-scheduled-at-until",
    ),
    pytest.param(
        post(publishing(next_attempt_at=at(5))),
        None,
        {
            "phase": Phase.SCHEDULED,
            "attempt": 0,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "message": "Attempt 1 not sent: circuit open; dispatching at 2030-01-15T09:00:05Z",
        },
        id="without-until-keeps-the-send-time",
    ),
    pytest.param(
        post(publishing(attempt=3, next_attempt_at=at(5))),
        at(60),
        {
            "phase": Phase.RETRYING,
            "attempt": 2,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "next_attempt_at": at(60),
            "message": "Attempt 3 not sent: circuit open; dispatching at 2030-01-15T09:01:00Z",
        },
        id="retry-attempt-back-to-retrying",
    ),
    pytest.param(
        post(publishing(attempt=4, retry_epoch=1, retry_base_attempt=3)),
        None,
        {
            "phase": Phase.SCHEDULED,
            "attempt": 3,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "message": "Attempt 4 not sent: circuit open; dispatching at 2030-01-15T08:59:59Z",
        },
        id="first-attempt-after-manual-retry-back-to-scheduled",
    ),
    pytest.param(
        post(publishing(next_attempt_at=None, claimed_at=at(-3))),
        None,
        {
            "phase": Phase.SCHEDULED,
            "attempt": 0,
            "claimed_at": None,
            "claimed_by": None,
            "claimed_generation": None,
            "next_attempt_at": at(-3),
            "message": "Attempt 1 not sent: circuit open; dispatching at 2030-01-15T08:59:57Z",
        },
        id="legacy-claim-without-send-time-uses-the-claim-time",
    ),
]


@pytest.mark.parametrize(("p", "until", "changes"), DEFER)
def test_defer_claim(p: Post, until: dt.datetime | None, changes: dict[str, Any]) -> None:
    decision = engine.defer_claim(p, NOW, until, "circuit open")
    check(decision, p.status, changes, [])
    assert decision.spec_dependent is False
    assert decision.guard is Guard.WHOLE


def test_deferred_claim_is_claimed_again_under_the_same_number() -> None:
    deferred = engine.defer_claim(post(publishing(attempt=2)), NOW, at(60), "circuit open")
    assert deferred.status is not None
    assert engine.act(post(deferred.status), NOW, DEFAULTS, ME) == NOTHING
    again = engine.act(post(deferred.status), at(60), DEFAULTS, ME)
    assert again.status is not None
    assert (again.status.attempt, again.status.next_attempt_at) == (2, at(60))


# --- claim_offset ------------------------------------------------------------------------------


def test_claim_offset_lies_in_the_last_two_thirds_of_the_window_and_spreads() -> None:
    offsets = [engine.claim_offset(f"uid-{i}", ME, 30.0) for i in range(2000)]
    assert all(10.0 <= o <= 30.0 for o in offsets)
    assert min(offsets) < 10.5
    assert max(offsets) > 29.5
    assert abs(statistics.mean(offsets) - 20.0) < 0.5


def test_claim_offset_belongs_to_the_identity_not_the_incarnation() -> None:
    assert engine.claim_offset(UID, ME, 30.0) == engine.claim_offset(UID, ME_BEFORE_RESTART, 30.0)
    differ = sum(
        engine.claim_offset(f"uid-{i}", "herald-0/x", 30.0)
        != engine.claim_offset(f"uid-{i}", "herald-1/x", 30.0)
        for i in range(200)
    )
    assert differ == 200
    assert engine.claim_offset(UID, ME, 30.0) == AHEAD  # deterministic


def test_claim_offset_zero_window_claims_at_the_send_time() -> None:
    assert engine.claim_offset(UID, ME, 0.0) == 0.0
    no_ahead = dataclasses.replace(DEFAULTS, claim_ahead_seconds=0.0)
    assert engine.wake_at(post(scheduled()), no_ahead, ME) == PUBLISH_AT
    assert engine.act(post(scheduled(next_attempt_at=at(1))), NOW, no_ahead, ME) == NOTHING


def test_replicas_claim_at_different_moments() -> None:
    """Two replicas wake for the same post at different times; the later one finds it
    claimed and waits for the claim timeout instead of racing."""
    p = post(scheduled())
    mine = engine.wake_at(p, DEFAULTS, ME)
    theirs = engine.wake_at(p, DEFAULTS, OTHER)
    assert mine is not None
    assert theirs is not None
    assert mine != theirs
    claim = engine.act(p, mine, DEFAULTS, ME).status
    assert claim is not None
    assert claim.next_attempt_at == PUBLISH_AT
    assert engine.act(post(claim), theirs, DEFAULTS, OTHER) == NOTHING
    assert engine.wake_at(post(claim), DEFAULTS, OTHER) == PUBLISH_AT + dt.timedelta(seconds=30)


# --- wake_at ---------------------------------------------------------------------------

WAKE = [
    pytest.param(
        post(scheduled()),
        PUBLISH_AT - dt.timedelta(seconds=AHEAD),
        id="scheduled-claim-ahead-of-nextAttemptAt",
    ),
    pytest.param(
        post(retrying(next_attempt_at=at(90))),
        at(90 - AHEAD),
        id="retrying-claim-ahead-of-nextAttemptAt",
    ),
    pytest.param(post(scheduled(next_attempt_at=None)), None, id="scheduled-without-time-never"),
    pytest.param(post(publishing(dispatched_at=at(-10))), at(590), id="dispatched-at-stale-time"),
    pytest.param(
        post(publishing(dispatched_at=at(-10)), stale_after_seconds=30),
        at(20),
        id="dispatched-at-spec-stale-time",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-10), next_attempt_at=at(-10))),
        at(20),
        id="claimed-by-other-at-claim-timeout",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-10), next_attempt_at=at(20))),
        at(50),
        id="claimed-ahead-by-other-at-claim-timeout-after-the-send-time",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-10), next_attempt_at=at(-100))),
        at(20),
        id="claimed-late-by-other-at-claim-timeout-after-the-claim",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER, claimed_at=at(-10), next_attempt_at=None)),
        at(20),
        id="legacy-claim-by-other-without-send-time",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, claimed_at=at(-10), next_attempt_at=at(20))),
        at(20),
        id="claimed-by-me-at-the-send-time",
    ),
    pytest.param(
        post(publishing(claimed_by=ME, claimed_at=at(-10), next_attempt_at=None)),
        at(-10),
        id="claimed-by-me-without-send-time-at-once",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART, claimed_at=at(-10), next_attempt_at=at(20))),
        at(-10),
        id="claimed-ahead-by-my-previous-incarnation-at-once",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART, claimed_at=at(-10))),
        at(29),
        id="claimed-by-my-previous-incarnation-past-its-send-time-at-the-deadline",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART, claimed_at=None, next_attempt_at=at(5))),
        NOW,
        id="claimed-by-my-previous-incarnation-without-claim-time-at-once",
    ),
    pytest.param(post(published()), None, id="published-without-ttl-never"),
    pytest.param(post(failed()), None, id="failed-without-ttl-never"),
    pytest.param(
        post(published(), ttl_seconds_after_finished=60),
        EARLIER + dt.timedelta(seconds=60),
        id="published-with-ttl-at-publishedAt-plus-ttl",
    ),
    pytest.param(
        post(failed(), ttl_seconds_after_finished=60),
        EARLIER + dt.timedelta(seconds=60),
        id="failed-with-ttl-at-failure-plus-ttl",
    ),
    pytest.param(post(suspended(next_attempt_at=at(5))), None, id="suspended-never"),
    pytest.param(
        post(), PUBLISH_AT - dt.timedelta(seconds=AHEAD), id="new-claim-ahead-of-publishAt"
    ),
    pytest.param(post(suspend=True), None, id="new-suspended-never"),
]


@pytest.mark.parametrize(("p", "expected"), WAKE)
def test_wake_at(p: Post, expected: dt.datetime | None) -> None:
    assert engine.wake_at(p, DEFAULTS, ME, NOW) == expected


# --- dispatch_result -------------------------------------------------------------------

TRANSIENT = Failure(ErrorClass.TRANSIENT, "HTTP503", "n8n answered 503: busy")
PERMANENT = Failure(ErrorClass.PERMANENT, "HTTP400", "n8n answered 400: bad text")
SYNC = Published(external_id="urn:li:share:7", external_url="https://social.example/7")

DISPATCH_RESULT = [
    pytest.param(
        post(publishing()),
        Accepted(),
        {"dispatched_at": NOW},
        [],
        id="accepted-records-only-dispatchedAt",
    ),
    pytest.param(
        post(published(dispatched_at=None)),
        Accepted(),
        {"dispatched_at": NOW},
        [],
        id="accepted-recorded-after-the-published-callback",
    ),
    pytest.param(
        post(retrying(attempt=1, claimed_by=ME, dispatched_at=None)),
        Accepted(),
        {"dispatched_at": NOW},
        [],
        id="accepted-recorded-after-a-failure-callback",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-1))),
        Accepted(),
        None,
        [],
        id="accepted-already-recorded-nothing",
    ),
    pytest.param(
        post(published()),
        Accepted(),
        None,
        [],
        id="accepted-after-published-already-recorded-nothing",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART)),
        Accepted(),
        None,
        [],
        id="accepted-for-my-previous-incarnation-nothing",
    ),
    pytest.param(
        post(publishing()),
        Accepted(published=SYNC),
        {
            "phase": Phase.PUBLISHED,
            "next_attempt_at": None,
            "published_at": NOW,
            "external_id": "urn:li:share:7",
            "external_url": "https://social.example/7",
            "message": "Published on attempt 1 at https://social.example/7",
            "history": [(1, "Published", None, NOW)],
            "conditions": {"Published": ("True", "PublishedSynchronously")},
        },
        [("Normal", "Published")],
        id="accepted-synchronously-published",
    ),
    pytest.param(
        post(publishing()),
        Accepted(published=Published()),
        {
            "phase": Phase.PUBLISHED,
            "next_attempt_at": None,
            "published_at": NOW,
            "message": "Published on attempt 1",
            "history": [(1, "Published", None, NOW)],
            "conditions": {"Published": ("True", "PublishedSynchronously")},
        },
        [("Normal", "Published")],
        id="accepted-synchronously-published-without-ids",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-5))),
        TRANSIENT,
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(60),
            "dispatched_at": None,
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [(1, "Transient", "HTTP503", NOW)],
            "message": "Attempt 1 failed (HTTP503): n8n answered 503: busy; attempt 2 of 3 at "
            "2030-01-15T09:01:00Z",
        },
        [("Warning", "RetryScheduled")],
        id="transient-attempt-1-retries-after-base-backoff",
    ),
    pytest.param(
        post(publishing(attempt=2)),
        TRANSIENT,
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(120),
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [
                (1, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=1)),
                (2, "Transient", "HTTP503", NOW),
            ],
            "message": Has("attempt 3 of 3 at 2030-01-15T09:02:00Z"),
        },
        [("Warning", "RetryScheduled")],
        id="transient-attempt-2-doubles-backoff",
    ),
    pytest.param(
        post(publishing()),
        Failure(ErrorClass.TRANSIENT, "HTTP429", "slow down", retry_after_seconds=300),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(300),
            "last_error": ("Transient", "HTTP429", NOW),
            "history": [(1, "Transient", "HTTP429", NOW)],
            "message": Has("attempt 2 of 3 at 2030-01-15T09:05:00Z"),
        },
        [("Warning", "RetryScheduled")],
        id="transient-honours-longer-retry-after",
    ),
    pytest.param(
        post(publishing(), retry=RetryPolicy(max_attempts=5, backoff_seconds=10)),
        Failure(ErrorClass.TRANSIENT, "Timeout", "no answer"),
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(10),
            "last_error": ("Transient", "Timeout", NOW),
            "history": [(1, "Transient", "Timeout", NOW)],
            "message": Has("attempt 2 of 5 at 2030-01-15T09:00:10Z"),
        },
        [("Warning", "RetryScheduled")],
        id="transient-uses-the-post-retry-policy",
    ),
    pytest.param(
        post(
            publishing(
                observed_generation=2,
                conditions=[
                    cond("Published", UNKNOWN, "Pending"),
                    cond("SpecApplied", FALSE, "ChangedAfterDispatch"),
                ],
            ),
            generation=2,
            suspend=True,
        ),
        TRANSIENT,
        {
            "phase": Phase.SUSPENDED,
            "next_attempt_at": None,
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [(1, "Transient", "HTTP503", NOW)],
            "message": "Attempt 1 failed (HTTP503); suspended by spec.suspend",
        },
        [("Normal", "Suspended")],
        id="transient-while-suspended-suspends",
    ),
    pytest.param(
        post(publishing(attempt=3)),
        TRANSIENT,
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [
                (1, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=1)),
                (2, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=2)),
                (3, "Transient", "HTTP503", NOW),
            ],
            "message": "Attempt 3 of 3 failed (HTTP503): n8n answered 503: busy; no attempts left",
            "conditions": {"Published": ("False", "RetriesExhausted")},
        },
        [("Warning", "Failed")],
        id="transient-out-of-attempts-fails",
    ),
    pytest.param(
        post(publishing()),
        PERMANENT,
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Permanent", "HTTP400", NOW),
            "history": [(1, "Permanent", "HTTP400", NOW)],
            "message": "Attempt 1 failed permanently (HTTP400): n8n answered 400: bad text",
            "conditions": {"Published": ("False", "PermanentFailure")},
        },
        [("Warning", "Failed")],
        id="permanent-fails-at-once",
    ),
    pytest.param(
        post(publishing(attempt=5, retry_epoch=1, retry_base_attempt=3)),
        TRANSIENT,
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(120),
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [
                (1, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=1)),
                (2, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=2)),
                (3, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=3)),
                (4, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=4)),
                (5, "Transient", "HTTP503", NOW),
            ],
            "message": "Attempt 5 failed (HTTP503): n8n answered 503: busy; attempt 3 of 3 at "
            "2030-01-15T09:02:00Z",
        },
        [("Warning", "RetryScheduled")],
        id="after-manual-retry-the-policy-counts-the-epoch",
    ),
    pytest.param(
        post(publishing(attempt=6, retry_epoch=1, retry_base_attempt=3)),
        TRANSIENT,
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Transient", "HTTP503", NOW),
            "history": [
                *[
                    (n, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=n))
                    for n in range(1, 6)
                ],
                (6, "Transient", "HTTP503", NOW),
            ],
            "message": "Attempt 3 of 3 failed (HTTP503): n8n answered 503: busy; no attempts left",
            "conditions": {"Published": ("False", "RetriesExhausted")},
        },
        [("Warning", "Failed")],
        id="after-manual-retry-exhausted-after-the-epochs-attempts",
    ),
    pytest.param(
        post(publishing(claimed_by=OTHER)),
        Accepted(),
        None,
        [],
        id="claimed-by-someone-else-nothing",
    ),
    pytest.param(
        post(published(dispatched_at=None)),
        TRANSIENT,
        None,
        [],
        id="failure-after-published-callback-nothing",
    ),
    pytest.param(
        post(publishing(claimed_by=ME_BEFORE_RESTART)),
        TRANSIENT,
        None,
        [],
        id="claimed-by-my-previous-incarnation-nothing",
    ),
    pytest.param(
        post(published()),
        Accepted(published=SYNC),
        None,
        [],
        id="already-published-nothing",
    ),
    pytest.param(
        post(retrying()),
        TRANSIENT,
        None,
        [],
        id="already-retrying-nothing",
    ),
    pytest.param(
        post(failed(claimed_by=ME)),
        PERMANENT,
        None,
        [],
        id="already-failed-nothing",
    ),
]


@pytest.mark.parametrize(("p", "outcome", "changes", "events"), DISPATCH_RESULT)
def test_dispatch_result(
    p: Post,
    outcome: engine.Outcome,
    changes: dict[str, Any] | None,
    events: list[tuple[str, str]],
) -> None:
    check(engine.dispatch_result(p, NOW, outcome, DEFAULTS, ME), p.status, changes, events)


def test_synchronous_publish_condition_and_history_details() -> None:
    decision = engine.dispatch_result(post(publishing()), NOW, Accepted(SYNC), DEFAULTS, ME)
    assert decision.status is not None
    assert decision.status.history == [
        AttemptRecord(attempt=1, claimed_at=at(-1), finished_at=NOW, outcome="Published")
    ]
    (published_condition,) = own(decision.status)
    assert published_condition.status is TRUE
    assert published_condition.last_transition_time == NOW
    assert published_condition.message == "Published on attempt 1 at https://social.example/7"


# --- callback --------------------------------------------------------------------------

CB_PUBLISHED = Callback(1, published=SYNC)
CB_TRANSIENT = Callback(1, failure=Failure(ErrorClass.TRANSIENT, "RateLimited", "429 from x"))
CB_PERMANENT = Callback(1, failure=Failure(ErrorClass.PERMANENT, "Rejected", "text refused"))
PUBLISHED_BY_CALLBACK = {
    "phase": Phase.PUBLISHED,
    "published_at": NOW,
    "next_attempt_at": None,
    "external_id": "urn:li:share:7",
    "external_url": "https://social.example/7",
    "message": "Published on attempt 1 at https://social.example/7",
    "conditions": {"Published": ("True", "CallbackReceived")},
}

CALLBACK = [
    pytest.param(
        post(publishing(dispatched_at=at(-5))),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {**PUBLISHED_BY_CALLBACK, "history": [(1, "Published", None, NOW)]},
        [("Normal", "Published")],
        id="published-on-publishing-applied",
    ),
    pytest.param(
        post(publishing(dispatched_at=None)),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {**PUBLISHED_BY_CALLBACK, "history": [(1, "Published", None, NOW)]},
        [("Normal", "Published")],
        id="published-before-dispatch-ack-applied",
    ),
    pytest.param(
        post(published()),
        Callback(1, published=Published("urn:li:share:1", "https://social.example/1")),
        CallbackResult.DUPLICATE,
        None,
        [],
        id="published-twice-duplicate",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-5))),
        CB_TRANSIENT,
        CallbackResult.APPLIED,
        {
            "phase": Phase.RETRYING,
            "next_attempt_at": at(60),
            "dispatched_at": None,
            "last_error": ("Transient", "RateLimited", NOW),
            "history": [(1, "Transient", "RateLimited", NOW)],
            "message": "Attempt 1 failed (RateLimited): 429 from x; attempt 2 of 3 at "
            "2030-01-15T09:01:00Z",
        },
        [("Warning", "RetryScheduled")],
        id="failed-retryable-retries",
    ),
    pytest.param(
        post(publishing(dispatched_at=at(-5))),
        CB_PERMANENT,
        CallbackResult.APPLIED,
        {
            "phase": Phase.FAILED,
            "next_attempt_at": None,
            "last_error": ("Permanent", "Rejected", NOW),
            "history": [(1, "Permanent", "Rejected", NOW)],
            "message": "Attempt 1 failed permanently (Rejected): text refused",
            "conditions": {"Published": ("False", "PermanentFailure")},
        },
        [("Warning", "Failed")],
        id="failed-non-retryable-fails",
    ),
    pytest.param(
        post(published()),
        CB_PERMANENT,
        CallbackResult.CONFLICT,
        None,
        [],
        id="failed-after-published-conflict",
    ),
    pytest.param(
        post(publishing(attempt=2)),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "message": "Published on attempt 1 at https://social.example/7",
            "history": [
                (1, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=1)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-for-earlier-attempt-in-history-applied",
    ),
    pytest.param(
        post(publishing(attempt=2, history=[rec(1, "Orphaned")])),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "message": "Published on attempt 1 at https://social.example/7",
            "history": [
                (1, "Orphaned", None, EARLIER + dt.timedelta(seconds=1)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-for-orphaned-attempt-while-redispatch-publishing-applied",
    ),
    pytest.param(
        post(
            failed(
                attempt=2,
                history=[rec(1, "Orphaned"), rec(2, "Permanent", "HTTP400")],
            )
        ),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "message": "Published on attempt 1 at https://social.example/7",
            "history": [
                (1, "Orphaned", None, EARLIER + dt.timedelta(seconds=1)),
                (2, "Permanent", "HTTP400", EARLIER + dt.timedelta(seconds=2)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-for-orphaned-attempt-after-redispatch-failed-applied",
    ),
    pytest.param(
        post(published(attempt=2, history=[rec(1, "Orphaned"), rec(2, "Published")])),
        CB_PUBLISHED,
        CallbackResult.DUPLICATE,
        None,
        [],
        id="published-for-orphaned-attempt-after-published-duplicate",
    ),
    pytest.param(
        post(publishing(attempt=2, history=None)),
        CB_PUBLISHED,
        CallbackResult.CONFLICT,
        None,
        [],
        id="published-for-earlier-attempt-not-in-history-conflict",
    ),
    pytest.param(
        post(
            publishing(attempt=12, history=[rec(n, "Transient", "HTTP503") for n in range(2, 12)])
        ),
        CB_PUBLISHED,
        CallbackResult.CONFLICT,
        None,
        [],
        id="published-for-attempt-dropped-from-history-conflict",
    ),
    pytest.param(
        post(publishing(attempt=2, history=[rec(1, "Orphaned")])),
        CB_TRANSIENT,
        CallbackResult.CONFLICT,
        None,
        [],
        id="failed-for-earlier-attempt-conflict",
    ),
    pytest.param(
        post(publishing(attempt=2, history=[rec(1, "Orphaned")])),
        CB_PERMANENT,
        CallbackResult.CONFLICT,
        None,
        [],
        id="failed-permanently-for-orphaned-attempt-conflict",
    ),
    pytest.param(
        post(publishing(attempt=1)),
        Callback(2, failure=CB_TRANSIENT.failure),
        CallbackResult.CONFLICT,
        None,
        [],
        id="failed-for-future-attempt-conflict",
    ),
    pytest.param(
        post(retrying(attempt=1, history=[rec(1, "Stale", "CallbackTimeout")])),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "history": [
                (1, "Stale", "CallbackTimeout", EARLIER + dt.timedelta(seconds=1)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-after-stale-recovery-of-same-attempt-applied",
    ),
    pytest.param(
        post(failed(attempt=1, history=[rec(1, "Permanent", "HTTP400")])),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "history": [
                (1, "Permanent", "HTTP400", EARLIER + dt.timedelta(seconds=1)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-after-failure-of-same-attempt-applied",
    ),
    pytest.param(
        post(retrying(attempt=1, history=[rec(1, "Cancelled")], last_error=None)),
        CB_PUBLISHED,
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "history": [
                (1, "Cancelled", None, EARLIER + dt.timedelta(seconds=1)),
                (1, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-after-orphan-release-of-same-attempt-applied",
    ),
    pytest.param(
        post(
            publishing(
                attempt=4,
                retry_epoch=1,
                retry_base_attempt=3,
                history=[rec(3, "Permanent", "HTTP400")],
            )
        ),
        Callback(4, published=SYNC),
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "message": "Published on attempt 4 at https://social.example/7",
            "history": [
                (3, "Permanent", "HTTP400", EARLIER + dt.timedelta(seconds=3)),
                (4, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-after-manual-retry-applied",
    ),
    pytest.param(
        post(publishing(attempt=4, retry_epoch=1, retry_base_attempt=3)),
        Callback(3, published=SYNC),
        CallbackResult.APPLIED,
        {
            **PUBLISHED_BY_CALLBACK,
            "message": "Published on attempt 3 at https://social.example/7",
            "history": [
                *(
                    (n, "Transient", "HTTP503", EARLIER + dt.timedelta(seconds=n))
                    for n in (1, 2, 3)
                ),
                (3, "Published", None, NOW),
            ],
        },
        [("Normal", "Published")],
        id="published-for-the-attempt-before-the-manual-retry-applied",
    ),
    pytest.param(
        post(publishing(attempt=4, retry_epoch=1, retry_base_attempt=3)),
        Callback(3, failure=CB_TRANSIENT.failure),
        CallbackResult.CONFLICT,
        None,
        [],
        id="failed-for-the-attempt-before-the-manual-retry-conflict",
    ),
    pytest.param(
        post(retrying(attempt=1)),
        CB_TRANSIENT,
        CallbackResult.DUPLICATE,
        None,
        [],
        id="failed-again-after-retrying-duplicate",
    ),
    pytest.param(
        post(failed(attempt=1)),
        CB_PERMANENT,
        CallbackResult.DUPLICATE,
        None,
        [],
        id="failed-again-after-failed-duplicate",
    ),
    pytest.param(
        post(scheduled()),
        Callback(0, published=SYNC),
        CallbackResult.CONFLICT,
        None,
        [],
        id="attempt-0-published-conflict",
    ),
    pytest.param(
        post(scheduled()),
        Callback(0, failure=CB_TRANSIENT.failure),
        CallbackResult.CONFLICT,
        None,
        [],
        id="attempt-0-failed-conflict",
    ),
    pytest.param(
        post(suspended(attempt=1)),
        CB_PUBLISHED,
        CallbackResult.CONFLICT,
        None,
        [],
        id="published-on-suspended-without-record-conflict",
    ),
]


@pytest.mark.parametrize(("p", "cb", "result", "changes", "events"), CALLBACK)
def test_callback(
    p: Post,
    cb: Callback,
    result: CallbackResult,
    changes: dict[str, Any] | None,
    events: list[tuple[str, str]],
) -> None:
    outcome = engine.callback(p, NOW, cb, DEFAULTS)
    assert outcome.result is result
    check(outcome.decision, p.status, changes, events)
    if result is CallbackResult.CONFLICT:
        assert outcome.reason != ""


def test_callback_conflict_reasons() -> None:
    wrong = engine.callback(post(publishing(attempt=2)), NOW, CB_TRANSIENT, DEFAULTS)
    assert wrong.reason == "callback for attempt 1, but the post is on attempt 2"
    unknown = engine.callback(
        post(publishing(attempt=2, history=None)), NOW, CB_PUBLISHED, DEFAULTS
    )
    assert unknown.reason == "callback for attempt 1, but the post is on attempt 2"
    after = engine.callback(post(published()), NOW, CB_PERMANENT, DEFAULTS)
    assert after.reason == "cannot record a failure for a post in phase Published"


def test_orphaned_attempt_published_after_the_reclaim() -> None:
    """The orphan's holder did send attempt 1 and n8n published it; meanwhile ME re-sent
    it as attempt 2 (same Idempotency-Key, so n8n drops it). n8n's callback for attempt 1
    publishes the post; a later callback for attempt 2 is a duplicate."""
    orphan = publishing(claimed_by=OTHER, claimed_at=at(-40), next_attempt_at=at(-30))
    taken = engine.act(post(orphan), NOW, DEFAULTS, ME)
    assert taken.status is not None
    assert taken.status.attempt == 2
    late = engine.callback(post(taken.status), at(5), CB_PUBLISHED, DEFAULTS)
    assert late.result is CallbackResult.APPLIED
    assert late.decision.status is not None
    assert late.decision.status.phase is Phase.PUBLISHED
    assert [(r.attempt, r.outcome) for r in late.decision.status.history or []] == [
        (1, "Orphaned"),
        (1, "Published"),  # credited to the attempt n8n published
    ]
    again = engine.callback(post(late.decision.status), at(6), Callback(2, SYNC), DEFAULTS)
    assert again.result is CallbackResult.DUPLICATE


def test_published_callback_moves_condition_from_false_to_true() -> None:
    before = failed(attempt=1, history=[rec(1, "Permanent", "HTTP400")])
    outcome = engine.callback(post(before, generation=3), NOW, CB_PUBLISHED, DEFAULTS)
    assert outcome.decision.status is not None
    (condition,) = own(outcome.decision.status)
    assert (condition.status, condition.reason) == (TRUE, "CallbackReceived")
    assert condition.last_transition_time == NOW
    assert condition.observed_generation == 3


# --- what each write's compare-and-swap tests -----------------------------------------------

GUARDS = [
    pytest.param(
        lambda: engine.plan(post(suspend=True), NOW, DEFAULTS),
        Guard.WHOLE,
        True,
        id="accept",
    ),
    pytest.param(
        lambda: engine.plan(post(scheduled(), generation=2, publish_at=at(60)), NOW, DEFAULTS),
        Guard.WHOLE,
        True,
        id="spec-change",
    ),
    pytest.param(
        lambda: engine.plan(post(publishing(), generation=2), NOW, DEFAULTS, ME),
        Guard.WHOLE,
        True,
        id="release-by-the-holder",
    ),
    pytest.param(
        lambda: engine.plan(post(failed(), retry_request="r1"), NOW, DEFAULTS),
        Guard.WHOLE,
        True,
        id="manual-retry",
    ),
    pytest.param(
        lambda: engine.act(post(scheduled(next_attempt_at=NOW)), NOW, DEFAULTS, ME),
        Guard.WHOLE,
        True,
        id="claim",
    ),
    pytest.param(
        lambda: engine.act(post(scheduled(next_attempt_at=NOW), target="x"), NOW, ONLY_DEFAULT, ME),
        Guard.WHOLE,
        True,
        id="unknown-target",
    ),
    pytest.param(
        lambda: engine.act(post(publishing(dispatched_at=at(-600))), NOW, DEFAULTS, ME),
        Guard.WHOLE,
        True,
        id="stale-recovery",
    ),
    pytest.param(
        lambda: engine.defer_claim(post(publishing()), NOW, None, "shutting down"),
        Guard.WHOLE,
        False,
        id="defer-claim",
    ),
    pytest.param(
        lambda: engine.dispatch_result(post(publishing()), NOW, Accepted(), DEFAULTS, ME),
        Guard.CLAIM,
        False,
        id="dispatch-acknowledged",
    ),
    pytest.param(
        lambda: engine.dispatch_result(post(publishing()), NOW, Accepted(SYNC), DEFAULTS, ME),
        Guard.WHOLE,
        True,
        id="dispatch-published-synchronously",
    ),
    pytest.param(
        lambda: engine.dispatch_result(post(publishing()), NOW, TRANSIENT, DEFAULTS, ME),
        Guard.WHOLE,
        False,
        id="dispatch-failed",
    ),
    pytest.param(
        lambda: engine.callback(post(publishing()), NOW, CB_PUBLISHED, DEFAULTS).decision,
        Guard.ATTEMPT,
        False,
        id="callback-published-on-publishing",
    ),
    pytest.param(
        lambda: engine.callback(post(publishing()), NOW, CB_TRANSIENT, DEFAULTS).decision,
        Guard.ATTEMPT,
        False,
        id="callback-failed-on-publishing",
    ),
    pytest.param(
        lambda: (
            engine.callback(
                post(retrying(attempt=1, history=[rec(1, "Stale", "CallbackTimeout")])),
                NOW,
                CB_PUBLISHED,
                DEFAULTS,
            ).decision
        ),
        Guard.WHOLE,
        False,
        id="callback-published-after-the-operator-gave-up",
    ),
    pytest.param(
        lambda: (
            engine.callback(
                post(publishing(attempt=2, history=[rec(1, "Orphaned")])),
                NOW,
                CB_PUBLISHED,
                DEFAULTS,
            ).decision
        ),
        Guard.WHOLE,
        False,
        id="callback-published-for-an-earlier-attempt",
    ),
]


@pytest.mark.parametrize(("make", "guard", "spec_dependent"), GUARDS)
def test_write_guards(make: Any, guard: Guard, spec_dependent: bool) -> None:
    decision = make()
    assert decision.status is not None
    assert (decision.guard, decision.spec_dependent) == (guard, spec_dependent)


# --- routine events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda: engine.plan(post(retry_request="r0"), NOW, DEFAULTS),
            [("Scheduled", True)],
            id="scheduled",
        ),
        pytest.param(
            lambda: engine.dispatch_result(post(publishing()), NOW, Accepted(SYNC), DEFAULTS, ME),
            [("Published", True)],
            id="published-synchronously",
        ),
        pytest.param(
            lambda: engine.callback(post(publishing()), NOW, CB_PUBLISHED, DEFAULTS).decision,
            [("Published", True)],
            id="published-by-callback",
        ),
        pytest.param(
            lambda: engine.plan(post(scheduled(), generation=2, publish_at=at(60)), NOW, DEFAULTS),
            [("Rescheduled", False)],
            id="rescheduled-by-the-user",
        ),
        pytest.param(
            lambda: engine.plan(post(scheduled(), generation=2, suspend=True), NOW, DEFAULTS),
            [("Suspended", False)],
            id="suspended-by-the-user",
        ),
        pytest.param(
            lambda: engine.plan(post(failed(), retry_request="r1"), NOW, DEFAULTS),
            [("RetryRequested", False)],
            id="retry-requested",
        ),
        pytest.param(
            lambda: engine.dispatch_result(post(publishing()), NOW, TRANSIENT, DEFAULTS, ME),
            [("RetryScheduled", False)],
            id="retry-scheduled",
        ),
        pytest.param(
            lambda: engine.dispatch_result(post(publishing()), NOW, PERMANENT, DEFAULTS, ME),
            [("Failed", False)],
            id="failed",
        ),
        pytest.param(
            lambda: engine.act(
                post(publishing(claimed_by=OTHER, claimed_at=at(-60), next_attempt_at=at(-60))),
                NOW,
                DEFAULTS,
                ME,
            ),
            [("Reclaimed", False)],
            id="reclaimed",
        ),
    ],
)
def test_only_steps_every_post_takes_are_routine_events(
    make: Any, expected: list[tuple[str, bool]]
) -> None:
    decision = make()
    assert [(e.reason, e.routine) for e in decision.events] == expected
    assert all(e.type == "Normal" for e in decision.events if e.routine)


# --- backoff, jitter, retry delay --------------------------------------------------------


def policy(**changes: Any) -> Policy:
    fields: dict[str, Any] = {
        "max_attempts": 5,
        "backoff_seconds": 60,
        "max_backoff_seconds": 3600,
        "stale_after_seconds": 600,
        "jitter_ratio": 0.0,
        "claim_timeout_seconds": 30.0,
    }
    fields.update(changes)
    return Policy(**fields)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        pytest.param(0, 60.0, id="attempt-0-is-base"),
        pytest.param(1, 60.0, id="attempt-1-is-base"),
        pytest.param(2, 120.0, id="attempt-2-doubles"),
        pytest.param(3, 240.0, id="attempt-3"),
        pytest.param(4, 480.0, id="attempt-4"),
        pytest.param(5, 960.0, id="attempt-5"),
        pytest.param(6, 1920.0, id="attempt-6"),
        pytest.param(7, 3600.0, id="attempt-7-capped"),
        pytest.param(8, 3600.0, id="attempt-8-capped"),
        pytest.param(1000, 3600.0, id="attempt-1000-capped-without-overflow"),
    ],
)
def test_backoff_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    assert engine.backoff_seconds(policy(), attempt, UID) == expected


def test_backoff_zero_base_is_zero() -> None:
    assert engine.backoff_seconds(policy(backoff_seconds=0), 7, UID) == 0.0


def test_jitter_stays_within_ratio_and_spreads() -> None:
    p = policy(jitter_ratio=0.1)
    delays = [engine.backoff_seconds(p, 3, f"uid-{i}") for i in range(2000)]
    assert all(216.0 <= d <= 264.0 for d in delays)  # 240 ± 10 %
    assert min(delays) < 220.0
    assert max(delays) > 260.0
    assert len(set(delays)) > 1900
    assert abs(statistics.mean(delays) - 240.0) < 2.0


def test_jitter_ratio_zero_is_exact() -> None:
    p = policy(jitter_ratio=0.0)
    assert {engine.backoff_seconds(p, 2, f"uid-{i}") for i in range(200)} == {120.0}


def test_jitter_is_deterministic_per_uid_and_attempt() -> None:
    p = policy(jitter_ratio=0.5)
    assert engine.backoff_seconds(p, 2, UID) == engine.backoff_seconds(p, 2, UID)
    assert engine.jitter_fraction(UID, 2) == engine.jitter_fraction(UID, 2)
    assert engine.jitter_fraction(UID, 2) != engine.jitter_fraction(UID, 3)
    assert engine.jitter_fraction(UID, 2) != engine.jitter_fraction(UID + "x", 2)


def test_jitter_fraction_in_unit_interval() -> None:
    fractions = [engine.jitter_fraction(f"uid-{i}", a) for i in range(500) for a in (1, 2, 3)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert min(fractions) < 0.01
    assert max(fractions) > 0.99


def test_jitter_fraction_below_one_for_the_largest_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docstring promises [0, 1). The largest 64-bit prefix, (2**64 - 1) / 2**64,
    rounds to exactly 1.0 in floating point."""

    class Largest:
        def digest(self) -> bytes:
            return b"\xff" * 32

    monkeypatch.setattr(engine, "hashlib", types.SimpleNamespace(sha256=lambda data: Largest()))
    assert engine.jitter_fraction(UID, 1) < 1.0


def test_delay_never_exceeds_max_backoff_seconds() -> None:
    """The CRD documents maxBackoffSeconds as the "Upper bound of the delay between two
    attempts"; jitter is applied after the cap and can push the delay past it."""
    p = policy(max_backoff_seconds=300, jitter_ratio=0.1)
    worst = max(engine.retry_delay(p, 10, f"uid-{i}", None) for i in range(200))
    assert worst <= 300.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(None, 120.0, id="no-retry-after-is-backoff"),
        pytest.param(0.0, 120.0, id="zero-retry-after-is-backoff"),
        pytest.param(-5.0, 120.0, id="negative-retry-after-is-backoff"),
        pytest.param(30.0, 120.0, id="shorter-retry-after-is-ignored"),
        pytest.param(500.0, 500.0, id="longer-retry-after-is-honoured"),
        pytest.param(1e9, 3600.0, id="huge-retry-after-capped-at-max-backoff"),
    ],
)
def test_retry_delay(retry_after: float | None, expected: float) -> None:
    assert engine.retry_delay(policy(), 2, UID, retry_after) == expected


def test_retry_after_capped_at_the_posts_own_max_backoff() -> None:
    spec_policy = Policy.of(
        spec(retry=RetryPolicy(backoff_seconds=5, max_backoff_seconds=100)), DEFAULTS
    )
    assert engine.retry_delay(spec_policy, 1, UID, 7200.0) == 100.0


def test_policy_of_spec_overrides_defaults() -> None:
    p = Policy.of(
        spec(
            retry=RetryPolicy(max_attempts=7, backoff_seconds=0, max_backoff_seconds=9),
            stale_after_seconds=42,
        ),
        DEFAULTS,
    )
    assert p == Policy(
        max_attempts=7,
        backoff_seconds=0,
        max_backoff_seconds=9,
        stale_after_seconds=42,
        jitter_ratio=0.0,
        claim_timeout_seconds=30.0,
    )
    assert Policy.of(spec(), DEFAULTS) == Policy(
        max_attempts=3,
        backoff_seconds=60,
        max_backoff_seconds=3600,
        stale_after_seconds=600,
        jitter_ratio=0.0,
        claim_timeout_seconds=30.0,
    )


# --- set_condition ---------------------------------------------------------------------


def test_set_condition_adds_a_condition() -> None:
    result = engine.set_condition(
        None, "Published", UNKNOWN, "Pending", "m", NOW.replace(microsecond=999), 2
    )
    assert result == [
        Condition(
            type="Published",
            status=UNKNOWN,
            reason="Pending",
            message="m",
            last_transition_time=NOW,
            observed_generation=2,
        )
    ]


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    existing = [cond("Published", FALSE, "PermanentFailure", since=EARLIER)]
    (result,) = engine.set_condition(existing, "Published", FALSE, "MissedDeadline", "new", NOW, 4)
    assert result.last_transition_time == EARLIER
    assert (result.reason, result.message, result.observed_generation) == (
        "MissedDeadline",
        "new",
        4,
    )


def test_set_condition_moves_transition_time_when_status_changes() -> None:
    existing = [cond("Published", FALSE, "PermanentFailure", since=EARLIER)]
    (result,) = engine.set_condition(existing, "Published", TRUE, "CallbackReceived", "", NOW, 1)
    assert result.last_transition_time == NOW
    assert result.status is TRUE


def test_set_condition_leaves_other_types_alone_and_sorts() -> None:
    spec_applied = cond("SpecApplied", TRUE, "Planned")
    existing = [spec_applied, cond("Published", UNKNOWN, "Pending")]
    result = engine.set_condition(existing, "Published", TRUE, "CallbackReceived", "", NOW, 1)
    assert [c.type for c in result] == ["Published", "SpecApplied"]
    assert result[1] == spec_applied


# --- bounds: history and message lengths -----------------------------------------------


def test_history_is_bounded_on_failure() -> None:
    before = publishing(
        attempt=12,
        history=[rec(n, "Transient", "HTTP503") for n in range(2, 12)],
    )
    assert len(before.history or []) == HISTORY_LIMIT == 10
    decision = engine.dispatch_result(
        post(before, retry=RetryPolicy(max_attempts=20)), NOW, TRANSIENT, DEFAULTS, ME
    )
    assert decision.status is not None
    history = decision.status.history or []
    assert len(history) == HISTORY_LIMIT
    assert [r.attempt for r in history] == list(range(3, 13))
    round_trip(decision.status)


def test_history_is_bounded_on_publish() -> None:
    before = publishing(attempt=11, history=[rec(n, "Transient", "HTTP503") for n in range(1, 11)])
    decision = engine.dispatch_result(
        post(before, retry=RetryPolicy(max_attempts=20)), NOW, Accepted(SYNC), DEFAULTS, ME
    )
    assert decision.status is not None
    assert [r.attempt for r in decision.status.history or []] == list(range(2, 12))
    assert (decision.status.history or [])[-1].outcome == "Published"
    round_trip(decision.status)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Failure(ErrorClass.TRANSIENT, "HTTP503", "é" * 5000), id="transient"),
        pytest.param(Failure(ErrorClass.PERMANENT, "HTTP400", "x" * 5000), id="permanent"),
    ],
)
def test_long_messages_are_clipped(failure: Failure) -> None:
    decision = engine.dispatch_result(post(publishing()), NOW, failure, DEFAULTS, ME)
    st = decision.status
    assert st is not None
    assert st.message is not None
    assert len(st.message) == 1024
    assert st.message.endswith("…")
    assert st.last_error is not None
    assert len(st.last_error.message) == 1024
    assert st.last_error.message == failure.message[:1023] + "…"
    record = (st.history or [])[-1]
    assert record.message == failure.message[:1023] + "…"
    if st.phase is Phase.FAILED:
        (condition,) = own(st)
        assert len(condition.message) == 1024
    round_trip(st)


def test_short_message_is_not_clipped() -> None:
    exactly = Failure(ErrorClass.PERMANENT, "HTTP400", "y" * 1024)
    decision = engine.dispatch_result(post(publishing()), NOW, exactly, DEFAULTS, ME)
    assert decision.status is not None
    assert decision.status.last_error is not None
    assert decision.status.last_error.message == "y" * 1024


def test_long_external_url_message_is_clipped() -> None:
    url = "https://social.example/" + "p" * 2000
    outcome = engine.callback(
        post(publishing()), NOW, Callback(1, published=Published("id", url)), DEFAULTS
    )
    st = outcome.decision.status
    assert st is not None
    assert st.external_url == url
    assert st.message is not None
    assert len(st.message) == 1024
    round_trip(st)


# --- a whole life, through from_object and the JSON round trip ---------------------------


def _as_object(p: Post, st: ScheduledPostStatus, retry: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": p.namespace,
        "name": p.name,
        "uid": p.uid,
        "generation": p.generation,
    }
    if retry is not None:
        meta["annotations"] = {RETRY_ANNOTATION: retry}
    return {
        "metadata": meta,
        "spec": p.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": st.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def test_from_object_reads_the_annotation_and_defaults_generation() -> None:
    obj = {
        "metadata": {
            "namespace": "ns",
            "name": "n",
            "uid": "u",
            "annotations": {RETRY_ANNOTATION: "2030-01-01T00:00:00Z"},
        },
        "spec": {"publishAt": "2030-01-15T10:00:00+01:00", "content": {"text": "t"}},
    }
    p = engine.from_object(obj)
    assert (p.namespace, p.name, p.uid, p.generation) == ("ns", "n", "u", 1)
    assert p.retry_request == "2030-01-01T00:00:00Z"
    assert p.spec.publish_at == dt.datetime(2030, 1, 15, 9, tzinfo=dt.UTC)
    assert p.status == ScheduledPostStatus()


def test_life_of_a_post_transient_then_published_then_deleted() -> None:
    defaults = dataclasses.replace(DEFAULTS, ttl_after_published=3600)
    p = post()
    assert engine.plan(p, at(-7200), defaults) == NOTHING  # Pending: no accept write
    claim_at = PUBLISH_AT - dt.timedelta(seconds=AHEAD)
    assert engine.wake_at(p, defaults, ME) == claim_at
    assert engine.act(p, claim_at - dt.timedelta(milliseconds=1), defaults, ME) == NOTHING
    # Claimed ahead: the claim is written, the request waits for the send time.
    claim = engine.act(p, claim_at, defaults, ME)
    assert claim.action is Action.CLAIM
    assert claim.status is not None
    assert (claim.status.attempt, claim.status.next_attempt_at) == (1, PUBLISH_AT)
    p = engine.from_object(_as_object(p, claim.status))
    assert engine.act(p, claim_at, defaults, ME) == NOTHING
    assert engine.wake_at(p, defaults, ME) == PUBLISH_AT
    assert engine.act(p, PUBLISH_AT, defaults, ME) == Decision(action=Action.SEND)
    failure = engine.dispatch_result(p, PUBLISH_AT, TRANSIENT, defaults, ME).status
    assert failure is not None
    assert failure.next_attempt_at == PUBLISH_AT + dt.timedelta(seconds=60)
    p = engine.from_object(_as_object(p, failure))
    retry_at = PUBLISH_AT + dt.timedelta(seconds=60)
    second = engine.act(p, retry_at - dt.timedelta(seconds=AHEAD), defaults, ME).status
    assert second is not None
    assert (second.phase, second.attempt, second.next_attempt_at) == (
        Phase.PUBLISHING,
        2,
        retry_at,
    )
    p = engine.from_object(_as_object(p, second))
    assert engine.act(p, retry_at, defaults, ME) == Decision(action=Action.SEND)
    acked = engine.dispatch_result(p, retry_at + dt.timedelta(seconds=1), Accepted(), defaults, ME)
    assert acked.status is not None
    p = engine.from_object(_as_object(p, acked.status))
    done = engine.callback(p, PUBLISH_AT + dt.timedelta(seconds=70), Callback(2, SYNC), defaults)
    assert done.result is CallbackResult.APPLIED
    assert done.decision.status is not None
    final = done.decision.status
    assert final.phase is Phase.PUBLISHED
    assert [(r.attempt, r.outcome) for r in final.history or []] == [
        (1, "Transient"),
        (2, "Published"),
    ]
    p = engine.from_object(_as_object(p, final))
    assert engine.plan(p, NOW, defaults) == NOTHING
    gone_at = PUBLISH_AT + dt.timedelta(seconds=70 + 3600)
    assert engine.wake_at(p, defaults, ME) == gone_at
    assert engine.act(p, gone_at - dt.timedelta(seconds=1), defaults, ME) == NOTHING
    assert engine.act(p, gone_at, defaults, ME) == Decision(action=Action.DELETE)
    assert engine.wake_at(p, DEFAULTS, ME) is None


def test_life_of_a_post_released_by_an_edit_before_it_was_sent() -> None:
    """The holder claimed ahead; the user moves publishAt before the send time; the
    holder releases the claim (attempt number handed back) and claims again later."""
    p = post(scheduled(next_attempt_at=at(10)))
    claim = engine.act(p, NOW, DEFAULTS, ME).status
    assert claim is not None
    edited = engine.from_object(_as_object(post(claim, generation=2, publish_at=at(600)), claim))
    assert engine.act(edited, NOW, DEFAULTS, OTHER) == NOTHING  # not theirs to release
    released = engine.act(edited, at(1), DEFAULTS, ME)
    assert released.action is Action.NONE
    assert released.status is not None
    assert (released.status.phase, released.status.attempt) == (Phase.SCHEDULED, 0)
    assert released.status.next_attempt_at == at(600)
    p = engine.from_object(_as_object(edited, released.status))
    again = engine.act(p, at(600), DEFAULTS, ME)
    assert again.status is not None
    assert (again.status.attempt, again.status.claimed_generation) == (1, 2)


# --- the network's rate-limit reset: callback error.retryAfterSeconds (issue 15) ---------


def _rate_limited(
    not_before: float | None, *, retryable: bool = True, n8n: float | None = None
) -> Failure:
    klass = ErrorClass.TRANSIENT if retryable else ErrorClass.PERMANENT
    return Failure(
        klass,
        "HTTP429",
        "daily limit reached",
        retry_after_seconds=n8n,
        not_before_seconds=not_before,
    )


@pytest.mark.parametrize(
    ("attempt", "retry", "failure", "delay", "asked"),
    [
        pytest.param(1, {}, _rate_limited(None), 60, False, id="no-reset-normal-backoff"),
        pytest.param(
            1, {"backoff_seconds": 4}, _rate_limited(3600), 3600, True, id="backoff-4s-reset-1h"
        ),
        pytest.param(1, {}, _rate_limited(30), 60, False, id="reset-sooner-than-backoff"),
        pytest.param(2, {}, _rate_limited(0), 120, False, id="reset-zero-is-no-wait"),
        pytest.param(
            1, {}, _rate_limited(86400), 86400, True, id="daily-reset-beyond-maxBackoffSeconds"
        ),
        pytest.param(
            1,
            {"max_backoff_seconds": 600},
            _rate_limited(7 * 86400),
            7 * 86400,
            True,
            id="a-week-whatever-the-cap",
        ),
        pytest.param(
            1, {}, _rate_limited(200, n8n=300), 300, False, id="n8n-retry-after-longer-wins"
        ),
        pytest.param(
            1, {}, _rate_limited(5000, n8n=99999), 5000, True, id="n8n-retry-after-stays-capped"
        ),
    ],
)
def test_callback_retry_after_sets_the_next_attempt(
    attempt: int, retry: dict[str, Any], failure: Failure, delay: float, asked: bool
) -> None:
    """The next attempt no earlier than the network's reset and no earlier than the
    backoff; n8n's own Retry-After stays capped at maxBackoffSeconds."""
    p = post(publishing(attempt=attempt), retry=RetryPolicy(**retry) if retry else None)
    outcome = engine.callback(p, NOW, Callback(attempt, failure=failure), DEFAULTS)
    assert outcome.result is CallbackResult.APPLIED
    new = outcome.decision.status
    assert new is not None
    assert (new.phase, new.attempt) == (Phase.RETRYING, attempt)
    assert new.next_attempt_at == at(delay)
    assert ("the network asked to wait" in (new.message or "")) is asked, new.message
    assert outcome.decision.events[0].reason == "RetryScheduled"


@pytest.mark.parametrize(
    ("attempt", "failure", "reason"),
    [
        pytest.param(1, _rate_limited(3600, retryable=False), "PermanentFailure", id="permanent"),
        pytest.param(3, _rate_limited(3600), "RetriesExhausted", id="last-attempt"),
    ],
)
def test_callback_retry_after_never_revives_a_final_failure(
    attempt: int, failure: Failure, reason: str
) -> None:
    p = post(publishing(attempt=attempt))
    outcome = engine.callback(p, NOW, Callback(attempt, failure=failure), DEFAULTS)
    new = outcome.decision.status
    assert new is not None
    assert (new.phase, new.next_attempt_at) == (Phase.FAILED, None)
    assert new.conditions is not None
    assert [c.reason for c in new.conditions if c.type == "Published"] == [reason]


def test_a_daily_limit_spends_one_attempt() -> None:
    """backoffSeconds 4, answered 429 with a reset in 20 h: one attempt spent, the next
    claimed only when the limit has reset, and that one publishes."""
    p = post(publishing(attempt=1), retry=RetryPolicy(backoff_seconds=4))
    limited = engine.callback(p, NOW, Callback(1, failure=_rate_limited(72000)), DEFAULTS)
    first = limited.decision.status
    assert first is not None and first.next_attempt_at == at(72000)
    p = engine.from_object(_as_object(p, first))
    for early in (4, 8, 3600, 71000):  # where the backoff alone would have retried
        assert engine.act(p, at(early), DEFAULTS, ME) == NOTHING
    claim = engine.act(p, at(72000), DEFAULTS, ME)
    assert claim.action is Action.DISPATCH and claim.status is not None
    assert claim.status.attempt == 2
    p = engine.from_object(_as_object(p, claim.status))
    done = engine.callback(p, at(72001), Callback(2, published=SYNC), DEFAULTS).decision.status
    assert done is not None and done.phase is Phase.PUBLISHED
    assert engine.epoch_attempts(done) == 2


# --- the dispatcher's predicates (issue 16: moved into the engine, table-tested) --------


@pytest.mark.parametrize(
    ("st", "attempt", "expected"),
    [
        pytest.param(publishing(1), 1, False, id="our-claim-as-written"),
        pytest.param(publishing(1), 2, False, id="an-event-older-than-our-claim"),
        pytest.param(publishing(2), 1, True, id="a-later-attempt"),
        pytest.param(publishing(1, dispatched_at=at(0)), 1, True, id="acknowledgement-recorded"),
        pytest.param(publishing(1, claimed_by=OTHER), 1, True, id="taken-over"),
        pytest.param(retrying(1), 1, True, id="failed-by-a-callback"),
        pytest.param(published(1), 1, True, id="published-by-a-callback"),
        pytest.param(scheduled(), 1, False, id="before-the-claim"),
    ],
)
def test_moved_past(st: ScheduledPostStatus, attempt: int, expected: bool) -> None:
    assert engine.moved_past(st, attempt, ME) is expected


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        pytest.param(publishing(1), at(29), id="send-time-and-claim-a-second-ago"),
        pytest.param(
            publishing(1, next_attempt_at=at(20), claimed_at=at(-5)), at(50), id="claimed-ahead"
        ),
        pytest.param(
            publishing(1, next_attempt_at=at(-40), claimed_at=at(-2)), at(28), id="renewed"
        ),
    ],
)
def test_takeover_at_counts_from_the_later_of_send_time_and_claim(
    st: ScheduledPostStatus, expected: dt.datetime
) -> None:
    assert engine.takeover_at(st, DEFAULTS) == expected
    # The peer's wake-up for someone else's claim is that same moment.
    theirs = st.model_copy(update={"claimed_by": OTHER})
    assert engine.wake_at(post(theirs), DEFAULTS, ME) == expected


@pytest.mark.parametrize(
    ("st", "budget", "expected"),
    [
        pytest.param(publishing(1), 10.0, False, id="fresh"),
        pytest.param(
            publishing(1, next_attempt_at=at(-25), claimed_at=at(-25)), 10.0, True, id="parked-25s"
        ),
        pytest.param(
            publishing(1, next_attempt_at=at(-21), claimed_at=at(-21)), 10.0, True, id="9s-left"
        ),
        pytest.param(
            publishing(1, next_attempt_at=at(-19), claimed_at=at(-19)), 12.0, True, id="budget-12"
        ),
        pytest.param(
            publishing(1, next_attempt_at=at(-20), claimed_at=at(-20)), 10.0, False, id="10s-left"
        ),
        pytest.param(
            publishing(1, next_attempt_at=at(20), claimed_at=at(-25)), 10.0, False, id="ahead"
        ),
    ],
)
def test_claim_is_old(st: ScheduledPostStatus, budget: float, expected: bool) -> None:
    assert engine.claim_is_old(st, NOW, DEFAULTS, budget) is expected


NEEDS_PLAN_ROWS = [
    pytest.param(post(None), False, id="new"),
    pytest.param(post(None, suspend=True), True, id="new-suspended"),
    pytest.param(post(None, retry_request="r0"), True, id="new-retry-asked"),
    pytest.param(post(scheduled()), False, id="scheduled"),
    pytest.param(post(scheduled(), generation=2), True, id="edited"),
    pytest.param(post(suspended(), generation=2), True, id="resumed-or-edited-while-suspended"),
    pytest.param(post(failed(), retry_request="2030-01-15T08:00:00Z"), True, id="retry-asked"),
    pytest.param(
        post(failed(last_handled_retry_request="r1"), retry_request="r1"),
        False,
        id="retry-handled",
    ),
    pytest.param(post(published(), generation=2), True, id="edited-after-publishing"),
    pytest.param(post(publishing(1), generation=2), True, id="edited-while-claimed"),
    pytest.param(post(retrying(1)), False, id="retrying"),
]


@pytest.mark.parametrize(("p", "expected"), NEEDS_PLAN_ROWS)
def test_needs_plan(p: Post, expected: bool) -> None:
    assert engine.needs_plan(p) is expected


@pytest.mark.parametrize(("p", "expected"), NEEDS_PLAN_ROWS)
def test_needs_plan_is_exactly_when_plan_has_something_to_write(p: Post, expected: bool) -> None:
    """plan() for the instance that may act (the claim's holder, if any) writes iff
    needs_plan: the dispatcher's shortcut never skips a plan nor plans in vain."""
    holder = p.status.claimed_by or ME
    assert (engine.plan(p, NOW, DEFAULTS, holder) is not NOTHING) is expected


def test_renew_claim_moves_only_claimed_at_and_guards_the_whole_status() -> None:
    before = publishing(1, next_attempt_at=at(-25), claimed_at=at(-25))
    decision = engine.renew_claim(post(before), NOW)
    assert decision.status == before.model_copy(update={"claimed_at": NOW})
    assert decision.guard is Guard.WHOLE and decision.spec_dependent
    assert decision.events == () and decision.action is Action.NONE
    assert not engine.claim_is_old(decision.status, NOW, DEFAULTS, 10.0)


def test_take_over_for_an_unknown_target_fails_instead_of_claiming() -> None:
    orphan = publishing(1, claimed_by=OTHER, next_attempt_at=at(-60), claimed_at=at(-60))
    defaults = dataclasses.replace(DEFAULTS, targets=frozenset({"other"}))
    decision = engine.act(post(orphan), NOW, defaults, ME)
    assert decision.action is Action.NONE
    assert decision.status is not None and decision.status.phase is Phase.FAILED
    assert decision.status.last_error is not None
    assert decision.status.last_error.code == "UnknownTarget"


def test_event_reasons_are_one_enum() -> None:
    assert engine.Reason.RECLAIMED == "Reclaimed"
    assert Action["DISPATCH"] is Action.CLAIM  # the old name is an alias, not a second action
