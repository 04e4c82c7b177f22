"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and dev.

Modelled on controller-runtime's envtest: etcd with a throwaway data dir, kube-apiserver
with certificates generated here (serving CA, client CA, service-account key pair),
RBAC authorization, and an admin kubeconfig whose client certificate is in
`system:masters`. There is no controller-manager, scheduler or kubelet: no garbage
collection, no default ServiceAccount, and pods never run.

Binaries come from `hack/tools.sh` (`.tools/bin`, or `$HERALD_TOOLS_BIN`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
PORT_ATTEMPTS = 3
"""Starts of a test server (etcd + kube-apiserver, n8n), each on fresh ports when one was
taken between free_port() and the server's bind."""


class PortTaken(RuntimeError):
    """A test server exited because its port was taken meanwhile."""


def tools_bin() -> Path:
    return Path(os.environ.get("HERALD_TOOLS_BIN", REPO / ".tools" / "bin"))


def require_binary(name: str) -> str:
    path = tools_bin() / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `hack/tools.sh` (or `make tools`) to build or install it"
        )
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _issue(
    subject: x509.Name,
    issuer: _Pair | None,
    *,
    ca: bool = False,
    server_ips: Sequence[str] = (),
    server_names: Sequence[str] = (),
    client: bool = False,
) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [
            x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
        ]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_ips or server_names:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer.key if issuer else key
    return _Pair(builder.sign(signer, hashes.SHA256()), key)


