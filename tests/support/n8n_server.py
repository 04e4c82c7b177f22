"""A real n8n, headless on 127.0.0.1, for end-to-end tests and `make up N8N=real`.

n8n and its Node.js come from `hack/n8n.sh install` (`.tools/bin/n8n`). Each server has
its own user folder (SQLite database, encryption key): credentials and workflows are
imported with n8n's CLI, activated, then `n8n start` runs until `stop()`. Every CLI call
is bounded with `timeout -k` and writes to a file, never a pipe: an n8n CLI call whose
output went into a closed pipe was seen to spin and ignore SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import fake_bluesky, fake_meta
from tests.support.controlplane import PORT_ATTEMPTS, REPO, PortTaken, free_port, tools_bin
from tests.support.fake_bluesky import FakeBluesky
from tests.support.fake_linkedin import FakeLinkedIn
from tests.support.fake_mastodon import FakeMastodon
from tests.support.fake_meta import FakeMeta
from tests.support.fake_x import FakeX

WORKFLOWS = REPO / "n8n"
ECHO = WORKFLOWS / "publish-echo.json"
PUBLISH = WORKFLOWS / "publish.json"


# The Node.js modules the shipped workflows' Code nodes require (n8n/README.md).
BUILTINS = "crypto,fs,path,http,https,dns,net,url"


def n8n_binary() -> Path:
    path = tools_bin() / "n8n"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `hack/n8n.sh install` (or `make n8n`)")
    return path


def n8n_version() -> str:
    """The pinned version (hack/versions.env), which is what `hack/n8n.sh` installs."""
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("N8N_VERSION="):
            return line.split("=", 1)[1].strip()
    raise LookupError("N8N_VERSION is not in hack/versions.env")


def oauth2_credential(
    token_url: str,
    access_token: str = "test-access-token",
    refresh_token: str = "refresh-me",
    ref: tuple[str, str] = ("HeraldLinkedInOA", "LinkedIn (Herald)"),
) -> dict[str, Any]:
    """The OAuth2 credential publish.json's LinkedIn branch uses, already authorised (as after
    "Connect my account"), with its token URL wherever the test wants it."""
    return {
        "id": ref[0],
        "name": ref[1],
        "type": "oAuth2Api",
        "data": {
            "grantType": "authorizationCode",
            "authUrl": token_url.rsplit("/", 1)[0] + "/authorization",
            "accessTokenUrl": token_url,
            "clientId": "herald-test-client",
            "clientSecret": "herald-test-secret",
            "scope": "w_member_social",
            "authQueryParameters": "",
            "authentication": "body",
            "oauthTokenData": {
                "access_token": access_token,
                "refresh_token": refresh_token,
                "token_type": "Bearer",
                "expires_in": 5184000,
            },
        },
    }


def header_credential(cid: str, name: str, value: str) -> dict[str, Any]:
    """A Header Auth credential sending `Authorization: <value>`."""
    return {
        "id": cid,
        "name": name,
        "type": "httpHeaderAuth",
        "data": {"name": "Authorization", "value": value},
    }


LINKEDIN_AUTHOR = "urn:li:organization:2414183"
"""The handle of the tests' LinkedIn accounts: what the workflow posts as (author)."""


class Networks:
    """Every network publish.json routes to, faked on 127.0.0.1, and what n8n needs to
    reach them: the `<NETWORK>_API_BASE_URL` variables and the credentials (fixed ids and
    names, as n8n/README.md sets them up). One n8n with these serves every channel."""

    def __init__(self) -> None:
        self.linkedin = FakeLinkedIn()
        self.x = FakeX()
        self.mastodon = FakeMastodon()
        self.bluesky = FakeBluesky()
        self.facebook = FakeMeta("facebook")
        self.instagram = FakeMeta("instagram")
        self.threads = FakeMeta("threads")
        self._stack = ExitStack()

    def by_channel(self) -> dict[str, Any]:
        return {
            "linkedin": self.linkedin,
            "x": self.x,
            "mastodon": self.mastodon,
            "bluesky": self.bluesky,
            "facebook": self.facebook,
            "instagram": self.instagram,
            "threads": self.threads,
        }

    def __enter__(self) -> Networks:
        for fake in self.by_channel().values():
            self._stack.enter_context(fake)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def reset(self) -> None:
        for fake in self.by_channel().values():
            fake.reset()

    def media_hosts(self) -> list[str]:
        """The fakes that serve media (host:port): allowed over http on 127.0.0.1."""
        return [
            self.linkedin.base_url.removeprefix("http://"),
            self.x.host,
            self.mastodon.host,
        ]

    def env(self) -> dict[str, str]:
        return {
            "LINKEDIN_API_BASE_URL": self.linkedin.base_url,
            "X_API_BASE_URL": self.x.base_url,
            "MASTODON_API_BASE_URL": self.mastodon.base_url,
            "BLUESKY_API_BASE_URL": self.bluesky.base_url,
            "FACEBOOK_API_BASE_URL": self.facebook.base_url,
            "INSTAGRAM_API_BASE_URL": self.instagram.base_url,
            "THREADS_API_BASE_URL": self.threads.base_url,
            # The fakes' hosts only: everything else on 127.0.0.1 stays refused.
            "HERALD_MEDIA_ALLOW_HOSTS": ",".join(self.media_hosts()),
        }

    def credentials(self) -> list[dict[str, Any]]:
        login = {"body": {"identifier": fake_bluesky.HANDLE, "password": fake_bluesky.PASSWORD}}
        graph = {"accessToken": fake_meta.TOKEN}
        return [
            oauth2_credential(f"{self.linkedin.base_url}/oauth/v2/accessToken"),
            oauth2_credential(
                f"{self.x.base_url}/2/oauth2/token", ref=("HeraldXOAuth2001", "X (Herald)")
            ),
            header_credential("HeraldMastodon01", "Mastodon (Herald)", "Bearer mastodon-token"),
            {"id": "HeraldBlueskyApp", "name": "Bluesky (Herald)", "type": "httpCustomAuth",
             "data": {"json": json.dumps(login)}},
            {"id": "HeraldFacebookPg", "name": "Facebook Page (Herald)",
             "type": "facebookGraphApi", "data": graph},
            {"id": "HeraldInstagram1", "name": "Instagram (Herald)", "type": "facebookGraphApi",
             "data": graph},
            {"id": "HeraldThreadsAcc", "name": "Threads (Herald)", "type": "facebookGraphApi",
             "data": graph},
        ]  # fmt: skip


