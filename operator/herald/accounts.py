"""Which account a post publishes as: the resolution rules, as a pure function.

A post's spec.account is a NAME, never a handle. It resolves to a SocialAccount of that
name in the post's namespace, else to a ClusterSocialAccount of that name whose
spec.allowedNamespaces admits the post's namespace (its labels as read now). A post
without spec.account takes its namespace's SocialAccount marked spec.default for the
post's channel. Anything else is refused, for good, with a reason and a message naming
the account and the namespace:

- UnknownAccount: no such account (or none, or several, default accounts);
- AccountNotAllowed: a ClusterSocialAccount that does not admit the namespace;
- AccountChannelMismatch: the account is on another network than the post;
- AccountTargetMismatch: the post's (deprecated) spec.target names another n8n target
  than the account's.

A suspended account holds its posts instead (`Held`). `resolve()` does no I/O: the
caller (`herald.accountstore`) reads the accounts and the namespace's labels.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from herald.models import (
    ACCOUNT_KIND,
    CLUSTER_ACCOUNT_KIND,
    Channel,
    ClusterSocialAccountSpec,
    ConditionStatus,
    LabelSelector,
    NamespacedAccountSpec,
    NamespacesFrom,
    QuotaUsage,
    SocialAccountSpec,
    format_time,
)

HOLD_RECHECK_SECONDS = 30.0
"""How often a post held by a suspended account looks at the account again."""


class Refusal(enum.StrEnum):
    UNKNOWN_ACCOUNT = "UnknownAccount"
    ACCOUNT_NOT_ALLOWED = "AccountNotAllowed"
    ACCOUNT_CHANNEL_MISMATCH = "AccountChannelMismatch"
    ACCOUNT_TARGET_MISMATCH = "AccountTargetMismatch"


@dataclass(frozen=True)
class Account:
    """One SocialAccount (namespace set) or ClusterSocialAccount (namespace None)."""

    name: str
    spec: SocialAccountSpec
    namespace: str | None = None

    @property
    def kind(self) -> str:
        return ACCOUNT_KIND if self.namespace is not None else CLUSTER_ACCOUNT_KIND

    @property
    def ref(self) -> str:
        """How messages name it: SocialAccount team-a/brand, ClusterSocialAccount shared."""
        where = f"{self.namespace}/" if self.namespace is not None else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Resolved:
    account: Account


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    message: str


@dataclass(frozen=True)
class Held:
    account: Account
    message: str


Resolution = Resolved | Refused | Held


@dataclass(frozen=True)
class Candidates:
    """What resolution looks at, as the store read it."""

    namespace: str
    namespace_labels: Mapping[str, str]
    own: Sequence[Account]
    """The SocialAccounts of the post's namespace."""
    cluster: Account | None
    """The ClusterSocialAccount named spec.account, if any (None without spec.account)."""


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression
    must hold; an empty selector matches everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        present = req.key in labels
        values = req.values or []
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an operator the API server would not have stored: admit nothing
    return True


def admits(spec: ClusterSocialAccountSpec, labels: Mapping[str, str]) -> bool:
    allowed = spec.allowed_namespaces
    if allowed is None:
        return False
    if allowed.from_ is NamespacesFrom.ALL:
        return True
    return allowed.selector is not None and selector_matches(allowed.selector, labels)


def resolve(name: str | None, channel: Channel, target: str, found: Candidates) -> Resolution:
    """The account a post (spec.account `name`, spec.channel, spec.target) in
    `found.namespace` publishes as, or why it may not publish."""
    ns = found.namespace
    if name is None:
        defaults = [
            a
            for a in found.own
            if isinstance(a.spec, NamespacedAccountSpec)
            and a.spec.default
            and a.spec.channel is channel
        ]
        if len(defaults) != 1:
            detail = (
                "none is"
                if not defaults
                else f"{len(defaults)} are ({', '.join(sorted(a.name for a in defaults))})"
            )
            return Refused(
                Refusal.UNKNOWN_ACCOUNT,
                f"spec.account is not set and no single SocialAccount in namespace {ns} is "
                f"the default for channel {channel.value} ({detail}): set spec.account, or "
                "spec.default: true on one SocialAccount of the channel",
            )
        return _check(defaults[0], channel, target, ns)
    own = next((a for a in found.own if a.name == name), None)
    if own is not None:
        return _check(own, channel, target, ns)
    cluster = found.cluster
    if cluster is None or cluster.name != name:
        return Refused(
            Refusal.UNKNOWN_ACCOUNT,
            f"account {name!r}: no SocialAccount {name!r} in namespace {ns} and no "
            f"ClusterSocialAccount {name!r}; spec.account names an account object, not a "
            "handle",
        )
    assert isinstance(cluster.spec, ClusterSocialAccountSpec)
    if not admits(cluster.spec, found.namespace_labels):
        return Refused(
            Refusal.ACCOUNT_NOT_ALLOWED,
            f"ClusterSocialAccount {name} does not admit namespace {ns} (its "
            "spec.allowedNamespaces does not select it)",
        )
    return _check(cluster, channel, target, ns)


