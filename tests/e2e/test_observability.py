"""Metrics, probes and logs end to end, scraped by a real Prometheus server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import REPO, free_port
from tests.support.fake_n8n import FakeN8n
from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]
Sidecar = Callable[..., tuple[HeraldProcess, str]]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], str]]:
    """Start Debian's prometheus on 127.0.0.1 scraping the given targets every second."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run hack/ci-deps.sh (Debian package 'prometheus')"
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str]) -> str:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "herald",
                    # herald_posts carries the post's namespace as its own label.
                    "honor_labels": True,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError((tmp_path / "prometheus.log").read_text())

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def query(base: str, promql: str) -> float | None:
    data = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert data["status"] == "success", data
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_query(base: str, promql: str, expected: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = query(base, promql)
        if value == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{promql} = {value}, expected {expected}")


def referenced_metrics() -> set[str]:
    """Metric names used by the dashboard and the alert rules."""
    files = REPO / "charts" / "herald" / "files"
    text = (files / "herald-dashboard.json").read_text()
    text += (files / "herald-alerts.rules.yaml").read_text()
    names = set(re.findall(r"\bherald_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_real_prometheus_scrapes_operator_and_sidecar(
    posts: Posts,
    herald: Start,
    sidecar: Sidecar,
    prometheus: Callable[[list[str]], str],
    namespace: str,
) -> None:
    _, callback_base = sidecar()
    metrics_port = free_port()
    with FakeN8n(auto_callback=True) as n8n:
        herald(
            n8n.url, callback_url=callback_base, metrics_port=metrics_port, history_sweep_seconds=1
        )
        prom = prometheus([f"127.0.0.1:{metrics_port}", callback_base.removeprefix("http://")])
        for i in range(3):
            posts.create(f"measured-{i}", in_seconds(2))
        for i in range(3):
            posts.wait_phase(f"measured-{i}", "Published", timeout=20)

    # The sidecar applied the three Published transitions; the operator dispatched them.
    wait_query(prom, "sum(herald_published_total)", 3)
    wait_query(prom, 'sum(herald_dispatch_total{outcome="accepted"})', 3)
    wait_query(prom, "sum(herald_publish_lateness_seconds_count)", 3)
    wait_query(prom, f'sum(herald_posts{{phase="Published",namespace="{namespace}"}})', 3)
    wait_query(prom, 'sum(herald_callbacks_total{result="applied"})', 3)
    # All three went out within a second of publishAt.
    assert query(prom, 'sum(herald_publish_lateness_seconds_bucket{le="1.0"})') == 3
    heartbeat = query(prom, "max(herald_dispatcher_heartbeat_timestamp_seconds)")
    assert heartbeat is not None and time.time() - heartbeat < 10

    # Every metric the dashboard and the alerts use exists in what was really scraped.
    names = set(httpx.get(f"{prom}/api/v1/label/__name__/values", timeout=5).json()["data"])
    scraped = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in names}
    missing = referenced_metrics() - scraped - {n.removesuffix("_total") for n in scraped}
    assert not missing, f"dashboard/alerts use metrics nobody exports: {missing}"


def test_liveness_probe_and_json_logs(posts: Posts, herald: Start, fake_n8n: FakeN8n) -> None:
    health = free_port()
    op = herald(fake_n8n.url, health_port=health, log_format="json")
    posts.create("logged", in_seconds(0))
    posts.wait("logged", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    probe = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5)
    assert probe.status_code == 200
    assert 0 <= probe.json()["dispatcher"] < 5

    lines = [json.loads(line) for line in op.log().splitlines() if line.startswith("{")]
    assert lines, op.log()[-2000:]
    about_post = [line for line in lines if line.get("name") == "logged"]
    assert about_post, "no log line about the post"
    for line in about_post:
        assert line["namespace"] == posts.namespace
        assert line["uid"] and "attempt" in line


def test_liveness_fails_fast_when_the_dispatcher_is_late(herald: Start, fake_n8n: FakeN8n) -> None:
    health = free_port()
    # Any heartbeat is older than a microsecond: the probe must say 500, at once.
    herald(fake_n8n.url, health_port=health, heartbeat_timeout_seconds=0.000001)
    started = time.monotonic()
    probe = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=10)
    assert probe.status_code == 500
    assert time.monotonic() - started < 2
