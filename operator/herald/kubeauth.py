"""Kubernetes credentials, loaded by the Kubernetes client library, for Herald and for kopf.

`kubernetes_asyncio` (the asyncio port of the official `kubernetes` client) reads the
kubeconfig the way kubectl does: every file of a multi-file `$KUBECONFIG` merged, the
current or a chosen context, `exec:` credential plugins (EKS `aws eks get-token`, GKE
`gke-gcloud-auth-plugin`, AKS `kubelogin`), OIDC, token files, client certificates, and
in a pod the ServiceAccount's projected token. This module turns what it loads into
`Credentials` (a plain snapshot), an `ssl.SSLContext`, a `KubeAuth` that reloads the
credentials before they expire (and once more on a 401) for Herald's aiohttp client and, as
an `httpx.Auth`, for the kubectl plugin's, and a `kopf.ConnectionInfo`, so kopf's watch and
Herald's own requests always log in the same way.

Which credentials, in controller-runtime's order: an explicit kubeconfig (`--kubeconfig`),
else `$KUBECONFIG`, else the pod's ServiceAccount, else `~/.kube/config`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import os
import ssl
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from herald.clock import SYSTEM, Clock

if TYPE_CHECKING:
    import kopf

log = logging.getLogger("herald.kubeauth")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
REREAD_EVERY = dt.timedelta(minutes=1)
"""Credentials without a stated expiry (token files, projected ServiceAccount tokens, static
tokens) are read again this often, as client-go does, so a rotated file is picked up."""
EARLY_AT_MOST = dt.timedelta(minutes=5)
RETRY_FAILED_LOAD_AFTER = dt.timedelta(seconds=5)


class LoginError(Exception):
    """No usable Kubernetes credentials: the kubeconfig is missing or broken, or the
    credential plugin failed."""


@dataclass(frozen=True)
class Source:
    """Where credentials come from. Empty fields mean kubectl's defaults."""

    kubeconfig: str | None = None
    """Kubeconfig path(s), os.pathsep-separated; overrides $KUBECONFIG."""
    context: str | None = None
    """A context of the kubeconfig other than its current-context."""
    sa_dir: Path = SA_DIR
    environ: dict[str, str] | None = field(default=None, compare=False)
    """The environment to read KUBECONFIG and KUBERNETES_SERVICE_* from (tests); os.environ."""

    def env(self, name: str) -> str:
        return (self.environ if self.environ is not None else os.environ).get(name, "")


@dataclass(frozen=True)
class Credentials:
    """A snapshot of what the client library loaded."""

    server: str
    authorization: str | None
    """The Authorization header's value ("Bearer …", "Basic …"), if any."""
    ca_file: str | None
    verify: bool
    cert_file: str | None
    key_file: str | None
    tls_server_name: str | None
    proxy: str | None
    namespace: str | None
    """The context's namespace (the ServiceAccount's in a pod); None when it sets none."""
    obtained_at: dt.datetime
    expires_at: dt.datetime | None
    """An exec plugin's `expirationTimestamp`; None when the credentials state no expiry."""
    origin: str
    """For messages: "in-cluster" or the kubeconfig path(s) and context."""


def refresh_at(creds: Credentials) -> dt.datetime:
    """When to load the credentials again.

    Expiring ones a fifth of their lifetime early, at most five minutes early (the client
    library's own margin), so that a request never carries a token about to expire; the
    others every REREAD_EVERY.
    """
    if creds.expires_at is None:
        return creds.obtained_at + REREAD_EVERY
    lifetime = max(creds.expires_at - creds.obtained_at, dt.timedelta(0))
    return creds.expires_at - min(EARLY_AT_MOST, lifetime / 5)


def _kubeconfig_paths(source: Source) -> str | None:
    """The kubeconfig to read, or None to use the pod's ServiceAccount."""
    if source.kubeconfig:
        return source.kubeconfig
    if source.env("KUBECONFIG"):
        return source.env("KUBECONFIG")
    if source.env("KUBERNETES_SERVICE_HOST") and (source.sa_dir / "token").exists():
        return None
    return DEFAULT_KUBECONFIG


