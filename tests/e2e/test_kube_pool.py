"""The API-server client keeps its connections: once warm, a steady load opens no new TCP
connection and performs no new TLS handshake (counted by `on_connect`, which both processes
export as herald_kube_connections_total), against the real API server."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from herald.kube import KubeClient, discover
from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

SPIKE = 64
"""Callers at once: like the sidecar when n8n's callbacks come in a clump (the bench's
n8n calls back 64 at a time), more than the client's pool."""
POOL = 16
"""KubeClient's default pool: one connection per dispatch slot at the default concurrency."""
LULL = 6.0
"""A pause between clumps longer than httpx's default 5 s keep-alive."""


async def test_a_steady_load_opens_no_connection_after_warm_up(
    control_plane: ControlPlane, namespace: str, posts: Posts
) -> None:
    posts.create("seen", in_seconds(3600), suspend=True)
    opened: Counter[str] = Counter()
    client = KubeClient(
        discover(str(control_plane.kubeconfig)), on_connect=lambda kind: opened.update([kind])
    )
    try:

        async def clump(rounds: int) -> None:
            """SPIKE callers at once, each reading the post `rounds` times in a row."""

            async def caller() -> None:
                for _ in range(rounds):
                    obj = await client.get_post(namespace, "seen")
                    assert obj["metadata"]["name"] == "seen"

            await asyncio.gather(*(caller() for _ in range(SPIKE)))

        await clump(1)  # warm-up
        warm = opened.copy()
        assert 0 < warm["tcp"] == warm["tls"] <= POOL, "the spike went past the pool"
        await asyncio.sleep(LULL)
        await clump(3)
        assert opened == warm, f"new connections after warm-up: {opened - warm}"
    finally:
        await client.aclose()
