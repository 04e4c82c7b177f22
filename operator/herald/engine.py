"""The ScheduledPost state machine: pure functions from (post, now, input) to a decision.

Nothing here reads a clock, a random source, the network or the API server. Callers
(the kopf handlers, the dispatcher, the callback sidecar) fetch the post, call one of
the functions below with `now`, then write `Decision.status` with a compare-and-swap
and post `Decision.events`. Because every writer goes through these functions, the
operator and the sidecar cannot disagree about what a transition means.

Phases:

    Pending ╌╌read as╌▶ Scheduled ──due: claim──▶ Publishing ──callback ok──▶ Published
      │                  ▲  │                     │   │
      │          resume  │  │ suspend             │   └─transient / stale─▶ Retrying ─due─┐
      ▼                  │  ▼                     │                         (claim again) │
    Failed ◀── deadline ─┴ Suspended              └─permanent / exhausted─▶ Failed ◀──────┘
                                                                  ▲ retry annotation resets

A new post is Pending (the CRD's default status: nobody wrote it). `as_planned` reads it
as the accept would have written it, Scheduled at spec.publishAt, so the claim is its
first write; only a post that needs more (suspended, a retry asked for) is accepted by a
write of its own. 20,000 new posts thus cost no write until each is due.

Entry points:
  plan()            level-triggered reaction to the object as it is (accept, edits,
                    suspend/resume, manual retry); never dispatches.
  act()             what the dispatcher does when the post's wake-up time arrives
                    (claim, missed deadline, stale recovery, re-claim of an orphan).
  dispatch_result() the outcome of the webhook request for a claimed attempt.
  callback()        n8n's report of the outcome of an attempt.
  wake_at()         when act() next has something to do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from herald.models import (
    HISTORY_LIMIT,
    PUBLICATION_KIND,
    RETRY_ANNOTATION,
    AccountRef,
    AttemptRecord,
    Condition,
    ConditionStatus,
    ErrorClass,
    LastError,
    Phase,
    PublicationSpec,
    PublicationState,
    ScheduledPostSpec,
    ScheduledPostStatus,
    format_time,
    parse_spec,
    parse_status,
)

PUBLISHED = "Published"
SPEC_APPLIED = "SpecApplied"
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
KSTATUS = (READY, RECONCILING, STALLED)
"""The kstatus conditions (sigs.k8s.io/cli-utils/pkg/kstatus): derived from the phase by
with_kstatus() on every decision, so Flux, `kubectl wait` and other tools read them."""
_MESSAGE_MAX = 1024
RETRY_REQUEST_MAX = 256
RETRY_REASON = "RetryRequested"
"""The Published condition's reason from a manual retry until the retry's outcome."""


@dataclass(frozen=True)
class Defaults:
    """Operator-wide defaults for what a post's spec leaves unset."""

    max_attempts: int = 5
    backoff_seconds: int = 60
    max_backoff_seconds: int = 3600
    stale_after_seconds: int = 600
    jitter_ratio: float = 0.1
    claim_timeout_seconds: float = 30.0
    """How long after its send time a claim may go without n8n's acknowledgement being
    recorded before another operator instance may take it over. Must exceed the webhook
    request's deadline plus the time allowed to record its outcome."""
    claim_ahead_seconds: float = 30.0
    """How long before its time a post is claimed, so that at the due second only the
    request goes out. Each replica claims at its own point of the last two thirds of this
    window (derived from the post and the replica), so replicas rarely race for a claim."""
    starting_deadline_seconds: int | None = None
    """The starting deadline of a post whose spec sets none: a post first dispatchable
    later than this after its publishAt fails with MissedDeadline. None: no default (the
    operator's setting 0 means this)."""
    ttl_after_published: int | None = None
    """Delete Published posts this long after publishedAt (None: keep)."""
    ttl_after_failed: int | None = None
    """Delete Failed posts this long after they failed (None: keep)."""
    targets: frozenset[str] | None = None
    """The configured n8n targets; a post naming another fails with UnknownTarget.
    None: not checked (the callback sidecar, which never dispatches)."""
    ledger_recheck_seconds: float = 5.0
    """How often a post whose publication record another object holds (its send still
    under way) looks at the record again, until the holder's claim and stale time pass."""


@dataclass(frozen=True)
class Policy:
    """The effective retry and staleness policy of one post."""

    max_attempts: int
    backoff_seconds: int
    max_backoff_seconds: int
    stale_after_seconds: int
    jitter_ratio: float
    claim_timeout_seconds: float

    @classmethod
    def of(cls, spec: ScheduledPostSpec, defaults: Defaults) -> Policy:
        retry = spec.retry
        return cls(
            max_attempts=_first(retry.max_attempts if retry else None, defaults.max_attempts),
            backoff_seconds=_first(
                retry.backoff_seconds if retry else None, defaults.backoff_seconds
            ),
            max_backoff_seconds=_first(
                retry.max_backoff_seconds if retry else None, defaults.max_backoff_seconds
            ),
            stale_after_seconds=spec.stale_after_seconds or defaults.stale_after_seconds,
            jitter_ratio=defaults.jitter_ratio,
            claim_timeout_seconds=defaults.claim_timeout_seconds,
        )


_NO_CLAIM: dict[str, Any] = {
    "claimed_at": None,
    "claimed_by": None,
    "claimed_generation": None,
    "dispatched_at": None,
}
"""The status fields a claim sets, cleared when the claim is given back or reset."""


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True)
class Post:
    """What the state machine needs to know about one ScheduledPost."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ScheduledPostSpec
    status: ScheduledPostStatus
    retry_request: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # PascalCase
    message: str
    routine: bool = False
    """A step every post takes (Scheduled, Published): the status already says it, so it
    is posted only when the operator is configured to post routine Events."""


class Reason(enum.StrEnum):
    """The reasons of the Events Herald posts, matched by the writer's counters (and by
    anything else that reacts to an Event): one name each, never a string in two files."""

    SCHEDULED = "Scheduled"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    RESCHEDULED = "Rescheduled"
    CHANGED_AFTER_DISPATCH = "ChangedAfterDispatch"
    RETRY_REQUESTED = "RetryRequested"
    RETRY_IGNORED = "RetryIgnored"
    RETRY_SCHEDULED = "RetryScheduled"
    STALE_RECOVERED = "StaleRecovered"
    RECLAIMED = "Reclaimed"
    PUBLISHED = "Published"
    FAILED = "Failed"
    UNKNOWN_TARGET = "UnknownTarget"
    MISSED_DEADLINE = "MissedDeadline"
    STATUS_WRITE_REJECTED = "StatusWriteRejected"
    ALREADY_PUBLISHED = "AlreadyPublished"
    ACCOUNT_SUSPENDED = "AccountSuspended"
    QUOTA_EXCEEDED = "QuotaExceeded"


class Action(enum.Enum):
    NONE = "none"
    CLAIM = "claim"
    """Write the claim; if the compare-and-swap wins, send the webhook at the claimed
    attempt's send time (status.nextAttemptAt)."""
    DISPATCH = "claim"
    """The old name of CLAIM (an alias, kept while other branches still say it)."""
    SEND = "send"
    """Nothing to write: this instance holds the claim and its send time has come."""
    DELETE = "delete"
    """The post's TTL after finishing has passed: delete it."""


