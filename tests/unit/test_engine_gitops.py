"""The engine's side of issue 20, items 5 and 6 (builders are test_engine.py's).

- The operator's default starting deadline: a post with no deadline of its own that the
  operator can first dispatch more than `Defaults.starting_deadline_seconds` after its
  publishAt fails with MissedDeadline; the post's own deadline overrides the default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from herald import engine
from herald.engine import Action, Post
from herald.models import Phase
from tests.unit.test_engine import (
    DEFAULTS,
    ME,
    NOW,
    at,
    failed,
    post,
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
