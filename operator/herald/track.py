"""What the dispatcher holds per post and per target while it works on them.

A `Track` exists only while the dispatcher holds something for a post (a claim, a send,
a pending record, a failed write's backoff, an own write awaiting its echo, a place in a
queue of its target); an idle track is dropped, so finished posts cost nothing beyond
the cache's projection. A `Target` is the per-target record: its concurrency limit, the
claims parked behind it, the posts waiting for its half-open probe, and its breaker.
Pure bookkeeping: no I/O, no clock reads (times are passed in).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from herald import engine
from herald.circuit import CircuitBreaker, State
from herald.models import Phase


@dataclass(slots=True, eq=False)
class View:
    """One version of a post: the raw object (what a compare-and-swap is made against)
    and the same object parsed, once: a new post as the state machine reads it
    (`engine.as_planned`: Scheduled at its publishAt), `phase` the phase it shows."""

    obj: dict[str, Any]
    post: engine.Post

    @classmethod
    def of(cls, obj: dict[str, Any]) -> View:
        meta = obj.get("metadata") or {}
        if "managedFields" in meta:
            # About half of a post's bytes, and nothing Herald reads or writes (its status
            # patches test and set status paths only): not kept with a claim or a hint.
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            obj = {**obj, "metadata": meta}
        return cls(obj, engine.as_planned(engine.from_object(obj)))

    @property
    def phase(self) -> str:
        """The phase the object shows (`kubectl get`): Pending until its first write."""
        return str((self.obj.get("status") or {}).get("phase") or Phase.PENDING)

    @property
    def resource_version(self) -> str:
        return str(self.obj["metadata"].get("resourceVersion") or "")


@dataclass(slots=True, eq=False)
class Sent:
    """An attempt whose request started: it may have reached n8n, so its number is
    spent whatever happens next. `outcome` is None while the request is under way."""

    view: View
    """The post as this instance claimed it (the record is written over this)."""
    at: dt.datetime
    outcome: engine.Outcome | None = None

    @property
    def attempt(self) -> int:
        return self.view.post.status.attempt


@dataclass(frozen=True, slots=True)
class Ledgered:
    """A publication record this post may send under: its name (the fingerprint, so an
    edit that changes it asks the ledger again) and the attempt it was checked for;
    `created` is the record's (uid, resourceVersion) when this instance created it, so a
    post deleted before its send can release it."""

    name: str
    attempt: int
    created: tuple[str, str] | None = None


@dataclass(slots=True, eq=False)
class Track:
    """The dispatcher's state for one post, claim -> send -> record.

    Invariants (checked by tests/unit/test_dispatcher_stateful.py after every step):
    - `claim` and `sent` are never both set. `claim` is this instance's claim not sent
      yet (status Publishing, claimedBy me, no dispatchedAt, as written by us);
      `reclaimed`: that claim took an orphan over, so its number may have gone out.
    - `sent` is set from the moment the request may leave until its outcome is written
      or the status shows the attempt moved on; it is never dropped for a failed write.
    - `parked` names the target whose `parked` holds this uid, and only then; the same
      for `waiting` and the target's `waiting`, and for `turn` and the target's `turns`
      (a parked claim woken with a slot kept for it).
    - `busy`: a worker is on it; a busy uid is neither queued nor parked nor waiting.
    - `failures`/`not_before`: consecutive failed reads/writes and the monotonic time
      before which no work starts (0.0: none).
    - `written` is (resourceVersion, monotonic time) of our own last write until the
      watch delivers it; `withheld`: an event was set aside meanwhile (re-read if the
      echo never comes).
    - `view` is the newest version seen, kept only while there is work to do.
    - A track with none of the above is idle and is dropped (`idle()`).
    """

    uid: str
    namespace: str
    view: View | None = None
    claim: View | None = None
    reclaimed: bool = False
    sent: Sent | None = None
    failures: int = 0
    not_before: float = 0.0
    written: tuple[str, float] | None = None
    withheld: bool = False
    busy: bool = False
    dirty: bool = False
    parked: str | None = None
    waiting: str | None = None
    turn: str | None = None
    probe: bool = False
    ledgered: Ledgered | None = None
    """The claim whose publication record was found this post's to send (written at the
    claim, so the due second sends only the request; a claim parked and woken again does
    not read the ledger twice). Not state worth keeping: a restart reads the record."""

    def idle(self) -> bool:
        return (
            self.claim is None
            and self.sent is None
            and self.failures == 0
            and self.written is None
            and not self.withheld
            and not self.busy
            and not self.dirty
            and self.parked is None
            and self.waiting is None
            and self.turn is None
            and not self.probe
        )


@dataclass(eq=False)
class Target:
    """One n8n target as the dispatcher uses it.

    Invariants:
    - `sending` holds the uids with a request under way; `len(sending) <= limit`.
    - `parked` (insertion-ordered) holds claims waiting for a slot; `turns` the parked
      claims woken with a slot kept for them; `len(sending) + len(turns) <= limit`, and
      below it nothing is parked (a freed slot goes to the next parked claim at once).
    - `waiting` holds posts waiting for the half-open probe's outcome; it is empty
      unless `probe` names the uid whose request is the probe; `breaker.probing`
      implies `probe is not None`.
    """

    name: str
    limit: int
    breaker: CircuitBreaker
    sending: set[str] = field(default_factory=set)
    parked: dict[str, None] = field(default_factory=dict)
    turns: set[str] = field(default_factory=set)
    waiting: dict[str, None] = field(default_factory=dict)
    probe: str | None = None

    def full(self, uid: str) -> bool:
        """No slot for uid (a slot kept for uid's turn counts as free)."""
        return len(self.sending) + len(self.turns - {uid}) >= self.limit

    def gate(self, now: float) -> State | None:
        """May a post for this target be claimed or sent now? None: yes. OPEN: not
        before `breaker.retry_at`. HALF_OPEN: wait for the probe under way."""
        state = self.breaker.state(now)
        if state is State.OPEN:
            return State.OPEN
        if self.breaker.probing:
            return State.HALF_OPEN
        return None

    def take_slot(self, uid: str, now: float) -> bool | None:
        """Start a request for uid: None if the breaker refuses, else whether it is the
        probe."""
        probe_due = self.breaker.state(now) is State.HALF_OPEN
        if not self.breaker.allow(now):
            return None
        self.turns.discard(uid)
        self.sending.add(uid)
        if probe_due:
            self.probe = uid
        return probe_due

    def release_slot(self, uid: str, probe: bool) -> list[str]:
        """The request for uid ended. Returns the uids to wake: the next parked claim
        if a slot is free, and every waiter once no probe is out."""
        self.sending.discard(uid)
        if probe:
            self.probe = None
            self.breaker.cancel_probe()  # its outcome, if any, is recorded already
        return self.wake()

    def wake(self) -> list[str]:
        woken: list[str] = []
        while self.parked and len(self.sending) + len(self.turns) < self.limit:
            uid = next(iter(self.parked))
            del self.parked[uid]
            self.turns.add(uid)
            woken.append(uid)
        if self.probe is None and self.waiting:
            woken.extend(self.waiting)
            self.waiting.clear()
        return woken

    def drop(self, uid: str) -> list[str]:
        """uid no longer waits here (deleted, edited, given back): the turn passes on."""
        self.parked.pop(uid, None)
        self.waiting.pop(uid, None)
        self.turns.discard(uid)
        return self.wake()