class Guard(enum.Enum):
    """What a status write's compare-and-swap tests besides the uid."""

    WHOLE = "whole"
    """The whole previous status (and metadata.generation when the decision read the
    spec): any other write in between makes this one lose."""
    ATTEMPT = "attempt"
    """Only phase and attempt: used by writes that commute with each other (n8n's
    callback, and the operator's record of n8n's acknowledgement)."""
    CLAIM = "claim"
    """Only attempt and claimedBy: the record that n8n acknowledged the attempt, which
    stays true whatever a callback wrote meanwhile."""


@dataclass(frozen=True)
class Decision:
    status: ScheduledPostStatus | None = None
    """The status to write, or None when nothing changes."""
    events: tuple[Event, ...] = ()
    action: Action = Action.NONE
    guard: Guard = Guard.WHOLE
    spec_dependent: bool = True
    """The decision read the spec: the write also tests metadata.generation, so an edit
    that has not reached the writer's cache makes it lose instead of acting on old data."""


NOTHING = Decision()


# --- outcomes fed in by the adapters ---------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """n8n answered 2xx. `published` carries a synchronous result, if the body had one."""

    published: Published | None = None


@dataclass(frozen=True)
class Published:
    external_id: str | None = None
    external_url: str | None = None


@dataclass(frozen=True)
class Failure:
    error_class: ErrorClass
    code: str
    message: str
    retry_after_seconds: float | None = None
    """n8n's own Retry-After header: honoured when longer than the backoff, capped at
    maxBackoffSeconds (a misconfigured n8n cannot park a post for a year)."""
    not_before_seconds: float | None = None
    """The network's rate-limit reset, from the callback's error.retryAfterSeconds: the
    next attempt goes no earlier, whatever maxBackoffSeconds (the callback API bounds it
    to a week), so a daily limit spends one attempt instead of the whole budget."""

    @property
    def retryable(self) -> bool:
        return self.error_class in (ErrorClass.TRANSIENT, ErrorClass.STALE)


Outcome = Accepted | Failure


class CallbackResult(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class CallbackDecision:
    result: CallbackResult
    decision: Decision = NOTHING
    reason: str = ""


@dataclass(frozen=True)
class Callback:
    attempt: int
    published: Published | None = None
    """Set when n8n reports the post published."""
    failure: Failure | None = None
    """Set when n8n reports it failed; `error_class` says whether it may be retried."""


# --- helpers ---------------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> list[Condition]:
    """Upsert a condition; lastTransitionTime moves only when `status` changes."""
    existing = {c.type: c for c in conditions or []}
    old = existing.get(type_)
    since = old.last_transition_time if old and old.status == status else now.replace(microsecond=0)
    existing[type_] = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=_clip(message),
        last_transition_time=since,
        observed_generation=generation,
    )
    return sorted(existing.values(), key=lambda c: c.type)


def kstatus_conditions(status: ScheduledPostStatus, now: dt.datetime) -> list[Condition] | None:
    """`status.conditions` with Ready, Reconciling and Stalled as its phase implies.

    Ready is True once the current generation is accepted and nothing is under way
    (Scheduled, Suspended, Published), False with the reason otherwise. Reconciling
    (Publishing, Retrying) and Stalled (Failed) are "abnormal-true" conditions: present
    only while True, as Flux's own controllers write them, so a settled post carries one
    condition more than before, not three.
    """
    phase = status.phase
    if phase is None or phase is Phase.PENDING:
        return status.conditions
    gen = status.observed_generation or 0
    message = status.message or str(phase)
    if phase is Phase.FAILED:
        published = next((c for c in status.conditions or [] if c.type == PUBLISHED), None)
        reason = published.reason if published is not None else str(Phase.FAILED)
    else:
        reason = str(phase)
    ready = phase in (Phase.SCHEDULED, Phase.SUSPENDED, Phase.PUBLISHED)
    value = ConditionStatus.TRUE if ready else ConditionStatus.FALSE
    conditions = set_condition(status.conditions, READY, value, reason, message, now, gen)
    for type_, present in (
        (RECONCILING, phase in (Phase.PUBLISHING, Phase.RETRYING)),
        (STALLED, phase is Phase.FAILED),
    ):
        if present:
            conditions = set_condition(
                conditions, type_, ConditionStatus.TRUE, reason, message, now, gen
            )
        else:
            conditions = [c for c in conditions if c.type != type_]
    return conditions


def with_kstatus(decision: Decision, now: dt.datetime) -> Decision:
    """The decision with its status's kstatus conditions brought up to date.

    Only on writes that happen anyway: no new write. Not on the record of n8n's
    acknowledgement (Guard.CLAIM): it changes no phase, and it commutes with a callback
    only because it touches nothing but dispatchedAt.
    """
    status = decision.status
    if status is None or decision.guard is Guard.CLAIM:
        return decision
    conditions = kstatus_conditions(status, now)
    if conditions == status.conditions:
        return decision
    return dataclasses.replace(decision, status=_update(status, conditions=conditions))


def _with_history(
    status: ScheduledPostStatus, now: dt.datetime, outcome: str, failure: Failure | None
) -> list[AttemptRecord]:
    record = AttemptRecord(
        attempt=max(status.attempt, 1),
        claimed_at=status.claimed_at,
        finished_at=now,
        outcome=outcome,
        code=failure.code if failure else None,
        message=_clip(failure.message) if failure else None,
    )
    return [*(status.history or []), record][-HISTORY_LIMIT:]


def _update(status: ScheduledPostStatus, **changes: Any) -> ScheduledPostStatus:
    if "message" in changes and changes["message"] is not None:
        changes["message"] = _clip(changes["message"])
    return status.model_copy(update=changes)


def _published_condition(
    post: Post,
    status: ScheduledPostStatus,
    value: ConditionStatus,
    reason: str,
    msg: str,
    now: dt.datetime,
) -> list[Condition]:
    return set_condition(status.conditions, PUBLISHED, value, reason, msg, now, post.generation)


def jitter_fraction(uid: str, attempt: int | str) -> float:
    """A stable number in [0, 1) for (uid, attempt).

    Derived from the post rather than drawn at random so the function stays pure and
    the operator and the sidecar compute the same retry time for the same failure,
    while different posts that failed together still spread out.
    """
    digest = hashlib.sha256(f"{uid}:{attempt}".encode()).digest()
    # 53 bits: exactly representable, so the largest value stays below 1.0.
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def backoff_seconds(policy: Policy, attempt: int, uid: str) -> float:
    """Delay after `attempt` failed: min(cap, base * 2^(attempt-1)) ±jitter_ratio, and
    never above the cap (maxBackoffSeconds is documented as an upper bound)."""
    exponent = max(attempt - 1, 0)
    cap = float(policy.max_backoff_seconds)
    base = min(cap, policy.backoff_seconds * 2.0 ** min(exponent, 62))
    spread = policy.jitter_ratio * (2 * jitter_fraction(uid, attempt) - 1)
    return min(cap, max(0.0, base * (1 + spread)))


