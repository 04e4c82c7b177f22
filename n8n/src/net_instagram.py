"""The Instagram branch of the publish workflow: Instagram API with Instagram Login.

GET /me (the professional account behind the token) → GET /{ig-user-id}/media (was this
post published already?) → POST /{ig-user-id}/media per image (image_url: the post's
original https URL; Instagram fetches it) → a CAROUSEL container for several →
POST /{ig-user-id}/media_publish. At least one image: a post without one fails before any
request. The JavaScript is instagram-prepare.js and the shared facebook-graph*.js.
"""

from __future__ import annotations

from typing import Any

from net_facebook import Edge, Net, container_branch

CREDENTIAL = {"id": "HeraldInstagram1", "name": "Instagram (Herald)"}


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[Edge], str, str]:
    """(nodes, edges, entry node, exit node) with the first node at (x, y)."""
    net = Net("Instagram", CREDENTIAL, text_field="caption")
    return container_branch(
        net, "instagram-prepare", "user_id,username", "media", "media", "media_publish", x, y
    )
