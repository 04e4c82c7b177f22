"""The dispatcher's logic against an in-memory API (tests/support/fake_kube.py).

Each test runs the real Dispatcher, Writer and state machine on the asyncio loop with
the wall clock, posts due within a second, and a stand-in n8n client; every test is
bounded by `until()`'s timeout. The end-to-end proof on the real API server is in
tests/e2e and tests/faults.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from herald import dispatcher as dispatcher_module
from herald import engine, history
from herald.clock import SYSTEM
from herald.dispatcher import DispatchConfig, Dispatcher
from herald.kube import Unavailable
from herald.metrics import Metrics
from herald.models import ErrorClass, format_time
from herald.track import View
from herald.writer import Writer
from tests.support.fake_kube import FakeKube

ME = "op-a/1111"
TARGETS = frozenset({"default", "slow"})


class StandInN8n:
    """Records dispatches; answers from a script (default: 2xx), optionally slowly."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.script: deque[engine.Outcome | Exception] = deque()
        self.delay: dict[str, float] = {}
        self.delay_for: dict[str, float] = {}  # by post name, before the target's delay
        self.on_send: Callable[[dict[str, Any]], None] | None = None

    async def dispatch(
        self, target: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> engine.Outcome:
        self.sent.append({**body, "target": target, "key": idempotency_key, "at": time.time()})
        if self.on_send is not None:
            self.on_send(body)
        wait = self.delay_for.get(body["name"], self.delay.get(target))
        if wait is not None:
            await asyncio.sleep(wait)
        answer = self.script.popleft() if self.script else engine.Accepted()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def texts(self, name: str) -> list[str]:
        return [b["content"]["text"] for b in self.sent if b["name"] == name]


def spec(in_seconds: float, **extra: Any) -> dict[str, Any]:
    at = format_time(engine_time(time.time() + in_seconds))
    return {"publishAt": at, "content": {"text": "hello"}, "target": "default", **extra}


def engine_time(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(round(ts, 3), dt.UTC)


class Rig:
    def __init__(self, kube: FakeKube | None = None, **config: Any) -> None:
        self.kube = kube or FakeKube()
        self.n8n = StandInN8n()
        self.metrics = Metrics()
        self.metrics.initialise(TARGETS)
        defaults = engine.Defaults(
            claim_ahead_seconds=config.pop("claim_ahead", 0.3),
            claim_timeout_seconds=config.pop("claim_timeout", 5.0),
            backoff_seconds=0,
            ttl_after_published=config.pop("ttl_after_published", None),
            targets=TARGETS,
        )
        self.config = DispatchConfig(
            defaults=defaults,
            me=config.pop("me", ME),
            callback_endpoint="http://127.0.0.1:1/v1/callbacks",
            callback_key=b"k" * 32,
            concurrency=config.pop("concurrency", 4),
            circuit_threshold=3,
            circuit_window=60,
            circuit_open_for=30,
            circuit_open_min=0.2,
            target_concurrency=config.pop("target_concurrency", {}),
            record_grace=config.pop("record_grace", 0.3),
            request_timeout=config.pop("request_timeout", 1.0),
        )
        assert not config, config
        self.writer = Writer(self.kube, self.metrics, self.config.me)  # type: ignore[arg-type]
        self.d = Dispatcher(
            self.config,
            self.kube,  # type: ignore[arg-type]
            self.n8n,  # type: ignore[arg-type]
            self.writer,
            self.metrics,
            clock=SYSTEM,
        )
        self.kube.watchers.append(self.deliver)
        self.watching = True

    def deliver(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.watching:
            return
        # The operator's watch selects history.WATCH_SELECTOR: the API server reports a
        # post that stops matching (it became Published) as DELETED.
        if kind == "DELETED" or not history.watched(engine.from_object(obj)):
            self.d.forget(obj["metadata"]["uid"])
        else:
            self.d.observe(obj)

    def create(self, name: str, in_seconds: float, namespace: str = "ns", **extra: Any) -> None:
        self.d.observe(self.kube.create(namespace, name, spec(in_seconds, **extra)))

    def status(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        return self.kube.get(namespace, name).get("status") or {}

    def callback_published(self, delay: float = 0.0) -> None:
        """Behave like n8n's workflow plus the sidecar: report each dispatch published."""
        sidecar = Writer(self.kube, self.metrics, "op-a/callback")  # type: ignore[arg-type]

        async def report(body: dict[str, Any]) -> None:
            await asyncio.sleep(delay)
            for _ in range(8):
                obj = self.kube.get(body["namespace"], body["name"])
                post = engine.from_object(obj)
                verdict = engine.callback(
                    post,
                    engine_time(time.time()),
                    engine.Callback(body["attempt"], published=engine.Published("urn:li:1")),
                    self.config.defaults,
                )
                if verdict.decision.status is None:
                    return
                try:
                    await sidecar.apply(obj, post, verdict.decision, engine_time(time.time()))
                    return
                except Exception:  # a lost race: read and decide again
                    continue

        def on_send(body: dict[str, Any]) -> None:
            asyncio.get_running_loop().create_task(report(body))

        self.n8n.on_send = on_send


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[tuple[Rig, asyncio.Task[None]]] = []

    def make(kube: FakeKube | None = None, **config: Any) -> Rig:
        rig = Rig(kube, **config)
        rigs.append((rig, asyncio.create_task(rig.d.run())))
        return rig

    yield make
    for rig, task in rigs:
        await rig.d.stop(grace=1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def phase(rig: Rig, name: str, namespace: str = "ns") -> str | None:
    return rig.status(name, namespace).get("phase")


# --- the happy path and its writes ----------------------------------------------------


async def test_claimed_ahead_sent_on_time_and_the_callback_makes_the_record_unnecessary(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=0.4, record_grace=1.0)
    rig.callback_published()
    rig.create("p", 0.6)
    await until(lambda: phase(rig, "p") == "Published")
    status = rig.status("p")
    publish_at = engine.from_object(rig.kube.get("ns", "p")).spec.publish_at.timestamp()
    [sent] = rig.n8n.sent
    key = engine.fingerprint(engine.from_object(rig.kube.get("ns", "p")))
    assert sent["attempt"] == 1 and sent["key"] == key
    assert 0 <= sent["at"] - publish_at < 0.25  # on time
    assert engine_time(publish_at) > engine.parse_status(status).claimed_at  # claimed ahead
    await asyncio.sleep(1.2)  # past the record grace: still no record write
    assert rig.kube.status_writes("p") == 2  # claim, the callback's Published: no accept
    assert "dispatchedAt" not in rig.status("p")
    assert rig.metrics.claim_conflicts._value.get() == 0
    assert [e[2] for e in rig.kube.events] == []  # routine steps post no Events


async def test_without_a_callback_the_acknowledgement_is_recorded_after_the_grace(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(record_grace=0.2)
    rig.create("p", 0.1)
    await until(lambda: "dispatchedAt" in rig.status("p"))
    assert rig.status("p")["phase"] == "Publishing"
    assert rig.kube.status_writes("p") == 2  # claim, record (Pending needs no accept write)
    assert len(rig.n8n.sent) == 1


async def test_record_and_callback_commute_in_either_order(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(record_grace=0.0)
    rig.callback_published(delay=0.15)  # the record lands first, then the callback
    rig.create("p", 0.1)
    await until(lambda: phase(rig, "p") == "Published")
    assert "dispatchedAt" in rig.status("p")
    assert rig.metrics.claim_conflicts._value.get() == 0


# --- window 1: a failed first write must not strand the post --------------------------


async def test_failed_first_write_is_retried_with_backoff(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WRITE_BACKOFF_MIN", 0.05)
    rig = rig_factory()
    rig.kube.fail("patch", Unavailable("503 etcdserver: request timed out"), times=3)
    rig.create("p", 0.0)
    await until(lambda: phase(rig, "p") == "Publishing")
    assert rig.kube.status_writes("p") == 4  # three failed claims, then the claim
    assert rig.metrics.write_errors.labels("unavailable")._value.get() == 3
    await until(lambda: len(rig.n8n.sent) == 1)


async def test_a_failed_read_is_retried_after_its_backoff(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A post whose read fails (the API server restarting) keeps its wake-up: planning
    the turn that failed must not cancel the backoff's (faults: test_apiserver_restart
    left 27 of 220 posts Scheduled for good)."""
    monkeypatch.setattr(dispatcher_module, "WRITE_BACKOFF_MIN", 0.05)
    rig = rig_factory()
    rig.create("p", 3600)
    assert phase(rig, "p") == "Pending" and rig.d.cache.get("uid-ns-p") is not None
    track = rig.d.track(rig.kube.objects[("ns", "p")]["metadata"]["uid"], "ns")
    rig.kube.fail("get", Unavailable("ConnectError: All connection attempts failed"), times=1)
    await rig.d.workers.handle(track.uid)
    assert rig.kube.gets >= 1 and track.failures == 1
    assert track.uid in rig.d.schedule, "the backoff's wake-up was dropped"


# --- window 2: a rejected write backs off, is reported, and is visible ----------------


async def test_rejected_write_backs_off_and_is_reported(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WRITE_BACKOFF_MIN", 0.1)
    rig = rig_factory()
    rig.kube.validate = lambda status: (
        "status.claimedBy: Too long" if status and "claimedBy" in status else None
    )
    rig.create("p", 0.0)
    await asyncio.sleep(1.0)
    claims = rig.kube.status_writes("p")  # every one a claim: a Pending post has no accept
    # 0.1 + 0.2 + 0.4 (+ 0.8): a handful in a second, not a hot loop.
    assert 2 <= claims <= 5, claims
    assert rig.metrics.write_errors.labels("invalid")._value.get() == claims
    assert ("p", "Warning", "StatusWriteRejected") in rig.kube.events
    assert rig.n8n.sent == []


# --- window 3: suspend/edit/postpone must win over a claim ----------------------------


async def test_claim_tests_the_generation_so_an_unseen_suspend_wins(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=0.0)
    rig.create("p", 0.3)
    assert phase(rig, "p") == "Pending"  # its first write is the claim

    def suspend_between_read_and_claim(ops: list[dict[str, Any]]) -> None:
        if any(op.get("value", {}) == "Publishing" for op in ops if op["op"] == "add"):
            rig.kube.before_patch = None
            rig.watching = False  # the edit has not reached the dispatcher yet
            rig.kube.edit_spec("ns", "p", suspend=True)
            rig.watching = True

    rig.kube.before_patch = suspend_between_read_and_claim
    await until(lambda: phase(rig, "p") == "Suspended", within=3)
    assert rig.n8n.sent == []
    assert rig.metrics.claim_conflicts._value.get() >= 1


async def test_edit_after_an_early_claim_releases_it_and_sends_the_new_text(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=1.5)
    rig.create("p", 1.2)
    await until(lambda: phase(rig, "p") == "Publishing")
    assert rig.n8n.sent == []
    rig.d.observe(rig.kube.edit_spec("ns", "p", content={"text": "fixed typo"}))
    await until(lambda: len(rig.n8n.sent) == 1, within=4)
    assert rig.n8n.texts("p") == ["fixed typo"]
    assert rig.n8n.sent[0]["attempt"] == 1  # the unsent attempt number was handed back


async def test_orphaned_claim_for_an_older_generation_is_replanned_not_resent(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_timeout=0.2)
    obj = rig.kube.create("ns", "p", spec(-1))
    rig.kube.edit_spec("ns", "p", content={"text": "v2"})
    past = format_time(engine_time(time.time() - 5))
    rig.d.observe(
        rig.kube.set_status(
            "ns",
            "p",
            {
                "phase": "Publishing",
                "attempt": 1,
                "claimedAt": past,
                "claimedBy": "op-dead/9999",
                "claimedGeneration": obj["metadata"]["generation"],
                "nextAttemptAt": past,
                "observedGeneration": 1,
            },
        )
    )
    await until(lambda: len(rig.n8n.sent) == 1, within=4)
    assert rig.n8n.texts("p") == ["v2"]
    assert rig.n8n.sent[0]["attempt"] == 2  # attempt 1 may have gone out: never reused
    # Replanned, not taken over: a take-over would also send v2 as attempt 2, but it
    # records attempt 1 as Orphaned and posts a Reclaimed Event.
    assert [r["outcome"] for r in rig.status("p")["history"]] == ["Cancelled"]
    assert all(reason != "Reclaimed" for _, _, reason in rig.kube.events)


# --- window 4: double-dispatch windows ---------------------------------------------------


async def test_failed_record_is_retried_and_never_resent(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WRITE_BACKOFF_MIN", 0.05)
    rig = rig_factory(record_grace=0.0, claim_timeout=1.0)
    # A peer replica that would take the claim over once its deadline passes.
    peer = rig_factory(rig.kube, me="op-b/2222", record_grace=0.0, claim_timeout=1.0)
    rig.n8n.on_send = peer.n8n.on_send = lambda body: rig.kube.fail(
        "patch", Unavailable("503"), times=3
    )
    obj = rig.kube.create("ns", "p", spec(0.1))
    rig.d.observe(obj)
    peer.d.observe(obj)
    await until(lambda: "dispatchedAt" in rig.status("p"), within=4)
    await asyncio.sleep(1.5)  # past the take-over deadline
    assert len(rig.n8n.sent) + len(peer.n8n.sent) == 1


async def test_shutdown_finishes_in_flight_requests_and_gives_back_unsent_claims(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=3.0, record_grace=5.0)
    rig.n8n.delay["default"] = 0.4
    rig.create("now", 0.0)
    rig.create("later", 2.5)
    await until(lambda: len(rig.n8n.sent) == 1 and phase(rig, "later") == "Publishing")
    await rig.d.stop(grace=3)
    assert "dispatchedAt" in rig.status("now")  # finished and recorded, not abandoned
    later = rig.status("later")
    assert later["phase"] == "Scheduled" and "claimedBy" not in later
    assert later["attempt"] == 0


# --- window 5: the half-open probe is always released ---------------------------------


async def test_probe_is_released_when_the_request_raises(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    circuit = rig.d.targets.get("default").breaker
    for t in (1.0, 2.0, 3.0):
        circuit.record_failure(SYSTEM.monotonic() - 10 + t)
    rig.n8n.script.append(RuntimeError("boom"))
    rig.create("p", 0.0)
    await until(lambda: len(rig.n8n.sent) == 1)
    await asyncio.sleep(0.05)
    # The request may have reached n8n: a failed probe, and the probe is over.
    assert circuit.probing is False
    await asyncio.sleep(circuit.open_period)
    assert circuit.allow(SYSTEM.monotonic()) is True  # the next probe may go


# --- window 6: resourceVersion is opaque --------------------------------------------------


async def test_resource_versions_are_not_ordered(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    obj = rig.kube.create("ns", "p", spec(3600))
    obj["metadata"]["resourceVersion"] = "900"
    rig.d.observe(obj)
    assert rig.d.cache.get("uid-ns-p") is not None
    restored = rig.kube.edit_spec("ns", "p", suspend=True)
    restored["metadata"]["resourceVersion"] = "5"  # after an etcd restore: "smaller"
    rig.kube.objects[("ns", "p")]["metadata"]["resourceVersion"] = "5"
    rig.d.observe(restored)
    await until(lambda: phase(rig, "p") == "Suspended")


# --- window 7: manual retries keep attempt numbers and change the idempotency key ----


async def test_manual_retry_continues_attempt_numbers_with_a_new_key(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.n8n.script.append(engine.Failure(ErrorClass.PERMANENT, "HTTP400", "bad"))
    rig.create("p", 0.0)
    await until(lambda: phase(rig, "p") == "Failed")
    obj = rig.kube.objects[("ns", "p")]
    obj["metadata"]["annotations"] = {"herald.dev/retry-requested-at": "2026-11-30T10:00:00Z"}
    obj["metadata"]["resourceVersion"] = "7777"
    rig.d.observe(rig.kube.get("ns", "p"))
    await until(lambda: len(rig.n8n.sent) == 2)
    first, second = rig.n8n.sent
    assert (first["attempt"], second["attempt"]) == (1, 2)
    key = engine.fingerprint(engine.from_object(rig.kube.get("ns", "p")))
    assert (first["key"], second["key"]) == (key, f"{key}.1")


# --- window 8: no breaker or label for an unconfigured target -------------------------


async def test_unknown_target_fails_before_any_breaker_exists(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.create("p", 0.0, target="nope")
    await until(lambda: phase(rig, "p") == "Failed")
    assert rig.status("p")["lastError"]["code"] == "UnknownTarget"
    assert "nope" not in rig.d.targets.by_name
    assert rig.n8n.sent == []


# --- fairness and limits ----------------------------------------------------------------


async def test_a_burst_in_one_namespace_does_not_delay_another(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(concurrency=2, claim_ahead=0.0)
    rig.n8n.delay["default"] = 0.01
    due = spec(0.0)  # one publishAt for all: b is not due a moment after the a's
    for i in range(150):
        rig.d.observe(rig.kube.create("a", f"a{i}", dict(due)))
    rig.d.observe(rig.kube.create("b", "b", dict(due)))
    await until(lambda: any(s["namespace"] == "b" for s in rig.n8n.sent), within=10)
    position = next(i for i, s in enumerate(rig.n8n.sent) if s["namespace"] == "b")
    assert position < 4, position


async def test_a_slow_target_cannot_hold_every_slot(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(concurrency=4, target_concurrency={"slow": 1})
    rig.n8n.delay["slow"] = 1.0
    for i in range(4):
        rig.create(f"slow{i}", 0.0, target="slow")
    rig.create("fast", 0.2)
    await until(lambda: any(s["name"] == "fast" for s in rig.n8n.sent), within=3)
    publish_at = engine.from_object(rig.kube.get("ns", "fast")).spec.publish_at.timestamp()
    fast = next(s for s in rig.n8n.sent if s["name"] == "fast")
    assert fast["at"] - publish_at < 0.3
    assert sum(1 for s in rig.n8n.sent if s["target"] == "slow") == 1


# --- TTL after finishing ------------------------------------------------------------------


async def test_published_posts_are_deleted_after_their_ttl_by_the_history_sweep(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(ttl_after_published=0)
    rig.callback_published()
    rig.create("p", 0.0)
    rig.create("keep", 0.0, ttlSecondsAfterFinished=3600)
    rig.create("live", 3600)
    await until(lambda: phase(rig, "p") == "Published" and phase(rig, "keep") == "Published")
    assert rig.kube.deleted == []  # Published posts are not watched: the sweep does it
    done = await history.sweep(
        rig.kube,  # type: ignore[arg-type]
        rig.writer,
        [],
        engine_time(time.time()),
        rig.config.defaults,
        ME,
        page_size=1,
    )
    assert rig.kube.deleted == ["p"]
    assert (done.pages, done.seen, done.deleted, done.changed) == (2, 2, 1, 0)
    assert done.counts == {"ns": 1}  # "keep"; "live" is not listed
    assert phase(rig, "keep") == "Published"
    assert rig.metrics.deleted.labels("Published")._value.get() == 1


async def test_the_history_sweep_keeps_a_post_changed_after_it_was_listed(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(ttl_after_published=0)
    rig.callback_published()
    rig.create("p", 0.0)
    await until(lambda: phase(rig, "p") == "Published")
    listed = rig.kube.list_posts

    async def list_then_edit(*args: Any, **kwargs: Any) -> Any:
        page = await listed(*args, **kwargs)
        rig.kube.set_status("ns", "p", {**rig.status("p")})  # a new resourceVersion
        return page

    rig.kube.list_posts = list_then_edit  # type: ignore[method-assign]
    now = engine_time(time.time())
    done = await history.sweep(rig.kube, rig.writer, [], now, rig.config.defaults, ME)  # type: ignore[arg-type]
    assert (done.deleted, done.changed) == (0, 1)
    assert rig.kube.deleted == []


async def test_the_history_sweep_reports_an_edit_after_publication(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory()
    rig.callback_published()
    rig.create("p", 0.0)
    await until(lambda: phase(rig, "p") == "Published")
    rig.kube.edit_spec("ns", "p", content={"text": "edited after publication"})
    now = engine_time(time.time())
    done = await history.sweep(rig.kube, rig.writer, [], now, rig.config.defaults, ME)  # type: ignore[arg-type]
    assert done.written == 1 and done.counts == {"ns": 1}
    status = rig.status("p")
    applied = next(c for c in status["conditions"] if c["type"] == "SpecApplied")
    assert (status["phase"], status["observedGeneration"]) == ("Published", 2)
    assert (applied["status"], applied["reason"]) == ("False", "ChangedAfterDispatch")
    parsed: list[str] = []
    real_parse = engine.from_object

    def counting_parse(obj: dict[str, Any]) -> engine.Post:
        parsed.append(obj["metadata"]["name"])
        return real_parse(obj)

    monkeypatch.setattr(history.engine, "from_object", counting_parse)
    again = await history.sweep(rig.kube, rig.writer, [], now, rig.config.defaults, ME)  # type: ignore[arg-type]
    assert again.written == 0 and again.counts == {"ns": 1}  # said once
    assert parsed == []  # settled (no TTL, no edit, no retry asked): counted, not parsed


async def test_a_published_post_leaves_the_operators_memory(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(record_grace=0.1)
    # One of the two due posts gets n8n's synchronous answer (the operator's own write
    # publishes it), the other the callback (the sidecar's write: a watch DELETED).
    rig.callback_published()
    rig.n8n.script.extend([engine.Accepted(), engine.Accepted(engine.Published("urn:x:1"))])
    rig.create("p", 0.0)
    rig.create("q", 3600)
    rig.create("sync", 0.0)
    await until(lambda: phase(rig, "p") == "Published" and phase(rig, "sync") == "Published")
    await asyncio.sleep(0.3)  # past the record grace
    gone = {"uid-ns-p", "uid-ns-sync"}
    assert not gone & {e.uid for e in rig.d.cache._live.values()}
    assert not gone & set(rig.d.cache._done) and not gone & set(rig.d.tracks)
    assert not any(uid in rig.d.schedule for uid in gone)
    assert len(rig.d.cache) == 1  # "q"


async def test_ttl_delete_is_preconditioned_on_the_version_decided_on(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(ttl_after_published=0)
    rig.create("p", 3600)
    assert rig.d.cache.get("uid-ns-p") is not None
    with pytest.raises(Exception, match="precondition"):
        await rig.kube.delete_post("ns", "p", "uid-ns-p", "1")


# --- the phase gauge is kept, not scanned --------------------------------------------------


async def test_phase_counts_follow_transitions(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.callback_published()
    rig.create("p", 0.0)
    rig.create("q", 3600)
    await until(lambda: phase(rig, "p") == "Published" and phase(rig, "q") == "Pending")
    await asyncio.sleep(0.05)
    counts = {(p.phase, p.namespace): p.count for p in rig.d._phase_counts()}
    # The phase the object shows; Published: counted by the history sweep.
    assert counts == {("Pending", "ns"): 1}
    rig.d.count_published(Counter({"ns": 1}))
    counts = {(p.phase, p.namespace): p.count for p in rig.d._phase_counts()}
    assert counts == {("Published", "ns"): 1, ("Pending", "ns"): 1}
    rig.d.forget("uid-ns-q")
    assert {(p.phase, p.count) for p in rig.d._phase_counts()} == {("Published", 1)}


# --- accounts (issue #22): resolved at claim time; a refused post sends nothing ----------


async def test_a_post_naming_another_namespaces_account_fails_and_sends_nothing(
    rig_factory: Callable[..., Rig],
) -> None:
    kube = FakeKube()
    kube.auto_accounts = False
    kube.add_account("team-a", "brand", channel="linkedin", handle="urn:li:organization:1")
    rig = rig_factory(kube)
    rig.create("p", 0.0, namespace="team-b", account="brand")
    await until(lambda: phase(rig, "p", "team-b") == "Failed")
    status = rig.status("p", "team-b")
    assert status["lastError"]["code"] == "UnknownAccount"
    assert "team-b" in status["message"] and "brand" in status["message"]
    assert rig.n8n.sent == []


async def test_the_body_carries_the_resolved_account_and_the_status_records_it(
    rig_factory: Callable[..., Rig],
) -> None:
    kube = FakeKube()
    kube.auto_accounts = False
    kube.add_account("ns", "brand", channel="linkedin", handle="urn:li:organization:7")
    rig = rig_factory(kube)
    rig.create("p", 0.0, account="brand")
    await until(lambda: phase(rig, "p") == "Publishing" and bool(rig.n8n.sent))
    [sent] = rig.n8n.sent
    assert sent["account"] == {
        "kind": "SocialAccount",
        "name": "brand",
        "handle": "urn:li:organization:7",
        "channel": "linkedin",
    }
    assert rig.status("p")["account"] == {
        "kind": "SocialAccount",
        "name": "brand",
        "handle": "urn:li:organization:7",
    }


async def test_a_suspended_account_holds_its_posts_until_resumed(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("herald.worker.HOLD_RECHECK_SECONDS", 0.3)
    kube = FakeKube()
    kube.auto_accounts = False
    kube.add_account("ns", "brand", channel="linkedin", handle="h", suspend=True)
    rig = rig_factory(kube)
    rig.create("p", 0.0, account="brand")
    await until(lambda: "suspended" in (rig.status("p").get("message") or ""))
    assert phase(rig, "p") == "Scheduled" and rig.n8n.sent == []
    assert ("p", "Warning", "AccountSuspended") in [
        (name, kind, reason) for name, kind, reason in kube.events
    ]
    kube.add_account("ns", "brand", channel="linkedin", handle="h", suspend=False)
    monkeypatch.setattr("herald.accountstore.CACHE_SECONDS", 0.0)
    await until(lambda: bool(rig.n8n.sent))
    assert rig.status("p")["attempt"] == 1  # holding spent no attempt


def test_a_held_view_keeps_no_managed_fields() -> None:
    """What the dispatcher holds for a post (a claim until its send time, a send until its
    record, a hint) is the object without the API server's managedFields: about half of
    its bytes, and nothing a status patch tests or sets."""
    obj = FakeKube().create("ns", "p", spec(60))
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    view = View.of(obj)
    assert "managedFields" not in view.obj["metadata"]
    assert view.obj["spec"] == obj["spec"] and view.obj["metadata"]["uid"] == obj["metadata"]["uid"]
    assert view.resource_version == obj["metadata"]["resourceVersion"]
    assert "managedFields" in obj["metadata"]  # the caller's object is left as it was
