"""Logging in as kubectl would, against the real API server: exec credential plugins (with
expiry and refresh), a kubeconfig split across files, client certificates kept with
insecure-skip-tls-verify. Real `herald run` and `herald callback-server` processes."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald.kube import KubeClient, discover
from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n
from tests.support.herald_proc import HeraldProcess, start_callback_server, start_operator

pytestmark = pytest.mark.e2e

SA = "herald-exec"

# An exec credential plugin: each run mints a real ServiceAccount token (TokenRequest, valid
# 10 minutes on the server) and states the expiry it was given, usually far shorter; the
# runs are counted in the file named by its first argument.
PLUGIN = """
import datetime as dt, json, pathlib, ssl, sys, urllib.request
SERVER, CA, PEM, NS, SA, EXPIRES_IN = {config}
counter = pathlib.Path(sys.argv[1])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
ctx = ssl.create_default_context(cafile=CA)
ctx.load_cert_chain(PEM)
body = {{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {{"expirationSeconds": 600}}}}
request = urllib.request.Request(
    f"{{SERVER}}/api/v1/namespaces/{{NS}}/serviceaccounts/{{SA}}/token",
    data=json.dumps(body).encode(), method="POST", headers={{"Content-Type": "application/json"}})
with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
    token = json.load(response)["status"]["token"]
at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=EXPIRES_IN)
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": token,
                             "expirationTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
