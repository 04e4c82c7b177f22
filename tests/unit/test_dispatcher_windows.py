"""The dispatcher's windows from issue 16, each reproduced against the in-memory API.

Each test failed on the dispatcher before the rebuild (the commit that added this file
quotes the failing lines); they run the real Dispatcher, Writer and state machine with a
stand-in n8n, bounded by `until()` and short sleeps. The same windows on the real API
server and n8n are in tests/faults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from herald import dispatcher as dispatcher_module
from herald import engine
from herald.kube import Unavailable
from herald.models import format_time
from tests.unit.test_dispatcher import (
    Rig,
    engine_time,
    phase,
    rig_factory,
    spec,
    until,
)

__all__ = ["rig_factory"]


def open_circuit(rig: Rig, target: str = "default") -> None:
    """Three transient failures: the target's circuit opens for `circuit_open_min`."""
    circuit = rig.d.targets.get(target).breaker
    for _ in range(3):
        circuit.record_failure(rig.d.clock.monotonic())


def writes(rig: Rig, names: list[str]) -> int:
    return sum(rig.kube.status_writes(n) for n in names)


# --- window 1: no claim/give-back loop while a half-open probe is out ------------------


async def test_posts_due_during_a_half_open_probe_wait_without_writing(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=1.0)
    rig.n8n.delay_for["probe"] = 2.5  # n8n accepts the probe and hangs
    open_circuit(rig)
    await asyncio.sleep(0.3)  # past circuit_open_min: half-open
    rig.create("probe", 0.0)
    await until(lambda: len(rig.n8n.sent) == 1)
    names = [f"p{i}" for i in range(10)]
    for name in names:
        rig.create(name, 0.0)
    await asyncio.sleep(1.8)  # the probe is still out
    assert [s["name"] for s in rig.n8n.sent] == ["probe"]
    assert writes(rig, names) <= len(names)  # each accepted, none claimed and given back
    await until(lambda: all(phase(rig, n) == "Publishing" for n in names), within=4)
    await until(lambda: len(rig.n8n.sent) == 11, within=4)


# --- window 2: the holder never sends what a peer may take over ------------------------


async def test_a_claim_parked_behind_a_limit_is_renewed_before_it_is_sent(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=0.0, claim_timeout=2.0, target_concurrency={"slow": 1})
    rig.n8n.delay["slow"] = 0.8
    margins: list[float] = []

    def on_send(body: dict[str, Any]) -> None:
        # What a peer reads from the durable status: when it may take the claim over.
        status = engine.from_object(rig.kube.get(body["namespace"], body["name"])).status
        since = max(engine.send_at(status), status.claimed_at or engine.send_at(status))
        margins.append(since.timestamp() + 2.0 - time.time())

    rig.n8n.on_send = on_send
    for i in range(4):
        rig.create(f"s{i}", 0.0, target="slow")
    await until(lambda: len(rig.n8n.sent) == 4, within=8)
    # Room left for the request (0.8 s) and its record (0.3 s) before a take-over.
    assert min(margins) >= 1.1, margins
    assert [s["attempt"] for s in rig.n8n.sent] == [1, 1, 1, 1]


async def test_a_record_failing_for_a_while_is_retried_before_a_peer_may_take_over(
    rig_factory: Callable[..., Rig],
) -> None:
    a = rig_factory(claim_ahead=0.0, claim_timeout=2.0, record_grace=0.0)
    b = rig_factory(a.kube, me="op-b/2222", claim_ahead=0.0, claim_timeout=2.0, record_grace=0.0)
    outage_until = [0.0]

    def api_down(ops: list[dict[str, Any]]) -> None:
        if time.time() < outage_until[0]:
            raise Unavailable("503 etcdserver: leader changed")

    def on_send(body: dict[str, Any]) -> None:
        if outage_until[0] == 0.0:
            outage_until[0] = time.time() + 1.3  # well inside the 2 s claim timeout

    a.kube.before_patch = api_down
    a.n8n.on_send = b.n8n.on_send = on_send
    obj = a.kube.create("ns", "p", spec(0.2))
    a.d.observe(obj)
    b.d.observe(obj)
    await until(lambda: "dispatchedAt" in a.status("p"), within=6)
    await asyncio.sleep(2.5)  # past the take-over deadline
    sent = a.n8n.sent + b.n8n.sent
    assert len(sent) == 1, [(s["attempt"], s["key"]) for s in sent]


async def test_claims_parked_longer_than_the_claim_timeout_are_not_taken_over(
    rig_factory: Callable[..., Rig],
) -> None:
    a = rig_factory(
        claim_ahead=0.0, claim_timeout=3.0, request_timeout=0.5, target_concurrency={"slow": 1}
    )
    b = rig_factory(a.kube, me="op-b/2222", claim_ahead=0.0, claim_timeout=3.0)
    b.watching = False  # b learns of the posts only once a holds every claim
    a.n8n.delay["slow"] = b.n8n.delay["slow"] = 0.5
    names = [f"s{i}" for i in range(8)]
    for name in names:
        a.create(name, 0.0, target="slow")
    await until(lambda: all(phase(a, n) == "Publishing" for n in names))
    b.watching = True
    for name in names:
        b.d.observe(a.kube.get("ns", name))
    await until(lambda: len(a.n8n.sent) + len(b.n8n.sent) >= 8, within=10)
    await asyncio.sleep(1.0)
    sent = sorted((s["name"], s["attempt"]) for s in a.n8n.sent + b.n8n.sent)
    assert sent == [(n, 1) for n in names]  # each once, by its holder; none taken over


