"""`kubectl herald` end to end: the real kubectl finds the installed `kubectl-herald` on PATH
and runs it against the real API server, with a real operator and sidecar moving the posts."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from herald.models import RETRY_ANNOTATION
from tests.e2e.conftest import Posts, in_seconds, parse_time
from tests.support.controlplane import ControlPlane, require_binary
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]
Sidecar = Callable[..., tuple[HeraldProcess, str]]
VENV_BIN = Path(sys.executable).parent  # where pip put the kubectl-herald console script


def kubectl_herald(
    cp: ControlPlane, *args: str, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = cp.env()
    environ["PATH"] = f"{VENV_BIN}{os.pathsep}{environ['PATH']}"
    environ.update(env or {})
    proc = subprocess.run(
        [require_binary("kubectl"), "herald", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, f"kubectl herald {' '.join(args)}: {proc.stderr}"
    return proc


def refused(cp: ControlPlane, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail; return its one-line error."""
    proc = kubectl_herald(cp, *args, ok=False, env=env)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def rows(output: str) -> dict[str, list[str]]:
    """`list` output by post name (the NAME column is the first, or second with -A)."""
    lines = output.splitlines()
    header = lines[0].split()
    at = header.index("NAME")
    return {line.split()[at]: line.split() for line in lines[1:]}