def retry_delay(policy: Policy, attempt: int, uid: str, retry_after: float | None) -> float:
    """The backoff, or a server's Retry-After when longer, capped at maxBackoffSeconds."""
    delay = backoff_seconds(policy, attempt, uid)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, float(policy.max_backoff_seconds)))
    return delay


def _identity(claimant: str) -> str:
    return claimant.rsplit("/", 1)[0]


def idempotency_key(base: str, retry_epoch: int) -> str:
    """Stable across the attempts of one publication; new after each manual retry, so an
    n8n that de-duplicates on it drops a re-sent attempt but not a retry someone asked for.

    `base` is the post's `fingerprint`: the same for an object deleted and applied again,
    so n8n's de-duplication stops a re-send even when the ledger itself is gone."""
    return base if retry_epoch == 0 else f"{base}.{retry_epoch}"


def epoch_attempts(status: ScheduledPostStatus) -> int:
    """Attempts since the last manual retry that count against the retry policy: an
    attempt orphaned by a dead operator and sent again is not the post's failure."""
    orphaned = sum(
        1
        for r in status.history or []
        if r.outcome == "Orphaned" and r.attempt > status.retry_base_attempt
    )
    return max(status.attempt - status.retry_base_attempt - orphaned, 0)


def claim_offset(uid: str, me: str, ahead: float) -> float:
    """How long before its send time this instance claims the post: in [ahead/3, ahead].

    Derived from (uid, identity) so each replica has its own moment for each post: the
    earliest claims, the others see the claim through the watch before their moment comes.
    """
    return ahead * (1 + 2 * jitter_fraction(uid, _identity(me))) / 3


def finished_at(status: ScheduledPostStatus) -> dt.datetime | None:
    """When a Published or Failed post ended (its TTL counts from here)."""
    if status.phase is Phase.PUBLISHED:
        return status.published_at
    if status.phase is Phase.FAILED:
        cond = next((c for c in status.conditions or [] if c.type == PUBLISHED), None)
        if cond is not None:
            return cond.last_transition_time
        return status.last_error.at if status.last_error else None
    return None


def ttl_seconds(post: Post, defaults: Defaults) -> int | None:
    if post.spec.ttl_seconds_after_finished is not None:
        return post.spec.ttl_seconds_after_finished
    if post.status.phase is Phase.PUBLISHED:
        return defaults.ttl_after_published
    if post.status.phase is Phase.FAILED:
        return defaults.ttl_after_failed
    return None


# --- accept / plan ---------------------------------------------------------------------


def _accept(post: Post, now: dt.datetime) -> Decision:
    spec = post.spec
    base = ScheduledPostStatus(
        attempt=0,
        observed_generation=post.generation,
        conditions=_published_condition(
            post, post.status, ConditionStatus.UNKNOWN, "Pending", "Not published yet", now
        ),
        last_handled_retry_request=handled_request(post.retry_request),
    )
    if spec.suspend:
        status = _update(base, phase=Phase.SUSPENDED, message="Suspended by spec.suspend")
        event = Event("Normal", Reason.SUSPENDED, "Suspended by spec.suspend")
        return Decision(status, (event,))
    at = spec.publish_at
    msg = f"Publishes at {_fmt(at)} via target {spec.target}"
    status = _update(base, phase=Phase.SCHEDULED, next_attempt_at=at, message=msg)
    return Decision(status, (Event("Normal", Reason.SCHEDULED, msg, routine=True),))


def _human(seconds: float) -> str:
    """ " (3d 2h)" for a lateness of days or hours, so an Event says how late at a glance;
    nothing under an hour, where the seconds read well enough."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f" ({days}d {hours}h)"
    if hours:
        return f" ({hours}h {rest // 60}m)"
    return ""


def _fmt(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handled_request(value: str | None) -> str | None:
    """The annotation's value as status.lastHandledRetryRequest can hold it."""
    return None if value is None else value[:RETRY_REQUEST_MAX]


def not_sent(status: ScheduledPostStatus) -> bool:
    """Claimed, but n8n's acknowledgement is not recorded: maybe not sent yet."""
    return status.phase is Phase.PUBLISHING and status.dispatched_at is None


def plan(post: Post, now: dt.datetime, defaults: Defaults, me: str | None = None) -> Decision:
    """React to the object as it is now. Never dispatches: act() does that.

    `me` is the instance asking; only the holder of a claim that has not been sent may
    release it when the spec changes (it alone knows it has not sent it).
    """
    return with_kstatus(_plan(post, now, defaults, me), now)


def is_new(status: ScheduledPostStatus) -> bool:
    """Never written: Pending by the CRD's default (None from an API server or a test
    that did not default it)."""
    return status.phase is None or status.phase is Phase.PENDING


def _accept_needed(post: Post) -> bool:
    """Does a new post need a write before its claim: suspended, or a retry asked for?"""
    request = handled_request(post.retry_request)
    return post.spec.suspend or request not in (None, post.status.last_handled_retry_request)


def as_planned(post: Post) -> Post:
    """The post as the state machine reads it: a new post that needs no accept write
    reads as Scheduled at spec.publishAt for the current generation (what the accept
    wrote before posts had a default status); any other post as it is.

    Parse once, then this: every decision and every write (the claim, a hold, a missed
    deadline) then starts from that Scheduled status, and the status patch writes all of
    it over the defaulted Pending one.
    """
    status = post.status
    if not is_new(status) or _accept_needed(post):
        return post
    at = post.spec.publish_at
    planned = _update(
        status,
        phase=Phase.SCHEDULED,
        attempt=0,
        observed_generation=post.generation,
        next_attempt_at=at,
        message=f"Publishes at {_fmt(at)} via target {post.spec.target}",
    )
    return replace_status(post, planned)


def _plan(post: Post, now: dt.datetime, defaults: Defaults, me: str | None = None) -> Decision:
    """plan() without the kstatus conditions."""
    post = as_planned(post)
    status = post.status
    if is_new(status):
        return _accept(post, now)
    request = handled_request(post.retry_request)
    if request is not None and request != status.last_handled_retry_request:
        return _retry_request(post, now)
    if status.observed_generation != post.generation:
        if not_sent(status):
            if me is not None and status.claimed_by == me:
                return _release(post, now, "Spec changed before the post was sent", spent=False)
            return NOTHING  # the holder releases it, or it is taken over as an orphan
        return _spec_changed(post, now)
    return NOTHING


def _release(post: Post, now: dt.datetime, why: str, *, spent: bool) -> Decision:
    """Give back a claim that was not sent, and plan again from the current spec.

    `spent=False`: the holder itself releases it and knows nothing went out, so the
    attempt number is handed back. `spent=True`: an orphaned claim whose holder may have
    sent it; the number stays used so (uid, attempt) never names two different sends.
    """
    status = post.status
    attempt = status.attempt if spent else status.attempt - 1
    released = _update(
        status,
        phase=Phase.SCHEDULED if spent or attempt == status.retry_base_attempt else Phase.RETRYING,
        attempt=attempt,
        history=_with_history(status, now, "Cancelled", None) if spent else status.history,
        **_NO_CLAIM,
    )
    decision = _spec_changed(replace_status(post, released), now)
    assert decision.status is not None
    msg = f"{why}: attempt {status.attempt} released unsent; {decision.status.message}"
    reason = decision.events[0].reason if decision.events else Reason.RESCHEDULED
    return Decision(_update(decision.status, message=msg), (Event("Normal", reason, msg),))


