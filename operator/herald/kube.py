"""The Kubernetes adapter: read ScheduledPosts, compare-and-swap their status, post Events,
create and update the publication ledger's records, read accounts and namespace labels.

aiohttp against the API server (the transport kopf and the Kubernetes client library use),
logged in the way kubectl would be (`herald.kubeauth`: the Kubernetes client library's
kubeconfig and in-cluster loading, exec plugins, refreshed before expiry and after a 401).
Failures come out as this module's exceptions: Conflict (someone else wrote first),
NotFound, Forbidden, Unavailable.

Why aiohttp and not httpx (which Herald keeps for n8n): every request to the API server is
on the hot path of a burst (a claim, a status write, a read before a compare-and-swap), and
httpx spent most of a request's CPU in httpcore's pool bookkeeping; see bench/RESULTS.md,
"The API server client on aiohttp".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp

from herald import kubeauth
from herald.models import (
    ACCOUNT_PLURAL,
    CLUSTER_ACCOUNT_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    PUBLICATION_KIND,
    PUBLICATION_PLURAL,
    VERSION,
    format_time,
)

JSON_PATCH = "application/json-patch+json"

POOL_CONNECTIONS = 16
"""Default pool size: one connection per dispatch slot at the default concurrency of 16."""
KEEPALIVE_SECONDS = 60.0
"""How long an idle connection is kept. A short keep-alive closes the connections opened
for a clump of requests as soon as the load pauses, and the next clump pays a TLS handshake
per request. A connection the server closed meanwhile is dropped by the pool when the close
arrives; a request that races such a close fails as Unavailable, which every caller retries."""
POOL_WAIT_SECONDS = 30.0
"""How long a request may wait for a free connection when all are busy: a burst queues
instead of opening more connections, and each request holding a connection is itself
bounded by `timeout`."""
READ_RETRIES = 5
"""A read answered 429 with Retry-After is retried at most this many times."""
MAX_RETRY_AFTER = 2.0
"""Seconds waited at most before each of those retries, whatever Retry-After says."""


class KubeError(Exception):
    """A Kubernetes API call failed."""


class Conflict(KubeError):
    """A compare-and-swap lost: the object changed since it was read."""


class NotFound(KubeError):
    pass


class Forbidden(KubeError):
    pass


class Unavailable(KubeError):
    """The API server could not be reached or answered 5xx: try again later."""


class Invalid(KubeError):
    """The API server rejected the write itself (schema, CEL): retrying cannot help.

    Not a lost race: a failed JSON-patch `test` is a Conflict, although both are 422s.
    """


@dataclass
class Connection:
    """Where the API server is and how to log in to it (see `herald.kubeauth`)."""

    server: str
    tls: ssl.SSLContext | bool
    auth: kubeauth.KubeAuth | None = None
    headers: dict[str, str] | None = None
    proxy: str | None = None
    namespace: str | None = None
    """The context's default namespace (the ServiceAccount's in a pod), if it sets one."""


def env_proxy(server: str) -> str | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY names for `server`, unless $NO_PROXY exempts it,
    as kubectl (Go's ProxyFromEnvironment) would use it."""
    url = urllib.parse.urlsplit(server)
    if urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return urllib.request.getproxies().get(url.scheme)


def discover(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """Log in as kubectl would: `kubeconfig` (paths, os.pathsep-separated) or $KUBECONFIG
    (all its files merged), else the pod's ServiceAccount, else ~/.kube/config; `context`
    instead of the current one. Raises KubeError when there are no usable credentials."""
    source = kubeauth.Source(kubeconfig=kubeconfig, context=context)
    try:
        creds = kubeauth.load_sync(source)
        tls = kubeauth.ssl_context(creds)
    except (kubeauth.LoginError, OSError, ssl.SSLError) as exc:
        raise KubeError(str(exc)) from exc
    return Connection(
        server=creds.server,
        tls=tls,
        auth=kubeauth.KubeAuth(source, creds, tls),
        proxy=creds.proxy,
        namespace=creds.namespace,
    )


@dataclass(frozen=True)
class Reply:
    """An answer of the API server, read whole."""

    status: int
    body: bytes
    retry_after: float | None = None
    """Seconds the API server asks to wait before trying again (its Retry-After)."""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raise_for(response: Reply, what: str) -> None:
    """The API server's error answer as this module's exception (nothing for a 2xx/3xx)."""
    code = response.status
    if code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or response.text)
    detail = f"{what}: {code} {message}"[:1000]
    if code == 404:
        raise NotFound(detail)
    if code == 409:
        raise Conflict(detail)
    if code == 422:
        # A failed JSON-patch `test` comes back as a bare 422 ("the server rejected our
        # request due to an error in our request", empty details); a schema or CEL
        # rejection names the offending fields in details.causes.
        causes = (body.get("details") or {}).get("causes") or []
        if not causes:
            raise Conflict(detail)
        raise Invalid(detail)
    if code in (401, 403):
        raise Forbidden(detail)
    if code == 429 or code >= 500:
        raise Unavailable(detail)
    raise KubeError(detail)


