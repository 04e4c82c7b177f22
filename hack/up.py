"""Start Herald locally: control plane, CRD, callback sidecar, operator, and an n8n.

    make up                          # stand-in n8n; runs until Ctrl-C
    make up N8N=real                 # a real n8n running n8n/publish-echo.json
    python hack/up.py --smoke        # exits 0 once the demo post is Published (tests)

Everything listens on 127.0.0.1. The stand-in n8n accepts each webhook and calls the
sidecar back with "published" and a `demo:` id: nothing is posted anywhere, and the
status says so (no URL). `--n8n real` runs the real n8n from `hack/n8n.sh install` with
the echo workflow, which verifies Herald's signature and calls back the same way.
Point Herald at an n8n of your own with HERALD_N8N_URL=https://n8n.example/webhook/herald
(and HERALD_SIGNING_KEY=<its key>). Signing keys are generated per run, `whsec_<base64>`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.controlplane import ControlPlane, free_port, tools_bin  # noqa: E402
from tests.support.fake_n8n import FakeN8n  # noqa: E402
from tests.support.herald_proc import (  # noqa: E402
    HeraldProcess,
    start_callback_server,
    start_operator,
)
from tests.support.n8n_server import ECHO, N8nServer  # noqa: E402


def demo_callback(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stand-in n8n's report: "published", with an id that says nothing was posted
    (no LinkedIn URL for a post that went nowhere)."""
    return [{"status": "published", "externalId": f"demo:{body['id']}:{body['attempt']}"}]


def whsec() -> str:
    """A fresh Standard Webhooks key: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _port_or_free(port: int) -> int:
    """The conventional port when it is free here, else any free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