def replace_status(post: Post, status: ScheduledPostStatus) -> Post:
    return Post(
        post.namespace,
        post.name,
        post.uid,
        post.generation,
        post.spec,
        status,
        post.retry_request,
    )


def _spec_changed(post: Post, now: dt.datetime) -> Decision:
    status, spec, gen = post.status, post.spec, post.generation
    phase = status.phase
    if phase in (Phase.PUBLISHING, Phase.PUBLISHED):
        sent = "is being published" if phase is Phase.PUBLISHING else "was published"
        msg = (
            f"Spec changed (generation {gen}) after the post was dispatched: the post {sent} "
            "as it was dispatched; the change has no effect"
        )
        conditions = set_condition(
            status.conditions,
            SPEC_APPLIED,
            ConditionStatus.FALSE,
            "ChangedAfterDispatch",
            msg,
            now,
            gen,
        )
        new = _update(status, observed_generation=gen, conditions=conditions)
        return Decision(new, (Event("Warning", Reason.CHANGED_AFTER_DISPATCH, msg),))
    if phase is Phase.FAILED:
        # A failed post stays failed until someone asks for a retry; the edit (say, a
        # fixed text) is what that retry will send.
        return Decision(_update(status, observed_generation=gen))
    if spec.suspend:
        if phase is Phase.SUSPENDED:
            return Decision(_update(status, observed_generation=gen))
        new = _update(
            status,
            phase=Phase.SUSPENDED,
            observed_generation=gen,
            next_attempt_at=None,
            message="Suspended by spec.suspend",
        )
        return Decision(new, (Event("Normal", Reason.SUSPENDED, "Suspended by spec.suspend"),))
    # Scheduled, Retrying, or Suspended being resumed: plan again from the new spec.
    if status.attempt == status.retry_base_attempt:
        at = spec.publish_at if status.attempt == 0 else max(now, spec.publish_at)
        new_phase = Phase.SCHEDULED
        msg = f"Publishes at {_fmt(at)} via target {spec.target}"
    else:
        previous = status.next_attempt_at or now
        at = (
            max(previous, spec.publish_at) if phase is Phase.RETRYING else max(now, spec.publish_at)
        )
        new_phase = Phase.RETRYING
        msg = f"Attempt {status.attempt + 1} at {_fmt(at)} via target {spec.target}"
    conditions = set_condition(
        status.conditions,
        SPEC_APPLIED,
        ConditionStatus.TRUE,
        "Planned",
        f"Generation {gen} planned",
        now,
        gen,
    )
    new = _update(
        status,
        phase=new_phase,
        next_attempt_at=at,
        observed_generation=gen,
        message=msg,
        conditions=conditions,
    )
    reason = Reason.RESUMED if phase is Phase.SUSPENDED else Reason.RESCHEDULED
    return Decision(new, (Event("Normal", reason, msg),))


def _retry_request(post: Post, now: dt.datetime) -> Decision:
    status = post.status
    handled = _update(status, last_handled_retry_request=handled_request(post.retry_request))
    if status.phase not in (Phase.FAILED, Phase.RETRYING):
        msg = f"Retry request ignored: the post is {status.phase}, retries apply to Failed posts"
        return Decision(handled, (Event("Warning", Reason.RETRY_IGNORED, msg),))
    # Attempt numbers keep counting (tokens and webhook-ids of earlier attempts stay
    # spent); the policy counts from here, and the idempotency key changes.
    reset: dict[str, Any] = {
        "retry_epoch": status.retry_epoch + 1,
        "retry_base_attempt": status.attempt,
        "observed_generation": post.generation,
        **_NO_CLAIM,
    }
    if post.spec.suspend:
        phase, next_at, what = Phase.SUSPENDED, None, "; suspended by spec.suspend"
    else:
        phase, next_at, what = Phase.SCHEDULED, now, ", dispatching now"
    msg = f"Retry requested ({post.retry_request}): attempts reset{what}"
    # Not Failed any more, suspended or not: the condition says so, so that should the
    # retry fail again its lastTransitionTime (the TTL's start) is that new failure.
    conditions = _published_condition(post, status, ConditionStatus.UNKNOWN, RETRY_REASON, msg, now)
    new = _update(
        handled,
        phase=phase,
        next_attempt_at=next_at,
        message=msg,
        conditions=conditions,
        **reset,
    )
    return Decision(new, (Event("Normal", Reason.RETRY_REQUESTED, msg),))


# --- time-driven: act ------------------------------------------------------------------


def send_at(status: ScheduledPostStatus) -> dt.datetime:
    """When a claimed attempt goes out: its nextAttemptAt, or at once."""
    return status.next_attempt_at or status.claimed_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def takeover_at(status: ScheduledPostStatus, defaults: Defaults) -> dt.datetime:
    """When another instance may take a claim over as orphaned: claim_timeout after the
    later of its send time and claimedAt. Both durable, so the holder and its peers
    compute the same moment; the holder moves it on by renewing (`renew_claim`)."""
    since = max(send_at(status), status.claimed_at or send_at(status))
    return since + dt.timedelta(seconds=defaults.claim_timeout_seconds)


def claim_is_old(
    status: ScheduledPostStatus, now: dt.datetime, defaults: Defaults, budget: float
) -> bool:
    """Has the holder less than `budget` seconds (a request and its record) before a peer
    may take the claim over? Then it must renew the claim before it sends."""
    return (takeover_at(status, defaults) - now).total_seconds() < budget


def moved_past(status: ScheduledPostStatus, attempt: int, me: str) -> bool:
    """Does this status show `me`'s claimed `attempt` as over or taken over? A status
    older than the claim (a lower attempt) does not."""
    if status.attempt != attempt:
        return status.attempt > attempt
    return (
        status.phase is not Phase.PUBLISHING
        or status.dispatched_at is not None
        or status.claimed_by != me
    )


def needs_plan(post: Post) -> bool:
    """Is there level-triggered work that waits for no time: a new post, an edit, a manual
    retry? Exactly when plan() has something to write (for any instance)."""
    status = post.status
    if is_new(status):
        return _accept_needed(post)
    if status.observed_generation != post.generation:
        return True
    request = handled_request(post.retry_request)
    return request not in (None, status.last_handled_retry_request)


def renew_claim(post: Post, now: dt.datetime) -> Decision:
    """The holder of a claim not sent yet moves its take-over deadline on (the claim
    waited behind a target limit, or the process was slow): claimedAt becomes now. The
    whole-status guard makes it lose against a take-over or any other write."""
    new = _update(post.status, claimed_at=now)
    return Decision(new, spec_dependent=True)


