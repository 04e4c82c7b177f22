"""Account resolution (herald.accounts): which account a post publishes as, or why not.

A table of cases through the pure `resolve()`, the label-selector semantics, and the
store's rule that a refusal is never decided from its cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from herald import accounts, engine
from herald.accounts import Account, Candidates, Held, Refusal, Refused, Resolved, usage_text
from herald.accountstore import CACHE_SECONDS, AccountStore, Quotas, report_ready
from herald.kube import KubeError
from herald.models import (
    Channel,
    LabelSelector,
    Phase,
    QuotaUsage,
    parse_account,
    parse_spec,
    parse_status,
)
from tests.support.fake_kube import FakeKube


def own(name: str, **spec: Any) -> Account:
    spec.setdefault("channel", "linkedin")
    spec.setdefault("handle", f"urn:li:organization:{name}")
    return Account(name, parse_account(spec, cluster=False), "team-a")


def shared(name: str, **spec: Any) -> Account:
    spec.setdefault("channel", "linkedin")
    spec.setdefault("handle", f"urn:li:organization:{name}")
    return Account(name, parse_account(spec, cluster=True))


TEAM_A = {"team": "a"}
SELECT_A = {"from": "Selector", "selector": {"matchLabels": TEAM_A}}

CASES: list[Any] = [
    # (spec.account, channel, target, own accounts, cluster account, namespace labels, expected)
    pytest.param("brand", "linkedin", "default", [own("brand")], None, {}, "brand", id="own"),
    pytest.param(
        "brand",
        "linkedin",
        "default",
        [own("brand", handle="urn:li:organization:1")],
        shared("brand", allowedNamespaces={"from": "All"}),
        {},
        "brand",
        id="own-before-cluster",
    ),
    pytest.param(
        "shared",
        "linkedin",
        "default",
        [],
        shared("shared", allowedNamespaces={"from": "All"}),
        {},
        "shared",
        id="cluster-all",
    ),
    pytest.param(
        "shared",
        "linkedin",
        "default",
        [],
        shared("shared", allowedNamespaces=SELECT_A),
        TEAM_A,
        "shared",
        id="cluster-selector-admits",
    ),
    pytest.param(
        "shared",
        "linkedin",
        "default",
        [],
        shared("shared", allowedNamespaces=SELECT_A),
        {"team": "b"},
        Refusal.ACCOUNT_NOT_ALLOWED,
        id="cluster-selector-refuses",
    ),
    pytest.param(
        "shared",
        "linkedin",
        "default",
        [],
        shared("shared"),
        TEAM_A,
        Refusal.ACCOUNT_NOT_ALLOWED,
        id="cluster-without-allowedNamespaces-admits-none",
    ),
    pytest.param(
        "other-team",
        "linkedin",
        "default",
        [own("brand")],
        None,
        {},
        Refusal.UNKNOWN_ACCOUNT,
        id="unknown-name",
    ),
    pytest.param(
        "urn:li:organization:1000001",
        "linkedin",
        "default",
        [own("brand", default=True)],
        None,
        {},
        Refusal.UNKNOWN_ACCOUNT,
        id="raw-urn-is-not-a-name",
    ),
    pytest.param(
        "brand",
        "x",
        "default",
        [own("brand")],
        None,
        {},
        Refusal.ACCOUNT_CHANNEL_MISMATCH,
        id="channel-mismatch",
    ),
    pytest.param(
        "brand",
        "linkedin",
        "eu",
        [own("brand")],
        None,
        {},
        Refusal.ACCOUNT_TARGET_MISMATCH,
        id="target-mismatch",
    ),
    pytest.param(
        None,
        "linkedin",
        "default",
        [own("brand"), own("main", default=True), own("x", channel="x", default=True)],
        None,
        {},
        "main",
        id="default-of-the-channel",
    ),
    pytest.param(
        None,
        "linkedin",
        "default",
        [own("brand")],
        None,
        {},
        Refusal.UNKNOWN_ACCOUNT,
        id="no-default",
    ),
    pytest.param(
        None,
        "linkedin",
        "default",
        [own("a", default=True), own("b", default=True)],
        None,
        {},
        Refusal.UNKNOWN_ACCOUNT,
        id="two-defaults",
    ),
    pytest.param(
        "brand",
        "linkedin",
        "default",
        [own("brand", suspend=True)],
        None,
        {},
        "held",
        id="suspended",
    ),
]


@pytest.mark.parametrize(("name", "channel", "target", "mine", "cluster", "labels", "want"), CASES)
def test_resolve(
    name: str | None,
    channel: str,
    target: str,
    mine: list[Account],
    cluster: Account | None,
    labels: dict[str, str],
    want: str | Refusal,
) -> None:
    found = Candidates("team-b", labels, mine, cluster)
    got = accounts.resolve(name, Channel(channel), target, found)
    if isinstance(want, Refusal):
        assert isinstance(got, Refused), got
        assert got.reason is want
        # The message names the namespace, and the account when the post named one.
        assert "team-b" in got.message
        if name is not None:
            assert name in got.message
    elif want == "held":
        assert isinstance(got, Held), got
        assert "suspended" in got.message and name is not None and name in got.message
    else:
        assert isinstance(got, Resolved), got
        assert got.account.name == want
        if name == "brand" and cluster is not None:
            assert got.account.kind == "SocialAccount"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        (
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
            {"team": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
            {"team": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": ""}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {"team": "a"}, False),
    ],
)
def test_selector(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert accounts.selector_matches(LabelSelector.model_validate(selector), labels) is matches


async def test_a_refusal_is_read_fresh_not_decided_from_the_cache() -> None:
    """A namespace labelled a moment ago is admitted at once: the cached labels (which
    would refuse it) are read again before a post fails for good."""
    kube = FakeKube()
    kube.add_account(
        None,
        "shared",
        channel="linkedin",
        handle="urn:li:organization:9",
        allowedNamespaces=SELECT_A,
    )
    now = [0.0]
    store = AccountStore(kube, lambda: now[0])
    first = await store.resolve("team-b", "shared", Channel.LINKEDIN, "default")
    assert isinstance(first, Refused) and first.reason is Refusal.ACCOUNT_NOT_ALLOWED
    kube.namespace_label["team-b"] = dict(TEAM_A)
    now[0] += CACHE_SECONDS / 10
    second = await store.resolve("team-b", "shared", Channel.LINKEDIN, "default")
    assert isinstance(second, Resolved)


class StatusSink:
    def __init__(self) -> None:
        self.written: list[tuple[str | None, str, dict[str, Any]]] = []

    async def patch_account_status(
        self, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        self.written.append((namespace, name, status))


@pytest.mark.parametrize(
    ("spec", "status", "reason"),
    [
        ({"target": "default"}, "True", "Ready"),
        ({"target": "eu"}, "False", "TargetUnknown"),
        ({"suspend": True}, "False", "Suspended"),
    ],
)
async def test_ready_condition_is_written_once_per_change(
    spec: dict[str, Any], status: str, reason: str
) -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "brand", "namespace": "team-a", "generation": 3},
        "spec": {"channel": "x", "handle": "@brand", **spec},
    }
    sink = StatusSink()
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert await report_ready(sink, obj, frozenset({"default"}), now)
    [(ns, name, written)] = sink.written
    assert (ns, name, written["observedGeneration"]) == ("team-a", "brand", 3)
    [cond] = written["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", status, reason)
    # The watch echoes the write: nothing more to write.
    assert not await report_ready(sink, {**obj, "status": written}, frozenset({"default"}), now)
    assert len(sink.written) == 1


# --- quotas -----------------------------------------------------------------------------

NOON = dt.datetime(2030, 1, 15, 12, 20, tzinfo=dt.UTC)


def limited(per_hour: int | None = None, per_day: int | None = None) -> Account:
    limits = {
        k: v for k, v in (("postsPerHour", per_hour), ("postsPerDay", per_day)) if v is not None
    }
    return own("brand", limits=limits)


async def test_two_replicas_taking_slots_at_once_never_exceed_the_quota() -> None:
    kube = FakeKube()
    replicas = [Quotas(kube, "herald", lambda: 0.0) for _ in range(2)]
    account = limited(per_hour=2)
    results = await asyncio.gather(
        *(replicas[i % 2].take(account, f"post-{i}", NOON) for i in range(4))
    )
    full = [r.full for r in results if r.full is not None]
    assert len(full) == 2 and len(kube.leases) == 2
    assert all(
        w.name == "hour" and w.end == dt.datetime(2030, 1, 15, 13, tzinfo=dt.UTC) for w in full
    )


async def test_a_post_finds_its_own_slot_and_a_restart_counts_on() -> None:
    kube = FakeKube()
    account = limited(per_hour=2, per_day=3)
    first = Quotas(kube, "herald", lambda: 0.0)
    assert (await first.take(account, "a", NOON)).full is None
    # Its own slot, not a second one.
    assert [n for _, n in (await first.take(account, "a", NOON)).counted] == [1, 1]
    restarted = Quotas(kube, "herald", lambda: 0.0)
    assert (await restarted.take(account, "b", NOON)).full is None
    hour_full = (await restarted.take(account, "c", NOON)).full
    assert hour_full is not None and hour_full.name == "hour"
    later = NOON + dt.timedelta(hours=1)
    # A new hour, the day's third.
    assert (await restarted.take(account, "c", later)).full is None
    day_full = (await restarted.take(account, "d", later)).full
    assert day_full is not None and day_full.name == "day"
    assert day_full.end == dt.datetime(2030, 1, 16, tzinfo=dt.UTC)


async def test_quota_use_is_reported_in_the_account_status_when_it_changes() -> None:
    kube = FakeKube()
    account = limited(per_hour=2, per_day=3)
    quotas = Quotas(kube, "herald", lambda: 0.0)
    for post in ("a", "a", "b", "c"):
        await quotas.report(account, await quotas.take(account, post, NOON))
    # a (1/1), a again (unchanged: no write), b (2/2), c (the hour full: nothing taken,
    # nothing changed, no write).
    assert [w[2]["usage"] for w in kube.account_status_writes] == [
        [
            {"window": "hour", "start": "2030-01-15T12:00:00Z", "posts": 1, "limit": 2},
            {"window": "day", "start": "2030-01-15T00:00:00Z", "posts": 1, "limit": 3},
        ],
        [
            {"window": "hour", "start": "2030-01-15T12:00:00Z", "posts": 2, "limit": 2},
            {"window": "day", "start": "2030-01-15T00:00:00Z", "posts": 2, "limit": 3},
        ],
    ]
    assert (await quotas.take(account, "c", NOON)).full is not None
    assert {(ns, name) for ns, name, _ in kube.account_status_writes} == {("team-a", "brand")}
    # A failed write is only logged, and written again at the next count.
    kube.fail("account_status", KubeError("boom"))
    later = NOON + dt.timedelta(hours=1)
    await quotas.report(account, await quotas.take(account, "c", later))
    await quotas.report(account, await quotas.take(account, "c", later))
    assert kube.account_status_writes[-1][2]["usage"][0]["start"] == "2030-01-15T13:00:00Z"
    assert len(kube.account_status_writes) == 3


async def test_posts_counted_at_once_never_leave_the_smaller_count() -> None:
    kube = FakeKube()
    account = limited(per_hour=5)
    quotas = Quotas(kube, "herald", lambda: 0.0)

    async def claim(post: str) -> None:
        taken = await quotas.take(account, post, NOON)
        await asyncio.sleep(0.01 if post == "first" else 0)  # the first reports last
        await quotas.report(account, taken)

    await asyncio.gather(claim("first"), claim("second"))
    assert [w[2]["usage"][0]["posts"] for w in kube.account_status_writes] == [2]


def test_usage_text_counts_only_the_current_windows() -> None:
    account = limited(per_hour=2, per_day=20)
    usage = [
        QuotaUsage.model_validate(u)
        for u in (
            {"window": "hour", "start": "2030-01-15T11:00:00Z", "posts": 2, "limit": 2},
            {"window": "day", "start": "2030-01-15T00:00:00Z", "posts": 7, "limit": 20},
        )
    ]
    assert usage_text(account, usage, NOON) == "0/2 this hour, 7/20 today"
    assert usage_text(limited(per_day=5), [], NOON) == "0/5 today"
    assert usage_text(own("free"), usage, NOON) == ""


def test_slot_names_are_valid_and_distinct_per_account_window_and_index() -> None:
    a, b = own("a"), shared("a")
    [hour] = accounts.windows(own("x", limits={"postsPerHour": 1}), NOON)
    names = {accounts.slot_name(acc, hour, i) for acc in (a, b) for i in range(3)}
    assert len(names) == 6
    assert all(len(n) <= 63 and n.startswith("herald-quota-") for n in names)


async def test_a_post_over_its_quota_waits_for_the_next_window_without_an_attempt() -> None:
    post = engine.Post(
        "team-a",
        "p",
        "uid-p",
        1,
        parse_spec({"publishAt": "2030-01-15T12:00:00Z", "content": {"text": "x"}}),
        parse_status({"phase": "Scheduled", "nextAttemptAt": "2030-01-15T12:00:00Z"}),
    )
    [hour] = accounts.windows(limited(per_hour=1), NOON)
    msg = accounts.quota_message(limited(per_hour=1), hour, "team-a")
    decision = engine.quota_exceeded(post, NOON, hour.end, msg)
    assert decision.status is not None
    assert decision.status.phase is Phase.SCHEDULED and decision.status.attempt == 0
    assert decision.status.next_attempt_at == dt.datetime(2030, 1, 15, 13, tzinfo=dt.UTC)
    assert [e.reason for e in decision.events] == ["QuotaExceeded"]
    assert "team-a" in msg and "brand" in msg and "postsPerHour" in msg
    again = engine.quota_exceeded(engine.replace_status(post, decision.status), NOON, hour.end, msg)
    assert again.events == ()  # one Event per window
