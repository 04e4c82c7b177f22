"""The Threads branch of the publish workflow: the Threads API (graph.threads.net).

GET /me (the Threads account behind the token) → GET /{threads-user-id}/threads (was this
post published already?) → POST /{threads-user-id}/threads: one TEXT container (the link
as link_attachment) or one IMAGE container per image (image_url: the post's original
https URL; Threads fetches it) → a CAROUSEL container for several →
POST /{threads-user-id}/threads_publish. The JavaScript is threads-prepare.js and the
shared facebook-graph*.js.
"""

from __future__ import annotations

from typing import Any

from net_facebook import Edge, Net, container_branch

CREDENTIAL = {"id": "HeraldThreadsAcc", "name": "Threads (Herald)"}


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[Edge], str, str]:
    """(nodes, edges, entry node, exit node) with the first node at (x, y)."""
    net = Net("Threads", CREDENTIAL)
    return container_branch(
        net, "threads-prepare", "id,username", "threads", "threads", "threads_publish", x, y
    )
