"""Accounts as Kubernetes objects (issue #22), against the real API server and operator.

Who may post as whom: a post publishes only as a SocialAccount of its own namespace or a
ClusterSocialAccount that admits its namespace, resolved when it is claimed; every
refusal fails the post before anything reaches n8n. The chart's roles let people who may
post in a namespace read its accounts, not make new ones.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import Posts, in_seconds, parse_time
from tests.e2e.test_plugin import kubectl_herald
from tests.support.accounts import account
from tests.support.controlplane import REPO, ControlPlane
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.herald_proc import HeraldProcess

Start = Callable[..., HeraldProcess]
PUBLISHED = Reply(200, {"status": "published", "externalId": "urn:li:share:1"})


@pytest.fixture
def published_n8n() -> Iterator[FakeN8n]:
    """n8n answering `published` at once: a post that reaches it ends Published."""
    with FakeN8n(PUBLISHED) as fake:
        yield fake


def create(cp: ControlPlane, *objs: dict[str, Any]) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
    cp.kubectl("create", "-f", "-", input=json.dumps(items))


def team(cp: ControlPlane, prefix: str, **labels: str) -> str:
    """A namespace without any account (unlike the `namespace` fixture's)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    if labels:
        cp.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def start(herald: Start, n8n: FakeN8n, namespace: str, *teams: str) -> HeraldProcess:
    return herald(n8n.url, namespaces=json.dumps([namespace, *teams]))


def failed_with(posts: Posts, name: str, reason: str) -> dict[str, Any]:
    status = posts.wait_phase(name, "Failed", 30)
    assert status["lastError"]["code"] == reason, status
    assert status["lastError"]["class"] == "Permanent"
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Published"]["reason"] == reason
    return status


def test_a_post_naming_another_namespaces_account_fails_and_reaches_no_n8n(
    control_plane: ControlPlane,
    admin_client: httpx.Client,
    namespace: str,
    published_n8n: FakeN8n,
    herald: Start,
) -> None:
    team_a, team_b = team(control_plane, "team-a"), team(control_plane, "team-b")
    create(
        control_plane,
        account(team_a, "brand-a", channel="linkedin", handle="urn:li:organization:1000001"),
    )
    start(herald, published_n8n, namespace, team_a, team_b)
    b = Posts(control_plane, admin_client, team_b)
    b.create("as-team-a", in_seconds(0), account="brand-a")
    status = failed_with(b, "as-team-a", "UnknownAccount")
    assert "brand-a" in status["message"] and team_b in status["message"]
    b.wait_event("as-team-a", "UnknownAccount")
    # Team a's own post publishes as its account: the operator was working all along.
    a = Posts(control_plane, admin_client, team_a)
    a.create("own", in_seconds(0), account="brand-a")
    a.wait_phase("own", "Published", 30)
    assert a.status("own")["account"] == {
        "kind": "SocialAccount",
        "name": "brand-a",
        "handle": "urn:li:organization:1000001",
    }
    assert published_n8n.for_post("as-team-a") == []
    (sent,) = published_n8n.for_post("own")
    assert sent.body["account"]["handle"] == "urn:li:organization:1000001"


def test_a_cluster_account_admits_only_the_namespaces_it_selects(
    control_plane: ControlPlane,
    admin_client: httpx.Client,
    namespace: str,
    published_n8n: FakeN8n,
    herald: Start,
) -> None:
    team_b = team(control_plane, "team-b", team="b")
    shared = f"shared-{uuid.uuid4().hex[:6]}"
    create(
        control_plane,
        account(
            None,
            shared,
            channel="linkedin",
            handle="urn:li:organization:2000002",
            allowedNamespaces={"from": "Selector", "selector": {"matchLabels": {"team": "a"}}},
        ),
    )
    start(herald, published_n8n, namespace, team_b)
    b = Posts(control_plane, admin_client, team_b)
    b.create("refused", in_seconds(0), account=shared)
    status = failed_with(b, "refused", "AccountNotAllowed")
    assert shared in status["message"] and team_b in status["message"]
    assert published_n8n.for_post("refused") == []

    # Labelled team=a, the namespace is admitted at once (a refusal is never decided
    # from the operator's cache), and a new post publishes as the shared account.
    control_plane.kubectl("label", "namespace", team_b, "team=a", "--overwrite")
    b.create("admitted", in_seconds(0), account=shared)
    b.wait_phase("admitted", "Published", 30)
    (sent,) = published_n8n.for_post("admitted")
    assert sent.body["account"] == {
        "kind": "ClusterSocialAccount",
        "name": shared,
        "handle": "urn:li:organization:2000002",
        "channel": "linkedin",
    }
    assert b.status("refused")["phase"] == "Failed"  # a refusal is final


def test_a_raw_handle_in_spec_account_is_never_the_author(
    posts: Posts, published_n8n: FakeN8n, herald: Start
) -> None:
    """The issue's exploit: a URN in spec.account published as that company page. The
    namespace's default LinkedIn account even has that URN as its handle: spec.account
    still names an account object, and there is none of that name."""
    herald(published_n8n.url)
    posts.create("urn", in_seconds(0), account="urn:li:organization:2414183")
    status = failed_with(posts, "urn", "UnknownAccount")
    assert "urn:li:organization:2414183" in status["message"]
    assert posts.namespace in status["message"]
    time.sleep(1)  # anything sent would have arrived by now
    assert published_n8n.for_post("urn") == []


def test_channel_mismatch_and_suspended_account(
    posts: Posts, control_plane: ControlPlane, published_n8n: FakeN8n, herald: Start
) -> None:
    create(
        control_plane,
        account(posts.namespace, "on-x", channel="x", handle="@brand"),
        account(
            posts.namespace, "paused", channel="linkedin", handle="urn:li:person:9", suspend=True
        ),
    )
    herald(published_n8n.url)
    posts.create("wrong-network", in_seconds(0), account="on-x")
    failed_with(posts, "wrong-network", "AccountChannelMismatch")
    posts.create("held", in_seconds(0), account="paused")
    held = posts.wait(
        "held", lambda s: "suspended" in (s.get("message") or ""), 30, "held by its account"
    )
    assert held["phase"] == "Scheduled" and held["attempt"] == 0
    posts.wait_event("held", "AccountSuspended")
    assert published_n8n.for_post("wrong-network") == published_n8n.for_post("held") == []
    # The account's Ready condition says why.
    ready = json.loads(
        control_plane.kubectl(
            "get", "socialaccount", "paused", "-n", posts.namespace, "-o", "json"
        ).stdout
    )
    (cond,) = ready["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "False", "Suspended")


# --- RBAC: the chart's roles, as real requests of a user bound to them -------------------


def chart_role(cp: ControlPlane, role: str, prefix: str) -> str:
    """The chart's ClusterRole `herald-<role>` (from manifests/herald.yaml, which a test
    keeps identical to the chart), created under a name of this test's own and without
    the aggregation labels, so that nothing else in the session is affected."""
    docs = yaml.safe_load_all((REPO / "manifests" / "herald.yaml").read_text())
    (found,) = [
        d
        for d in docs
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == f"herald-{role}"
    ]
    name = f"{prefix}-herald-{role}"
    found["metadata"] = {"name": name}
    create(cp, found)
    return name


def as_user(cp: ControlPlane, user: str, *args: str) -> Any:
    return cp.kubectl(*args, f"--as={user}", check=False)


def test_herald_edit_may_post_and_read_accounts_but_not_create_one(
    control_plane: ControlPlane, namespace: str
) -> None:
    edit = chart_role(control_plane, "edit", namespace)
    admin = chart_role(control_plane, "admin", namespace)
    for user, role in (("poster", edit), ("owner", admin)):
        control_plane.kubectl(
            "create",
            "rolebinding",
            user,
            f"--clusterrole={role}",
            f"--user={user}",
            "-n",
            namespace,
        )
    new_account = json.dumps(
        account(namespace, "mine", channel="linkedin", handle="urn:li:organization:666")
    )
    post = json.dumps(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {"name": "allowed", "namespace": namespace},
            "spec": {"publishAt": in_seconds(86400), "content": {"text": "hi"}, "suspend": True},
        }
    )
    refused = control_plane.kubectl(
        "create", "-f", "-", "--as=poster", input=new_account, check=False
    )
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr and "socialaccounts" in refused.stderr
    made = control_plane.kubectl("create", "-f", "-", "--as=poster", input=post, check=False)
    assert made.returncode == 0, made.stderr
    listed = as_user(
        control_plane, "poster", "get", "socialaccounts", "-n", namespace, "-o", "name"
    )
    assert listed.returncode == 0 and "linkedin-default" in listed.stdout
    owned = control_plane.kubectl("create", "-f", "-", "--as=owner", input=new_account, check=False)
    assert owned.returncode == 0, owned.stderr
    cluster = json.dumps(
        account(None, f"{namespace}-c", channel="x", handle="@c", allowedNamespaces={"from": "All"})
    )
    denied = control_plane.kubectl("create", "-f", "-", "--as=owner", input=cluster, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr


def test_kubectl_herald_accounts_shows_what_a_namespace_may_use(
    control_plane: ControlPlane, namespace: str
) -> None:
    team_a = team(control_plane, "team-a", team="a")
    shared = f"shared-{uuid.uuid4().hex[:6]}"
    create(
        control_plane,
        account(team_a, "brand-a", channel="mastodon", handle="@brand@example.social"),
        account(
            None,
            shared,
            channel="linkedin",
            handle="urn:li:organization:3",
            allowedNamespaces={"from": "Selector", "selector": {"matchLabels": {"team": "a"}}},
        ),
    )
    out = kubectl_herald(control_plane, "accounts", "-n", team_a).stdout
    rows = [line.split()[:4] for line in out.splitlines()[1:]]
    assert ["SocialAccount", "brand-a", "mastodon", "@brand@example.social"] in rows
    assert ["ClusterSocialAccount", shared, "linkedin", "urn:li:organization:3"] in rows
    # The fixture's namespace is not labelled team=a: the shared account is not its.
    other = kubectl_herald(control_plane, "accounts", "-n", namespace).stdout
    assert shared not in other and "linkedin-default" in other
    explained = control_plane.kubectl("explain", "clustersocialaccounts.spec.allowedNamespaces")
    assert "Absent: none" in " ".join(explained.stdout.split())


def test_a_resource_quota_caps_how_many_posts_a_namespace_holds(
    control_plane: ControlPlane, admin_client: httpx.Client
) -> None:
    """Kubernetes' own object-count quota (README, Teams and brands): the API server
    refuses the post past it. Without kube-controller-manager here, the quota's status is
    set as its controller would (hard, used 0); the API server's admission counts on."""
    ns = team(control_plane, "quota")
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "posts", "namespace": ns},
        "spec": {"hard": {"count/scheduledposts.herald.dev": "2"}},
    }
    create(control_plane, quota)
    status = {
        "hard": {"count/scheduledposts.herald.dev": "2"},
        "used": {"count/scheduledposts.herald.dev": "0"},
    }
    response = admin_client.put(
        f"/api/v1/namespaces/{ns}/resourcequotas/posts/status",
        json={**quota, "metadata": {**quota["metadata"]}, "status": status},
    )
    assert response.status_code == 200, response.text
    posts = Posts(control_plane, admin_client, ns)
    posts.create("one", in_seconds(86400), suspend=True)
    posts.create("two", in_seconds(86400), suspend=True)
    body = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": "three", "namespace": ns},
        "spec": {"publishAt": in_seconds(86400), "content": {"text": "three"}},
    }
    refused = admin_client.post(
        f"/apis/herald.dev/v1alpha1/namespaces/{ns}/scheduledposts", json=body
    )
    assert refused.status_code == 403, refused.text
    assert "exceeded quota: posts" in refused.json()["message"]
    assert posts.names() == ["one", "two"]