"""


def cluster_entry(cp: ControlPlane, **extra: Any) -> dict[str, Any]:
    ca = base64.b64encode(cp.ca_file.read_bytes()).decode()
    return {
        "name": "herald-test",
        "cluster": {"server": cp.server, "certificate-authority-data": ca, **extra},
    }


def context_entry(namespace: str) -> dict[str, Any]:
    return {
        "name": "test",
        "context": {"cluster": "herald-test", "user": "u", "namespace": namespace},
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **config}))
    path.chmod(0o600)
    return path


def runs(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


class ExecUser:
    """A ServiceAccount bound to cluster-admin and kubeconfigs that log in as it through the
    exec plugin above, one run counter per kubeconfig."""

    def __init__(self, cp: ControlPlane, namespace: str, tmp_path: Path, expires_in: int) -> None:
        self.cp, self.namespace, self.dir = cp, namespace, tmp_path
        cp.kubectl("create", "serviceaccount", SA, "-n", namespace)
        cp.kubectl(
            "create",
            "clusterrolebinding",
            f"{SA}-{namespace}",
            "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{SA}",
        )
        # The authorizer learns of the binding through a watch: wait until it applies, so
        # that Herald's first requests are not Forbidden.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = cp.kubectl(
                "auth",
                "can-i",
                "list",
                "scheduledposts.herald.dev",
                "-n",
                namespace,
                f"--as=system:serviceaccount:{namespace}:{SA}",
                check=False,
            )
            if answer.stdout.strip() == "yes":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the binding never applied: {answer.stdout} {answer.stderr}")
        cert, key = cp.user_credentials("exec-plugin-minter", ["system:masters"])
        pem = tmp_path / "minter.pem"
        pem.write_bytes(cert + key)
        config = (cp.server, str(cp.ca_file), str(pem), namespace, SA, expires_in)
        self.script = tmp_path / "credential-plugin.py"
        self.script.write_text(PLUGIN.format(config=repr(config)))

    def kubeconfig(self, name: str) -> tuple[Path, Path]:
        counter = self.dir / f"{name}.runs"
        user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(self.script), str(counter)],
                "interactiveMode": "Never",
            }
        }
        path = write(
            self.dir / f"{name}.kubeconfig",
            {
                "clusters": [cluster_entry(self.cp)],
                "users": [{"name": "u", "user": user}],
                "contexts": [context_entry(self.namespace)],
                "current-context": "test",
            },
        )
        return path, counter


class Herald:
    """The sidecar and an operator watching one namespace, with the given kubeconfigs."""

    def __init__(self, tmp_path: Path, namespace: str) -> None:
        self.tmp_path, self.namespace = tmp_path, namespace
        self.procs: list[HeraldProcess] = []

    def start(self, operator_config: Path, sidecar_config: Path, n8n: FakeN8n) -> None:
        # Routine Events on: both processes must be able to post Events with these logins.
        sidecar, base = start_callback_server(
            sidecar_config, self.tmp_path / "sidecar.log", routine_events="true"
        )
        self.procs.append(sidecar)
        op = start_operator(
            operator_config,
            n8n.url,
            self.tmp_path / "operator.log",
            namespaces=json.dumps([self.namespace]),
            callback_url=base,
            routine_events="true",
        )
        self.procs.append(op)
        op.wait_for_log("watch is live")

    def logs(self) -> str:
        return "\n".join(p.log()[-3000:] for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def herald_pair(tmp_path: Path, namespace: str, posts: Posts) -> Iterator[Herald]:
    posts.create("canary", in_seconds(86400), suspend=True)  # an event for the watch to see
    pair = Herald(tmp_path, namespace)
    yield pair
    pair.stop()


def publish_through_sidecar(posts: Posts, name: str, herald: Herald) -> dict[str, Any]:
    posts.create(name, in_seconds(1))
    status = posts.wait_phase(name, "Published", timeout=30)
    assert status["externalUrl"], status
    reasons = {e["reason"] for e in posts.events(name)}
    assert "Published" in reasons, reasons
    for word in ("Unauthorized", "Forbidden", "Traceback"):
        assert word not in herald.logs(), herald.logs()
    return status


def test_exec_plugin_logs_in_operator_and_sidecar(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    posts: Posts,
    herald_pair: Herald,
) -> None:
    user = ExecUser(control_plane, namespace, tmp_path, expires_in=3600)
    op_config, op_runs = user.kubeconfig("operator")
    cb_config, cb_runs = user.kubeconfig("sidecar")
    with FakeN8n(auto_callback=True) as n8n:
        herald_pair.start(op_config, cb_config, n8n)
        publish_through_sidecar(posts, "via-exec", herald_pair)
        publish_through_sidecar(posts, "via-exec-again", herald_pair)
    # A token valid for an hour is fetched once per client, not per request: Herald's own
    # client and kopf's login in the operator, Herald's client in the sidecar.
    assert (runs(op_runs), runs(cb_runs)) == (2, 1)


def test_expiring_exec_credentials_are_refreshed(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    posts: Posts,
    herald_pair: Herald,
) -> None:
    expires_in = 6  # refreshed a fifth of that early
    user = ExecUser(control_plane, namespace, tmp_path, expires_in=expires_in)
    op_config, op_runs = user.kubeconfig("operator")
    cb_config, cb_runs = user.kubeconfig("sidecar")
    with FakeN8n(auto_callback=True) as n8n:
        herald_pair.start(op_config, cb_config, n8n)
        publish_through_sidecar(posts, "first", herald_pair)
        before = runs(op_runs), runs(cb_runs)
        time.sleep(expires_in + 1)  # every credential handed out so far has expired
        publish_through_sidecar(posts, "after-expiry", herald_pair)
        after = runs(op_runs), runs(cb_runs)
    assert after[0] > before[0], f"the operator did not run the plugin again: {before}, {after}"
    assert after[1] > before[1], f"the sidecar did not run the plugin again: {before}, {after}"
    # (That a valid token is not fetched again per request is shown above, with a long expiry.)


def test_kubeconfig_split_across_two_files(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    posts: Posts,
    herald_pair: Herald,
) -> None:
    """KUBECONFIG=a:b, as kubectl merges it: the cluster and context in one file, the user
    (a client certificate) in the other."""
    a = write(
        tmp_path / "cluster.kubeconfig",
        {
            "clusters": [cluster_entry(control_plane)],
            "contexts": [context_entry(namespace)],
            "current-context": "test",
        },
    )
    cert, key = control_plane.user_credentials("split-admin", ["system:masters"])
    creds = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    b = write(tmp_path / "user.kubeconfig", {"users": [{"name": "u", "user": creds}]})
    merged = Path(f"{a}:{b}")  # becomes KUBECONFIG for both processes
    with FakeN8n(auto_callback=True) as n8n:
        herald_pair.start(merged, merged, n8n)
        publish_through_sidecar(posts, "via-two-files", herald_pair)


async def test_client_certificate_kept_with_insecure_skip_tls_verify(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, posts: Posts
) -> None:
    cert, key = control_plane.user_credentials("insecure-admin", ["system:masters"])
    creds = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    cluster = {"name": "herald-test", "cluster": {"server": control_plane.server}}
    cluster["cluster"]["insecure-skip-tls-verify"] = True
    path = write(
        tmp_path / "insecure.kubeconfig",
        {
            "clusters": [cluster],
            "users": [{"name": "u", "user": creds}],
            "contexts": [context_entry(namespace)],
            "current-context": "test",
        },
    )
    posts.create("seen", in_seconds(3600), suspend=True)
    client = KubeClient(discover(str(path)))
    try:
        # Without the client certificate this request would be anonymous, and Forbidden.
        obj = await client.get_post(namespace, "seen")
    finally:
        await client.aclose()
    assert obj["metadata"]["name"] == "seen"