# --- window 3: a request that may have reached n8n spends its attempt ------------------


async def test_a_request_that_raised_spends_its_attempt_and_keeps_its_key(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.n8n.script.append(UnicodeEncodeError("ascii", "Bearer é", 7, 8, "not ASCII"))
    rig.create("p", 0.0)
    await until(lambda: len(rig.n8n.sent) == 2, within=6)
    first, second = rig.n8n.sent
    assert (first["attempt"], second["attempt"]) == (1, 2)
    key = engine.fingerprint(engine.from_object(rig.kube.get("ns", "p")))
    assert first["key"] == second["key"] == key


async def test_an_edit_after_a_request_raised_never_reuses_its_attempt_number(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.n8n.script.append(RuntimeError("connection reset after the body was written"))

    def edit_once(body: dict[str, Any]) -> None:
        rig.n8n.on_send = None
        rig.kube.edit_spec("ns", "p", content={"text": "v2"})

    rig.n8n.on_send = edit_once
    rig.create("p", 0.0)
    await until(lambda: len(rig.n8n.sent) == 2, within=6)
    assert rig.n8n.texts("p") == ["hello", "v2"]
    assert [s["attempt"] for s in rig.n8n.sent] == [1, 2]


# --- window 5: a freed slot always wakes the next live parked claim --------------------


async def test_a_suspended_parked_claim_does_not_strand_the_next_one(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=0.5, target_concurrency={"slow": 1})
    rig.n8n.delay["slow"] = 0.6
    for name in ("a", "b", "c"):
        rig.create(name, 0.3, target="slow")
    await until(lambda: len(rig.n8n.sent) == 1)
    parked = [n for n in ("a", "b", "c") if n != rig.n8n.sent[0]["name"]]
    rig.kube.edit_spec("ns", parked[0], suspend=True)
    rig.d.observe(rig.kube.get("ns", parked[0]))
    await until(lambda: phase(rig, parked[0]) == "Suspended")
    await until(lambda: len(rig.n8n.sent) == 2, within=3)
    assert rig.n8n.sent[1]["name"] == parked[1]


# --- window 8 (dispatcher parts) ---------------------------------------------------------


async def test_a_request_from_before_the_circuit_opened_does_not_free_the_probe(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_ahead=0.0)
    rig.n8n.delay_for["early"] = 0.7
    rig.n8n.delay_for["probe"] = 3.0
    rig.n8n.script.append(RuntimeError("connection reset"))  # the early request's end
    rig.create("early", 0.0)
    await until(lambda: len(rig.n8n.sent) == 1)
    open_circuit(rig)
    await asyncio.sleep(0.3)  # half-open
    rig.create("probe", 0.0)
    await until(lambda: len(rig.n8n.sent) == 2)
    rig.create("third", 0.0)
    await asyncio.sleep(2.0)  # the early request ended; the probe is still out
    assert [s["name"] for s in rig.n8n.sent] == ["early", "probe"]


async def test_an_update_withheld_behind_our_own_write_is_read_again(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "OWN_WRITE_WAIT", 0.3)
    rig = rig_factory()
    rig.watching = False  # the watch is down; it comes back with a relist
    rig.create("p", 3600, suspend=True)  # a new suspended post: accepted by a write
    await until(lambda: phase(rig, "p") == "Suspended")
    # The relist shows a later edit, not our own write's version: no echo ever comes.
    rig.d.observe(rig.kube.edit_spec("ns", "p", suspend=False))
    await until(lambda: phase(rig, "p") == "Scheduled", within=3)


def per_post_state(rig: Rig, uid: str) -> dict[str, Any]:
    """What the dispatcher holds about a post besides the cache's projection."""
    d: Any = rig.d
    held: dict[str, Any] = {}
    for name in ("_hints", "_claims", "_sent", "_written", "_failures", "_not_before", "_fresh"):
        table = getattr(d, name, None)
        if table is not None and uid in table:
            held[name] = table[uid]
    for name in ("_reclaimed", "_parked_uids", "_dirty", "_busy"):
        if uid in getattr(d, name, ()):
            held[name] = True
    tracks = getattr(d, "tracks", None)
    if tracks is not None and uid in tracks:
        held["track"] = tracks[uid]
    return held


async def test_finished_posts_leave_no_per_post_state(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WRITE_BACKOFF_MIN", 0.05)
    rig = rig_factory(record_grace=0.0)
    rig.n8n.on_send = lambda body: rig.kube.fail("patch", Unavailable("503"), times=1)
    rig.create("p", 0.0)
    await until(lambda: "dispatchedAt" in rig.status("p"), within=4)
    rig.kube.set_status("ns", "p", {**rig.status("p"), "phase": "Published"})
    rig.d.observe(rig.kube.get("ns", "p"))
    await asyncio.sleep(0.3)
    assert per_post_state(rig, "uid-ns-p") == {}


async def test_a_take_over_for_an_unknown_target_fails_instead_of_sending(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(claim_timeout=0.2)
    rig.kube.create("ns", "p", spec(-1, target="nope"))
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
                "claimedGeneration": 1,
                "nextAttemptAt": past,
                "observedGeneration": 1,
            },
        )
    )
    await until(lambda: phase(rig, "p") == "Failed", within=3)
    assert rig.status("p")["lastError"]["code"] == "UnknownTarget"
    assert rig.n8n.sent == []
