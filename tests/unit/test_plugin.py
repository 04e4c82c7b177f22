"""kubectl herald's pure parts: durations, columns, --at, which verb fits which phase, patches,
kubectl's printers (-o json|yaml|name|wide), the command line and shell completion."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald import plugin
from herald.models import RETRY_ANNOTATION
from herald.plugin import PluginError

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def later(seconds: float) -> str:
    return ago(-seconds)


def post(
    phase: str | None = "Scheduled",
    *,
    name: str = "launch",
    namespace: str = "default",
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "u-1",
            "resourceVersion": "42",
            "annotations": annotations or {},
        },
        "spec": {"publishAt": later(3600), "content": {"text": "hi"}, **(spec or {})},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, **status}
    return obj


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (42 * 60, "42m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 10 * 60, "5h10m"),
        (30 * 3600, "30h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (120 * 86400, "120d"),
        (3 * 365 * 86400 + 20 * 86400, "3y20d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert plugin.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        (post(None, spec={"publishAt": later(300)}), "due in 5m"),
        (post("Scheduled", nextAttemptAt=later(90)), "due in 90s"),
        (post("Scheduled", nextAttemptAt=ago(3)), "due now"),
        (post("Retrying", attempt=2, nextAttemptAt=later(60)), "retry in 60s"),
        (post("Publishing", attempt=1, claimedAt=ago(12)), "publishing since 12s ago"),
        (post("Published", publishedAt=ago(3 * 86400)), "published 3d ago"),
        (post("Failed", lastError={"at": ago(600), "code": "HTTP400"}), "failed 10m ago"),
        (post("Suspended", spec={"suspend": True}), "suspended"),
        (post(None, spec={"suspend": True}), "suspended"),
    ],
)
def test_when_column(obj: dict[str, Any], text: str) -> None:
    assert plugin.when(obj, NOW) == text


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (None, ""),
        ({"code": "HTTP500", "message": "bad gateway"}, "HTTP500: bad gateway"),
        ({"code": "Timeout", "message": "no\nanswer   in 5s"}, "Timeout: no answer in 5s"),
        ({"code": "HTTP400", "message": "x" * 100}, "HTTP400: " + "x" * 50 + "…"),
    ],
)
def test_last_error_column(error: dict[str, str] | None, text: str) -> None:
    obj = post("Failed", lastError=error) if error else post("Scheduled")
    assert plugin.last_error(obj) == text


def test_list_table() -> None:
    objs = [
        post("Failed", name="b", attempt=5, lastError={"code": "HTTP400", "message": "too long"}),
        post("Scheduled", name="a", nextAttemptAt=later(300), attempt=0),
        post("Published", name="c", namespace="blog", publishedAt=ago(60), attempt=1),
    ]
    objs[0]["status"]["lastError"]["at"] = ago(7200)
    assert plugin.list_table(objs[:2], NOW, all_namespaces=False) == (
        "NAME   PHASE       WHEN              ATTEMPTS   LAST ERROR\n"
        "a      Scheduled   due in 5m         0\n"
        "b      Failed      failed 120m ago   5          HTTP400: too long\n"
    )
    wide = plugin.list_table(objs, NOW, all_namespaces=True).splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "PHASE", "WHEN", "ATTEMPTS", "LAST", "ERROR"]
    assert [line.split()[:2] for line in wide[1:]] == [
        ["blog", "c"],
        ["default", "a"],
        ["default", "b"],
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+90s", NOW + dt.timedelta(seconds=90)),
        ("+15m", NOW + dt.timedelta(minutes=15)),
        ("+2h30m", NOW + dt.timedelta(hours=2, minutes=30)),
        ("+1d", NOW + dt.timedelta(days=1)),
        ("+1d2h3m4s", NOW + dt.timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("2026-12-01T09:00:00Z", dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)),
        ("2026-12-01T10:00:00+01:00", dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)),
        (" 2026-12-01T09:00:00.250Z ", dt.datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=dt.UTC)),
    ],
)
def test_parse_at(text: str, expected: dt.datetime) -> None:
    assert plugin.parse_at(text, NOW) == expected


@pytest.mark.parametrize(
    "text",
    ["", "+", "90s", "+-5m", "+5w", "tomorrow", "2026-12-01T09:00:00", "2026-13-01T09:00:00Z"],
)
def test_parse_at_rejects(text: str) -> None:
    with pytest.raises(PluginError, match="RFC 3339 time with a UTC offset"):
        plugin.parse_at(text, NOW)


SUSPENDED = {"suspend": True}
# verb, phase, spec, None when allowed or a fragment of the refusal
MATRIX: list[tuple[str, str | None, dict[str, Any], str | None]] = [
    ("retry", "Failed", {}, None),
    ("retry", "Retrying", {}, None),
    ("retry", "Failed", SUSPENDED, None),  # the operator resets it into Suspended
    ("retry", "Published", {}, "was published 5m ago: there is nothing to retry"),
    ("retry", "Publishing", {}, "a failed attempt is retried automatically"),
    ("retry", "Scheduled", {}, "`kubectl herald publish-now launch` sends it early"),
    ("retry", "Suspended", SUSPENDED, "`kubectl herald resume launch`"),
    ("retry", None, {}, "the operator has not accepted it yet"),
    ("suspend", "Scheduled", {}, None),
    ("suspend", "Retrying", {}, None),
    ("suspend", None, {}, None),
    ("suspend", "Suspended", SUSPENDED, "already suspended"),
    ("suspend", "Publishing", {}, "cannot be called back"),
    ("suspend", "Published", {}, "cannot suspend launch: it was published"),
    ("suspend", "Failed", {}, "not dispatched again unless retried"),
    ("resume", "Suspended", SUSPENDED, None),
    ("resume", "Failed", SUSPENDED, None),
    ("resume", "Scheduled", {}, "is not suspended"),
    ("resume", "Published", {}, "is not suspended"),
    ("reschedule", "Scheduled", {}, None),
    ("reschedule", "Retrying", {}, None),
    ("reschedule", "Suspended", SUSPENDED, None),
    ("reschedule", None, {}, None),
    ("reschedule", "Publishing", {}, "cannot reschedule launch: it is being published"),
    ("reschedule", "Published", {}, "cannot reschedule launch: it was published 5m ago"),
    ("reschedule", "Failed", {}, "`kubectl herald retry launch` tries again now"),
    ("publish-now", "Scheduled", {}, None),
    ("publish-now", None, {}, None),
    ("publish-now", "Suspended", SUSPENDED, "it is suspended; `kubectl herald resume launch`"),
    ("publish-now", None, SUSPENDED, "it is suspended"),
    ("publish-now", "Retrying", {}, "it is retrying (next attempt in 60s)"),
    ("publish-now", "Failed", {}, "`kubectl herald retry launch`"),
    ("publish-now", "Publishing", {}, "attempt 1 is in flight"),
    ("publish-now", "Published", {}, "cannot publish now launch: it was published"),
]


@pytest.mark.parametrize(("verb", "phase", "spec", "refused"), MATRIX)
def test_which_verb_fits_which_phase(
    verb: str, phase: str | None, spec: dict[str, Any], refused: str | None
) -> None:
    obj = post(
        phase, spec=spec, attempt=1, publishedAt=ago(300), nextAttemptAt=later(60), claimedAt=ago(1)
    )
    reason = plugin.refusal(verb, obj, NOW)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason, reason
        assert "\n" not in reason


@pytest.mark.parametrize(
    ("verb", "at", "expected"),
    [
        ("retry", None, {"metadata": {"annotations": {RETRY_ANNOTATION: "2026-06-01T12:00:00Z"}}}),
        ("suspend", None, {"spec": {"suspend": True}}),
        ("resume", None, {"spec": {"suspend": False}}),
        ("publish-now", None, {"spec": {"publishAt": "2026-06-01T12:00:00Z"}}),
        (
            "reschedule",
            NOW + dt.timedelta(minutes=5, milliseconds=250),
            {"spec": {"publishAt": "2026-06-01T12:05:00.250Z"}},
        ),
    ],
)
def test_patches_are_conditional_on_the_checked_version(
    verb: str, at: dt.datetime | None, expected: dict[str, Any]
) -> None:
    patch = plugin.patch_for(verb, post("Scheduled"), NOW, at)
    assert patch["metadata"].pop("resourceVersion") == "42"
    if not patch["metadata"]:
        del patch["metadata"]
    assert patch == expected


def test_describe() -> None:
    obj = post(
        "Failed",
        spec={"account": "company-page", "publishAt": ago(3600)},
        annotations={RETRY_ANNOTATION: "2026-06-01T11:00:00Z"},
        attempt=2,
        message="Failed: HTTP400",
        lastHandledRetryRequest="2026-06-01T11:00:00Z",
        lastError={"class": "Permanent", "code": "HTTP400", "message": "too long", "at": ago(60)},
        history=[
            {
                "attempt": 1,
                "claimedAt": ago(1000),
                "finishedAt": ago(998),
                "outcome": "Transient",
                "code": "HTTP503",
                "message": "unavailable",
            },
            {
                "attempt": 2,
                "claimedAt": ago(62),
                "finishedAt": ago(60),
                "outcome": "Permanent",
                "code": "HTTP400",
            },
        ],
        conditions=[
            {
                "type": "Published",
                "status": "False",
                "reason": "PermanentFailure",
                "message": "too long",
                "lastTransitionTime": ago(60),
            }
        ],
    )
    events = [
        {"type": "Normal", "reason": f"E{i}", "message": f"m{i}", "lastTimestamp": ago(100 - i)}
        for i in range(12)
    ]
    events.append(
        {
            "type": "Warning",
            "reason": "Failed",
            "message": "HTTP400: too long",
            "eventTime": ago(1),
            "reportingComponent": "herald.dev/herald-operator",
        }
    )
    text = plugin.describe(obj, events, NOW)
    lines = text.splitlines()
    assert lines[:3] == [
        "Name:            launch",
        "Namespace:       default",
        "Phase:           Failed",
    ]
    assert "Channel:         linkedin (account company-page)" in lines
    assert "Last error:      Permanent HTTP400 (60s ago): too long" in lines
    assert "Retry requested: 2026-06-01T11:00:00Z (handled)" in lines
    history = lines[lines.index("Attempt history:") + 1 : lines.index("Conditions:")]
    assert history[0].split() == ["#", "OUTCOME", "FINISHED", "TOOK", "CODE", "MESSAGE"]
    assert history[1].split() == ["1", "Transient", "16m", "ago", "2s", "HTTP503", "unavailable"]
    assert history[2].split() == ["2", "Permanent", "60s", "ago", "2s", "HTTP400"]
    conditions = lines[lines.index("Conditions:") + 1 : lines.index("Events:")]
    assert conditions[1].split()[:3] == ["Published", "False", "PermanentFailure"]
    shown = lines[lines.index("Events:") + 2 :]
    assert len(shown) == plugin.EVENTS_SHOWN, "only the most recent Events"
    assert shown[-1].split()[:5] == ["Warning", "Failed", "1s", "ago", "herald.dev/herald-operator"]
    assert shown[0].split()[1] == "E3"


def test_describe_a_new_post() -> None:
    lines = plugin.describe(post(None), [], NOW).splitlines()
    assert "Phase:      - (not yet seen by the operator)" in lines
    assert "Publish at: 2026-06-01T13:00:00Z (in 60m)" in lines
    assert lines[-6:] == [
        "Attempt history:",
        "  <none>",
        "Conditions:",
        "  <none>",
        "Events:",
        "  <none>",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list"], {"verb": "list", "all_namespaces": False, "phase": None}),
        (["list", "-A", "--phase", "failed"], {"all_namespaces": True, "phase": "Failed"}),
        (["-n", "blog", "list"], {"namespace": "blog"}),
        (["list", "-n", "blog", "--context", "prod"], {"namespace": "blog", "context": "prod"}),
        (["--kubeconfig", "/k", "retry", "x"], {"kubeconfig": "/k", "verb": "retry", "name": "x"}),
        (["reschedule", "x", "--at", "+5m"], {"name": "x", "at": "+5m"}),
        (
            ["list", "-o", "json", "-l", "app=blog", "--field-selector", "spec.channel=x"],
            {"output": "json", "selector": "app=blog", "field_selector": "spec.channel=x"},
        ),
        (["describe", "x", "-o", "yaml"], {"name": "x", "output": "yaml"}),
        (
            ["--as", "jane", "list", "--as-group", "a", "--as-group", "b"],
            {"as_user": "jane", "as_group": ["a", "b"]},
        ),
        (["retry", "x", "--request-timeout", "1m30s"], {"request_timeout": 90.0}),
        (["list", "--request-timeout", "500ms"], {"request_timeout": 0.5}),
        (["list", "--request-timeout", "2"], {"request_timeout": 2.0}),
        (["list", "--request-timeout", "0"], {"request_timeout": None}),
        (["completion", "zsh"], {"verb": "completion", "shell": "zsh"}),
    ],
)
def test_command_line(argv: list[str], expected: dict[str, Any]) -> None:
    args = vars(plugin.parser().parse_args(argv))
    assert {k: args.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["list", "--phase", "Lost"],
        ["reschedule", "x"],
        ["retry"],
        ["frobnicate", "x"],
        ["list", "-o", "table"],
        ["list", "--request-timeout", "soon"],
        ["retry", "x", "-o", "json"],
        ["completion", "fish"],
    ],
)
def test_command_line_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors as kubectl's: `error: …`, where to find help, exit code 1."""
    with pytest.raises(SystemExit) as exc:
        plugin.parser().parse_args(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "See 'kubectl herald" in err, err


def test_list_wide() -> None:
    long_message = "the network said no " * 10
    obj = post(
        "Failed", name="b", attempt=5, lastError={"code": "HTTP400", "message": long_message}
    )
    obj["spec"].update(channel="mastodon", target="eu", publishAt="2026-06-01T11:00:00Z")
    lines = plugin.list_table([obj], NOW, all_namespaces=False, wide=True).splitlines()
    assert lines[0].split() == [
        *["NAME", "PHASE", "WHEN", "ATTEMPTS", "CHANNEL", "TARGET", "PUBLISH", "AT", "LAST"],
        "ERROR",
    ]
    cells = re.split(r"\s{3,}", lines[1])
    assert cells[4:7] == ["mastodon", "eu", "2026-06-01T11:00:00Z"], cells
    assert lines[1].endswith(f"HTTP400: {' '.join(long_message.split())}")  # not shortened


def test_json_and_yaml_are_kubectls_list_and_objects() -> None:
    items = [post("Scheduled", name="a"), post("Published", name="b")]
    items[0]["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    text = plugin.dump(plugin.as_list(items), "json")
    doc = json.loads(text)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    assert doc["metadata"] == {"resourceVersion": ""}
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a", "b"]
    for item in doc["items"]:
        assert (item["apiVersion"], item["kind"]) == ("herald.dev/v1alpha1", "ScheduledPost")
        assert "managedFields" not in item["metadata"]
    assert text.startswith('{\n    "apiVersion": "v1",\n    "items": [')  # 4 spaces, sorted
    assert yaml.safe_load(plugin.dump(plugin.as_list(items), "yaml")) == doc
    one = yaml.safe_load(plugin.dump(plugin.as_object(items[1]), "yaml"))
    assert one["kind"] == "ScheduledPost" and one["status"]["phase"] == "Published"
    assert plugin.dump(plugin.as_list([]), "json").count("[]") == 1  # an empty List
    assert plugin.names(items) == "scheduledpost.herald.dev/a\nscheduledpost.herald.dev/b\n"


def test_describe_wide_shows_every_event_unshortened() -> None:
    events = [
        {"type": "Normal", "reason": f"R{i}", "message": "m" * 150, "lastTimestamp": ago(100 - i)}
        for i in range(15)
    ]
    short = plugin.describe(post(), events, NOW).split("Events:\n")[1].splitlines()[1:]
    wide = plugin.describe(post(), events, NOW, wide=True).split("Events:\n")[1].splitlines()[1:]
    assert (len(short), len(wide)) == (plugin.EVENTS_SHOWN, 15)
    assert "m" * 150 in wide[0] and "m" * 150 not in short[0]


def _complete(words: list[str], partial: str) -> list[str]:
    posts = {"default": ["launch", "later"], "blog": ["hello"]}
    return plugin.completions(
        words, partial, lambda ns: posts.get(ns or "default", []), lambda: sorted(posts)
    )


@pytest.mark.parametrize(
    ("words", "partial", "expected"),
    [
        ([], "", ["list", "accounts", "describe", *plugin.VERBS, "completion"]),
        ([], "re", ["retry", "resume", "reschedule"]),
        (["retry"], "", ["launch", "later"]),
        (["retry"], "la", ["launch", "later"]),
        (["-n", "blog", "describe"], "", ["hello"]),
        (["describe", "--namespace", "blog"], "h", ["hello"]),
        (["retry", "launch"], "", []),
        (["list", "-o"], "", ["json", "yaml", "name", "wide"]),
        (["list", "--phase"], "F", ["Failed"]),
        (["list", "-n"], "", ["blog", "default"]),
        (["list"], "--f", ["--field-selector"]),
        (["describe"], "--o", ["--output"]),
        (["completion"], "", ["bash", "zsh"]),
    ],
)
def test_completions(words: list[str], partial: str, expected: list[str]) -> None:
    assert _complete(words, partial) == expected


def test_bash_completion_script_completes_kubectl_herald(tmp_path: Path) -> None:
    """The script `kubectl herald completion bash` prints, run by bash against the
    installed kubectl-herald (verbs and flags need no cluster)."""
    script = tmp_path / "herald.bash"
    script.write_text(plugin.completion_script("bash"))
    probe = (
        f"source {script}\n"
        "COMP_WORDS=(kubectl-herald re); COMP_CWORD=1; _kubectl_herald; echo ${COMPREPLY[*]}\n"
        "COMP_WORDS=(kubectl-herald list -o ''); COMP_CWORD=3; _kubectl_herald;"
        " echo ${COMPREPLY[*]}\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "--norc", "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["retry resume reschedule", "json yaml name wide"]


def test_zsh_completion_script() -> None:
    script = plugin.completion_script("zsh")
    assert script.startswith("#compdef kubectl-herald\n")
    assert "kubectl-herald __complete" in script and "compdef _kubectl_herald" in script


# --- accounts ----------------------------------------------------------------------------


def _account(name: str, cluster: bool = False, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if not cluster:
        meta["namespace"] = "team-b"
    return {"metadata": meta, "spec": {"channel": "linkedin", "handle": f"urn:{name}", **spec}}


AT_NOON = dt.datetime(2030, 1, 15, 12, 20, tzinfo=dt.UTC)


def test_accounts_lists_own_and_admitted_cluster_accounts() -> None:
    usage = [
        {"window": "hour", "start": "2030-01-15T12:00:00Z", "posts": 1, "limit": 2},
        {"window": "day", "start": "2030-01-14T00:00:00Z", "posts": 9, "limit": 20},
    ]
    own = [
        {
            **_account("brand", default=True, limits={"postsPerHour": 2, "postsPerDay": 20}),
            "status": {"usage": usage},
        },
        {
            **_account("paused", channel="x", suspend=True),
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Suspended"}]},
        },
    ]
    selected = {"from": "Selector", "selector": {"matchLabels": {"team": "b"}}}
    cluster = [
        _account("shared", True, allowedNamespaces=selected),
        _account("other-team", True, allowedNamespaces={"from": "Selector", "selector": {}}),
        _account("nobody", True),  # no allowedNamespaces: admits none
        _account("brand", True, allowedNamespaces={"from": "All"}),  # shadowed by the own one
    ]
    out = plugin.accounts_table("team-b", own, cluster, {"team": "b"}, AT_NOON)
    lines = out.splitlines()
    assert lines[0].split() == [
        "KIND", "NAME", "CHANNEL", "HANDLE", "TARGET", "DEFAULT", "SUSPENDED", "READY", "QUOTA"
    ]  # fmt: skip
    rows = [line.split()[:2] for line in lines[1:]]
    assert rows == [
        ["SocialAccount", "brand"],
        ["SocialAccount", "paused"],
        ["ClusterSocialAccount", "other-team"],
        ["ClusterSocialAccount", "shared"],
    ]
    assert "False (Suspended)" in lines[2]
    # This hour's count; yesterday's day count is no use today: 0.
    assert lines[1].endswith("1/2 this hour, 0/20 today"), lines[1]
    assert lines[2].rstrip().endswith("False (Suspended)"), lines[2]  # no limits: no quota
    assert "nobody" not in out


def test_accounts_says_what_it_could_not_read() -> None:
    out = plugin.accounts_table("team-b", [_account("brand")], None, None, AT_NOON)
    assert "ClusterSocialAccounts not shown" in out
