"""`make up` works: hack/up.py brings everything up, the demo post gets published, the
result says it was a demo, Ctrl-C stops everything cleanly, and a child that dies is
reported instead of leaving a half-dead setup running (issue #21)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.controlplane import REPO, tools_bin

pytestmark = pytest.mark.e2e

UP = [sys.executable, str(REPO / "hack" / "up.py")]
READY = "Ctrl-C stops everything."


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


def processes_of(workdir: Path) -> dict[int, str]:
    """Every process whose command line or environment names the run's directory (etcd,
    kube-apiserver, the operator, the sidecar, n8n and its task runner): pid -> argv."""
    found = {}
    needle = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in cmdline or needle in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


@dataclass
class Up:
    """hack/up.py started as a terminal starts `make up`: its own process group (so a
    SIGINT to the group is a Ctrl-C), SIGINT at its default disposition."""

    proc: subprocess.Popen[bytes]
    out: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while READY not in self.text():
            assert self.proc.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, self.text()[-3000:]
            time.sleep(0.2)

    def field(self, pattern: str) -> str:
        match = re.search(pattern, self.text())
        assert match, (pattern, self.text()[-3000:])
        return match.group(1)

    @property
    def workdir(self) -> Path:
        return Path(self.field(r"\(logs in (\S+)\)"))

    def kubectl(self, *args: str) -> str:
        env = {**os.environ, "KUBECONFIG": self.field(r"export KUBECONFIG=(\S+)")}
        return subprocess.run(
            [str(tools_bin() / "kubectl"), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=env,
        ).stdout

    def wait_published(self, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            raw = self.kubectl("get", "sp", "hello-herald", "-o", "jsonpath={.status}")
            status = json.loads(raw or "{}")
            if status.get("phase") == "Published":
                return status
            assert self.proc.poll() is None, self.text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"hello-herald not Published in {timeout}s: {status}")

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"up.py still running after {timeout}s:\n{self.text()}") from None
        return code, time.monotonic() - started


StartUp = Callable[..., Up]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[StartUp]:
    runs: list[Up] = []

    def start(*args: str) -> Up:
        out = tmp_path / f"up-{len(runs)}.log"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [*UP, *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        runs.append(Up(proc, out))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait(timeout=10)
        # Whatever a failed test left behind must not outlive it.
        if READY in run.text():
            for pid in processes_of(run.workdir):
                os.kill(pid, signal.SIGKILL)


def assert_no_errors(text: str, where: str) -> None:
    assert "Traceback" not in text, f"{where}:\n{text[-4000:]}"
    assert not re.search(r"\bERROR\b", text), f"{where}:\n{text[-4000:]}"


@pytest.mark.parametrize(
    "n8n",
    [
        "standin",
        pytest.param("real", marks=pytest.mark.n8n),
    ],
)
def test_ctrl_c_stops_everything_cleanly(up: StartUp, n8n: str) -> None:
    run = up("--n8n", n8n)
    run.wait_ready(timeout=300 if n8n == "real" else 120)
    status = run.wait_published(timeout=90)
    if n8n == "real":
        assert re.search(
            r"n8n up in [0-9.]+s: http://127.0.0.1:\d+ \(workflow: publish-echo.json\)",
            run.text(),
        )
        assert re.match(r"echo:\S+:1$", status.get("externalId", "")), status
    else:
        assert re.match(r"demo:\S+:1$", status.get("externalId", "")), status
    assert "externalUrl" not in status, status
    workdir = run.workdir
    before = processes_of(workdir)
    names = " ".join(before.values())
    for name in ("etcd", "kube-apiserver", "herald.cli run", "herald.cli callback-server"):
        assert name in names, before
    if n8n == "real":
        assert "n8n" in names, before

    os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C
    code, took = run.wait_exit(timeout=20)
    print(f"make up (--n8n {n8n}) stopped in {took:.2f}s")

    assert code == 0, run.text()[-3000:]
    assert processes_of(workdir) == {}, f"left running: {processes_of(workdir)}"
    assert_no_errors(run.text(), "up.py's output")
    logs = sorted(p for p in workdir.rglob("*.log") if p.is_file())
    assert {p.name for p in logs} >= {"operator.log", "callback-server.log"}, logs
    for log in logs:
        assert_no_errors(log.read_text(errors="replace"), str(log))
    # Stopped once each, in order: the operator first, the control plane last.
    stops = re.findall(r"up.py: stopped (.+?) \(", run.text())
    expected = ["the operator", "the callback sidecar", "n8n", "kube-apiserver", "etcd"]
    assert stops == expected, run.text()[-3000:]
    # The control plane's processes are gone with their data directory.
    assert not (workdir / "control-plane").exists()


def test_a_dying_child_stops_make_up(up: StartUp) -> None:
    run = up()
    run.wait_ready(timeout=120)
    workdir = run.workdir
    [operator] = [pid for pid, argv in processes_of(workdir).items() if "herald.cli run" in argv]
    os.kill(operator, signal.SIGKILL)
    code, took = run.wait_exit(timeout=5)
    print(f"up.py exited {took:.2f}s after the operator died")
    text = run.text()
    assert code != 0, text[-3000:]
    assert re.search(r"the operator \(pid \d+\) exited.*SIGKILL", text), text[-3000:]
    assert f"{workdir / 'operator.log'}" in text, text[-3000:]
    assert processes_of(workdir) == {}, f"left running: {processes_of(workdir)}"
