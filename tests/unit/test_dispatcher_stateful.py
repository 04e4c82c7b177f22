"""The dispatcher's invariants under random events: a hypothesis state machine.

The real Dispatcher, Writer and state machine run against the in-memory API
(tests/support/fake_kube.py) on a FakeClock, with a scripted stand-in n8n whose requests
succeed, fail, fail permanently, raise, or hang until a later step answers them. The
watch is under the test's control: events queue up and are delivered one at a time,
dropped for a relist, or overtaken by restarts. After every step, with every worker
that can run having run, the invariants written on Track, Target and Dispatcher are
checked, and so are the two promises the dispatcher makes to n8n: an attempt number is
sent at most once, and attempt numbers only grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from herald import engine
from herald.clock import FakeClock
from herald.dispatcher import DispatchConfig, Dispatcher
from herald.kube import KubeError, Unavailable
from herald.metrics import Metrics
from herald.models import ErrorClass, Phase, format_time
from herald.writer import Writer
from tests.support.fake_kube import FakeKube

NAMES = ("a", "b", "c", "d")
TARGETS = frozenset({"default", "slow"})
MODES = ("ok", "ok", "transient", "permanent", "raise", "hang", "hang")


class ScriptedN8n:
    """Answers each request as `mode` says; hung requests wait for `answer_hung`, or
    time out like the real client once the clock passes their deadline."""

    def __init__(self, clock: FakeClock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.mode = "ok"
        self.sent: list[tuple[str, int, str | None]] = []
        self.hung: list[asyncio.Future[engine.Outcome]] = []
        self.deadlines: dict[asyncio.Future[engine.Outcome], float] = {}

    async def dispatch(
        self, target: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> engine.Outcome:
        self.sent.append((body["id"], body["attempt"], idempotency_key))
        if self.mode == "hang":
            future: asyncio.Future[engine.Outcome] = asyncio.get_running_loop().create_future()
            self.hung.append(future)
            self.deadlines[future] = self.clock.monotonic() + self.timeout
            return await future
        if self.mode == "raise":
            raise UnicodeEncodeError("ascii", "Bearer é", 7, 8, "not ASCII")
        if self.mode == "transient":
            return engine.Failure(ErrorClass.TRANSIENT, "HTTP503", "busy")
        if self.mode == "permanent":
            return engine.Failure(ErrorClass.PERMANENT, "HTTP400", "bad")
        return engine.Accepted()

    def time_out(self) -> None:
        now = self.clock.monotonic()
        for future in [f for f in self.hung if self.deadlines[f] <= now]:
            self.hung.remove(future)
            future.set_result(engine.Failure(ErrorClass.TRANSIENT, "Timeout", "no answer"))


class DispatcherMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        self.kube = FakeKube()
        self.fingerprints: dict[str, set[str]] = {}  # uid -> fingerprints of its versions
        self.n8n = ScriptedN8n(self.clock, timeout=5.0)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.kube.watchers.append(lambda kind, obj: self.events.append((kind, obj)))
        self.tasks: set[asyncio.Task[None]] = set()
        self.incarnation = 0
        self.defaults = engine.Defaults(
            claim_ahead_seconds=6.0,
            claim_timeout_seconds=20.0,
            backoff_seconds=2,
            max_attempts=4,
            jitter_ratio=0.0,
            targets=TARGETS,
        )
        self.d = self._dispatcher()

    def _dispatcher(self) -> Dispatcher:
        self.incarnation += 1
        me = f"op-a/{self.incarnation:04d}"
        metrics = Metrics()
        config = DispatchConfig(
            defaults=self.defaults,
            me=me,
            callback_endpoint="http://127.0.0.1:1/v1/callbacks",
            callback_key=b"k" * 32,
            concurrency=4,
            circuit_threshold=2,
            circuit_window=60,
            circuit_open_for=30,
            circuit_open_min=5,
            target_concurrency={"slow": 1},
            record_grace=2.0,
            request_timeout=5.0,
        )
        writer = Writer(self.kube, metrics, me)  # type: ignore[arg-type]
        return Dispatcher(config, self.kube, self.n8n, writer, metrics, self.clock)  # type: ignore[arg-type]

    def teardown(self) -> None:
        for future in self.n8n.hung:
            future.cancel()
        for task in self.tasks:
            task.cancel()
        self._run(self._gather())
        self.loop.close()

    async def _gather(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # --- driving the loop ----------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def _settle(self) -> None:
        """Run queued work until nothing can move without the clock or n8n."""

        async def settle() -> None:
            for _ in range(200):
                self.d.workers.move_due()  # what the loop does, at this instant
                while (uid := self.d.queue.pop()) is not None:
                    task = asyncio.get_running_loop().create_task(self.d.handle(uid))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                for _ in range(5):
                    await asyncio.sleep(0)
                if self._quiet():
                    return

        self._run(settle())

    def _quiet(self) -> bool:
        """Nothing queued, nothing due, every task done or waiting for a hung request."""
        first = self.d.schedule.next_at()
        return (
            not len(self.d.queue)
            and (first is None or first > self.clock.monotonic())
            and all(t.done() for t in self.tasks) | bool(self.n8n.hung)
        )

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.d.forget(obj["metadata"]["uid"])
        else:
            self.d.observe(obj)

    # --- rules ----------------------------------------------------------------------------

    @initialize(
        posts=st.lists(
            st.tuples(st.sampled_from([0, 0, 3, 10, 40]), st.sampled_from([True, True, False])),
            min_size=2,
            max_size=4,
        ),
        mode=st.sampled_from(MODES),
    )
    def start(self, posts: list[tuple[int, bool]], mode: str) -> None:
        self.n8n.mode = mode
        for name, (due, slow) in zip(NAMES, posts, strict=False):
            self.create(name, due, slow)

    @rule(name=st.sampled_from(NAMES), due=st.sampled_from([0, 3, 10, 40]), slow=st.booleans())
    def create(self, name: str, due: int, slow: bool) -> None:
        if ("ns", name) in self.kube.objects:
            return
        at = self.clock.wall() + dt.timedelta(seconds=due)
        spec = {
            "publishAt": format_time(at),
            "content": {"text": "hello"},
            "target": "slow" if slow else "default",
        }
        uid = f"uid-{name}-{len(self.n8n.sent)}-{self.incarnation}-{due}"
        obj = self.kube.create("ns", name, spec, uid=uid)
        self.fingerprints.setdefault(uid, set()).add(engine.fingerprint(engine.from_object(obj)))
        self.d.observe(obj)
        self._settle()

    @rule(name=st.sampled_from(NAMES), change=st.sampled_from(["text", "suspend", "resume"]))
    def edit(self, name: str, change: str) -> None:
        if ("ns", name) not in self.kube.objects:
            return
        changes: dict[str, Any] = (
            {"content": {"text": f"v{len(self.events)}"}}
            if change == "text"
            else {"suspend": change == "suspend"}
        )
        edited = self.kube.edit_spec("ns", name, **changes)
        # The Idempotency-Key is the fingerprint of what is sent: an edited text is a new one.
        uid = edited["metadata"]["uid"]
        self.fingerprints.setdefault(uid, set()).add(engine.fingerprint(engine.from_object(edited)))
        self.events.append(("MODIFIED", edited))

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        obj = self.kube.objects.pop(("ns", name), None)
        if obj is not None:
            self.events.append(("DELETED", obj))

    @rule(n=st.integers(1, 4))
    def deliver(self, n: int) -> None:
        for _ in range(min(n, len(self.events))):
            self._deliver(*self.events.pop(0))
        self._settle()

    @rule()
    def relist(self) -> None:
        """The watch expired (410): queued events are lost; the listing shows what is."""
        self.events.clear()
        for obj in list(self.kube.objects.values()):
            self.d.observe(dict(obj))
        self._settle()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 12.0, 30.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.n8n.time_out()
        self.d.workers.move_due()
        self._settle()

    @rule(mode=st.sampled_from(MODES))
    def n8n_mode(self, mode: str) -> None:
        self.n8n.mode = mode

    @precondition(lambda self: bool(self.n8n.hung))
    @rule(ok=st.booleans())
    def answer_hung(self, ok: bool) -> None:
        future = self.n8n.hung.pop(0)
        future.set_result(
            engine.Accepted() if ok else engine.Failure(ErrorClass.TRANSIENT, "Timeout", "slow")
        )
        self._settle()

    @rule(name=st.sampled_from(NAMES), published=st.booleans())
    def callback(self, name: str, published: bool) -> None:
        """n8n's callback through the sidecar for the post's current attempt."""
        obj = self.kube.objects.get(("ns", name))
        if obj is None:
            return
        post = engine.from_object(obj)
        if post.status.phase is not Phase.PUBLISHING or post.status.dispatched_at is None:
            return
        outcome = (
            engine.Callback(post.status.attempt, published=engine.Published("urn:1"))
            if published
            else engine.Callback(
                post.status.attempt,
                failure=engine.Failure(ErrorClass.TRANSIENT, "HTTP429", "later"),
            )
        )
        verdict = engine.callback(post, self.clock.wall(), outcome, self.defaults)
        if verdict.decision.status is None:
            return
        sidecar = Writer(self.kube, Metrics(), "op-a/callback")  # type: ignore[arg-type]
        # A lost compare-and-swap or an outage: n8n would retry the callback later.
        with contextlib.suppress(KubeError):
            self._run(sidecar.apply(dict(obj), post, verdict.decision, self.clock.wall()))

    @rule(times=st.integers(1, 3))
    def api_outage(self, times: int) -> None:
        self.kube.fail("patch", Unavailable("503 etcdserver: leader changed"), times=times)

    @rule()
    def restart(self) -> None:
        """The process dies (SIGKILL): nothing it held survives; a new one lists."""
        for future in self.n8n.hung:
            future.cancel()
        self.n8n.hung.clear()
        for task in list(self.tasks):
            task.cancel()
        self._run(self._gather())
        self.events.clear()
        self.d = self._dispatcher()
        self.relist()

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def track_records_hold(self) -> None:
        d = self.d
        for uid, track in d.tracks.items():
            assert track.uid == uid
            assert not (track.claim is not None and track.sent is not None), uid
            assert d.cache.get(uid) is not None or track.busy, f"finished or gone: {track}"
            if track.idle():
                assert uid in d.queue or uid in d.schedule, f"idle track kept: {track}"
            if track.busy:
                assert uid not in d.queue and track.parked is None and track.waiting is None
            places = [uid in d.queue, track.parked is not None, track.waiting is not None]
            assert sum(places) <= 1, (uid, places)
            for name, field in (
                (track.parked, "parked"),
                (track.waiting, "waiting"),
                (track.turn, "turns"),
            ):
                if name is not None:
                    assert uid in getattr(d.targets.get(name), field), (uid, field)

    @invariant()
    def target_records_hold(self) -> None:
        d = self.d
        for target in d.targets.by_name.values():
            for field, attr in (("parked", "parked"), ("waiting", "waiting"), ("turns", "turn")):
                for uid in getattr(target, field):
                    track = d.tracks.get(uid)
                    assert track is not None and getattr(track, attr) == target.name, (uid, field)
            assert len(target.sending) + len(target.turns) <= target.limit
            if len(target.sending) + len(target.turns) < target.limit:
                assert not target.parked, "a free slot with claims parked: stranded"
            if target.waiting or target.breaker.probing:
                assert target.probe is not None

    @invariant()
    def nothing_is_stranded(self) -> None:
        """Every live post with time-driven work the dispatcher knows of is scheduled,
        queued, worked on, parked, waiting for a probe, or holding a turn."""
        d = self.d
        for (_, name), obj in self.kube.objects.items():
            uid = obj["metadata"]["uid"]
            entry = d.cache.get(uid)
            if entry is None or entry.resource_version != obj["metadata"]["resourceVersion"]:
                continue  # the dispatcher has not seen this version (yet)
            post = engine.from_object(obj)
            due = engine.wake_at(post, self.defaults, d.config.me) is not None
            if not (due or engine.needs_plan(post)):
                continue
            track = d.tracks.get(uid)
            held = track is not None and (
                track.busy or track.parked or track.waiting or track.turn or track.sent
            )
            assert uid in d.schedule or uid in d.queue or held, (name, post.status.phase)

    @invariant()
    def attempts_are_sent_once_and_grow(self) -> None:
        last: dict[str, int] = {}
        seen: set[tuple[str, int]] = set()
        keys: dict[str, set[str | None]] = {}
        for uid, attempt, key in self.n8n.sent:
            assert (uid, attempt) not in seen, f"attempt {attempt} of {uid} sent twice"
            seen.add((uid, attempt))
            assert attempt > last.get(uid, 0), f"{uid}: attempt {attempt} after {last[uid]}"
            last[uid] = attempt
            keys.setdefault(uid, set()).add(key)
        for uid, used in keys.items():
            # No manual retries here: the Idempotency-Key is the fingerprint of a version
            # of the post (one key unless its text was edited between attempts).
            assert used <= self.fingerprints[uid], (used, self.fingerprints[uid])


TestDispatcher = DispatcherMachine.TestCase
TestDispatcher.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the windows again, step by step on the FakeClock (deterministic companions of
# --- tests/unit/test_dispatcher_windows.py, which runs them on the wall clock) -------


def machine() -> DispatcherMachine:
    return DispatcherMachine()


def test_window1_posts_due_during_a_probe_wait_without_writing_fake_clock() -> None:
    m = machine()
    try:
        breaker = m.d.targets.get("default").breaker
        for _ in range(2):
            breaker.record_failure(m.clock.monotonic())
        m.clock.advance(6.0)  # past circuit_open_min: half-open
        m.n8n_mode("hang")
        m.create("a", 0, False)  # the probe; n8n hangs
        assert [s[1] for s in m.n8n.sent] == [1]
        for name in ("b", "c", "d"):
            m.create(name, 0, False)
        for _ in range(4):
            m.tick(1.0)  # the probe is still out (it times out at 5 s)
            m.deliver(20)
        # No write while the probe is out: not a claim, and no accept (they are Pending).
        assert [m.kube.status_writes(n) for n in ("b", "c", "d")] == [0, 0, 0]
        m.n8n_mode("ok")
        m.answer_hung(True)  # n8n answers the probe: the circuit closes
        assert sorted(s[0].split("-")[1] for s in m.n8n.sent) == ["a", "b", "c", "d"]
    finally:
        m.teardown()


def test_window3_a_request_that_raised_is_spent_fake_clock() -> None:
    m = machine()
    try:
        m.n8n_mode("raise")
        m.create("a", 0, False)
        m.n8n_mode("ok")
        m.deliver(20)
        m.tick(3.0)  # past the 2 s retry backoff
        key = m.n8n.sent[0][2]
        # A new attempt number, the same Idempotency-Key (the post's fingerprint).
        assert key is not None and len(key) == 64
        assert [(attempt, k) for _, attempt, k in m.n8n.sent] == [(1, key), (2, key)]
    finally:
        m.teardown()


def test_window5_a_suspended_parked_claim_passes_its_turn_on_fake_clock() -> None:
    m = machine()
    try:
        m.start([(0, True), (0, True), (0, True)], "hang")  # a sends, b and c park
        assert len(m.n8n.sent) == 1
        m.edit("b", "suspend")
        m.deliver(50)
        m.answer_hung(True)  # a's request ends: the slot goes to c, not to b
        assert [s[0].split("-")[1] for s in m.n8n.sent] == ["a", "c"]
    finally:
        m.teardown()


def test_window2_a_claim_parked_past_its_renewal_time_is_renewed_once_fake_clock() -> None:
    """Four posts behind a limit of one; n8n takes 4.9 s for each: the fourth waits
    14.7 s, past the moment (claim timeout 20 s - 7.5 s for a request and its record)
    when a peer could no longer be sure the holder finishes in time."""
    m = machine()
    try:
        m.start([(0, True)] * 4, "hang")
        claimed = m.kube.objects[("ns", "d")]["status"]["claimedAt"]
        for _ in range(3):
            m.tick(4.9)
            m.answer_hung(True)  # one request ends in time; the next parked claim goes
            m.deliver(50)
        assert [attempt for uid, attempt, _ in m.n8n.sent if uid.startswith("uid-d")] == [1]
        status = m.kube.objects[("ns", "d")]["status"]
        assert status["claimedAt"] != claimed  # renewed while parked
        assert m.kube.status_writes("d") == 2  # claim, one renewal (no accept: Pending)
        post = engine.from_object(m.kube.objects[("ns", "d")])
        left = (engine.takeover_at(post.status, m.defaults) - m.clock.wall()).total_seconds()
        assert left >= m.d.sender.budget - 2.5  # its request went out with room to spare
    finally:
        m.teardown()