def _check(account: Account, channel: Channel, target: str, ns: str) -> Resolution:
    spec = account.spec
    if spec.channel is not channel:
        return Refused(
            Refusal.ACCOUNT_CHANNEL_MISMATCH,
            f"{account.ref} is a {spec.channel.value} account; the post in namespace {ns} "
            f"is for channel {channel.value}",
        )
    if spec.target != target:
        return Refused(
            Refusal.ACCOUNT_TARGET_MISMATCH,
            f"{account.ref} publishes through n8n target {spec.target}; the post in namespace "
            f"{ns} names spec.target {target} (set the post's spec.target to {spec.target}, "
            "or leave both unset)",
        )
    if spec.suspend:
        return Held(
            account,
            f"Held: {account.ref} is suspended (spec.suspend); the post in namespace {ns} is "
            "published once it is resumed",
        )
    return Resolved(account)


def readiness(
    spec: SocialAccountSpec, targets: frozenset[str] | None
) -> tuple[ConditionStatus, str, str]:
    """The account's Ready condition (status, reason, message), from its spec and the
    operator's configured n8n targets."""
    if targets is not None and spec.target not in targets:
        configured = ", ".join(sorted(targets)) or "none"
        return (
            ConditionStatus.FALSE,
            "TargetUnknown",
            f"spec.target {spec.target} is not configured in the operator (configured: "
            f"{configured}): posts using this account fail with UnknownTarget",
        )
    if spec.suspend:
        return (
            ConditionStatus.FALSE,
            "Suspended",
            "spec.suspend is true: posts using this account are held until it is resumed",
        )
    return (
        ConditionStatus.TRUE,
        "Ready",
        f"posts publish as {spec.handle} through n8n target {spec.target}",
    )


# --- quotas: limits.postsPerHour / postsPerDay ------------------------------------------


@dataclass(frozen=True)
class Window:
    """One quota window of an account: `limit` posts between `start` and `end` (UTC)."""

    name: str
    """hour or day, for messages."""
    key: str
    """The window's identity in slot names: h2026120309, d20261203."""
    limit: int
    start: dt.datetime
    end: dt.datetime


def windows(account: Account, now: dt.datetime) -> list[Window]:
    """The account's quota windows that contain `now`: the clock hour and the UTC day."""
    limits = account.spec.limits
    if limits is None:
        return []
    now = now.astimezone(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    found = []
    if limits.posts_per_hour is not None:
        found.append(
            Window(
                "hour",
                f"h{hour:%Y%m%d%H}",
                limits.posts_per_hour,
                hour,
                hour + dt.timedelta(hours=1),
            )
        )
    if limits.posts_per_day is not None:
        found.append(
            Window("day", f"d{day:%Y%m%d}", limits.posts_per_day, day, day + dt.timedelta(days=1))
        )
    return found


@dataclass(frozen=True)
class Taken:
    """What taking a post's quota slots found: the first window that is full (None: the
    post holds a slot of each), and how many slots each window counted holds."""

    full: Window | None
    counted: tuple[tuple[Window, int], ...]


def usage_status(counted: Sequence[tuple[Window, int]]) -> list[dict[str, Any]]:
    """The account's status.usage for the windows just counted."""
    return [
        {"window": w.name, "start": format_time(w.start), "posts": n, "limit": w.limit}
        for w, n in counted
    ]


def usage_text(account: Account, usage: Sequence[QuotaUsage], now: dt.datetime) -> str:
    """Quota use as `kubectl herald accounts` shows it: "1/2 this hour, 5/20 today"; a
    window the status last counted before the current one has 0 used. "" without limits."""
    last = {u.window.value: u for u in usage}
    parts = []
    for window in windows(account, now):
        seen = last.get(window.name)
        used = seen.posts if seen is not None and _same_start(seen.start, window.start) else 0
        parts.append(f"{used}/{window.limit} {'this hour' if window.name == 'hour' else 'today'}")
    return ", ".join(parts)


def _same_start(text: str, start: dt.datetime) -> bool:
    try:
        return dt.datetime.fromisoformat(text) == start
    except ValueError:
        return False


def slot_name(account: Account, window: Window, index: int) -> str:
    """The name of slot `index` of `window`: the same for every replica, and a valid
    object name whatever the account's names are."""
    ident = f"{account.kind}/{account.namespace or ''}/{account.name}/{window.key}/{index}"
    return f"herald-quota-{hashlib.sha256(ident.encode()).hexdigest()[:40]}"


def quota_message(account: Account, window: Window, namespace: str) -> str:
    return (
        f"QuotaExceeded: {account.ref} has published its {window.limit} posts of this "
        f"{window.name} (limits.postsPer{window.name.capitalize()}); the post in namespace "
        f"{namespace} waits for the next {window.name}, from "
        f"{window.end.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
