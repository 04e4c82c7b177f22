"""Account resolution (herald.accounts): which account a post publishes as, or why not.

A table of cases through the pure `resolve()`, the label-selector semantics, and the
store's rule that a refusal is never decided from its cache.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from herald import accounts
from herald.accounts import Account, Candidates, Held, Refusal, Refused, Resolved
from herald.accountstore import CACHE_SECONDS, AccountStore, report_ready
from herald.models import Channel, LabelSelector, parse_account
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
