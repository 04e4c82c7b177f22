"""The optional ValidatingAdmissionPolicy (chart `admissionPolicy.enabled`, and
manifests/admission-policy.yaml), enforced by the real kube-apiserver.

It refuses spec edits to a ScheduledPost that is Publishing or Published, with a message
that says why and what to do instead; spec.suspend, metadata and status stay writable.
Posts are put into a phase by writing their status as the admin (the policy looks at the
stored phase only); the last test runs the real operator without the policy, to show the
fallback: the edit is stored and reported as not applied.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import REPO, ControlPlane
from tests.support.fake_n8n import FakeN8n
from tests.support.helm import CHART, Helm
from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e

POLICY_MANIFEST = REPO / "manifests" / "admission-policy.yaml"
RETRY_ANNOTATION = "herald.dev/retry-requested-at"


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(env=control_plane.env(), home=tmp_path_factory.mktemp("helm"))


def create_post(cp: ControlPlane, namespace: str, name: str, phase: str | None) -> None:
    post = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "publishAt": "2030-01-01T09:00:00Z",
            "channel": "linkedin",
            "account": "company-page",
            "content": {"text": "hello"},
        },
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(post))
    if phase is not None:
        set_status(cp, namespace, name, {"phase": phase, "attempt": 1})


def set_status(cp: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    cp.kubectl(
        "patch",
        "scheduledpost",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def patch(
    cp: ControlPlane, namespace: str, name: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "patch",
        "scheduledpost",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(body),
        check=False,
    )


def wait_until_enforced(cp: ControlPlane, namespace: str, timeout: float = 30) -> None:
    """Policies and bindings take effect asynchronously: probe with a refused edit."""
    create_post(cp, namespace, "probe", "Published")
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if patch(cp, namespace, "probe", {"spec": {"account": f"probe-{n}"}}).returncode != 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the admission policy was not enforced in {namespace} in {timeout}s")


def assert_refused(proc: subprocess.CompletedProcess[str], name: str, phase: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "denied request" in proc.stderr, proc.stderr
    assert f"ScheduledPost {name} is {phase}" in proc.stderr, proc.stderr
    assert "already sent to n8n" in proc.stderr, proc.stderr
    assert "create a new ScheduledPost" in proc.stderr, proc.stderr


def spec_of(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "scheduledpost", name, "-n", namespace, "-o", "json").stdout
    spec: dict[str, Any] = json.loads(out)["spec"]
    return spec


@pytest.fixture
def chart_policy(helm: Helm, control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    """The chart's policy, bound to `namespace` only (namespaced RBAC mode)."""
    release = f"adm-{namespace}"
    install = helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "admissionPolicy.enabled=true",
        "--set",
        "rbac.clusterWide=false",
        "--set",
        f"watchNamespaces={{{namespace}}}",
    )
    assert (
        f"Admission policy {release}-herald-freeze-dispatched-posts (Deny): spec edits to "
        "Publishing/Published posts are refused."
    ) in install.stdout
    try:
        wait_until_enforced(control_plane, namespace)
        yield f"{release}-herald-freeze-dispatched-posts"
    finally:
        helm.run("uninstall", release, "--namespace", namespace)


def test_policy_compares_every_spec_field_but_suspend(helm: Helm) -> None:
    """The compared fields come from the CRD (so the expressions type-check against its
    schema on clusters that check them): every one of them, except suspend."""
    crd = yaml.safe_load((REPO / "crds" / "scheduledposts.herald.dev.yaml").read_text())
    fields = set(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    )
    rendered = helm.run(
        "template",
        "herald",
        str(CHART),
        "--set",
        "admissionPolicy.enabled=true",
        "--show-only",
        "templates/admissionpolicy.yaml",
    ).stdout
    policy = next(
        d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ValidatingAdmissionPolicy"
    )
    (kept,) = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == "specKept"]
    compared = set(re.findall(r"object\.spec\.(\w+) ==", kept))
    assert "suspend" in fields
    assert compared == fields - {"suspend"}


@pytest.mark.parametrize("phase", ["Publishing", "Published"])
def test_spec_edits_of_a_sent_post_are_refused_saying_what_to_do(
    control_plane: ControlPlane, namespace: str, chart_policy: str, phase: str
) -> None:
    cp = control_plane
    create_post(cp, namespace, "sent", phase)
    before = spec_of(cp, namespace, "sent")
    edits = [
        {"spec": {"content": {"text": "changed"}}},  # a changed field
        {"spec": {"startingDeadlineSeconds": 60}},  # an added field
        {"spec": {"account": None}},  # a removed field
        {"spec": {"publishAt": "2031-01-01T09:00:00Z", "suspend": True}},
    ]
    for edit in edits:
        assert_refused(patch(cp, namespace, "sent", edit), "sent", phase)
    assert spec_of(cp, namespace, "sent") == before

    # A full replace (kubectl apply/replace) is an UPDATE too.
    obj = json.loads(cp.kubectl("get", "sp", "sent", "-n", namespace, "-o", "json").stdout)
    obj["spec"]["content"]["text"] = "replaced"
    replaced = cp.kubectl("replace", "-f", "-", input=json.dumps(obj), check=False)
    assert_refused(replaced, "sent", phase)