class KubeClient:
    """The few API calls Herald makes, on one shared aiohttp session.

    `on_connect(kind)` is called for every new connection the client opens to the API
    server: "tcp" when it connects, and "tls" too when the server is https (a TLS
    handshake); the processes count them in herald_kube_connections_total.

    At most `max_connections` connections, all kept open between requests: more requests at
    once wait for one (at most POOL_WAIT_SECONDS, then Unavailable), so a steady load opens
    no connection, and performs no TLS handshake, after warm-up.

    The session is made on first use, inside the running event loop (aiohttp's sessions
    belong to one loop); `aclose` closes it.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        timeout: float = 10.0,
        component: str = "herald",
        on_connect: Callable[[str], None] | None = None,
        max_connections: int = POOL_CONNECTIONS,
    ):
        self._conn = conn
        self._server = conn.server.rstrip("/")
        self._https = self._server.startswith("https:")
        # Looked up once, not per request: aiohttp's trust_env reads the environment and
        # ~/.netrc on a thread for every request (a fifth of the operator's CPU in a burst).
        self._proxy = conn.proxy or env_proxy(conn.server)
        self._timeout = timeout
        self._max_connections = max_connections
        self._component = component
        self._slots = asyncio.Semaphore(max_connections)
        self._on_connect = on_connect
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise Unavailable("the API server client is closed")
            traces = []
            if self._on_connect is not None:
                trace = aiohttp.TraceConfig()
                trace.on_connection_create_start.append(self._connecting)
                traces.append(trace)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._conn.tls if self._https else False,
                    limit=self._max_connections,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                ),
                headers=self._conn.headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trace_configs=traces,
            )
        return self._session

    async def _connecting(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        if self._on_connect is not None:
            self._on_connect("tcp")
            if self._https:
                self._on_connect("tls")

    @property
    def closed(self) -> bool:
        """`aclose` was called; the session, if one was made, is closed."""
        return self._closed and self._session is None

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def _path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: object = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request, signed with the current credentials; once more with fresh ones
        when the API server answers 401 and a reload brought new credentials. A read the
        API server answers 429 with Retry-After is tried again after that wait, at most
        READ_RETRIES times, as client-go does: an API server that serves lists from its
        watch cache answers so while that cache is refilled (after a restart, a CRD
        update, a lost etcd watch)."""
        for _ in range(READ_RETRIES):
            reply = await self._signed(method, path, what, body, content_type, params)
            if method != "GET" or reply.status != 429 or reply.retry_after is None:
                break
            await asyncio.sleep(min(reply.retry_after, MAX_RETRY_AFTER))
        else:
            reply = await self._signed(method, path, what, body, content_type, params)
        raise_for(reply, what)
        return reply

    async def _signed(
        self,
        method: str,
        path: str,
        what: str,
        body: object,
        content_type: str,
        params: dict[str, str] | None,
    ) -> Reply:
        try:
            async with asyncio.timeout(POOL_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise Unavailable(
                f"{what}: no free connection to the API server in {POOL_WAIT_SECONDS:.0f} s"
            ) from exc
        try:
            data = None if body is None else json.dumps(body).encode()
            auth = self._conn.auth
            creds = None if auth is None else await auth.current()
            reply = await self._send(method, path, data, content_type, params, creds)
            if reply.status == 401 and auth is not None and creds is not None:
                fresh = await auth.current(stale=creds)
                if auth.changed(creds, fresh):
                    reply = await self._send(method, path, data, content_type, params, fresh)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._slots.release()
        return reply

    async def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str,
        params: dict[str, str] | None,
        creds: kubeauth.Credentials | None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        if creds is not None and creds.authorization:
            headers["Authorization"] = creds.authorization
        async with self._http().request(
            method,
            self._server + path,
            data=data,
            params=params,
            headers=headers,
            proxy=self._proxy,
            server_hostname=creds.tls_server_name if creds is not None else None,
            timeout=limit,
        ) as response:
            retry_after = None
            if response.status == 429:
                with contextlib.suppress(ValueError):
                    retry_after = float(response.headers.get("Retry-After", ""))
            return Reply(response.status, await response.read(), retry_after)

    async def get_post(self, namespace: str, name: str) -> dict[str, Any]:
        response = await self._request(
            "GET", self._path(namespace, name), f"get {namespace}/{name}"
        )
        result: dict[str, Any] = response.json()
        return result

    # --- the publication ledger: by name only, never watched ------------------------------

    @staticmethod
    def _publication_path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PUBLICATION_PLURAL}"
        return f"{path}/{name}" if name else path

    async def create_publication(
        self, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Create-if-absent: Conflict (409 AlreadyExists) when the record exists."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": PUBLICATION_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        response = await self._request(
            "POST",
            self._publication_path(namespace),
            f"create publication {namespace}/{name}",
            body=body,
        )
        result: dict[str, Any] = response.json()
        return result

    async def get_publication(self, namespace: str, name: str) -> dict[str, Any]:
        response = await self._request(
            "GET",
            self._publication_path(namespace, name),
            f"get publication {namespace}/{name}",
        )
        result: dict[str, Any] = response.json()
        return result

    async def replace_publication(
        self, obj: dict[str, Any], spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Write `spec` over the record read as `obj`: a compare-and-swap on its
        metadata.resourceVersion (Conflict when the record changed since)."""
        meta = obj["metadata"]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": PUBLICATION_KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": spec,
        }
        response = await self._request(
            "PUT",
            self._publication_path(meta["namespace"], meta["name"]),
            f"update publication {meta['namespace']}/{meta['name']}",
            body=body,
        )
        result: dict[str, Any] = response.json()
        return result

    async def patch_publication(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch of the record; its `test` ops make it a compare-and-swap without
        a read (Conflict when one fails, NotFound when there is no record)."""
        response = await self._request(
            "PATCH",
            self._publication_path(namespace, name),
            f"test-and-set publication {namespace}/{name}",
            body=ops,
            content_type=JSON_PATCH,
        )
        result: dict[str, Any] = response.json()
        return result

    async def list_publications(
        self,
        namespace: str | None,
        limit: int,
        continue_: str | None = None,
        *,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of records (all namespaces when `namespace` is None) and the token of
        the next page (None: that was the last); `field_selector` on the CRD's selectable
        fields (spec.holderUid, spec.state)."""
        if namespace is None:
            url = f"/apis/{GROUP}/{VERSION}/{PUBLICATION_PLURAL}"
        else:
            url = self._publication_path(namespace)
        return await self._list_page(url, "list publications", limit, continue_, field_selector)

    async def list_posts(
        self,
        namespace: str | None,
        limit: int,
        continue_: str | None = None,
        *,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ScheduledPosts (all namespaces when `namespace` is None) matching
        `field_selector` (server-side), and the token of the next page."""
        url = self._path(namespace) if namespace else f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        return await self._list_page(url, "list posts", limit, continue_, field_selector)

    async def _list_page(
        self,
        url: str,
        what: str,
        limit: int,
        continue_: str | None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        params = {"limit": str(limit)}
        if continue_:
            params["continue"] = continue_
        if field_selector:
            params["fieldSelector"] = field_selector
        response = await self._request("GET", url, what, params=params)
        body = response.json()
        items: list[dict[str, Any]] = body.get("items") or []
        return items, (body.get("metadata") or {}).get("continue") or None

    async def delete_publication(
        self, namespace: str, name: str, uid: str, resource_version: str
    ) -> None:
        """Delete the record if, and only if, it is still the version that was read."""
        await self._delete_unchanged(
            self._publication_path(namespace, name),
            f"delete publication {namespace}/{name}",
            uid,
            resource_version,
        )

    async def _delete_unchanged(
        self, path: str, what: str, uid: str, resource_version: str
    ) -> None:
        """DELETE with uid and resourceVersion preconditions: Conflict if the object
        changed (or was re-created) since it was read."""
        await self._request(
            "DELETE",
            path,
            what,
            body={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": uid, "resourceVersion": resource_version},
            },
        )

    # --- accounts (herald.accountstore): read by name or listed per namespace ----------

    async def list_accounts(self, namespace: str) -> list[dict[str, Any]]:
        """The SocialAccounts of one namespace (a few objects: no paging)."""
        response = await self._request(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{ACCOUNT_PLURAL}",
            f"list socialaccounts in {namespace}",
        )
        items: list[dict[str, Any]] = response.json().get("items") or []
        return items

    async def get_cluster_account(self, name: str) -> dict[str, Any]:
        response = await self._request(
            "GET",
            f"/apis/{GROUP}/{VERSION}/{CLUSTER_ACCOUNT_PLURAL}/{name}",
            f"get clustersocialaccount {name}",
        )
        result: dict[str, Any] = response.json()
        return result

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        response = await self._request(
            "GET", f"/api/v1/namespaces/{namespace}", f"get namespace {namespace}"
        )
        labels: dict[str, str] = (response.json().get("metadata") or {}).get("labels") or {}
        return labels

    async def patch_account_status(
        self, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch an account's status (Ready): the operator's view, recomputed from
        the spec and the configuration, so a lost race is simply written again later."""
        if namespace is None:
            path = f"/apis/{GROUP}/{VERSION}/{CLUSTER_ACCOUNT_PLURAL}/{name}/status"
        else:
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{ACCOUNT_PLURAL}/{name}/status"
        await self._request(
            "PATCH",
            path,
            f"status of account {name}",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # --- quota slots (herald.accountstore): Leases, created if absent -------------------

    async def create_lease(
        self, namespace: str, name: str, holder: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        """Create-if-absent: Conflict (409 AlreadyExists) when the slot is taken."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"holderIdentity": holder},
        }
        response = await self._request(
            "POST",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            f"create lease {namespace}/{name}",
            body=body,
        )
        result: dict[str, Any] = response.json()
        return result

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        response = await self._request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            f"list leases in {namespace}",
            params={"labelSelector": selector},
        )
        items: list[dict[str, Any]] = response.json().get("items") or []
        return items

    async def delete_leases(self, namespace: str, selector: str) -> None:
        await self._request(
            "DELETE",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            f"delete old leases in {namespace}",
            params={"labelSelector": selector},
        )

    async def ready(self) -> bool:
        auth = self._conn.auth
        try:
            creds = None if auth is None else await auth.current()
            quick = aiohttp.ClientTimeout(total=3.0)
            response = await self._send("GET", "/readyz", None, "", None, creds, quick)
        except (aiohttp.ClientError, TimeoutError, Unavailable):
            return False
        # Any answer but a server error proves the API server is reachable; a sidecar's
        # ServiceAccount may lack permission to see /readyz itself.
        return response.status < 500

    async def patch_status(self, obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to the status subresource; its `test` ops make it a
        compare-and-swap (Conflict when one fails). See herald.writer for the ops."""
        meta = obj["metadata"]
        what = f"status test-and-set {meta['namespace']}/{meta['name']}"
        response = await self._request(
            "PATCH",
            self._path(meta["namespace"], meta["name"]) + "/status",
            what,
            body=ops,
            content_type=JSON_PATCH,
        )
        result: dict[str, Any] = response.json()
        return result

    async def delete_post(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete the post if, and only if, it is still the version we decided on."""
        await self._delete_unchanged(
            self._path(namespace, name), f"delete {namespace}/{name}", uid, resource_version
        )

    async def post_event(
        self,
        obj: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        instance: str,
        now: dt.datetime,
    ) -> None:
        """Record a core/v1 Event about the post (what `kubectl describe` shows)."""
        meta = obj["metadata"]
        stamp = format_time(now.replace(microsecond=0))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self._component},
            "reportingComponent": f"herald.dev/{self._component}",
            "reportingInstance": instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._request(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/events",
            f"event {reason}",
            body=event,
        )