@dataclass
class Child:
    """A process of the run, in stop order: what to call it, where it logs, how to stop it."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop: Callable[[], object]


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM once, then SIGKILL if it is still there after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"code {code}"


def interrupt(signum: int, _frame: object) -> None:
    """SIGINT and SIGTERM: stop everything, once. Further signals are ignored from here on,
    so a second Ctrl-C cannot cut the shutdown short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def report_death(child: Child, lines: int = 20) -> None:
    log = child.log.read_text(errors="replace") if child.log.exists() else ""
    tail = "\n".join(f"    {line}" for line in log.splitlines()[-lines:]) or "    (empty)"
    print(
        f"\nup.py: {child.name} (pid {child.proc.pid}) exited, {exit_text(child.proc.returncode)};"
        f" the last lines of its log:\n{tail}\n  full log: {child.log}\n"
        "up.py: stopping the rest",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="exit 0 once the demo post is Published (exit 1 after the smoke timeout)",
    )
    parser.add_argument(
        "--n8n",
        choices=["standin", "real"],
        default=os.environ.get("N8N") or "standin",
        help="standin: a built-in stand-in n8n (default); real: a real n8n running "
        "n8n/publish-echo.json (install it with `make n8n`)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="herald-dev-"))
    cp = ControlPlane(workdir=workdir / "control-plane")
    n8n_url = os.environ.get("HERALD_N8N_URL")
    signing_key = os.environ.get("HERALD_SIGNING_KEY") if n8n_url else None
    signing_key = signing_key or whsec()
    keys = {"signing_key": signing_key, "callback_key": whsec()}
    fake: FakeN8n | None = None
    real: N8nServer | None = None
    children: list[Child] = []  # in stop order, once started
    code = 0

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        cp.start()
        # ControlPlane keeps its processes in _procs (etcd first); stopped newest first.
        for proc in reversed(cp._procs):  # kube-apiserver, then etcd
            name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
            children.append(
                Child(name, proc, cp.workdir / f"{name}.log", functools.partial(terminate, proc))
            )
        print(f"control plane up in {cp.started_in:.1f}s: {cp.server}", flush=True)
        cp.kubectl("apply", "-f", str(REPO / "crds"))  # posts, the ledger, the accounts
        for plural in ("scheduledposts", "publications", "socialaccounts", "clustersocialaccounts"):
            cp.wait_established(f"{plural}.herald.dev")
        # The account the demo post (and the samples) publish as: every post needs one.
        cp.kubectl("apply", "-n", "default", "-f", str(REPO / "manifests/samples/accounts"))
        if n8n_url:
            url = n8n_url
        elif args.n8n == "real":
            real = N8nServer(workdir / "n8n", env_extra={"HERALD_SIGNING_KEY": signing_key})
            real.setup([ECHO])
            try:
                real.start(probe_path="herald-echo")
            finally:
                if real.proc is not None:
                    stop_real = functools.partial(real.stop, timeout=10)
                    children.insert(0, Child("n8n", real.proc, real.log_path, stop_real))
            url = real.webhook_url("herald-echo")
            print(f"n8n up in {real.started_in:.1f}s: {real.base_url} (workflow: {ECHO.name})")
        else:
            fake = FakeN8n(auto_callback=True, callback_bodies=demo_callback).start()
            url = fake.url
        # Each child in a session of its own: a terminal's Ctrl-C reaches only up.py,
        # which then stops each child once, in order (etcd, kube-apiserver and n8n are
        # started that way by their helpers).
        sidecar, callback_base = start_callback_server(
            cp.kubeconfig,
            workdir / "callback-server.log",
            new_session=True,
            log_level="INFO",
            **keys,
        )
        children.insert(0, herald_child("the callback sidecar", sidecar))
        metrics_port, health_port = _port_or_free(9090), _port_or_free(8081)
        operator = start_operator(
            cp.kubeconfig,
            url,
            workdir / "operator.log",
            callback_url=callback_base,
            metrics_port=metrics_port,
            health_port=health_port,
            identity="herald-dev",
            new_session=True,
            **keys,
        )
        children.insert(0, herald_child("the operator", operator))
        publish_at = (
            (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
        demo = {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {"name": "hello-herald", "namespace": "default"},
            "spec": {
                "publishAt": publish_at,
                "content": {"text": "Hello from Herald, published at the right second."},
            },
        }
        cp.kubectl("apply", "-f", "-", input=json.dumps(demo))
        where = {
            "standin": "a stand-in n8n: nothing is posted anywhere",
            "real": f"n8n at {real.base_url if real else ''}: the echo workflow posts nowhere",
        }
        print(
            f"""
Herald is running against {n8n_url or where[args.n8n]} (logs in {workdir}).
  export KUBECONFIG={cp.kubeconfig} PATH={tools_bin()}:$PATH
  kubectl get scheduledposts -o wide -w       # hello-herald publishes at {publish_at}
  kubectl apply -f manifests/samples/          # more posts
  curl -s localhost:{metrics_port}/metrics | grep ^herald_   # operator metrics
  curl -s localhost:{health_port}/healthz                     # operator liveness
  curl -s {callback_base}/metrics | grep ^herald_   # sidecar metrics
Ctrl-C stops everything.
""",
            flush=True,
        )
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.5)
            dead = next((c for c in children if c.proc.poll() is not None), None)
            if dead is not None:
                report_death(dead)
                cp.keep_workdir = True  # the logs named above stay where they are
                code = 1
                break
            if args.smoke:
                status = json.loads(
                    cp.kubectl("get", "sp", "hello-herald", "-o", "jsonpath={.status}").stdout
                    or "{}"
                )
                if status.get("phase") == "Published":
                    print(
                        "smoke: hello-herald is Published: "
                        f"externalId={status.get('externalId')} "
                        f"externalUrl={status.get('externalUrl')}"
                    )
                    break
                if time.monotonic() > deadline:
                    print(f"smoke: still {status} after 60 s\n{operator.log()[-2000:]}")
                    code = 1
                    break
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        # A child that did not start: its helper's message names it and has its log.
        print(f"up.py: could not start everything: {exc}", flush=True)
        cp.keep_workdir = True
        code = 1
    finally:
        shutdown(children, fake)
        cp.stop()  # only removes its directory now: its processes are stopped
    return code


def herald_child(name: str, proc: HeraldProcess) -> Child:
    assert proc.proc is not None
    return Child(name, proc.proc, proc.log_path, functools.partial(proc.stop, timeout=10))


def shutdown(children: list[Child], fake: FakeN8n | None) -> None:
    """Stop each child once, in order: operator, sidecar, n8n, kube-apiserver, etcd."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for child in children:
        if child.proc.poll() is None:
            child.stop()
            print(f"up.py: stopped {child.name} ({exit_text(child.proc.returncode)})", flush=True)
        else:
            print(f"up.py: {child.name} had exited ({exit_text(child.proc.returncode)})")
        if child.name == "the callback sidecar" and fake is not None:
            fake.stop()
            print("up.py: stopped n8n (the stand-in, a thread of up.py)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