@pytest.mark.parametrize("phase", ["Publishing", "Published"])
def test_suspend_metadata_status_and_delete_stay_allowed(
    control_plane: ControlPlane, namespace: str, chart_policy: str, phase: str
) -> None:
    cp = control_plane
    create_post(cp, namespace, "sent", phase)
    # spec.suspend: keeps a Publishing post whose callback was lost from being retried.
    suspended = patch(cp, namespace, "sent", {"spec": {"suspend": True}})
    assert suspended.returncode == 0, suspended.stderr
    assert spec_of(cp, namespace, "sent")["suspend"] is True
    # Metadata: the manual retry annotation, labels.
    annotated = cp.kubectl(
        "annotate",
        "sp",
        "sent",
        "-n",
        namespace,
        "--overwrite",
        f"{RETRY_ANNOTATION}=2030-01-01T00:00:00Z",
        check=False,
    )
    assert annotated.returncode == 0, annotated.stderr
    labelled = cp.kubectl("label", "sp", "sent", "-n", namespace, "team=social", check=False)
    assert labelled.returncode == 0, labelled.stderr
    # Status: the operator's and the callback receiver's writes.
    set_status(cp, namespace, "sent", {"phase": "Failed", "message": "written by a test"})
    # Once it is no longer sent (Failed), its spec can be fixed before a retry.
    fixed = patch(cp, namespace, "sent", {"spec": {"content": {"text": "fixed"}}})
    assert fixed.returncode == 0, fixed.stderr
    set_status(cp, namespace, "sent", {"phase": phase})
    deleted = cp.kubectl("delete", "sp", "sent", "-n", namespace, check=False)
    assert deleted.returncode == 0, deleted.stderr


@pytest.mark.parametrize("phase", [None, "Scheduled", "Retrying", "Suspended", "Failed"])
def test_posts_not_yet_sent_can_be_edited(
    control_plane: ControlPlane, namespace: str, chart_policy: str, phase: str | None
) -> None:
    create_post(control_plane, namespace, "draft", phase)
    edited = patch(control_plane, namespace, "draft", {"spec": {"content": {"text": "v2"}}})
    assert edited.returncode == 0, edited.stderr
    assert spec_of(control_plane, namespace, "draft")["content"]["text"] == "v2"


def test_binding_covers_only_the_watched_namespaces(
    control_plane: ControlPlane, namespace: str, chart_policy: str
) -> None:
    """Elsewhere (and wherever the policy is off) the edit is accepted; the operator's
    SpecApplied=False, reason ChangedAfterDispatch, is then what tells the user."""
    other = f"{namespace}-other"
    control_plane.kubectl("create", "namespace", other)
    create_post(control_plane, other, "sent", "Published")
    edited = patch(control_plane, other, "sent", {"spec": {"content": {"text": "v2"}}})
    assert edited.returncode == 0, edited.stderr


def test_manifest_file_installs_the_same_policy(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """manifests/admission-policy.yaml as a user applies it (cluster-wide binding; removed
    again at the end, since other tests edit posts after dispatch on purpose)."""
    docs = [d for d in yaml.safe_load_all(POLICY_MANIFEST.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    applied = control_plane.kubectl("apply", "-f", str(POLICY_MANIFEST), check=False)
    assert applied.returncode == 0, applied.stderr
    try:
        wait_until_enforced(control_plane, namespace)
        create_post(control_plane, namespace, "sent", "Publishing")
        refused = patch(control_plane, namespace, "sent", {"spec": {"content": {"text": "x"}}})
        assert_refused(refused, "sent", "Publishing")
        allowed = patch(control_plane, namespace, "sent", {"metadata": {"labels": {"a": "b"}}})
        assert allowed.returncode == 0, allowed.stderr
    finally:
        control_plane.kubectl("delete", "-f", str(POLICY_MANIFEST), "--wait=true")
        # Removal takes effect asynchronously too: wait until edits pass again.
        deadline = time.monotonic() + 30
        while patch(control_plane, namespace, "probe", {"spec": {"account": "x"}}).returncode:
            assert time.monotonic() < deadline, "the policy was still enforced 30 s after removal"
            time.sleep(0.5)


def test_without_the_policy_the_operator_reports_the_edit_as_not_applied(
    herald: Callable[..., HeraldProcess], posts: Posts, fake_n8n: FakeN8n
) -> None:
    """The fallback when the policy is off: the edit is stored, the real operator says it
    had no effect (SpecApplied=False, ChangedAfterDispatch)."""
    herald(fake_n8n.url)
    posts.create("sent", in_seconds(0.5))
    # n8n accepted it (no callback comes, so the operator records the 2xx): really sent.
    posts.wait("sent", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    posts.patch_spec("sent", {"content": {"text": "changed after dispatch"}})

    def not_applied(status: dict[str, Any]) -> bool:
        return any(
            c["type"] == "SpecApplied"
            and c["status"] == "False"
            and c["reason"] == "ChangedAfterDispatch"
            for c in status.get("conditions", [])
        )

    status = posts.wait("sent", not_applied, what="SpecApplied=False")
    assert status["phase"] == "Publishing"