def wake_at(
    post: Post, defaults: Defaults, me: str, now: dt.datetime | None = None
) -> dt.datetime | None:
    """When act() has something to do for this post (None: nothing, ever, by time).

    `now` matters only for a claim left by this pod's previous incarnation: before its
    send time it is taken over at once; from then on its request may be at n8n, so it is
    waited for like any peer's (without `now`, the cautious answer)."""
    post = as_planned(post)
    status = post.status
    policy = Policy.of(post.spec, defaults)
    if status.phase in (Phase.SCHEDULED, Phase.RETRYING):
        if status.next_attempt_at is None:
            return None
        ahead = claim_offset(post.uid, me, defaults.claim_ahead_seconds)
        return status.next_attempt_at - dt.timedelta(seconds=ahead)
    if status.phase is Phase.PUBLISHING:
        if status.dispatched_at is not None:
            return status.dispatched_at + dt.timedelta(seconds=policy.stale_after_seconds)
        if status.claimed_by == me:
            return send_at(status)
        if (
            status.claimed_by
            and _identity(status.claimed_by) == _identity(me)
            and now is not None
            and now < send_at(status)
        ):
            # Our own identity with another incarnation: that process is gone (it was
            # this pod's previous container) and sends nothing before the claim's send
            # time, so until then its claim is orphaned right now. After it, n8n may be
            # running its request (killed during the record grace): a re-send would be a
            # second request for a publication n8n accepted, so wait like any peer.
            return status.claimed_at or now
        return takeover_at(status, defaults)
    ttl = ttl_seconds(post, defaults)
    ended = finished_at(status)
    if ttl is not None and ended is not None:
        return ended + dt.timedelta(seconds=ttl)
    return None


def act(post: Post, now: dt.datetime, defaults: Defaults, me: str) -> Decision:
    """The time-driven transitions. `me` is this operator instance: `identity/incarnation`."""
    return with_kstatus(_act(post, now, defaults, me), now)


def _act(post: Post, now: dt.datetime, defaults: Defaults, me: str) -> Decision:
    post = as_planned(post)
    planned = _plan(post, now, defaults, me)
    if planned is not NOTHING:
        # Planning first: an edited, suspended or retried post must not be dispatched
        # from the view before the change. The write re-triggers act() via the watch.
        return planned
    when = wake_at(post, defaults, me, now)
    if when is None or now < when:
        return NOTHING
    status = post.status
    policy = Policy.of(post.spec, defaults)
    if status.phase in (Phase.SCHEDULED, Phase.RETRYING):
        deadline = starting_deadline(post, defaults)
        due = deadline_start(post)
        if deadline is not None and due is not None:
            late = (now - due).total_seconds()
            if late > deadline:
                own = post.spec.starting_deadline_seconds is not None
                return _missed_deadline(post, now, late, deadline, own=own)
        if defaults.targets is not None and post.spec.target not in defaults.targets:
            return _unknown_target(post, now, defaults.targets)
        return _claim(post, now, me, reclaim=False)
    if status.phase is Phase.PUBLISHING:
        if status.dispatched_at is not None:
            failure = Failure(
                ErrorClass.STALE,
                "CallbackTimeout",
                f"No callback from n8n within {policy.stale_after_seconds}s of dispatch",
            )
            decision = _fail_attempt(post, now, failure, policy)
            return Decision(
                decision.status,
                (Event("Warning", Reason.STALE_RECOVERED, failure.message), *decision.events),
            )
        if status.claimed_by == me:
            return Decision(action=Action.SEND)
        if status.claimed_generation is not None and status.claimed_generation != post.generation:
            # The spec changed after the orphaned claim: plan from the new spec rather
            # than send what the dead holder may or may not have sent.
            return _release(post, now, f"Claim by {status.claimed_by} was orphaned", spent=True)
        if defaults.targets is not None and post.spec.target not in defaults.targets:
            return _unknown_target(post, now, defaults.targets)
        return _claim(post, now, me, reclaim=True)
    if ttl_seconds(post, defaults) is not None:
        return Decision(action=Action.DELETE)
    return NOTHING


def defer_claim(
    post: Post, now: dt.datetime, until: dt.datetime | None, why: str, *, spent: bool = False
) -> Decision:
    """See _defer_claim; with the kstatus conditions."""
    return with_kstatus(_defer_claim(post, now, until, why, spent=spent), now)


def _defer_claim(
    post: Post, now: dt.datetime, until: dt.datetime | None, why: str, *, spent: bool = False
) -> Decision:
    """Hand back a claim this instance holds and has not sent (its target's circuit is
    open, or it is shutting down); the send time becomes `until` (None: unchanged, for
    another replica to take at once). The attempt number is given back, unless `spent`:
    a claim taken over from an orphan may have gone out under that number already."""
    status = post.status
    attempt = status.attempt if spent else max(status.attempt - 1, 0)
    at = until or send_at(status)
    msg = f"Attempt {status.attempt} not sent: {why}; dispatching at {_fmt(at)}"
    new = _update(
        status,
        phase=Phase.SCHEDULED if attempt == status.retry_base_attempt else Phase.RETRYING,
        attempt=attempt,
        next_attempt_at=at,
        message=msg,
        **_NO_CLAIM,
    )
    return Decision(new, spec_dependent=False)


def account_refused(post: Post, now: dt.datetime, reason: str, msg: str) -> Decision:
    """The post's account cannot be used (herald.accounts says why): it fails for good,
    before anything is sent."""
    return with_kstatus(_final_failure(post, now, ErrorClass.PERMANENT, reason, msg), now)


def account_held(post: Post, now: dt.datetime, msg: str, recheck_seconds: float) -> Decision:
    """The post's account is suspended: no claim; the post keeps its phase (Scheduled or
    Retrying) and attempt, says why in its message and looks again after
    `recheck_seconds`. The Event is posted when the post is first held."""
    status = post.status
    at = now + dt.timedelta(seconds=recheck_seconds)
    events = () if status.message == msg else (Event("Warning", Reason.ACCOUNT_SUSPENDED, msg),)
    new = _update(status, next_attempt_at=at, message=msg)
    return with_kstatus(Decision(new, events), now)


def quota_exceeded(post: Post, now: dt.datetime, until: dt.datetime, msg: str) -> Decision:
    """The post's account has used its quota of the window: no claim, no attempt spent;
    the post keeps its phase and waits for the next window (nextAttemptAt), with a
    Warning Event QuotaExceeded once per window."""
    status = post.status
    events = () if status.message == msg else (Event("Warning", Reason.QUOTA_EXCEEDED, msg),)
    new = _update(status, next_attempt_at=until, message=msg)
    return with_kstatus(Decision(new, events), now)


def with_account(decision: Decision, account: AccountRef) -> Decision:
    """A claim with the account it will be sent as (status.account)."""
    if decision.status is None:
        return decision
    return dataclasses.replace(decision, status=_update(decision.status, account=account))


def _unknown_target(post: Post, now: dt.datetime, targets: frozenset[str]) -> Decision:
    msg = (
        f"spec.target {post.spec.target!r} is not configured in the operator "
        f"(configured: {', '.join(sorted(targets)) or 'none'})"
    )
    return _final_failure(post, now, ErrorClass.PERMANENT, Reason.UNKNOWN_TARGET, msg)


def _final_failure(
    post: Post, now: dt.datetime, klass: ErrorClass, reason: str, msg: str
) -> Decision:
    status = post.status
    error = LastError(**{"class": klass, "code": reason, "message": _clip(msg), "at": now})
    new = _update(
        status,
        phase=Phase.FAILED,
        next_attempt_at=None,
        last_error=error,
        message=msg,
        conditions=_published_condition(post, status, ConditionStatus.FALSE, reason, msg, now),
    )
    return Decision(new, (Event("Warning", reason, msg),))


