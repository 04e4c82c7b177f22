"""Reads what account resolution needs (herald.accounts) from the API server, with a short
cache; takes the accounts' quota slots.

For resolution, accounts are read when a post is claimed rather than served from a watch
cache (the operator's watch on accounts only keeps their Ready condition, `report_ready`):
a namespace has a few accounts and a cluster a few ClusterSocialAccounts, and the check
must see a relabelled namespace or a suspended account at once, which a read does.
Reads are cached for CACHE_SECONDS per namespace (its SocialAccounts and labels) and per
ClusterSocialAccount name, so a burst of posts in one namespace costs one read. A
refusal is final for the post, so it is never decided from the cache: the store reads
again and resolves once more before refusing. A stale cache can therefore only let a post
through that a change made less than CACHE_SECONDS ago would refuse, never refuse one.

Quotas (limits.postsPerHour/postsPerDay) are counted in durable slots: slot i of an
account's window is a Lease named after (account, window, i), created if absent, holding
the uid of the post that took it, in one namespace every replica shares (the operator's
own). Creating an object is atomic, so two replicas, or a replica and its restarted self,
never both take one slot: a window of N posts has at most N slots, whoever counts. A post
finds its own slot again (a claim written after the slot was lost to a race, say): one
slot per post per window. Slots of days before yesterday are deleted hourly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from herald import accounts
from herald.accounts import (
    Account,
    Candidates,
    Refused,
    Resolution,
    Taken,
    Window,
    slot_name,
    usage_status,
    windows,
)
from herald.kube import Conflict, KubeError, NotFound
from herald.models import Channel, format_time, parse_account

log = logging.getLogger("herald.accounts")
CACHE_SECONDS = 5.0
T = TypeVar("T")


class AccountReader(Protocol):
    async def list_accounts(self, namespace: str) -> list[dict[str, Any]]: ...
    async def get_cluster_account(self, name: str) -> dict[str, Any]: ...
    async def namespace_labels(self, namespace: str) -> dict[str, str]: ...


def _account(obj: dict[str, Any], cluster: bool) -> Account | None:
    meta = obj.get("metadata") or {}
    try:
        spec = parse_account(obj.get("spec") or {}, cluster)
    except ValidationError as exc:
        # Stored before a rule existed, or written around the schema: unusable, and named.
        log.warning("account %s/%s is not valid: %s", meta.get("namespace"), meta.get("name"), exc)
        return None
    return Account(str(meta["name"]), spec, None if cluster else str(meta["namespace"]))


class AccountStore:
    """Resolves posts' accounts; `monotonic` is the clock the cache expires by."""

    def __init__(self, kube: AccountReader, monotonic: Callable[[], float]) -> None:
        self.kube = kube
        self.monotonic = monotonic
        self._own: dict[str, tuple[float, list[Account]]] = {}
        self._labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._cluster: dict[str, tuple[float, Account | None]] = {}

    async def _cached(
        self,
        table: dict[str, tuple[float, T]],
        key: str,
        fresh: bool,
        read: Callable[[], Awaitable[T]],
    ) -> T:
        now = self.monotonic()
        hit = table.get(key)
        if hit is not None and not fresh and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        value = await read()
        table[key] = (now, value)
        return value

    async def _read_own(self, namespace: str) -> list[Account]:
        items = await self.kube.list_accounts(namespace)
        return [a for a in (_account(obj, False) for obj in items) if a is not None]

    async def _read_cluster(self, name: str) -> Account | None:
        try:
            obj = await self.kube.get_cluster_account(name)
        except NotFound:
            return None
        return _account(obj, True)

    async def candidates(self, namespace: str, name: str | None, fresh: bool) -> Candidates:
        own = await self._cached(self._own, namespace, fresh, lambda: self._read_own(namespace))
        cluster = None
        labels: dict[str, str] = {}
        if name is not None and all(a.name != name for a in own):
            cluster = await self._cached(
                self._cluster, name, fresh, lambda: self._read_cluster(name)
            )
            if cluster is not None:
                labels = await self._cached(
                    self._labels, namespace, fresh, lambda: self.kube.namespace_labels(namespace)
                )
        return Candidates(namespace, labels, own, cluster)

    async def resolve(
        self, namespace: str, name: str | None, channel: Channel, target: str
    ) -> Resolution:
        """The post's account; raises KubeError when the API server cannot be read."""
        found = await self.candidates(namespace, name, fresh=False)
        result = accounts.resolve(name, channel, target, found)
        if isinstance(result, Refused):
            found = await self.candidates(namespace, name, fresh=True)
            result = accounts.resolve(name, channel, target, found)
        return result


