"""An in-memory stand-in for the few API calls Herald makes, for unit tests.

It applies JSON patches the way the API server does (a failed `test` is a Conflict),
bumps resourceVersion and generation like the server, and records every write so a test
can count them. Faults are injected per call kind: `fail("patch", Unavailable(...), n)`.
End-to-end tests use the real kube-apiserver; this is only for the dispatcher's logic.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
from collections import defaultdict, deque
from typing import Any

import jsonpatch

from herald.kube import Conflict, Invalid, KubeError, NotFound
from herald.models import ScheduledPostStatus

PENDING_STATUS = ScheduledPostStatus().model_dump(by_alias=True, exclude_none=True, mode="json")
"""A new post's status as the API server defaults it (the CRD's schema defaults)."""


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[str] = []
        self.gets = 0
        self.lists = 0
        self._rv = itertools.count(100)
        self._faults: dict[str, deque[KubeError]] = defaultdict(deque)
        self.validate: Any = None  # callable(status) -> str | None (a schema error)
        self.watchers: list[Any] = []  # callables fed (type, object) like a watch
        self.before_patch: Any = None  # callable(ops) run before a patch is applied
        self.publications: dict[tuple[str, str], dict[str, Any]] = {}
        self.publication_writes: list[tuple[str, str]] = []
        self.accounts: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.namespace_label: dict[str, dict[str, str]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.lease_sweeps: list[tuple[str, str]] = []
        self.account_status_writes: list[tuple[str | None, str, dict[str, Any]]] = []
        self.auto_accounts = True
        """create() gives each post an account: its namespace's default account for the
        channel (target default), or, for another target, an account of that target
        named in spec.account. Tests of account resolution turn it off."""

    def _notify(self, kind: str, obj: dict[str, Any]) -> None:
        for watcher in self.watchers:
            asyncio.get_running_loop().call_soon(watcher, kind, copy.deepcopy(obj))

    def fail(self, call: str, error: KubeError, times: int = 1) -> None:
        self._faults[call].extend([error] * times)

    def _fault(self, call: str) -> None:
        if self._faults[call]:
            raise self._faults[call].popleft()

    def add_account(self, namespace: str | None, name: str, **spec: Any) -> None:
        meta: dict[str, Any] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        self.accounts[(namespace, name)] = {"metadata": meta, "spec": spec}

    def _auto_account(self, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        if not self.auto_accounts or spec.get("account"):
            return spec
        channel, target = spec.get("channel", "linkedin"), spec.get("target", "default")
        name = f"{channel}-{target}"
        if (namespace, name) not in self.accounts:
            self.add_account(
                namespace,
                name,
                channel=channel,
                target=target,
                handle=f"@{name}",
                default=target == "default",
            )
        return spec if target == "default" else {**spec, "account": name}

    async def list_accounts(self, namespace: str) -> list[dict[str, Any]]:
        self._fault("accounts")
        return [copy.deepcopy(o) for (ns, _), o in self.accounts.items() if ns == namespace]

    async def get_cluster_account(self, name: str) -> dict[str, Any]:
        self._fault("accounts")
        if (None, name) not in self.accounts:
            raise NotFound(f"clustersocialaccount {name}")
        return copy.deepcopy(self.accounts[(None, name)])

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        self._fault("accounts")
        return dict(self.namespace_label.get(namespace, {}))

    # --- quota slots: Leases, created if absent (label selectors: `k=v` only) ---------

    async def create_lease(
        self, namespace: str, name: str, holder: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        self._fault("leases")
        await asyncio.sleep(0)  # let a concurrent taker interleave, as a real request would
        if (namespace, name) in self.leases:
            raise Conflict(f"lease {name} exists")
        obj = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"holderIdentity": holder},
        }
        self.leases[(namespace, name)] = obj
        return copy.deepcopy(obj)

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._fault("leases")
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(o)
            for (ns, _), o in self.leases.items()
            if ns == namespace and o["metadata"]["labels"].get(key) == value
        ]

    async def delete_leases(self, namespace: str, selector: str) -> None:
        self.lease_sweeps.append((namespace, selector))

    async def patch_account_status(
        self, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        self._fault("account_status")
        self.account_status_writes.append((namespace, name, copy.deepcopy(status)))

    def create(
        self, namespace: str, name: str, spec: dict[str, Any], *, uid: str | None = None
    ) -> dict[str, Any]:
        spec = self._auto_account(namespace, spec)
        obj = {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": uid or f"uid-{namespace}-{name}",
                "generation": 1,
                "resourceVersion": str(next(self._rv)),
            },
            "spec": spec,
            # The CRD's status default, as the real API server fills it in.
            "status": dict(PENDING_STATUS),
        }
        self.objects[(namespace, name)] = obj
        return copy.deepcopy(obj)

    def edit_spec(self, namespace: str, name: str, **changes: Any) -> dict[str, Any]:
        obj = self.objects[(namespace, name)]
        obj["spec"].update(changes)
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        obj = self.objects[(namespace, name)]
        obj["status"] = status
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)])

    # --- the publication ledger (herald.ledger): create-if-absent, get, CAS replace ---

    async def create_publication(
        self, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        self._fault("create_publication")
        if (namespace, name) in self.publications:
            raise Conflict(f"publication {namespace}/{name} already exists")
        obj = {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": f"uid-pub-{name}",
                "resourceVersion": str(next(self._rv)),
            },
            "spec": copy.deepcopy(spec),
        }
        self.publications[(namespace, name)] = obj
        self.publication_writes.append(("create", name))
        return copy.deepcopy(obj)

    async def get_publication(self, namespace: str, name: str) -> dict[str, Any]:
        self._fault("get_publication")
        if (namespace, name) not in self.publications:
            raise NotFound(f"publication {namespace}/{name}")
        return copy.deepcopy(self.publications[(namespace, name)])

    async def replace_publication(
        self, obj: dict[str, Any], spec: dict[str, Any]
    ) -> dict[str, Any]:
        self._fault("replace_publication")
        meta = obj["metadata"]
        current = self.publications.get((meta["namespace"], meta["name"]))
        if current is None:
            raise NotFound(f"publication {meta['name']}")
        if current["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise Conflict(f"publication {meta['name']} changed")
        current["spec"] = copy.deepcopy(spec)
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self.publication_writes.append(("update", meta["name"]))
        return copy.deepcopy(current)

    async def patch_publication(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self._fault("patch_publication")
        current = self.publications.get((namespace, name))
        if current is None:
            raise NotFound(f"publication {name}")
        try:
            patched = jsonpatch.apply_patch(current, ops)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise Conflict(str(exc)) from exc
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        self.publications[(namespace, name)] = patched
        self.publication_writes.append(("update", name))
        return copy.deepcopy(patched)

    async def get_post(self, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        self._fault("get")
        try:
            return copy.deepcopy(self.objects[(namespace, name)])
        except KeyError:
            raise NotFound(f"{namespace}/{name}") from None

    async def patch_status(self, obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.writes.append((meta["namespace"], meta["name"], ops))
        if self.before_patch is not None:
            self.before_patch(ops)
        self._fault("patch")
        current = self.objects.get((meta["namespace"], meta["name"]))
        if current is None:
            raise NotFound(meta["name"])
        # Like the API server's JSON patch library, `test` for null passes on a missing key.
        ops = [
            op
            for op in ops
            if not (op["op"] == "test" and op["value"] is None and _missing(current, op["path"]))
        ]
        try:
            patched = jsonpatch.apply_patch(current, ops)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise Conflict(str(exc)) from exc
        if self.validate is not None:
            problem = self.validate(patched.get("status"))
            if problem:
                raise Invalid(problem)
        patched["spec"] = current["spec"]  # the status subresource ignores the rest
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[(meta["namespace"], meta["name"])] = patched
        self._notify("MODIFIED", patched)
        return copy.deepcopy(patched)

    async def list_posts(
        self,
        namespace: str | None,
        limit: int,
        continue_: str | None = None,
        *,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of posts, as the API server pages them (the token is an offset here);
        `field_selector` as `status.phase=X` or `status.phase!=X`."""
        self._fault("list")
        self.lists += 1
        items = [
            obj
            for (ns, _), obj in sorted(self.objects.items())
            if (namespace is None or ns == namespace) and _selected(obj, field_selector)
        ]
        start = int(continue_ or 0)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return copy.deepcopy(page), str(start + limit) if more else None

    async def delete_post(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        self._fault("delete")
        current = self.objects.get((namespace, name))
        if current is None:
            raise NotFound(name)
        meta = current["metadata"]
        if meta["uid"] != uid or meta["resourceVersion"] != resource_version:
            raise Conflict("precondition failed")
        del self.objects[(namespace, name)]
        self.deleted.append(name)
        self._notify("DELETED", current)

    async def post_event(
        self,
        obj: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        instance: str,
        now: dt.datetime,
    ) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason))

    def status_writes(self, name: str) -> int:
        return sum(1 for _, n, _ in self.writes if n == name)


def _missing(doc: dict[str, Any], path: str) -> bool:
    node: Any = doc
    for part in path.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False


def _selected(obj: dict[str, Any], field_selector: str | None) -> bool:
    if not field_selector:
        return True
    phase = (obj.get("status") or {}).get("phase") or ""
    if "!=" in field_selector:
        return phase != field_selector.split("!=", 1)[1]
    return phase == field_selector.split("=", 1)[1]