def starting_deadline(post: Post, defaults: Defaults) -> int | None:
    """The post's startingDeadlineSeconds, or the operator's default when it sets none."""
    own = post.spec.starting_deadline_seconds
    return defaults.starting_deadline_seconds if own is None else own


def deadline_start(post: Post) -> dt.datetime | None:
    """When the post's next first attempt was due: startingDeadlineSeconds counts from here.

    publishAt, or the time of the manual retry that started this epoch (the Published
    condition's RetryRequested transition). Durable fields only: nextAttemptAt moves each
    time a claim is given back, so lateness measured from it would restart every time.
    None for the retry of a failed attempt, to which the deadline does not apply.
    """
    status = post.status
    if status.attempt != status.retry_base_attempt:
        return None
    if status.retry_epoch == 0:
        return post.spec.publish_at
    cond = next((c for c in status.conditions or [] if c.type == PUBLISHED), None)
    if cond is not None and cond.status is ConditionStatus.UNKNOWN and cond.reason == RETRY_REASON:
        return cond.last_transition_time
    return None


def _missed_deadline(
    post: Post, now: dt.datetime, late: float, deadline: int, *, own: bool = True
) -> Decision:
    """`own`: the post's spec set the deadline; otherwise it is the operator's default,
    and the message says which setting to change (or override in the spec)."""
    setting = (
        f"startingDeadlineSeconds={deadline}"
        if own
        else f"the operator's defaultStartingDeadlineSeconds={deadline} "
        "(spec.startingDeadlineSeconds overrides it)"
    )
    msg = (
        f"First dispatch possible {late:.0f}s{_human(late)} after the scheduled time, past "
        f"{setting}: not publishing late"
    )
    return _final_failure(post, now, ErrorClass.DEADLINE, Reason.MISSED_DEADLINE, msg)


def _claim(post: Post, now: dt.datetime, me: str, *, reclaim: bool) -> Decision:
    status = post.status
    history = status.history
    if reclaim:
        # The previous claimant never recorded n8n's acknowledgement: send again, as it
        # was claimed, under a new attempt number (the orphaned one may have reached
        # n8n) and the same Idempotency-Key, so n8n can tell it is the same publication.
        attempt = status.attempt + 1
        # Never before the attempt's own time: a claim taken ahead by this pod's previous
        # incarnation is orphaned at once, but its post is not due yet.
        at = max(now, status.next_attempt_at or now)
        msg = (
            f"Re-dispatching as attempt {attempt}: claim of attempt {status.attempt} by "
            f"{status.claimed_by} was orphaned"
        )
        events: tuple[Event, ...] = (Event("Warning", Reason.RECLAIMED, msg),)
        history = _with_history(status, now, "Orphaned", None)
    else:
        attempt = status.attempt + 1
        at = max(now, status.next_attempt_at or now)
        msg = f"Claimed attempt {attempt}: dispatching to target {post.spec.target} at {_fmt(at)}"
        events = ()
    conditions = status.conditions
    if not any(c.type == PUBLISHED for c in conditions or []):
        # A Pending post's first write: the condition its accept used to carry.
        conditions = _published_condition(
            post, status, ConditionStatus.UNKNOWN, "Pending", "Not published yet", now
        )
    new = _update(
        status,
        conditions=conditions,
        phase=Phase.PUBLISHING,
        attempt=attempt,
        claimed_at=now,
        claimed_by=me,
        claimed_generation=post.generation if not reclaim else status.claimed_generation,
        dispatched_at=None,
        next_attempt_at=at,
        message=msg,
        history=history,
    )
    return Decision(new, events, Action.CLAIM)


# --- outcomes --------------------------------------------------------------------------


def _published(
    post: Post, now: dt.datetime, info: Published, how: str, attempt: int | None = None
) -> Decision:
    """`attempt`: the attempt n8n published, when an earlier one than the current."""
    status = post.status
    url = f" at {info.external_url}" if info.external_url else ""
    msg = f"Published on attempt {attempt or status.attempt}{url}"
    new = _update(
        status,
        phase=Phase.PUBLISHED,
        published_at=now,
        external_id=info.external_id,
        external_url=info.external_url,
        next_attempt_at=None,
        message=msg,
        history=_with_history(status, now, "Published", None)
        if attempt is None
        else [
            *(status.history or []),
            AttemptRecord(attempt=attempt, finished_at=now, outcome="Published"),
        ][-HISTORY_LIMIT:],
        conditions=_published_condition(post, status, ConditionStatus.TRUE, how, msg, now),
    )
    return Decision(new, (Event("Normal", Reason.PUBLISHED, msg, routine=True),))


def _last_error(failure: Failure, now: dt.datetime) -> LastError:
    """status.lastError for an attempt that failed so."""
    return LastError(
        **{
            "class": failure.error_class,
            "code": failure.code,
            "message": _clip(failure.message),
            "at": now,
        }
    )


def _fail_attempt(post: Post, now: dt.datetime, failure: Failure, policy: Policy) -> Decision:
    status = post.status
    error = _last_error(failure, now)
    history = _with_history(status, now, failure.error_class.value, failure)
    spent = epoch_attempts(status)
    if failure.retryable and spent < policy.max_attempts:
        delay = retry_delay(policy, spent, post.uid, failure.retry_after_seconds)
        not_before = failure.not_before_seconds or 0.0
        waits = not_before > delay
        delay = max(delay, not_before)
        at = now + dt.timedelta(seconds=delay)
        if post.spec.suspend:
            msg = f"Attempt {status.attempt} failed ({failure.code}); suspended by spec.suspend"
            new = _update(
                status,
                phase=Phase.SUSPENDED,
                next_attempt_at=None,
                last_error=error,
                history=history,
                message=msg,
                dispatched_at=None,
            )
            return Decision(new, (Event("Normal", Reason.SUSPENDED, msg),))
        wait = f" (the network asked to wait {delay:.0f}s)" if waits else ""
        msg = (
            f"Attempt {status.attempt} failed ({failure.code}): {failure.message}; "
            f"attempt {spent + 1} of {policy.max_attempts} at {_fmt(at)}{wait}"
        )
        new = _update(
            status,
            phase=Phase.RETRYING,
            next_attempt_at=at,
            last_error=error,
            history=history,
            message=msg,
            dispatched_at=None,
        )
        return Decision(new, (Event("Warning", Reason.RETRY_SCHEDULED, msg),))
    if failure.retryable:
        reason = "RetriesExhausted"
        msg = (
            f"Attempt {spent} of {policy.max_attempts} failed ({failure.code}): "
            f"{failure.message}; no attempts left"
        )
    else:
        reason = "PermanentFailure"
        msg = f"Attempt {status.attempt} failed permanently ({failure.code}): {failure.message}"
    new = _update(
        status,
        phase=Phase.FAILED,
        next_attempt_at=None,
        last_error=error,
        history=history,
        message=msg,
        conditions=_published_condition(post, status, ConditionStatus.FALSE, reason, msg, now),
    )
    return Decision(new, (Event("Warning", Reason.FAILED, msg),))


