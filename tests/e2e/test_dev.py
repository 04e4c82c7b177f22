"""`make up` works: hack/up.py brings everything up, the demo post gets published, the
result says it was a demo, and Ctrl-C stops everything quickly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.controlplane import REPO

pytestmark = pytest.mark.e2e

UP = [sys.executable, str(REPO / "hack" / "up.py")]


def smoke(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UP, "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def test_make_up_publishes_the_demo_post() -> None:
    proc = smoke()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "export KUBECONFIG=" in proc.stdout
    assert "against a stand-in n8n: nothing is posted anywhere" in proc.stdout
    # The stand-in says what it is: a demo id, no URL of a post that does not exist.
    assert re.search(
        r"smoke: hello-herald is Published: externalId=demo:\S+ externalUrl=None", proc.stdout
    ), proc.stdout
    assert "linkedin.com" not in proc.stdout


@pytest.mark.n8n
def test_make_up_with_real_n8n_publishes_through_the_echo_workflow() -> None:
    proc = smoke("--n8n", "real", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(
        r"n8n up in [0-9.]+s: http://127.0.0.1:\d+ \(workflow: publish-echo.json\)", proc.stdout
    )
    assert re.search(r"externalId=echo:\S+:1 externalUrl=None", proc.stdout), proc.stdout


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_ctrl_c_stops_everything_within_5_seconds(tmp_path: Path) -> None:
    out = tmp_path / "up.log"
    with out.open("wb") as sink:
        # A session of its own, so the SIGINT below reaches up.py and its children the
        # way a terminal's Ctrl-C reaches the foreground process group.
        proc = subprocess.Popen(
            UP, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything." not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        api = re.search(r"control plane up in [0-9.]+s: https://127.0.0.1:(\d+)", text)
        metrics = re.search(r"curl -s localhost:(\d+)/metrics", text)
        workdir = re.search(r"\(logs in (\S+)\)", text)
        assert api and metrics and workdir, text
        ports = [int(api.group(1)), int(metrics.group(1))]
        assert not any(refused(p) for p in ports), "everything is up before Ctrl-C"
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    print(f"make up stopped in {took:.2f}s")
    assert code == 0, out.read_text()[-3000:]
    assert took < 5.0, f"stopping took {took:.1f}s\n{out.read_text()[-3000:]}"
    assert all(refused(p) for p in ports), "a server still listens after Ctrl-C"
    # The control plane's processes are gone with their data directory.
    assert not (Path(workdir.group(1)) / "control-plane").exists()