# --- quotas: limits.postsPerHour, exact across a restart and two replicas ---------------


def away_from_the_hour() -> None:
    """The test's posts must fall in one clock hour: wait out the last 40 s of an hour."""
    left = 3600 - time.time() % 3600
    if left < 40:
        time.sleep(left + 1)


def over_quota(posts: Posts, names: list[str], n8n: FakeN8n) -> tuple[list[str], list[str]]:
    """Wait until each post was sent or waits for the next hour: (sent, waiting)."""

    def settled() -> bool:
        return all(
            n8n.for_post(name) or "QuotaExceeded" in (posts.status(name).get("message") or "")
            for name in names
        )

    deadline = time.monotonic() + 40
    while not settled():
        assert time.monotonic() < deadline, {n: posts.status(n) for n in names}
        time.sleep(0.2)
    sent = [n for n in names if n8n.for_post(n)]
    return sent, [n for n in names if n not in sent]


def test_posts_per_hour_is_exact_across_a_restart_and_two_replicas(
    posts: Posts, control_plane: ControlPlane, published_n8n: FakeN8n, herald: Start
) -> None:
    create(
        control_plane,
        account(
            posts.namespace,
            "capped",
            channel="linkedin",
            handle="urn:li:organization:5",
            limits={"postsPerHour": 2},
        ),
    )
    away_from_the_hour()
    first = herald(published_n8n.url)
    names = [f"burst-{i}" for i in range(4)]
    for name in names:
        posts.create(name, in_seconds(0), account="capped")
    sent, waiting = over_quota(posts, names, published_n8n)
    assert len(sent) == 2 and len(waiting) == 2
    hour = int(time.time() // 3600 + 1) * 3600
    for name in waiting:
        status = posts.status(name)
        assert status["phase"] == "Scheduled" and status["attempt"] == 0
        assert parse_time(status["nextAttemptAt"]) == hour
        posts.wait_event(name, "QuotaExceeded")
    # The account reports its use, and `kubectl herald accounts` shows it.
    usage = json.loads(
        control_plane.kubectl(
            "get", "socialaccount", "capped", "-n", posts.namespace, "-o", "json"
        ).stdout
    )["status"]["usage"]
    start = dt.datetime.fromtimestamp(hour - 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert usage == [{"window": "hour", "start": start, "posts": 2, "limit": 2}], usage
    table = kubectl_herald(control_plane, "accounts", "-n", posts.namespace).stdout
    [row] = [line for line in table.splitlines() if " capped " in line]
    assert row.endswith("2/2 this hour"), table

    # A restarted operator counts the slots the first one took: still 2.
    first.stop()
    herald(published_n8n.url)
    posts.create("after-restart", in_seconds(0), account="capped")
    assert over_quota(posts, ["after-restart"], published_n8n) == ([], ["after-restart"])

    # Two replicas, a fresh account, four posts at once: 2 requests.
    herald(published_n8n.url)
    create(
        control_plane,
        account(
            posts.namespace,
            "capped-2",
            channel="linkedin",
            handle="urn:li:organization:6",
            limits={"postsPerHour": 2},
        ),
    )
    pair = [f"pair-{i}" for i in range(4)]
    for name in pair:
        posts.create(name, in_seconds(3), account="capped-2")
    sent, waiting = over_quota(posts, pair, published_n8n)
    assert len(sent) == 2 and len(waiting) == 2
    # 2 + 0 + 2 posts in all (a post retried after a slow answer is still one post).
    assert len({r.body["name"] for r in published_n8n.snapshot()}) == 4