def dispatch_result(
    post: Post, now: dt.datetime, outcome: Outcome, defaults: Defaults, me: str
) -> Decision:
    """The webhook request for the attempt `me` claimed has ended with `outcome`."""
    return with_kstatus(_dispatch_result(post, now, outcome, defaults, me), now)


def _dispatch_result(
    post: Post, now: dt.datetime, outcome: Outcome, defaults: Defaults, me: str
) -> Decision:
    status = post.status
    if status.claimed_by != me:
        return NOTHING  # someone else took the attempt over
    if isinstance(outcome, Accepted) and outcome.published is None:
        if status.dispatched_at is not None:
            return NOTHING
        # Only dispatchedAt, guarded by the attempt and its claim: true whatever n8n's
        # callback wrote meanwhile, so the two writes commute instead of racing.
        new = _update(status, dispatched_at=now)
        return Decision(new, guard=Guard.CLAIM, spec_dependent=False)
    if status.phase is not Phase.PUBLISHING:
        return NOTHING  # a callback or another instance already moved the post on
    if isinstance(outcome, Accepted):
        assert outcome.published is not None
        return _published(post, now, outcome.published, "PublishedSynchronously")
    decision = _fail_attempt(post, now, outcome, Policy.of(post.spec, defaults))
    return Decision(decision.status, decision.events, spec_dependent=False)


def callback(post: Post, now: dt.datetime, cb: Callback, defaults: Defaults) -> CallbackDecision:
    """n8n reports how attempt `cb.attempt` ended."""
    result = _callback(post, now, cb, defaults)
    return dataclasses.replace(result, decision=with_kstatus(result.decision, now))


def _callback(post: Post, now: dt.datetime, cb: Callback, defaults: Defaults) -> CallbackDecision:
    status = post.status
    ended = any(r.attempt == cb.attempt for r in status.history or [])
    earlier = ended and (cb.attempt < status.attempt or status.phase is Phase.SCHEDULED)
    if cb.published is not None and earlier:
        # An earlier attempt (orphaned, given up on as stale, or before a manual retry)
        # did reach n8n, which published it: believe n8n rather than publish twice.
        if status.phase is Phase.PUBLISHED:
            return CallbackDecision(CallbackResult.DUPLICATE)
        decision = _published(post, now, cb.published, "CallbackReceived", cb.attempt)
        return CallbackDecision(
            CallbackResult.APPLIED, Decision(decision.status, decision.events, spec_dependent=False)
        )
    if cb.attempt != status.attempt or status.attempt == 0:
        return CallbackDecision(
            CallbackResult.CONFLICT,
            reason=f"callback for attempt {cb.attempt}, but the post is on attempt "
            f"{status.attempt}",
        )
    last = status.history[-1] if status.history else None
    finished_this_attempt = last is not None and last.attempt == cb.attempt
    if cb.published is not None:
        if status.phase is Phase.PUBLISHED:
            return CallbackDecision(CallbackResult.DUPLICATE)
        if status.phase is Phase.PUBLISHING:
            decision = _published(post, now, cb.published, "CallbackReceived")
            return CallbackDecision(CallbackResult.APPLIED, _commuting(decision))
        if (
            # The operator gave up waiting (stale) or saw the request fail, but n8n did
            # publish this very attempt: believe n8n rather than publish twice.
            status.phase in (Phase.RETRYING, Phase.FAILED, Phase.SUSPENDED)
            and finished_this_attempt
        ):
            decision = _published(post, now, cb.published, "CallbackReceived")
            return CallbackDecision(
                CallbackResult.APPLIED,
                Decision(decision.status, decision.events, spec_dependent=False),
            )
        return CallbackDecision(
            CallbackResult.CONFLICT, reason=f"cannot publish a post in phase {status.phase}"
        )
    failure = cb.failure
    assert failure is not None
    if status.phase is Phase.PUBLISHING:
        decision = _fail_attempt(post, now, failure, Policy.of(post.spec, defaults))
        return CallbackDecision(CallbackResult.APPLIED, _commuting(decision))
    if (
        last is not None
        and finished_this_attempt
        and last.outcome == ErrorClass.STALE.value
        and not failure.retryable
        and status.phase in (Phase.RETRYING, Phase.SUSPENDED)
    ):
        # The operator gave up waiting for this attempt, and no later one has started:
        # n8n now says it failed for good, so retrying it would only fail again.
        return CallbackDecision(CallbackResult.APPLIED, _late_permanent_failure(post, now, failure))
    if finished_this_attempt and status.phase in (Phase.RETRYING, Phase.FAILED, Phase.SUSPENDED):
        return CallbackDecision(CallbackResult.DUPLICATE)
    return CallbackDecision(
        CallbackResult.CONFLICT,
        reason=f"cannot record a failure for a post in phase {status.phase}",
    )


def _late_permanent_failure(post: Post, now: dt.datetime, failure: Failure) -> Decision:
    """n8n's permanent failure of an attempt already recorded as Stale: the post ends
    Failed, and the history gets the attempt's real outcome (as for a late publish)."""
    status = post.status
    error = _last_error(failure, now)
    record = AttemptRecord(
        attempt=status.attempt,
        finished_at=now,
        outcome=failure.error_class.value,
        code=failure.code,
        message=_clip(failure.message),
    )
    msg = (
        f"Attempt {status.attempt} failed permanently ({failure.code}), reported by n8n "
        f"after the operator had stopped waiting: {failure.message}"
    )
    new = _update(
        status,
        phase=Phase.FAILED,
        next_attempt_at=None,
        last_error=error,
        history=[*(status.history or []), record][-HISTORY_LIMIT:],
        message=msg,
        conditions=_published_condition(
            post, status, ConditionStatus.FALSE, "PermanentFailure", msg, now
        ),
    )
    return Decision(new, (Event("Warning", Reason.FAILED, msg),), spec_dependent=False)


def _commuting(decision: Decision) -> Decision:
    """A callback's write on a Publishing post tests only phase and attempt, so the
    operator's concurrent record of n8n's acknowledgement does not make it lose."""
    return Decision(decision.status, decision.events, guard=Guard.ATTEMPT, spec_dependent=False)


# --- building a Post from the raw object -------------------------------------------------


def from_object(obj: dict[str, Any]) -> Post:
    """Build a Post from a ScheduledPost as the API server returns it."""
    meta = obj.get("metadata") or {}
    return Post(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        spec=parse_spec(obj.get("spec") or {}),
        status=parse_status(obj.get("status")),
        retry_request=(meta.get("annotations") or {}).get(RETRY_ANNOTATION),
    )


# --- the publication ledger ------------------------------------------------------------
#
# One Publication object per fingerprint (models.FINGERPRINT_DOC says what is in it and
# why), created before the first send of an attempt series. These functions decide; the
# I/O is herald.ledger's.


