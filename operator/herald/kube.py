"""The Kubernetes adapter: read ScheduledPosts, compare-and-swap their status, post Events.

httpx against the API server, authenticated the way kubectl would be: in a pod with the
ServiceAccount's projected token (re-read as the kubelet rotates it), elsewhere with the
current context of $KUBECONFIG or ~/.kube/config. Failures come out as this module's
exceptions: Conflict (someone else wrote first), NotFound, Forbidden, Unavailable.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from herald.models import GROUP, KIND, PLURAL, VERSION, format_time

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
JSON_PATCH = "application/json-patch+json"


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


class _TokenFile(httpx.Auth):
    """Bearer token read from a file on every request: projected tokens rotate."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._path.read_text().strip()}"
        yield request


@dataclass
class Connection:
    server: str
    tls: ssl.SSLContext | bool
    auth: httpx.Auth | None = None
    headers: dict[str, str] | None = None


def _cadata(cluster: dict[str, Any], base: Path) -> ssl.SSLContext | bool:
    if cluster.get("insecure-skip-tls-verify"):
        return False
    ctx = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        ctx.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, user: dict[str, Any], base: Path) -> None:
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    if cert and key:
        # ssl wants files; the key lives on disk only for the duration of the call.
        with tempfile.TemporaryDirectory() as tmp:
            pem = Path(tmp) / "client.pem"
            pem.touch(mode=0o600)
            pem.write_bytes(base64.b64decode(cert) + b"\n" + base64.b64decode(key))
            ctx.load_cert_chain(str(pem))
    elif user.get("client-certificate") and user.get("client-key"):
        ctx.load_cert_chain(str(base / user["client-certificate"]), str(base / user["client-key"]))


def from_kubeconfig(path: Path) -> Connection:
    config = yaml.safe_load(path.read_text()) or {}
    base = path.parent
    current = config.get("current-context")
    if not current:
        raise KubeError(f"{path}: current-context is not set")
    by_name = {
        kind: {item["name"]: item.get(kind[:-1]) or {} for item in config.get(kind) or []}
        for kind in ("contexts", "clusters", "users")
    }
    try:
        context = by_name["contexts"][current]
        cluster = by_name["clusters"][context["cluster"]]
        user = by_name["users"][context["user"]]
    except KeyError as exc:
        raise KubeError(f"{path}: context {current!r} refers to a missing {exc}") from exc
    tls = _cadata(cluster, base)
    if isinstance(tls, ssl.SSLContext):
        _load_client_cert(tls, user, base)
    auth: httpx.Auth | None = None
    headers: dict[str, str] = {}
    if user.get("tokenFile"):
        auth = _TokenFile(base / user["tokenFile"])
    elif user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    return Connection(server=cluster["server"], tls=tls, auth=auth, headers=headers)


def in_cluster() -> Connection | None:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host or not (SA_DIR / "token").exists():
        return None
    if ":" in host:
        host = f"[{host}]"
    ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
    return Connection(server=f"https://{host}:{port}", tls=ctx, auth=_TokenFile(SA_DIR / "token"))


def discover() -> Connection:
    """In a pod: the ServiceAccount. Elsewhere: $KUBECONFIG's first file, or ~/.kube/config."""
    conn = in_cluster()
    if conn is not None:
        return conn
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    path = Path(paths[0] if paths else "~/.kube/config").expanduser()
    if not path.exists():
        raise KubeError(f"no Kubernetes credentials: not in a pod, and {path} does not exist")
    return from_kubeconfig(path)


def _raise_for(response: httpx.Response, what: str) -> None:
    code = response.status_code
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
    """The few API calls Herald makes, on one shared httpx.AsyncClient."""

    def __init__(self, conn: Connection, *, timeout: float = 10.0, component: str = "herald"):
        self._http = httpx.AsyncClient(
            base_url=conn.server,
            verify=conn.tls,
            auth=conn.auth,
            headers=conn.headers,
            timeout=timeout,
        )
        self._component = component

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        _raise_for(response, what)
        return response

    async def get_post(self, namespace: str, name: str) -> dict[str, Any]:
        response = await self._request(
            "GET", self._path(namespace, name), f"get {namespace}/{name}"
        )
        result: dict[str, Any] = response.json()
        return result

    async def ready(self) -> bool:
        try:
            response = await self._http.get("/readyz", timeout=3.0)
        except httpx.HTTPError:
            return False
        # Any answer but a server error proves the API server is reachable; a sidecar's
        # ServiceAccount may lack permission to see /readyz itself.
        return response.status_code < 500

    async def patch_status(self, obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to the status subresource; its `test` ops make it a
        compare-and-swap (Conflict when one fails). See herald.writer for the ops."""
        meta = obj["metadata"]
        what = f"status test-and-set {meta['namespace']}/{meta['name']}"
        response = await self._request(
            "PATCH",
            self._path(meta["namespace"], meta["name"]) + "/status",
            what,
            json=ops,
            headers={"Content-Type": JSON_PATCH},
        )
        result: dict[str, Any] = response.json()
        return result

    async def delete_post(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete the post if, and only if, it is still the version we decided on."""
        await self._request(
            "DELETE",
            self._path(namespace, name),
            f"delete {namespace}/{name}",
            json={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": uid, "resourceVersion": resource_version},
            },
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
            json=event,
        )