def _name(cn: str, org: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in org]
    return x509.Name(attrs)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in a temporary directory."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="herald-cp-")))
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    keep_workdir: bool = False
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _client_ca: _Pair | None = None
    _probe_ctx: ssl.SSLContext | None = None
    started_in: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "serving-ca.crt"

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> ControlPlane:
        started = time.monotonic()
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        self._write_certs(certs)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._start_etcd()
            self._start_apiserver(certs)
            try:
                self._wait_ready(started + timeout)
                break
            except PortTaken:
                # A free port is only free until someone takes it: another process (an
                # outgoing connection's ephemeral port, a neighbour's server) can bind it
                # between free_port() and our bind. New ports, a fresh etcd, again.
                if attempt == PORT_ATTEMPTS:
                    raise
                self._stop_procs()
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
                self.etcd_port, self.etcd_peer_port = free_port(), free_port()
                self.api_port = free_port()
                self.write_kubeconfig(self.kubeconfig, "admin", ["system:masters"])
        self.started_in = time.monotonic() - started
        return self

    def stop(self) -> None:
        self._stop_procs()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_procs(self) -> None:
        # One at a time, newest first: kube-apiserver stops at once while etcd is still
        # there, but waits out its etcd retries when both are signalled together.
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- certificates --------------------------------------------------------------

    def _write_certs(self, certs: Path) -> None:
        serving_ca = _issue(_name("herald-test-serving-ca"), None, ca=True)
        serving = _issue(
            _name("kube-apiserver"),
            serving_ca,
            server_ips=["127.0.0.1", "10.0.0.1"],
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        )
        self._client_ca = _issue(_name("herald-test-client-ca"), None, ca=True)
        (certs / "serving-ca.crt").write_bytes(serving_ca.cert_pem())
        (certs / "apiserver.crt").write_bytes(serving.cert_pem())
        (certs / "apiserver.key").write_bytes(serving.key_pem())
        (certs / "client-ca.crt").write_bytes(self._client_ca.cert_pem())
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (certs / "sa.key").write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (certs / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.write_kubeconfig(self.kubeconfig, "admin", ["system:masters"])

    def user_credentials(self, user: str, groups: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """A client certificate and key for `user` in `groups`, signed by the client CA."""
        assert self._client_ca is not None, "start() first"
        pair = _issue(_name(user, groups), self._client_ca, client=True)
        return pair.cert_pem(), pair.key_pem()

    def write_kubeconfig(
        self, path: Path, user: str, groups: Sequence[str] = (), *, token: str | None = None
    ) -> Path:
        """A kubeconfig for `user` (client certificate), or for a bearer `token`."""
        creds: dict[str, Any]
        if token is not None:
            creds = {"token": token}
        else:
            cert, key = self.user_credentials(user, groups)
            creds = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "herald-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_file.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": creds}],
            "contexts": [
                {
                    "name": user,
                    "context": {"cluster": "herald-test", "user": user, "namespace": "default"},
                }
            ],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- processes -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(proc)

    def _start_etcd(self) -> None:
        url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                require_binary("etcd"),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )

    def _start_apiserver(self, certs: Path) -> None:
        self._spawn(
            "kube-apiserver",
            [
                require_binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--client-ca-file={certs / 'client-ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                "--allow-privileged=true",
                # State is throwaway: no need to drain connections on the way down.
                "--shutdown-delay-duration=0s",
                "--v=1",
            ],
        )

    def _wait_ready(self, deadline: float) -> None:
        ctx = self._probe_context()
        last = "no answer"
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    tail = self.log_tail()
                    error = PortTaken if "address already in use" in tail else RuntimeError
                    raise error(f"{proc.args[0]} exited with {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"kube-apiserver not ready: {last}\n{self.log_tail()}")

    # --- fault injection: the API server goes away and comes back ------------------

    def _apiserver_proc(self) -> subprocess.Popen[bytes] | None:
        for proc in self._procs:
            argv = proc.args if isinstance(proc.args, list) else [proc.args]
            if Path(str(argv[0])).name == "kube-apiserver":
                return proc
        return None

    def stop_apiserver(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop kube-apiserver (SIGTERM, or SIGKILL with `kill`); etcd keeps running.

        Clients see refused connections until `start_apiserver()`."""
        proc = self._apiserver_proc()
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.remove(proc)
        # Keep the first run's log: _spawn() truncates the file it writes.
        log = self.workdir / "kube-apiserver.log"
        if log.exists():
            n = len(list(self.workdir.glob("kube-apiserver.*.log"))) + 1
            log.rename(self.workdir / f"kube-apiserver.{n}.log")

    def start_apiserver(self, timeout: float = 90.0) -> float:
        """Start kube-apiserver again, same port, certificates, flags and etcd; returns
        the seconds it took to become ready."""
        if self._apiserver_proc() is not None:
            raise RuntimeError("kube-apiserver is already running")
        started = time.monotonic()
        self._start_apiserver(self.workdir / "certs")
        self._wait_ready(started + timeout)
        return time.monotonic() - started

    @property
    def apiserver_running(self) -> bool:
        proc = self._apiserver_proc()
        return proc is not None and proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("etcd", "kube-apiserver"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}.log ---")
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    # --- conveniences --------------------------------------------------------------

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = f"{tools_bin()}{os.pathsep}{env.get('PATH', '')}"
        return env

    def wait_established(self, crd: str, timeout: float = 30.0) -> None:
        """Wait until the API server serves the CRD named `crd`.

        Not `kubectl wait --for=condition=Established`: right after a create that exits 1
        with "status.conditions accessor error: <nil>" while the CRD has no conditions yet,
        instead of waiting for them.
        """
        deadline = time.monotonic() + timeout
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        while True:
            proc = self.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={jsonpath}", check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "True":
                self._wait_watchable(crd, deadline)
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"crd/{crd} not Established after {timeout:.0f}s: "
                    f"{proc.stdout.strip() or proc.stderr.strip() or 'no conditions'}"
                )
            time.sleep(0.1)

    def _wait_watchable(self, crd: str, deadline: float) -> None:
        """Wait until a watch on the CRD's resource is accepted.

        Established is not enough: the API server's watch cache for a new resource fills
        after it, and until then a watch gets 429 "storage is (re)initializing", which
        kopf retries but logs at ERROR. A client started right after this sees a clean
        start.
        """
        plural, group = crd.split(".", 1)
        version = self.kubectl(
            "get", f"crd/{crd}", "-o", "jsonpath={.spec.versions[?(@.storage==true)].name}"
        ).stdout.strip()
        url = f"{self.server}/apis/{group}/{version}/{plural}?watch=true&timeoutSeconds=1"
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                # The answer's headers are enough: 200 means the watch was accepted.
                with urllib.request.urlopen(url, context=self._probe_context(), timeout=5):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise
                last = f"{exc.code} {exc.reason}"
            time.sleep(0.1)
        raise AssertionError(f"crd/{crd}: no watch accepted: {last}")

    def _probe_context(self) -> ssl.SSLContext:
        """A TLS context with a `system:masters` client certificate, made once."""
        if self._probe_ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            cert, key = self.user_credentials("readiness-probe", ["system:masters"])
            probe = self.workdir / "probe.pem"
            probe.write_bytes(cert + key)
            ctx.load_cert_chain(str(probe))
            self._probe_ctx = ctx
        return self._probe_ctx

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [require_binary("kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc


@contextlib.contextmanager
def running(keep_workdir: bool = False) -> Iterator[ControlPlane]:
    cp = ControlPlane(keep_workdir=keep_workdir)
    try:
        yield cp.start()
    finally:
        cp.stop()


# --- raw HTTP clients for tests ------------------------------------------------------

RETRY_429_ATTEMPTS = 10
"""As client-go: a 429 with Retry-After is retried up to this many times."""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before retrying, for a 429 that says so; None: do not retry."""
    if response.status_code != 429:
        return None
    try:
        return min(float(response.headers.get("Retry-After", "")), 5.0)
    except ValueError:
        return None


class RetryingTransport(httpx.HTTPTransport):
    """httpx's transport, retrying a 429 the way client-go does (kubectl included).

    An API server that serves lists from its watch cache (etcd >= 3.5.13) answers a list
    429 "storage is (re)initializing", with Retry-After, while that cache is refilled;
    every Kubernetes client waits and retries, and so do the tests' raw clients."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(RETRY_429_ATTEMPTS):
            response = super().handle_request(request)
            wait = _retry_after(response)
            if wait is None:
                return response
            response.close()
            time.sleep(wait)
        return super().handle_request(request)


class AsyncRetryingTransport(httpx.AsyncHTTPTransport):
    """RetryingTransport for httpx.AsyncClient."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(RETRY_429_ATTEMPTS):
            response = await super().handle_async_request(request)
            wait = _retry_after(response)
            if wait is None:
                return response
            await response.aclose()
            await asyncio.sleep(wait)
        return await super().handle_async_request(request)