def test_plugin_is_found_by_kubectl(control_plane: ControlPlane) -> None:
    environ = control_plane.env()
    environ["PATH"] = f"{VENV_BIN}{os.pathsep}{environ['PATH']}"
    listed = subprocess.run(
        [require_binary("kubectl"), "plugin", "list"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert str(VENV_BIN / "kubectl-herald") in listed.stdout, listed.stdout + listed.stderr
    usage = kubectl_herald(control_plane, "--help").stdout
    for verb in ("list", "describe", "retry", "suspend", "resume", "reschedule", "publish-now"):
        assert verb in usage


def test_every_subcommand_against_a_running_operator(
    control_plane: ControlPlane,
    namespace: str,
    posts: Posts,
    herald: Start,
    sidecar: Sidecar,
) -> None:
    cp, ns = control_plane, namespace
    _, callback_base = sidecar()
    with FakeN8n(auto_callback=True) as n8n:
        n8n.script("broken", Reply(400, {"message": "text too long for channel"}))
        # Routine Events on, so `describe` has the whole story to show.
        herald(n8n.url, callback_url=callback_base, routine_events="true")
        posts.create("done", in_seconds(1))
        posts.create("broken", in_seconds(1))
        posts.create("later", in_seconds(3600))
        posts.create("paused", in_seconds(60), suspend=True)
        posts.wait_phase("done", "Published", timeout=20)
        posts.wait_phase("broken", "Failed", timeout=20)
        posts.wait_phase("later", "Pending")  # written first by its claim, in an hour
        posts.wait_phase("paused", "Suspended")

        # list: phase, when, attempts, last error; -n, -A, --phase
        listed = rows(kubectl_herald(cp, "list", "-n", ns).stdout)
        assert listed["done"][1:3] == ["Published", "published"]
        _, phase, failed, _, ago, attempts, error = listed["broken"][:7]
        assert (phase, failed, ago, attempts, error) == ("Failed", "failed", "ago", "1", "HTTP400:")
        assert listed["later"][1:4] == ["Pending", "due", "in"]
        assert listed["later"][4] in ("59m", "60m"), listed["later"]
        assert listed["paused"][1:3] == ["Suspended", "suspended"]
        failed_only = rows(kubectl_herald(cp, "list", "-n", ns, "--phase", "failed").stdout)
        assert list(failed_only) == ["broken"]
        everywhere = kubectl_herald(cp, "list", "-A").stdout
        assert everywhere.splitlines()[0].startswith("NAMESPACE")
        assert any(line.split()[:2] == [ns, "broken"] for line in everywhere.splitlines())
        empty = kubectl_herald(cp, "list", "-n", ns, "--phase", "Retrying")
        assert (empty.stdout, empty.stderr) == ("", f"No resources found in {ns} namespace.\n")

        # describe: status, attempt history, conditions, recent Events
        described = kubectl_herald(cp, "describe", "broken", "-n", ns).stdout
        assert re.search(r"^Phase: +Failed$", described, re.M), described
        assert re.search(r"^Last error: +Permanent HTTP400 .*too long", described, re.M)
        history = described.split("Attempt history:\n")[1].split("Conditions:")[0]
        assert history.splitlines()[1].split()[:2] == ["1", "Permanent"], history
        conditions = described.split("Conditions:\n")[1].split("Events:")[0]
        assert any(line.split()[:2] == ["Published", "False"] for line in conditions.splitlines())
        events = described.split("Events:\n")[1]
        assert {"Failed"} <= {line.split()[1] for line in events.splitlines()[1:]}, events

        # retry: refused for a Published post, applied to a Failed one
        error = refused(cp, "retry", "done", "-n", ns)
        assert "cannot retry done: it was published" in error and "nothing to retry" in error
        assert kubectl_herald(cp, "retry", "broken", "-n", ns).stdout == (
            "scheduledpost.herald.dev/broken retry requested\n"
        )
        requested = posts.get("broken")["metadata"]["annotations"][RETRY_ANNOTATION]
        status = posts.wait_phase("broken", "Published", timeout=20)
        assert status["lastHandledRetryRequest"] == requested
        assert "(handled)" in kubectl_herald(cp, "describe", "broken", "-n", ns).stdout

        # suspend / resume
        kubectl_herald(cp, "suspend", "later", "-n", ns)
        posts.wait_phase("later", "Suspended")
        assert "already suspended" in refused(cp, "suspend", "later", "-n", ns)
        assert "cannot suspend done" in refused(cp, "suspend", "done", "-n", ns)
        kubectl_herald(cp, "resume", "later", "-n", ns)
        posts.wait_phase("later", "Scheduled")
        assert "is not suspended" in refused(cp, "resume", "later", "-n", ns)

        # reschedule: +duration and RFC 3339; refused once published
        before = dt.datetime.now(dt.UTC)
        out = kubectl_herald(cp, "reschedule", "later", "--at", "+2h", "-n", ns).stdout
        assert out.startswith("scheduledpost.herald.dev/later rescheduled to ")
        publish_at = parse_time(posts.get("later")["spec"]["publishAt"])
        assert abs(publish_at - (before.timestamp() + 7200)) < 30
        posts.wait(
            "later",
            lambda s: (
                s.get("nextAttemptAt") and abs(parse_time(s["nextAttemptAt"]) - publish_at) < 1
            ),
            what="nextAttemptAt follows the new publishAt",
        )
        kubectl_herald(cp, "reschedule", "later", "--at", "2031-01-01T09:00:00+01:00", "-n", ns)
        assert posts.get("later")["spec"]["publishAt"] == "2031-01-01T08:00:00Z"
        assert "it was published" in refused(cp, "reschedule", "done", "--at", "+1h", "-n", ns)
        bad_at = refused(cp, "reschedule", "later", "--at", "tomorrow", "-n", ns)
        assert "RFC 3339" in bad_at

        # publish-now: refused while suspended, then publishes at once through the sidecar
        assert "resume" in refused(cp, "publish-now", "paused", "-n", ns)
        kubectl_herald(cp, "publish-now", "later", "-n", ns)
        posts.wait_phase("later", "Published", timeout=20)
        assert "it was published" in refused(cp, "publish-now", "later", "-n", ns)

    # unknown posts, for every verb that names one
    for verb in ("describe", "retry", "suspend", "resume", "publish-now"):
        error = refused(cp, verb, "no-such-post", "-n", ns)
        assert error == f'error: scheduledpost "no-such-post" not found in namespace "{ns}"'
    assert "not found" in refused(cp, "reschedule", "no-such-post", "--at", "+1m", "-n", ns)


def test_kubeconfig_and_context_flags(
    control_plane: ControlPlane, namespace: str, posts: Posts, tmp_path: Path
) -> None:
    """--kubeconfig and --context as kubectl's; the namespace defaults to the context's."""
    posts.create("in-context", in_seconds(3600))
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    context = dict(config["contexts"][0])
    context["name"] = "herald-ns"
    context["context"] = {**context["context"], "namespace": namespace}
    config["contexts"].append(context)
    path = tmp_path / "elsewhere.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    broken_env = {"KUBECONFIG": str(tmp_path / "does-not-exist")}
    out = kubectl_herald(
        control_plane, "--kubeconfig", str(path), "--context", "herald-ns", "list", env=broken_env
    ).stdout
    assert list(rows(out)) == ["in-context"]
    # The current context's namespace is "default", where nothing was created.
    empty = kubectl_herald(control_plane, "list", "--kubeconfig", str(path), env=broken_env)
    assert empty.stderr == "No resources found in default namespace.\n"
    # No credentials at all: a clear one-line error.
    error = refused(control_plane, "list", env=broken_env)
    assert "no kubeconfig at" in error
    error = refused(control_plane, "list", "--kubeconfig", str(path), "--context", "nope")
    assert "nope" in error


def _apply_posts(cp: ControlPlane, ns: str) -> None:
    docs = [
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {
                "publishAt": in_seconds(3600),
                "channel": channel,
                "suspend": True,
                "content": {"text": f"Post {name}"},
            },
        }
        for name, app, channel in (
            ("alpha", "blog", "linkedin"),
            ("beta", "shop", "mastodon"),
            ("gamma", "blog", "mastodon"),
        )
    ]
    cp.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )


def kubectl(cp: ControlPlane, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [require_binary("kubectl"), *args],
        env=cp.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_printers_and_selectors_match_kubectl(control_plane: ControlPlane, namespace: str) -> None:
    """-o json|yaml|name print what `kubectl get` prints; -l and --field-selector select
    what kubectl's select; -o wide adds columns."""
    cp, ns = control_plane, namespace
    _apply_posts(cp, ns)
    # -o json: the same text as kubectl's, byte for byte; -o yaml: the same document.
    ours = kubectl_herald(cp, "list", "-n", ns, "-o", "json").stdout
    assert ours == kubectl(cp, "get", "sp", "-n", ns, "-o", "json").stdout
    listed_yaml = yaml.safe_load(kubectl_herald(cp, "list", "-n", ns, "-o", "yaml").stdout)
    assert listed_yaml == json.loads(ours)
    assert listed_yaml["kind"] == "List" and len(listed_yaml["items"]) == 3
    one = kubectl_herald(cp, "describe", "beta", "-n", ns, "-o", "json").stdout
    assert one == kubectl(cp, "get", "sp", "beta", "-n", ns, "-o", "json").stdout
    names = kubectl_herald(cp, "list", "-n", ns, "-o", "name").stdout
    assert names == kubectl(cp, "get", "sp", "-n", ns, "-o", "name").stdout
    assert names.splitlines()[0] == "scheduledpost.herald.dev/alpha"

    def listed(*flags: str) -> list[str]:
        out = kubectl_herald(cp, "list", "-n", ns, "-o", "name", *flags).stdout
        return [line.split("/")[1] for line in out.splitlines()]

    assert listed("-l", "app=blog") == ["alpha", "gamma"]
    assert listed("--field-selector", "spec.channel=mastodon") == ["beta", "gamma"]
    assert listed("-l", "app=blog", "--field-selector", "spec.channel=mastodon") == ["gamma"]
    # A bad selector: the API server's message, exit 1 as kubectl's.
    bad = refused(cp, "list", "-n", ns, "--field-selector", "spec.content.text=x")
    assert "field label not supported" in bad
    theirs = kubectl(cp, "get", "sp", "-n", ns, "--field-selector", "spec.content.text=x", ok=False)
    assert theirs.returncode == 1

    wide = kubectl_herald(cp, "list", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[4:8] == ["CHANNEL", "TARGET", "PUBLISH", "AT"]
    assert wide[2].split()[4:6] == ["mastodon", "default"]


def test_describe_selects_as_kubectl_describe(control_plane: ControlPlane, namespace: str) -> None:
    """describe without a name describes every post -l/--field-selector/-A pick, as
    `kubectl describe` does; a name with a selector is refused with kubectl's words."""
    cp, ns = control_plane, namespace
    _apply_posts(cp, ns)
    text = kubectl_herald(cp, "describe", "-n", ns, "-l", "app=blog").stdout
    assert re.findall(r"^Name: +(\S+)$", text, re.M) == ["alpha", "gamma"], text
    assert text.count("Events:\n") == 2
    picked = kubectl_herald(cp, "describe", "-n", ns, "--field-selector", "spec.channel=mastodon")
    assert re.findall(r"^Name: +(\S+)$", picked.stdout, re.M) == ["beta", "gamma"]
    # -A: across namespaces, the same objects `kubectl get -A` selects.
    everywhere = kubectl_herald(cp, "describe", "-A", "-l", "app=blog", "-o", "json").stdout
    theirs = kubectl(cp, "get", "sp", "-A", "-l", "app=blog", "-o", "json").stdout
    assert json.loads(everywhere)["items"] == json.loads(theirs)["items"]
    assert {i["metadata"]["name"] for i in json.loads(everywhere)["items"]} >= {"alpha", "gamma"}
    both = refused(cp, "describe", "alpha", "-n", ns, "-l", "app=blog")
    assert "name cannot be provided when a selector is specified" in both
    none = kubectl_herald(cp, "describe", "-n", ns, "-l", "app=none")
    assert none.stderr == f"No resources found in {ns} namespace.\n"


def test_impersonation_timeout_and_exit_codes(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """--as/--as-group as kubectl's (the API server's impersonation), --request-timeout,
    and the exit codes kubectl gives for the same failures."""
    cp, ns = control_plane, namespace
    _apply_posts(cp, ns)
    denied = refused(cp, "list", "-n", ns, "--as", "jane")
    assert "403" in denied and "jane" in denied, denied
    assert kubectl(cp, "get", "sp", "-n", ns, "--as", "jane", ok=False).returncode == 1
    allowed = kubectl_herald(cp, "list", "-n", ns, "--as", "jane", "--as-group", "system:masters")
    assert list(rows(allowed.stdout)) == ["alpha", "beta", "gamma"]
    denied = refused(cp, "suspend", "alpha", "-n", ns, "--as", "jane", "--as-group", "nobody")
    assert "403" in denied
    # No answer in time: an API server address that accepts connections and never
    # answers (a listening socket nobody reads); kubectl's flag, kubectl's exit code.
    config = yaml.safe_load(cp.kubeconfig.read_text())
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{silent.getsockname()[1]}"
        path = tmp_path / "silent.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        started = time.monotonic()
        late = refused(cp, "list", "--kubeconfig", str(path), "--request-timeout", "1s")
        took = time.monotonic() - started
        assert "--request-timeout=1s" in late, late
        assert took < 20, took
        theirs = kubectl(
            cp, "get", "sp", "--kubeconfig", str(path), "--request-timeout", "1s", ok=False
        )
        assert theirs.returncode == 1
    # Not found, a usage error: 1, as kubectl; nothing to list: 0.
    assert kubectl(cp, "get", "sp", "nope", "-n", ns, ok=False).returncode == 1
    assert kubectl_herald(cp, "describe", "nope", "-n", ns, ok=False).returncode == 1
    assert kubectl(cp, "get", "sp", "--no-such-flag", ok=False).returncode == 1
    usage = kubectl_herald(cp, "list", "--no-such-flag", ok=False)
    assert usage.returncode == 1 and usage.stderr.startswith("error: "), usage.stderr
    empty = kubectl_herald(cp, "list", "-n", ns, "-l", "app=none")
    assert empty.stderr == f"No resources found in {ns} namespace.\n"


def test_kubectl_completes_kubectl_herald(control_plane: ControlPlane, namespace: str) -> None:
    """kubectl's own completion (`kubectl __complete`, what its bash/zsh scripts call)
    completes `kubectl herald …` through kubectl_complete-herald: verbs, flag values, posts."""
    cp, ns = control_plane, namespace
    _apply_posts(cp, ns)
    environ = cp.env()
    environ["PATH"] = f"{VENV_BIN}{os.pathsep}{environ['PATH']}"

    def complete(*words: str) -> list[str]:
        proc = subprocess.run(
            [require_binary("kubectl"), "__complete", "herald", *words],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lines = proc.stdout.splitlines()
        assert lines[-1] == ":4", proc.stdout + proc.stderr  # no file names
        return lines[:-1]

    assert complete("re") == ["retry", "resume", "reschedule"]
    assert complete("list", "-o", "") == ["json", "yaml", "name", "wide"]
    assert complete("describe", "--namespace", ns, "") == ["alpha", "beta", "gamma"]
    assert complete("suspend", "--namespace", ns, "g") == ["gamma"]
    assert ns in complete("list", "--namespace", "")
    script = kubectl_herald(cp, "completion", "bash").stdout
    assert "complete -F _kubectl_herald kubectl-herald" in script
