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
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
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
    procs: list[HeraldProcess] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        cp.start()
        print(f"control plane up in {cp.started_in:.1f}s: {cp.server}", flush=True)
        cp.kubectl("apply", "-f", str(REPO / "crds" / "scheduledposts.herald.dev.yaml"))
        cp.kubectl("wait", "--for=condition=Established", "crd/scheduledposts.herald.dev")
        if n8n_url:
            url = n8n_url
        elif args.n8n == "real":
            real = N8nServer(workdir / "n8n", env_extra={"HERALD_SIGNING_KEY": signing_key})
            real.setup([ECHO]).start(probe_path="herald-echo")
            url = real.webhook_url("herald-echo")
            print(f"n8n up in {real.started_in:.1f}s: {real.base_url} (workflow: {ECHO.name})")
        else:
            fake = FakeN8n(auto_callback=True, callback_bodies=demo_callback).start()
            url = fake.url
        sidecar, callback_base = start_callback_server(
            cp.kubeconfig, workdir / "callback-server.log", log_level="INFO", **keys
        )
        procs.append(sidecar)
        metrics_port, health_port = _port_or_free(9090), _port_or_free(8081)
        operator = start_operator(
            cp.kubeconfig,
            url,
            workdir / "operator.log",
            callback_url=callback_base,
            metrics_port=metrics_port,
            health_port=health_port,
            identity="herald-dev",
            **keys,
        )
        procs.append(operator)
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
        while not stopping:
            time.sleep(0.5)
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
                    return 0
                if time.monotonic() > deadline:
                    print(f"smoke: still {status} after 60 s\n{operator.log()[-2000:]}")
                    return 1
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(procs, fake, real, cp)
    return 0


def shutdown(
    procs: list[HeraldProcess], fake: FakeN8n | None, real: N8nServer | None, cp: ControlPlane
) -> None:
    """Stop everything at once, then the control plane (kube-apiserver before etcd)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
    if real is not None and real.proc is not None and real.proc.poll() is None:
        os.killpg(real.proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=4)
    if real is not None:
        real.stop(timeout=4)
    if fake is not None:
        fake.stop()
    cp.stop()


if __name__ == "__main__":
    sys.exit(main())