def content_hash(spec: ScheduledPostSpec) -> str:
    """SHA-256 of what the audience sees: text, link, media URLs and alt texts."""
    content = spec.content
    media = [[m.url, m.alt_text] for m in content.media or []]
    canonical = json.dumps([content.text, content.link, media], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(post: Post) -> str:
    """The publication's identity, stable across delete and re-create (hex SHA-256)."""
    spec = post.spec
    canonical = json.dumps(
        [
            post.namespace,
            post.name,
            spec.channel.value,
            spec.account,
            format_time(spec.publish_at.astimezone(dt.UTC)),
            content_hash(spec),
            # Only when set, so that the fingerprints of posts without it never change.
            *([spec.edition] if spec.edition is not None else []),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def publication_name(post: Post) -> str:
    return f"pub-{fingerprint(post)}"


def first_of_series(status: ScheduledPostStatus) -> bool:
    """Is the claimed attempt the first of its series (of the post, or of a manual retry)?
    An orphaned first attempt taken over still is: its holder may have died before the
    record was written."""
    return status.phase is Phase.PUBLISHING and epoch_attempts(status) <= 1


def new_publication(post: Post, now: dt.datetime) -> PublicationSpec:
    """The record a post's first send creates: Sending, held by this object."""
    spec = post.spec
    return PublicationSpec(
        post=post.name,
        channel=spec.channel,
        account=spec.account,
        publish_at=spec.publish_at,
        content_hash=content_hash(spec),
        state=PublicationState.SENDING,
        holder_uid=post.uid,
        since=now,
    )


class LedgerStep(enum.Enum):
    SEND = "send"
    """The record is this object's (created now, or earlier by it): send."""
    ALREADY_PUBLISHED = "already-published"
    """It went out already: write `decision`, send nothing."""
    WAIT = "wait"
    """Another object's send may be under way: give the claim back until `until`."""
    TAKE_OVER = "take-over"
    """Write `record` over the one read (compare-and-swap), then send."""


@dataclass(frozen=True)
class LedgerDecision:
    step: LedgerStep
    record: PublicationSpec | None = None
    until: dt.datetime | None = None
    decision: Decision = NOTHING


def ledger_step(
    post: Post, record: PublicationSpec, now: dt.datetime, defaults: Defaults
) -> LedgerDecision:
    """What a post about to send its first attempt does about the record that exists."""
    if record.state is PublicationState.PUBLISHED:
        # Also when this object holds it: its send went out and the record was written,
        # but the process died before the post's own status said so.
        return LedgerDecision(
            LedgerStep.ALREADY_PUBLISHED, decision=already_published(post, now, record)
        )
    mine = new_publication(post, now)
    if record.holder_uid == post.uid:
        if record.state is PublicationState.SENDING:
            return LedgerDecision(LedgerStep.SEND)
        return LedgerDecision(LedgerStep.TAKE_OVER, mine)  # a manual retry after Failed
    if record.state is PublicationState.FAILED:
        return LedgerDecision(LedgerStep.TAKE_OVER, mine)
    # Sending, by another object (deleted mid-send, or a second copy): its request may be
    # at n8n. Taken over once it would count as stale had it been this post's own attempt.
    policy = Policy.of(post.spec, defaults)
    takeover = record.since + dt.timedelta(
        seconds=policy.claim_timeout_seconds + policy.stale_after_seconds
    )
    if now >= takeover:
        return LedgerDecision(LedgerStep.TAKE_OVER, mine)
    recheck = now + dt.timedelta(seconds=defaults.ledger_recheck_seconds)
    return LedgerDecision(LedgerStep.WAIT, until=min(takeover, recheck))


def already_published(post: Post, now: dt.datetime, record: PublicationSpec) -> Decision:
    """A claimed, unsent attempt ends here: the post ends Published with the record's
    outcome, the attempt number handed back (nothing went out)."""
    status = post.status
    at = record.published_at or record.since
    url = f" at {record.external_url}" if record.external_url else ""
    msg = (
        f"Already published {_fmt(at)}{url} by an earlier object of this post "
        f"({PUBLICATION_KIND} pub-{fingerprint(post)}): not sent again"
    )
    new = _update(
        status,
        phase=Phase.PUBLISHED,
        attempt=max(status.attempt - 1, 0),
        published_at=at,
        external_id=record.external_id,
        external_url=record.external_url,
        next_attempt_at=None,
        message=msg,
        conditions=_published_condition(
            post, status, ConditionStatus.TRUE, Reason.ALREADY_PUBLISHED, msg, now
        ),
        **_NO_CLAIM,
    )
    return Decision(new, (Event("Normal", Reason.ALREADY_PUBLISHED, msg),))


def ledger_outcome(post: Post, decision: Decision) -> Phase | None:
    """Does this transition end a sent publication (Published or Failed), so that its
    record must say so? None for a post never sent and for AlreadyPublished."""
    new = decision.status
    if new is None or new.phase == post.status.phase or post.status.attempt == 0:
        return None
    if new.phase not in (Phase.PUBLISHED, Phase.FAILED):
        return None
    cond = next((c for c in new.conditions or [] if c.type == PUBLISHED), None)
    if cond is not None and cond.reason == Reason.ALREADY_PUBLISHED:
        return None
    return new.phase


def finished_record(
    record: PublicationSpec, post: Post, status: ScheduledPostStatus
) -> PublicationSpec | None:
    """The record after `post` ended with `status` (None: leave it as it is).

    Published is the truth whoever holds the record (n8n did publish), and is never
    overwritten. Failed is written only by the holder of a record still Sending."""
    if record.state is PublicationState.PUBLISHED:
        return None
    if status.phase is Phase.PUBLISHED:
        published = Published(status.external_id, status.external_url)
        return published_record(record, published, status.published_at)
    if (
        status.phase is Phase.FAILED
        and record.holder_uid == post.uid
        and record.state is PublicationState.SENDING
    ):
        return record.model_copy(update={"state": PublicationState.FAILED})
    return None


def finish_ops(post: Post, status: ScheduledPostStatus) -> list[dict[str, Any]] | None:
    """The outcome written into the record this post holds and is still sending, as one
    JSON patch guarded by `test` ops (no read first: the common case). None: nothing to
    write for this status. When a test fails, `finished_record` decides on a read."""
    if status.phase is Phase.PUBLISHED:
        fields: dict[str, Any] = {
            "state": PublicationState.PUBLISHED.value,
            "publishedAt": format_time(status.published_at) if status.published_at else None,
            "externalId": status.external_id,
            "externalUrl": status.external_url,
        }
    elif status.phase is Phase.FAILED:
        fields = {"state": PublicationState.FAILED.value}
    else:
        return None
    return [
        {"op": "test", "path": "/spec/holderUid", "value": post.uid},
        {"op": "test", "path": "/spec/state", "value": PublicationState.SENDING.value},
        *(
            {"op": "add", "path": f"/spec/{key}", "value": value}
            for key, value in fields.items()
            if value is not None
        ),
    ]


def published_record(
    record: PublicationSpec, published: Published, at: dt.datetime | None
) -> PublicationSpec | None:
    """The record once n8n reported its send published (None: it already says so). Also
    for a post deleted meanwhile: n8n's callback for it is the only word left."""
    if record.state is PublicationState.PUBLISHED:
        return None
    return record.model_copy(
        update={
            "state": PublicationState.PUBLISHED,
            "published_at": at,
            "external_id": published.external_id,
            "external_url": published.external_url,
        }
    )


def publication_expired(record: PublicationSpec, now: dt.datetime, retention_days: int) -> bool:
    """Is the record past its retention (counted from publishedAt, else from when its send
    began)? A post applied again after that is published again."""
    since = record.published_at or record.since
    return now - since > dt.timedelta(days=retention_days)