@dataclass
class N8nServer:
    """One n8n process with its own user folder under `workdir`."""

    workdir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    broker_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0

    def version(self) -> str:
        return n8n_version()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, path: str) -> str:
        return f"{self.base_url}/webhook/{path}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "n8n.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("N8N_", "HERALD_"))}
        env.update(
            {
                "N8N_USER_FOLDER": str(self.workdir),
                "N8N_ENCRYPTION_KEY": "herald-test-encryption-key",
                "N8N_LISTEN_ADDRESS": "127.0.0.1",
                "N8N_HOST": "127.0.0.1",
                "N8N_PORT": str(self.port),
                "N8N_PROTOCOL": "http",
                "WEBHOOK_URL": f"{self.base_url}/",
                "N8N_RUNNERS_BROKER_PORT": str(self.broker_port),
                "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": "127.0.0.1",
                "N8N_DIAGNOSTICS_ENABLED": "false",
                "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
                "N8N_TEMPLATES_ENABLED": "false",
                "N8N_PERSONALIZATION_ENABLED": "false",
                "N8N_SECURE_COOKIE": "false",
                "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
                "N8N_LOG_LEVEL": "info",
                "N8N_LOG_OUTPUT": "console",
                "N8N_NO_COLOR": "true",
                "DB_SQLITE_POOL_SIZE": "2",
                # What the shipped workflows need (n8n/README.md): the signing key from the
                # environment, node's modules in the Code nodes, the de-duplication records.
                "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
                "NODE_FUNCTION_ALLOW_BUILTIN": BUILTINS,
                "HERALD_DEDUP_DIR": str(self.workdir / "herald-dedup"),
                "CODE_ENABLE_STDOUT": "true",
            }
        )
        env.update(self.env_extra)
        return env

    def cli(self, *args: str, timeout: int = 180) -> str:
        """Run one n8n CLI command to completion; its output, or an error with it."""
        out = self.workdir / f"cli-{int(time.monotonic() * 1000)}.log"
        with out.open("wb") as sink:
            proc = subprocess.run(
                ["timeout", "-k", "10", str(timeout), str(n8n_binary()), *args],
                env=self.env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        text = out.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"n8n {' '.join(args)} failed ({proc.returncode}):\n{text[-3000:]}")
        return text

    def setup(
        self, workflows: list[Path], credentials: list[dict[str, Any]] | None = None
    ) -> N8nServer:
        """Import credentials and workflows, and activate the workflows."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if credentials:
            creds = self.workdir / "credentials.json"
            creds.write_text(json.dumps(credentials))
            self.cli("import:credentials", f"--input={creds}")
        # One import for all of them (each CLI call boots n8n: seconds), then publish.
        folder = self.workdir / "workflows"
        folder.mkdir(exist_ok=True)
        for path in workflows:
            (folder / path.name).write_bytes(path.read_bytes())
        self.cli("import:workflow", "--separate", f"--input={folder}")
        for path in workflows:
            self.cli("publish:workflow", f"--id={json.loads(path.read_text())['id']}")
        return self

    def start(self, probe_path: str | None = None, timeout: float = 180.0) -> N8nServer:
        """Start n8n; return once it is healthy (and `probe_path`'s webhook answers)."""
        started = time.monotonic()
        deadline = started + timeout
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # n8n holds its own copy of the log's descriptor: ours closes once it started.
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(n8n_binary()), "start"],
                    env=self.env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                self._wait(f"{self.base_url}/healthz", deadline, method="GET")
                break
            except PortTaken:
                # Taken between free_port() and n8n's bind (see ControlPlane.start).
                if attempt == PORT_ATTEMPTS:
                    raise
                self.port, self.broker_port = free_port(), free_port()
        if probe_path is not None:
            # An unsigned POST: the workflow answers 401 once it is registered.
            self._wait(self.webhook_url(probe_path), deadline, method="POST", want=401)
        self.started_in = time.monotonic() - started
        return self

    def _wait(self, url: str, deadline: float, *, method: str, want: int = 200) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_tail()
                taken = f"port {self.port} is already in use" in tail
                error = PortTaken if taken else RuntimeError
                raise error(f"n8n exited with {self.proc.returncode}:\n{tail}")
            data = b"{}" if method == "POST" else None
            request = urllib.request.Request(
                url, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                last = str(exc)
                time.sleep(0.2)
                continue
            if status == want:
                return
            last = f"HTTP {status}"
            time.sleep(0.2)
        raise TimeoutError(f"{method} {url}: {last}\n{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # n8n's task runner is a child process: signal the whole group.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> N8nServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
