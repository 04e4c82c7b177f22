"""herald.kubeauth: what the Kubernetes client library loads, and when it is loaded again.

The kubeconfigs and the exec credential plugin here are real files and a real process; the
API server is an httpx.MockTransport recording the Authorization headers it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from herald import kube, kubeauth
from herald.kube import Forbidden, KubeClient, KubeError, Unavailable, discover, env_proxy
from herald.kubeauth import Credentials, KubeAuth, Source, refresh_at

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)


def creds(obtained: dt.datetime = T0, expires: dt.datetime | None = None, **kw: Any) -> Credentials:
    values: dict[str, Any] = {
        "server": "https://127.0.0.1:6443",
        "authorization": "Bearer t",
        "ca_file": None,
        "verify": True,
        "cert_file": None,
        "key_file": None,
        "tls_server_name": None,
        "proxy": None,
        "namespace": None,
        "obtained_at": obtained,
        "expires_at": expires,
        "origin": "test",
    }
    values.update(kw)
    return Credentials(**values)


@pytest.mark.parametrize(
    ("lifetime", "expected_early"),
    [
        (None, None),  # no stated expiry: read again after REREAD_EVERY
        (10 * S, 2 * S),  # a fifth of a short lifetime
        (60 * S, 12 * S),
        (dt.timedelta(minutes=15), dt.timedelta(minutes=3)),  # EKS tokens: 15 min
        (dt.timedelta(hours=1), dt.timedelta(minutes=5)),  # capped at five minutes
        (dt.timedelta(0), dt.timedelta(0)),  # already expired when obtained: at once
        (-10 * S, dt.timedelta(0)),  # expired before it was obtained: at once
    ],
)
def test_refresh_at(lifetime: dt.timedelta | None, expected_early: dt.timedelta | None) -> None:
    if lifetime is None:
        assert refresh_at(creds()) == T0 + kubeauth.REREAD_EVERY
        return
    assert expected_early is not None
    c = creds(expires=T0 + lifetime)
    assert refresh_at(c) == T0 + lifetime - expected_early


# --- real kubeconfig files ---------------------------------------------------------------

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(
    path: Path,
    user: dict[str, Any] | None = None,
    *,
    cluster: dict[str, Any] | None = None,
    namespace: str | None = "team-a",
    current: str | None = "ctx",
    parts: tuple[str, ...] = ("clusters", "contexts", "users"),
) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if "clusters" in parts:
        config["clusters"] = [
            {"name": "c", "cluster": cluster or {"server": "http://127.0.0.1:8080"}}
        ]
    if "contexts" in parts:
        config["contexts"] = [
            {"name": "ctx", "context": context},
            {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "team-b"}},
        ]
    if "users" in parts:
        config["users"] = [{"name": "u", "user": user or {"token": "static"}}]
    if current and "contexts" in parts:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


def exec_plugin(tmp_path: Path, *, expires_in: float | None = None) -> tuple[dict[str, Any], Path]:
    """A credential plugin printing token-N on its Nth run; the runs are counted in a file."""
    counter = tmp_path / "runs"
    script = tmp_path / "plugin.py"
    script.write_text(
        f"""