def _existing(paths: str) -> list[str]:
    # The library warns and carries on with nothing when no file exists; we say so instead.
    return [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().exists()]


def _sa_namespace(sa_dir: Path) -> str | None:
    path = sa_dir / "namespace"
    return path.read_text().strip() if path.exists() else None


async def load(source: Source, clock: Clock = SYSTEM) -> Credentials:
    """Load credentials the way the Kubernetes client library does; runs exec plugins.

    `clock.wall()` stamps them: expiry is wall time (an exec plugin's
    expirationTimestamp), so the refresh is planned on the wall clock too."""
    # Imported here: the library takes a second or two to import (all its API models), which
    # `kubectl herald --help` and the unit tests of everything else need not wait for.
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

    config = Configuration()
    obtained_at = clock.wall()
    paths = _kubeconfig_paths(source)
    expires_at: dt.datetime | None = None
    namespace: str | None
    if paths is None:
        try:
            load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config,
                try_refresh_token=False,  # this module decides when to read it again
                token_filename=str(source.sa_dir / "token"),
                cert_filename=str(source.sa_dir / "ca.crt"),
                environ=source.environ if source.environ is not None else os.environ,
            )
        except (ConfigException, OSError) as exc:
            raise LoginError(f"in-cluster ServiceAccount credentials: {exc}") from exc
        namespace = _sa_namespace(source.sa_dir)
        origin = "in-cluster"
    else:
        existing = _existing(paths)
        origin = f"kubeconfig {paths}" + (f", context {source.context}" if source.context else "")
        if not existing:
            raise LoginError(
                f"no Kubernetes credentials: not in a pod, and no kubeconfig at {paths}"
            )
        try:
            loader = await load_kube_config(
                config_file=os.pathsep.join(existing),
                context=source.context,
                client_configuration=config,
                # Never write the kubeconfig. The library would only write back the tokens
                # an `auth-provider: oidc` refreshed, and its writer is called with the wrong
                # arguments in 36.x. So once the kubeconfig's id-token has expired, each
                # reload asks the identity provider again with the kubeconfig's refresh token;
                # a provider that rotates refresh tokens needs an exec plugin (`kubelogin`).
                persist_config=False,
            )
        except (
            ConfigException,
            OSError,
            yaml.YAMLError,
            KeyError,
            TypeError,
            ValueError,
            AssertionError,  # the library asserts that the context and cluster exist
        ) as exc:
            raise LoginError(f"{origin}: {exc or type(exc).__name__}") from exc
        context: Any = loader.current_context or {}
        namespace = (context.get("context") or {}).get("namespace")
        expiry = getattr(loader, "exec_plugin_expiry", None)
        if isinstance(expiry, dt.datetime):
            expires_at = expiry if expiry.tzinfo else expiry.replace(tzinfo=dt.UTC)
    header = await config.get_api_key_with_prefix("BearerToken")
    if config.host is None:
        raise LoginError(f"{origin}: no server")
    return Credentials(
        server=config.host,
        authorization=str(header).strip() if header else None,
        ca_file=config.ssl_ca_cert,
        verify=bool(config.verify_ssl),
        cert_file=config.cert_file,
        key_file=config.key_file,
        tls_server_name=config.tls_server_name,
        proxy=config.proxy,
        namespace=namespace,
        obtained_at=obtained_at,
        expires_at=expires_at,
        origin=origin,
    )


def load_sync(source: Source, clock: Clock = SYSTEM) -> Credentials:
    """`load` for synchronous callers, even ones inside a running event loop (startup)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="herald-login") as pool:
        return pool.submit(asyncio.run, load(source, clock)).result()


def ssl_context(creds: Credentials) -> ssl.SSLContext:
    """Verify the server as configured; present the client certificate in any case (also
    with insecure-skip-tls-verify, which skips checking the server, not proving who we are)."""
    if creds.verify:
        ctx = ssl.create_default_context(cafile=creds.ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if creds.cert_file and creds.key_file:
        ctx.load_cert_chain(creds.cert_file, creds.key_file)
    return ctx


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """kopf's view of the same credentials. kopf logs in again at `expiration`, and on a 401."""
    import kopf  # only the operator needs it; the sidecar and the kubectl plugin do not

    scheme, _, token = (creds.authorization or "").partition(" ")
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        insecure=not creds.verify,
        scheme=scheme or None,
        token=token or None,
        certificate_path=creds.cert_file,
        private_key_path=creds.key_file,
        default_namespace=creds.namespace,
        proxy_url=creds.proxy,
        expiration=refresh_at(creds) if creds.expires_at is not None else None,
    )


