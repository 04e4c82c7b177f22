"""Runs `herald run` and `herald callback-server` as real subprocesses for end-to-end tests."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.controlplane import free_port

# The form the chart generates: whsec_ + base64 of 32 random bytes (fresh per test run).
SIGNING_KEY = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
CALLBACK_KEY = "test-callback-key-0123456789abcdef"


def herald_env(
    kubeconfig: Path,
    n8n_url: str,
    *,
    callback_url: str = "http://127.0.0.1:1",
    **settings: str | int | float,
) -> dict[str, str]:
    """Environment for a Herald process; keyword arguments become HERALD_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "HERALD_TARGETS__DEFAULT__URL": n8n_url,
            "HERALD_TARGETS__DEFAULT__TIMEOUT_SECONDS": "2",
            "HERALD_CALLBACK_URL": callback_url,
            "HERALD_SIGNING_KEY": SIGNING_KEY,
            "HERALD_CALLBACK_KEY": CALLBACK_KEY,
            "HERALD_METRICS_PORT": "0",
            "HERALD_HEALTH_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"HERALD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@dataclass
class HeraldProcess:
    command: str  # "run" | "callback-server"
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    # A session (process group) of its own: a terminal's Ctrl-C then reaches only the
    # parent (hack/up.py), which stops its children itself, once each.
    new_session: bool = False

    def start(self) -> HeraldProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", self.command, *self.extra_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.new_session,
        )
        return self

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"herald {self.command} exited:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{needle!r} not logged in {timeout}s:\n{self.log()[-3000:]}")

    def log_size(self) -> int:
        """A mark for wait_for_new_log(): the log is appended to across restarts."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def wait_for_new_log(self, needle: str, since: int, timeout: float = 30.0) -> None:
        """Like wait_for_log, but only counting what was logged after the mark `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_path.read_bytes()[since:].decode(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"herald {self.command} exited:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{needle!r} not logged in {timeout}s:\n{self.log()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_operator(
    kubeconfig: Path,
    n8n_url: str,
    log_path: Path,
    *,
    new_session: bool = False,
    **settings: str | int | float,
) -> HeraldProcess:
    env = herald_env(kubeconfig, n8n_url, **settings)
    proc = HeraldProcess("run", env, log_path, new_session=new_session).start()
    proc.wait_for_log("dispatcher started as")
    return proc


def start_callback_server(
    kubeconfig: Path, log_path: Path, *, new_session: bool = False, **settings: str | int | float
) -> tuple[HeraldProcess, str]:
    port = free_port()
    env = herald_env(
        kubeconfig,
        "http://127.0.0.1:1/unused",
        callback_port=port,
        callback_host="127.0.0.1",
        **settings,
    )
    proc = HeraldProcess("callback-server", env, log_path, new_session=new_session).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                return proc, base
        except OSError:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise RuntimeError(f"callback-server exited:\n{proc.log()}") from None
            time.sleep(0.05)
    raise TimeoutError(f"callback-server not healthy:\n{proc.log()}")
