"""Start Herald locally: control plane, CRD, callback sidecar, operator, a stand-in n8n.

    make up                 # runs until Ctrl-C
    python hack/up.py --smoke   # exits 0 once the demo post is Published (used by tests)

Everything listens on 127.0.0.1. The stand-in n8n accepts each webhook and calls the
sidecar back with "published", as a real n8n workflow from n8n/ would after posting.
Point Herald at a real n8n instead with HERALD_N8N_URL=https://n8n.example/webhook/herald.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.controlplane import ControlPlane, free_port, tools_bin  # noqa: E402
from tests.support.fake_n8n import FakeN8n  # noqa: E402
from tests.support.herald_proc import (  # noqa: E402
    HeraldProcess,
    start_callback_server,
    start_operator,
)


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
        help="exit 0 once the demo post is Published (exit 1 after 60 s)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="herald-dev-"))
    cp = ControlPlane(workdir=workdir / "control-plane")
    n8n_url = os.environ.get("HERALD_N8N_URL")
    fake = None if n8n_url else FakeN8n(auto_callback=True).start()
    procs: list[HeraldProcess] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        cp.start()
        print(f"control plane up in {cp.started_in:.1f}s: {cp.server}")
        cp.kubectl("apply", "-f", str(REPO / "crds" / "scheduledposts.herald.dev.yaml"))
        cp.kubectl("wait", "--for=condition=Established", "crd/scheduledposts.herald.dev")
        sidecar, callback_base = start_callback_server(
            cp.kubeconfig, workdir / "callback-server.log", log_level="INFO"
        )
        procs.append(sidecar)
        url = n8n_url or (fake.url if fake else "")
        metrics_port, health_port = _port_or_free(9090), _port_or_free(8081)
        operator = start_operator(
            cp.kubeconfig,
            url,
            workdir / "operator.log",
            callback_url=callback_base,
            metrics_port=metrics_port,
            health_port=health_port,
            identity="herald-dev",
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
        print(
            f"""
Herald is running (logs in {workdir}).
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
                phase = cp.kubectl(
                    "get", "sp", "hello-herald", "-o", "jsonpath={.status.phase}"
                ).stdout
                if phase == "Published":
                    print("smoke: hello-herald is Published")
                    return 0
                if time.monotonic() > deadline:
                    print(f"smoke: still {phase!r} after 60 s\n{operator.log()[-2000:]}")
                    return 1
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            proc.stop()
        if fake is not None:
            fake.stop()
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
