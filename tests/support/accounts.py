"""SocialAccounts for tests: every post needs an account (issue #22).

`default_accounts(namespace)` is one SocialAccount per channel, each the namespace's
default for its channel (spec.default) through target `default`, so a post without
spec.account publishes as it did before accounts existed. The `namespace` fixture creates
them in every test namespace; tests of account resolution use namespaces without them.
"""

from __future__ import annotations

from typing import Any

from herald.models import API_VERSION, Channel
from tests.support.n8n_server import LINKEDIN_AUTHOR

DEFAULT_HANDLES = {
    Channel.LINKEDIN: LINKEDIN_AUTHOR,
    Channel.X: "@herald_test",
    Channel.MASTODON: "@herald@mastodon.test",
    Channel.BLUESKY: "herald.bsky.test",
    Channel.FACEBOOK: "1000000000001",
    Channel.INSTAGRAM: "17840000000000001",
    Channel.THREADS: "1000000000003",
}


def account(namespace: str | None, name: str, **spec: Any) -> dict[str, Any]:
    """A SocialAccount (namespace set) or ClusterSocialAccount (namespace None)."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    kind = "SocialAccount" if namespace is not None else "ClusterSocialAccount"
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def default_accounts(namespace: str, target: str = "default") -> list[dict[str, Any]]:
    return [
        account(
            namespace,
            f"{channel.value}-default",
            channel=channel.value,
            target=target,
            handle=handle,
            default=True,
        )
        for channel, handle in DEFAULT_HANDLES.items()
    ]