import datetime as dt, json, pathlib
counter = pathlib.Path({str(counter)!r})
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
status = {{"token": f"token-{{n}}"}}
expires_in = {expires_in!r}
if expires_in is not None:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)
    status["expirationTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}}))
"""
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }
    return user, counter


def runs(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


def src(path: Path | str, **kw: Any) -> Source:
    return Source(kubeconfig=str(path), environ={}, **kw)


def test_static_token_and_context_namespace(tmp_path: Path) -> None:
    c = kubeauth.load_sync(src(kubeconfig(tmp_path / "config")))
    assert c.server == "http://127.0.0.1:8080"
    assert c.authorization == "Bearer static"
    assert c.namespace == "team-a"
    assert c.expires_at is None


def test_another_context(tmp_path: Path) -> None:
    c = kubeauth.load_sync(src(kubeconfig(tmp_path / "config"), context="other"))
    assert c.namespace == "team-b"
    assert "context other" in c.origin


def test_exec_plugin_token_and_expiry(tmp_path: Path) -> None:
    user, counter = exec_plugin(tmp_path, expires_in=600)
    c = kubeauth.load_sync(src(kubeconfig(tmp_path / "config", user)))
    assert c.authorization == "Bearer token-1"
    assert runs(counter) == 1
    assert c.expires_at is not None
    assert 590 <= (c.expires_at - c.obtained_at).total_seconds() <= 601


def test_multi_file_kubeconfig_is_merged(tmp_path: Path) -> None:
    """KUBECONFIG=a:b — the cluster and context in one file, the user in the other."""
    a = kubeconfig(tmp_path / "a", parts=("clusters", "contexts"))
    b = kubeconfig(tmp_path / "b", {"token": "from-b"}, current=None, parts=("users",))
    missing = tmp_path / "not-there"
    for source in (
        Source(environ={"KUBECONFIG": f"{a}:{b}"}),
        Source(environ={"KUBECONFIG": f"{missing}:{a}:{b}"}),  # kubectl skips missing files
        src(f"{a}:{b}"),
    ):
        c = kubeauth.load_sync(source)
        assert (c.server, c.authorization, c.namespace) == (
            "http://127.0.0.1:8080",
            "Bearer from-b",
            "team-a",
        )


def test_first_file_wins_like_kubectl(tmp_path: Path) -> None:
    a = kubeconfig(tmp_path / "a", {"token": "from-a"})
    b = kubeconfig(tmp_path / "b", {"token": "from-b"}, namespace="from-b")
    c = kubeauth.load_sync(src(f"{a}:{b}"))
    assert (c.authorization, c.namespace) == ("Bearer from-a", "team-a")


def test_client_certificate_kept_with_insecure_skip_tls_verify(tmp_path: Path) -> None:
    from tests.support.controlplane import _issue, _name

    ca = _issue(_name("unit-ca"), None, ca=True)
    pair = _issue(_name("unit-user"), ca, client=True)
    user = {
        "client-certificate-data": base64.b64encode(pair.cert_pem()).decode(),
        "client-key-data": base64.b64encode(pair.key_pem()).decode(),
    }
    cluster = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    c = kubeauth.load_sync(src(kubeconfig(tmp_path / "config", user, cluster=cluster)))
    assert c.verify is False
    assert c.cert_file and c.key_file
    assert Path(c.cert_file).read_bytes().strip() == pair.cert_pem().strip()
    ctx = kubeauth.ssl_context(c)  # loads the chain (the e2e test presents it to a server)
    assert ctx.verify_mode is ssl.CERT_NONE and ctx.check_hostname is False
    info = kubeauth.connection_info(c)
    assert info.insecure is True
    assert info.certificate_path == c.cert_file and info.private_key_path == c.key_file


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no kubeconfig at"),
        ("no-context", "current-context"),
        ("unknown-context", "nope"),
        ("failing-plugin", "exec: process returned 3"),
    ],
)
def test_clear_errors(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "config"
    context = None
    if setup == "no-context":
        kubeconfig(path, current=None)
    elif setup == "unknown-context":
        kubeconfig(path)
        context = "nope"
    elif setup == "failing-plugin":
        script = tmp_path / "fail.py"
        script.write_text("import sys\nprint('IdP unreachable', file=sys.stderr)\nsys.exit(3)\n")
        user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(script)],
            }
        }
        kubeconfig(path, user)
    with pytest.raises(kubeauth.LoginError, match=message):
        kubeauth.load_sync(src(path, context=context))
    # discover() reports the same in the adapter's vocabulary.
    with pytest.raises(KubeError, match=message):
        discover(str(path), context)


def test_in_cluster(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token-1")
    (sa / "ca.crt").write_text(CA)
    (sa / "namespace").write_text("herald\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    c = kubeauth.load_sync(Source(sa_dir=sa, environ=env))
    assert (c.server, c.authorization, c.namespace) == (
        "https://[fd00::1]:443",
        "Bearer sa-token-1",
        "herald",
    )
    assert c.ca_file == str(sa / "ca.crt")
    # $KUBECONFIG, when set, wins over the pod's ServiceAccount (controller-runtime's order).
    path = kubeconfig(tmp_path / "config")
    c = kubeauth.load_sync(Source(sa_dir=sa, environ={**env, "KUBECONFIG": str(path)}))
    assert c.authorization == "Bearer static"


# --- KubeAuth: refresh before expiry and on 401 ------------------------------------------


class Server:
    """Records the Authorization header of each request; rejects the tokens in `revoked`."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.revoked: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        self.seen.append(auth)
        if auth in self.revoked:
            return httpx.Response(401, json={"message": "Unauthorized"})
        return httpx.Response(200, json={"ok": True})


class Clock:
    """A herald.clock.Clock whose wall time a test sets (and may set back, to the real
    time, when a credential plugin has stamped an expiry on the real clock)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def wall(self) -> dt.datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()


def test_credentials_are_stamped_by_the_injected_clock(tmp_path: Path) -> None:
    from herald.clock import FakeClock

    clock = FakeClock(dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC))
    source = src(kubeconfig(tmp_path / "config", {"token": "t"}))
    assert kubeauth.load_sync(source, clock).obtained_at == clock.wall()


def client(tmp_path: Path, expires_in: float | None) -> tuple[httpx.Client, Server, Clock, Path]:
    user, counter = exec_plugin(tmp_path, expires_in=expires_in)
    source = src(kubeconfig(tmp_path / "config", user))
    clock = Clock()
    auth = KubeAuth(source, kubeauth.load_sync(source), clock=clock)
    server = Server()
    http = httpx.Client(
        base_url="http://127.0.0.1:8080", auth=auth, transport=httpx.MockTransport(server)
    )
    return http, server, clock, counter


def test_exec_token_is_reused_until_due_then_refreshed(tmp_path: Path) -> None:
    http, server, clock, counter = client(tmp_path, expires_in=600)
    with http:
        for _ in range(3):
            http.get("/api")
        assert runs(counter) == 1, "a valid token is not fetched again per request"
        clock.now += dt.timedelta(minutes=4)  # 600 s lifetime: refreshed 2 minutes early
        http.get("/api")
        assert runs(counter) == 1
        clock.now += dt.timedelta(minutes=4, seconds=1)
        http.get("/api")
        clock.now = dt.datetime.now(dt.UTC)  # token-2 was issued on the real clock
        http.get("/api")
    assert runs(counter) == 2
    assert server.seen == ["Bearer token-1"] * 4 + ["Bearer token-2"] * 2


def test_401_reloads_once_and_retries(tmp_path: Path) -> None:
    http, server, _, counter = client(tmp_path, expires_in=3600)
    server.revoked.add("Bearer token-1")
    with http:
        assert http.get("/api").status_code == 200
        assert http.get("/api").status_code == 200
    assert server.seen == ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
    assert runs(counter) == 2


def test_401_with_the_same_credentials_is_not_retried(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"token": "revoked"})
    source = src(path)
    server = Server()
    server.revoked.add("Bearer revoked")
    auth = KubeAuth(source, kubeauth.load_sync(source))
    with httpx.Client(auth=auth, transport=httpx.MockTransport(server)) as http:
        assert http.get("http://127.0.0.1:8080/api").status_code == 401
    assert server.seen == ["Bearer revoked"]


def test_failed_reload_keeps_the_previous_credentials(tmp_path: Path) -> None:
    http, server, clock, counter = client(tmp_path, expires_in=60)
    (tmp_path / "plugin.py").write_text("import sys; sys.exit(1)\n")  # the IdP is down
    with http:
        clock.now += dt.timedelta(seconds=59)
        assert http.get("/api").status_code == 200  # stale, but the server decides
        http.get("/api")  # within RETRY_FAILED_LOAD_AFTER: the plugin is not run again
    assert server.seen == ["Bearer token-1", "Bearer token-1"]
    assert runs(counter) == 1


def test_connection_info_for_kopf(tmp_path: Path) -> None:
    user, _ = exec_plugin(tmp_path, expires_in=600)
    c = kubeauth.load_sync(src(kubeconfig(tmp_path / "config", user)))
    info = kubeauth.connection_info(c)
    assert (info.server, info.scheme, info.token) == ("http://127.0.0.1:8080", "Bearer", "token-1")
    assert info.default_namespace == "team-a"
    assert info.expiration == refresh_at(c)
    static = kubeauth.connection_info(creds())
    assert static.expiration is None, "kopf re-logs in on a 401 for credentials without expiry"
    assert static.as_http_headers() == {"Authorization": "Bearer t"}


def test_rotated_projected_token_is_picked_up(tmp_path: Path) -> None:
    """In a pod the kubelet rewrites the ServiceAccount token file before it expires."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("projected-1")
    (sa / "ca.crt").write_text(CA)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    source = Source(sa_dir=sa, environ=env)
    clock = Clock()
    auth = KubeAuth(source, kubeauth.load_sync(source), clock=clock)
    server = Server()
    with httpx.Client(auth=auth, transport=httpx.MockTransport(server)) as http:
        http.get("https://10.0.0.1/api")
        (sa / "token").write_text("projected-2")  # rotated
        http.get("https://10.0.0.1/api")  # read again only after REREAD_EVERY…
        clock.now += kubeauth.REREAD_EVERY + S
        http.get("https://10.0.0.1/api")
        clock.now = dt.datetime.now(dt.UTC)  # projected-2 was read on the real clock
        (sa / "token").write_text("projected-3")
        server.revoked.add("Bearer projected-2")  # …or at once after a 401
        assert http.get("https://10.0.0.1/api").status_code == 200
    assert server.seen == [
        "Bearer projected-1",
        "Bearer projected-1",
        "Bearer projected-2",
        "Bearer projected-2",
        "Bearer projected-3",
    ]


# --- herald.kube's aiohttp client signs with KubeAuth too ------------------------------


class ApiServer:
    """A stand-in API server on 127.0.0.1 (aiohttp): records each Authorization header,
    answers 401 to the tokens in `revoked`, and serves one ScheduledPost otherwise."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.revoked: set[str] = set()
        self.reinitializing = 0
        """Answer this many requests 429 with Retry-After, as a re-filling watch cache does."""
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.seen.append(auth)
        if self.reinitializing:
            self.reinitializing -= 1
            body = {"kind": "Status", "message": "storage is (re)initializing", "code": 429}
            return web.json_response(body, status=429, headers={"Retry-After": "0"})
        if auth in self.revoked:
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"name": request.match_info["name"]}})

    async def __aenter__(self) -> ApiServer:
        app = web.Application()
        app.router.add_get(
            "/apis/herald.dev/v1alpha1/namespaces/{ns}/scheduledposts/{name}", self._handle
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_kube_client_reloads_after_a_401_and_retries_once(tmp_path: Path) -> None:
    user, counter = exec_plugin(tmp_path, expires_in=3600)
    opened: list[str] = []
    async with ApiServer() as server:
        server.revoked.add("Bearer token-1")
        path = kubeconfig(tmp_path / "config", user, cluster={"server": server.url})
        client = KubeClient(discover(str(path)), on_connect=opened.append)
        try:
            async with asyncio.timeout(30):
                assert (await client.get_post("team-a", "p"))["metadata"]["name"] == "p"
                assert (await client.get_post("team-a", "q"))["metadata"]["name"] == "q"
        finally:
            await client.aclose()
    assert server.seen == ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
    assert runs(counter) == 2
    assert opened == ["tcp"], "one plain-HTTP connection, kept for all three requests"


async def test_kube_client_retries_a_read_the_api_server_asks_to_retry(tmp_path: Path) -> None:
    """A 429 with Retry-After (a watch cache being refilled) is waited out, as client-go
    waits it out, a bounded number of times; then the read fails as Unavailable."""
    async with ApiServer() as server:
        path = kubeconfig(tmp_path / "config", {"token": "t"}, cluster={"server": server.url})
        client = KubeClient(discover(str(path)))
        try:
            async with asyncio.timeout(30):
                server.reinitializing = 2
                assert (await client.get_post("team-a", "p"))["metadata"]["name"] == "p"
                assert len(server.seen) == 3
                server.reinitializing = 100
                with pytest.raises(Unavailable, match="storage is \\(re\\)initializing"):
                    await client.get_post("team-a", "p")
        finally:
            await client.aclose()
    assert len(server.seen) == 3 + 1 + kube.READ_RETRIES


async def test_kube_client_refreshes_expiring_exec_credentials(tmp_path: Path) -> None:
    user, counter = exec_plugin(tmp_path, expires_in=3)
    async with ApiServer() as server:
        path = kubeconfig(tmp_path / "config", user, cluster={"server": server.url})
        client = KubeClient(discover(str(path)))
        try:
            async with asyncio.timeout(30):
                await client.get_post("team-a", "p")  # a 2-3 s lifetime, due a fifth early
                await asyncio.sleep(3.0)
                await client.get_post("team-a", "p")
        finally:
            await client.aclose()
    assert server.seen == ["Bearer token-1", "Bearer token-2"]
    assert runs(counter) == 2


async def test_kube_client_401_with_the_same_credentials_is_forbidden_at_once(
    tmp_path: Path,
) -> None:
    async with ApiServer() as server:
        server.revoked.add("Bearer revoked")
        path = kubeconfig(tmp_path / "config", {"token": "revoked"}, cluster={"server": server.url})
        client = KubeClient(discover(str(path)))
        try:
            async with asyncio.timeout(30):
                with pytest.raises(Forbidden, match="get team-a/p: 401 Unauthorized"):
                    await client.get_post("team-a", "p")
        finally:
            await client.aclose()
    assert server.seen == ["Bearer revoked"]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://api.example.com:6443", "http://proxy.corp:3128"),
        ("https://127.0.0.1:6443", None),  # in NO_PROXY
        ("https://kube.internal.corp", None),  # a NO_PROXY domain suffix
        ("http://api.example.com", "http://plain-proxy.corp:3128"),
    ],
)
def test_the_environment_proxy_is_looked_up_once_per_server(
    monkeypatch: pytest.MonkeyPatch, server: str, expected: str | None
) -> None:
    for name in ("https_proxy", "http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain-proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.internal.corp")
    assert env_proxy(server) == expected