class KubeAuth(httpx.Auth):
    """Signs each request with the current credentials, loading them again when they are
    due (see `refresh_at`) or when the API server answers 401, and then retrying once.

    A failed reload (say, the exec plugin cannot reach its identity provider) is logged and
    the previous credentials are used until the next try, RETRY_FAILED_LOAD_AFTER later:
    the API server's 401 then reaches the caller as an ordinary error.
    """

    def __init__(
        self,
        source: Source,
        creds: Credentials,
        tls: ssl.SSLContext | None = None,
        *,
        clock: Clock = SYSTEM,
    ) -> None:
        self._source = source
        self._creds = creds
        self._tls = tls
        self._clock = clock
        self._failed_at: dt.datetime | None = None
        self._async_lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()

    @property
    def credentials(self) -> Credentials:
        return self._creds

    def _sign(self, request: httpx.Request, creds: Credentials) -> httpx.Request:
        if creds.authorization:
            request.headers["Authorization"] = creds.authorization
        if creds.tls_server_name:
            request.extensions["sni_hostname"] = creds.tls_server_name
        return request

    def _due(self, stale: Credentials | None) -> bool:
        """Whether to load now: the credentials are due, or `stale` (just rejected with a
        401) is still the current ones, i.e. no one has reloaded them since."""
        if stale is None:
            if self._clock.wall() < refresh_at(self._creds):
                return False
        elif self._creds is not stale:
            return False
        failed = self._failed_at
        return failed is None or self._clock.wall() - failed >= RETRY_FAILED_LOAD_AFTER

    def _install(self, fresh: Credentials) -> None:
        old = self._creds
        if (
            self._tls is not None
            and fresh.cert_file
            and fresh.key_file
            and (fresh.cert_file, fresh.key_file) != (old.cert_file, old.key_file)
        ):
            # An exec plugin that issues client certificates: new handshakes use the new one.
            self._tls.load_cert_chain(fresh.cert_file, fresh.key_file)
        self._creds = fresh
        self._failed_at = None

    def _failed(self, exc: Exception) -> None:
        self._failed_at = self._clock.wall()
        log.warning("reloading Kubernetes credentials failed, using the previous ones: %s", exc)

    @staticmethod
    def changed(old: Credentials, new: Credentials) -> bool:
        """Whether a reload brought other credentials, worth retrying a 401 with."""
        return (old.authorization, old.cert_file) != (new.authorization, new.cert_file)

    async def current(self, stale: Credentials | None = None) -> Credentials:
        """The credentials to sign a request with, loaded again first when they are due, or
        when `stale` (just answered with a 401) is still the current ones. For clients
        other than httpx (herald.kube's aiohttp session)."""
        if not self._due(stale):
            return self._creds
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self._due(stale):  # not reloaded by whoever held the lock before us
                try:
                    self._install(await load(self._source, self._clock))
                except LoginError as exc:
                    self._failed(exc)
        return self._creds

    def _current_sync(self, stale: Credentials | None = None) -> Credentials:
        if not self._due(stale):
            return self._creds
        with self._sync_lock:
            if self._due(stale):
                try:
                    self._install(load_sync(self._source, self._clock))
                except LoginError as exc:
                    self._failed(exc)
        return self._creds

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self._current_sync()
        response = yield self._sign(request, creds)
        if response.status_code == 401:
            fresh = self._current_sync(stale=creds)
            if self.changed(creds, fresh):
                yield self._sign(request, fresh)