class StatusWriter(Protocol):
    async def patch_account_status(
        self, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None: ...


async def report_ready(
    kube: StatusWriter, obj: dict[str, Any], targets: frozenset[str] | None, now: dt.datetime
) -> bool:
    """Write the account's Ready condition when it changed; True when written. A failed
    write is logged and left to the account's next event."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    account = _account(obj, cluster=namespace is None)
    if account is None:
        return False
    state, reason, message = accounts.readiness(account.spec, targets)
    generation = int(meta.get("generation") or 1)
    status = obj.get("status") or {}
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if (
        old is not None
        and (old.get("status"), old.get("reason"), old.get("message")) == (state, reason, message)
        and status.get("observedGeneration") == generation
    ):
        return False
    since = old["lastTransitionTime"] if old and old.get("status") == state else format_time(now)
    condition = {
        "type": "Ready",
        "status": state.value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    try:
        await kube.patch_account_status(
            namespace, account.name, {"conditions": [condition], "observedGeneration": generation}
        )
    except KubeError as exc:
        log.warning("cannot write the status of %s: %s", account.ref, exc)
        return False
    return True


SWEEP_SECONDS = 3600.0
QUOTA_LABEL = "herald.dev/quota"
DAY_LABEL = "herald.dev/quota-day"


class SlotStore(StatusWriter, Protocol):
    async def create_lease(
        self, namespace: str, name: str, holder: str, labels: dict[str, str]
    ) -> dict[str, Any]: ...
    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def delete_leases(self, namespace: str, selector: str) -> None: ...


def _group(account: Account, window: Window) -> str:
    """The label value that lists the window's slots in one request (index -1: no slot's)."""
    return hashlib.sha256(slot_name(account, window, -1).encode()).hexdigest()[:40]


class Quotas:
    """Takes quota slots in `namespace`; `monotonic` paces the sweep of old slots.

    `_reported` maps an account's ref to the status.usage this replica last wrote for it
    (so an unchanged count is not written again); it never holds a usage whose write
    failed, and an account's entry changes only under that account's lock in
    `_reporting`, which also orders the account's writes.
    """

    def __init__(self, kube: SlotStore, namespace: str, monotonic: Callable[[], float]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.monotonic = monotonic
        self._swept: float | None = None
        self._reported: dict[str, list[dict[str, Any]]] = {}
        self._reporting: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def take(self, account: Account, post_uid: str, now: dt.datetime) -> Taken:
        """A slot of each of the account's windows for the post (its own, if it has one),
        up to the first window that is full. Raises KubeError."""
        await self._sweep(now)
        counted = []
        full = None
        for window in windows(account, now):
            if full is None:
                ok, used = await self._take(account, window, post_uid, now)
                full = None if ok else window
            else:  # counted for the report, not taken: the post waits anyway
                used = len(await self._slots(account, window))
            counted.append((window, used))
        return Taken(full, tuple(counted))

    async def _slots(self, account: Account, window: Window) -> list[dict[str, Any]]:
        return await self.kube.list_leases(
            self.namespace, f"{QUOTA_LABEL}={_group(account, window)}"
        )

    async def _take(
        self, account: Account, window: Window, post_uid: str, now: dt.datetime
    ) -> tuple[bool, int]:
        """(whether the post holds a slot of the window, how many slots are taken)."""
        labels = {
            QUOTA_LABEL: _group(account, window),
            DAY_LABEL: f"{now.astimezone(dt.UTC):%Y%m%d}",
        }
        for _ in range(window.limit + 1):
            taken = await self._slots(account, window)
            holders = {
                str(o["metadata"]["name"]): (o.get("spec") or {}).get("holderIdentity")
                for o in taken
            }
            if post_uid in holders.values():
                return True, len(holders)
            free = [
                name
                for name in (slot_name(account, window, i) for i in range(window.limit))
                if name not in holders
            ]
            if not free:
                return False, len(holders)
            try:
                await self.kube.create_lease(self.namespace, free[0], post_uid, labels)
            except Conflict:
                continue  # another post took it first: look again
            return True, len(holders) + 1
        raise KubeError(f"the quota slots of {account.ref} kept changing; trying again later")

    async def report(self, account: Account, taken: Taken) -> None:
        """Write the count into the account's status.usage when it grew since this replica
        last wrote it. It is a report for people (`kubectl herald accounts`): the Leases
        are the count, so a failed write is only logged. Reports are written one at a time
        and a window's count never goes down, so two posts counted at once cannot leave
        the smaller count; two replicas writing at once can, until the next claim. One
        account's slow write holds up only that account's claims."""
        async with self._reporting[account.ref]:
            last = {
                (u["window"], u["start"]): u["posts"] for u in self._reported.get(account.ref, [])
            }
            usage = [
                {**u, "posts": max(u["posts"], last.get((u["window"], u["start"]), 0))}
                for u in usage_status(taken.counted)
            ]
            if not usage or self._reported.get(account.ref) == usage:
                return
            try:
                await self.kube.patch_account_status(
                    account.namespace, account.name, {"usage": usage}
                )
            except KubeError as exc:
                log.warning("cannot write the quota use of %s: %s", account.ref, exc)
                return
            self._reported[account.ref] = usage

    async def _sweep(self, now: dt.datetime) -> None:
        mono = self.monotonic()
        if self._swept is not None and mono - self._swept < SWEEP_SECONDS:
            return
        self._swept = mono
        today = now.astimezone(dt.UTC)
        keep = ",".join(f"{today - dt.timedelta(days=d):%Y%m%d}" for d in (0, 1))
        try:
            await self.kube.delete_leases(self.namespace, f"{DAY_LABEL},{DAY_LABEL} notin ({keep})")
        except KubeError as exc:
            log.warning("cannot delete old quota slots in %s: %s", self.namespace, exc)
