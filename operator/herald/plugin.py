"""`kubectl herald`: list, inspect, retry, suspend, resume and reschedule ScheduledPosts.

Installed as the console script `kubectl-herald`, which kubectl runs for `kubectl herald …`
once it is on PATH. It logs in exactly as Herald does (`herald.kube.discover`: the
Kubernetes client library's kubeconfig loading, `--kubeconfig`/`--context` honoured) and
defaults to the context's namespace, like kubectl.

The verbs only edit what a user could edit with kubectl (the retry annotation,
`spec.suspend`, `spec.publishAt`); the operator does the rest. Each edit is a merge patch
with the resourceVersion it was checked against, so a verb refused or allowed for the
post's phase is applied to that same version of the post, not a newer one.

Pure functions (formatting, time parsing, which verb fits which phase, the patches) come
first; the few API calls and the command line follow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import yaml

from herald.accounts import Account, admits, usage_text
from herald.clock import SYSTEM
from herald.kube import (
    Conflict,
    Connection,
    Forbidden,
    KubeError,
    NotFound,
    Reply,
    discover,
    raise_for,
)
from herald.models import (
    ACCOUNT_PLURAL,
    CLUSTER_ACCOUNT_KIND,
    CLUSTER_ACCOUNT_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    RETRY_ANNOTATION,
    RFC3339_WITH_OFFSET,
    VERSION,
    ClusterSocialAccountSpec,
    NamespacesFrom,
    Phase,
    QuotaUsage,
    parse_account,
)
from herald.models import format_time as rfc3339

RESOURCE = f"scheduledpost.{GROUP}"
MERGE_PATCH = "application/merge-patch+json"
EVENTS_SHOWN = 10
ERROR_WIDTH = 60
WIDE = 10_000  # -o wide: nothing is shortened


class PluginError(Exception):
    """A one-line reason the command cannot do what was asked."""


# --- formatting (pure) -------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 3m20s, 42m, 5h10m, 30h, 3d4h, 120d, 3y20d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    s = max(s, 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        years = days // 365
        return f"{years}y" if days % 365 == 0 else f"{years}y{days % 365}d"
    return f"{days // 365}y"


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def relative(at: dt.datetime | None, now: dt.datetime) -> str:
    """ "in 5m" for the future, "5m ago" for the past."""
    if at is None:
        return "-"
    delta = (at - now).total_seconds()
    return f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(-delta)} ago"


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def phase_of(obj: dict[str, Any]) -> Phase | None:
    value = _status(obj).get("phase")
    try:
        return Phase(value) if value else None
    except ValueError:
        return None


def when(obj: dict[str, Any], now: dt.datetime) -> str:
    """The WHEN column: what happens next, or when the last thing happened."""
    status, spec = _status(obj), _spec(obj)
    phase = phase_of(obj)
    if phase is Phase.PUBLISHED:
        return f"published {relative(parse_time(status.get('publishedAt')), now)}"
    if phase is Phase.FAILED:
        return f"failed {relative(parse_time((status.get('lastError') or {}).get('at')), now)}"
    if phase is Phase.PUBLISHING:
        return f"publishing since {relative(parse_time(status.get('claimedAt')), now)}"
    if phase is Phase.SUSPENDED or spec.get("suspend"):
        return "suspended"
    if phase is Phase.RETRYING:
        return f"retry {relative(parse_time(status.get('nextAttemptAt')), now)}"
    due = parse_time(status.get("nextAttemptAt")) or parse_time(spec.get("publishAt"))
    if due is not None and due <= now:
        return "due now"
    return f"due {relative(due, now)}"


def last_error(obj: dict[str, Any], width: int = ERROR_WIDTH) -> str:
    error = _status(obj).get("lastError") or {}
    if not error:
        return ""
    return clip(f"{error.get('code', '?')}: {error.get('message', '')}", width)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart."""
    rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def list_table(
    objs: Sequence[dict[str, Any]], now: dt.datetime, all_namespaces: bool, wide: bool = False
) -> str:
    """The list as a table; `wide` (-o wide) adds channel, target and publishAt, and does
    not shorten the last error."""
    headers = ["NAME", "PHASE", "WHEN", "ATTEMPTS", "LAST ERROR"]
    if wide:
        headers[4:4] = ["CHANNEL", "TARGET", "PUBLISH AT"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in sorted(objs, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        phase, spec = phase_of(obj), _spec(obj)
        row = [
            obj["metadata"]["name"],
            phase.value if phase else "-",
            when(obj, now),
            str(_status(obj).get("attempt", 0)),
            last_error(obj, WIDE if wide else ERROR_WIDTH),
        ]
        if wide:
            row[4:4] = [
                spec.get("channel", "linkedin"),
                spec.get("target", "default"),
                spec.get("publishAt", "-"),
            ]
        if all_namespaces:
            row.insert(0, obj["metadata"]["namespace"])
        rows.append(row)
    return table(headers, rows)


# --- kubectl's printers: -o json|yaml|name (pure) ----------------------------------------

OUTPUTS = ("json", "yaml", "name", "wide")


def as_object(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as `kubectl get -o json` shows it: with its apiVersion and kind (list
    items come without them), and without metadata.managedFields (kubectl hides them)."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return {**obj, "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}


def as_list(objs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """kubectl's shape for several objects: a v1 List."""
    return {
        "apiVersion": "v1",
        "items": [as_object(o) for o in objs],
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def dump(doc: dict[str, Any], output: str) -> str:
    """json as kubectl prints it (4-space indent, sorted keys), or yaml (sorted keys)."""
    if output == "json":
        return json.dumps(doc, indent=4, sort_keys=True, ensure_ascii=False) + "\n"
    return yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, default_flow_style=False)


def names(objs: Iterable[dict[str, Any]]) -> str:
    """-o name: `scheduledpost.herald.dev/<name>`, one a line."""
    return "".join(f"{RESOURCE}/{o['metadata']['name']}\n" for o in objs)


def _event_time(event: dict[str, Any]) -> dt.datetime | None:
    return (
        parse_time(event.get("lastTimestamp"))
        or parse_time(event.get("eventTime"))
        or parse_time(event.get("firstTimestamp"))
        or parse_time((event.get("metadata") or {}).get("creationTimestamp"))
    )


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def describe(
    obj: dict[str, Any], events: Sequence[dict[str, Any]], now: dt.datetime, wide: bool = False
) -> str:
    """`kubectl herald describe`: status, attempt history, conditions, recent Events
    (`wide`: every Event, and no message shortened)."""
    meta, spec, status = obj["metadata"], _spec(obj), _status(obj)
    phase = phase_of(obj)
    lines: list[tuple[str, str]] = [
        ("Name", meta["name"]),
        ("Namespace", meta["namespace"]),
        ("Phase", phase.value if phase else "- (not yet seen by the operator)"),
    ]
    if status.get("message"):
        lines.append(("Message", status["message"]))
    channel = spec.get("channel", "linkedin")
    if spec.get("account"):
        channel += f" (account {spec['account']})"
    publish_at = parse_time(spec.get("publishAt"))
    lines += [
        ("Channel", channel),
        ("Target", spec.get("target", "default")),
        ("Publish at", f"{spec.get('publishAt', '-')} ({relative(publish_at, now)})"),
        ("Suspend", "true" if spec.get("suspend") else "false"),
        ("Attempts", str(status.get("attempt", 0))),
    ]
    for key, label in (
        ("nextAttemptAt", "Next attempt"),
        ("claimedAt", "Claimed at"),
        ("publishedAt", "Published at"),
    ):
        if status.get(key) and not (key == "claimedAt" and phase is not Phase.PUBLISHING):
            lines.append((label, f"{status[key]} ({relative(parse_time(status[key]), now)})"))
    if status.get("claimedBy") and phase is Phase.PUBLISHING:
        lines.append(("Claimed by", status["claimedBy"]))
    if status.get("externalUrl"):
        lines.append(("External URL", status["externalUrl"]))
    error = status.get("lastError")
    if error:
        at = relative(parse_time(error.get("at")), now)
        lines.append(
            (
                "Last error",
                f"{error.get('class')} {error.get('code')} ({at}): {error.get('message')}",
            )
        )
    requested = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
    if requested:
        handled = status.get("lastHandledRetryRequest") == requested
        lines.append(("Retry requested", f"{requested} ({'handled' if handled else 'pending'})"))
    width = max(len(k) for k, _ in lines) + 2
    out = "".join(f"{(k + ':').ljust(width)}{v}\n" for k, v in lines)

    out += "Attempt history:\n"
    history = status.get("history") or []
    if history:
        rows = []
        for record in history:
            finished = parse_time(record.get("finishedAt"))
            claimed = parse_time(record.get("claimedAt"))
            took = (
                human_duration((finished - claimed).total_seconds())
                if finished and claimed
                else "-"
            )
            rows.append(
                [
                    str(record.get("attempt", "?")),
                    record.get("outcome", ""),
                    relative(finished, now),
                    took,
                    record.get("code") or "",
                    clip(record.get("message") or "", WIDE if wide else 80),
                ]
            )
        out += _indent(table(["#", "OUTCOME", "FINISHED", "TOOK", "CODE", "MESSAGE"], rows))
    else:
        out += "  <none>\n"

    out += "Conditions:\n"
    conditions = status.get("conditions") or []
    if conditions:
        rows = [
            [
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason", ""),
                relative(parse_time(c.get("lastTransitionTime")), now),
                clip(c.get("message", ""), WIDE if wide else 80),
            ]
            for c in conditions
        ]
        out += _indent(table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows))
    else:
        out += "  <none>\n"

    out += "Events:\n"
    ordered = sorted(events, key=lambda e: _event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))
    recent = ordered if wide else ordered[-EVENTS_SHOWN:]
    if recent:
        rows = []
        for event in recent:
            source = event.get("source") or {}
            rows.append(
                [
                    event.get("type", ""),
                    event.get("reason", ""),
                    relative(_event_time(event), now),
                    source.get("component") or event.get("reportingComponent") or "",
                    clip(event.get("message", ""), WIDE if wide else 100),
                ]
            )
        out += _indent(table(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows))
    else:
        out += "  <none>\n"
    return out


# --- times (pure) ------------------------------------------------------------------------

_DURATION = re.compile(r"^\+(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
AT_HELP = (
    "an RFC 3339 time with a UTC offset (2026-12-01T09:00:00Z) or +duration (+90s, +2h30m, +1d)"
)


def _ready(obj: dict[str, Any]) -> str:
    cond = next((c for c in _status(obj).get("conditions") or [] if c.get("type") == "Ready"), None)
    if cond is None:
        return "Unknown"
    return "True" if cond.get("status") == "True" else f"False ({cond.get('reason', '')})"


def _quota(kind: str, obj: dict[str, Any], now: dt.datetime) -> str:
    """The QUOTA column: use of the account's limits in the current hour and day."""
    try:
        spec = parse_account(_spec(obj), cluster=kind == CLUSTER_ACCOUNT_KIND)
        usage = [QuotaUsage.model_validate(u) for u in _status(obj).get("usage") or []]
    except ValueError:
        return "?"
    account = Account(str(obj["metadata"]["name"]), spec, obj["metadata"].get("namespace"))
    return usage_text(account, usage, now)


def accounts_table(
    namespace: str,
    own: Sequence[dict[str, Any]],
    cluster: Sequence[dict[str, Any]] | None,
    labels: dict[str, str] | None,
    now: dt.datetime,
) -> str:
    """`kubectl herald accounts`: the accounts posts in `namespace` may publish as, as
    herald.accounts resolves them (a SocialAccount first, then a ClusterSocialAccount
    admitting the namespace). `cluster`/`labels` None: the user may not read them."""
    rows = []
    mine = {o["metadata"]["name"] for o in own}
    for obj in sorted(own, key=lambda o: str(o["metadata"]["name"])):
        rows.append(("SocialAccount", obj, "yes" if _spec(obj).get("default") else ""))
    notes = []
    if cluster is None:
        notes.append("(ClusterSocialAccounts not shown: you may not list them)")
    for obj in sorted(cluster or [], key=lambda o: str(o["metadata"]["name"])):
        name = obj["metadata"]["name"]
        try:
            spec = ClusterSocialAccountSpec.model_validate(_spec(obj))
        except ValueError:
            continue
        if name in mine:
            continue  # the namespace's own account of that name is what posts resolve to
        allowed = spec.allowed_namespaces
        if labels is None and allowed is not None and allowed.from_ is NamespacesFrom.SELECTOR:
            notes.append(f"({name}: cannot read namespace {namespace}'s labels to match)")
            continue
        if admits(spec, labels or {}):
            rows.append((CLUSTER_ACCOUNT_KIND, obj, ""))
    if not rows:
        raise _Empty(f"No accounts usable in {namespace} namespace.")
    body = table(
        ("KIND", "NAME", "CHANNEL", "HANDLE", "TARGET", "DEFAULT", "SUSPENDED", "READY", "QUOTA"),
        [
            (
                kind,
                obj["metadata"]["name"],
                str(_spec(obj).get("channel", "")),
                str(_spec(obj).get("handle", "")),
                str(_spec(obj).get("target", "default")),
                default,
                "yes" if _spec(obj).get("suspend") else "",
                _ready(obj),
                _quota(kind, obj, now),
            )
            for kind, obj, default in rows
        ],
    )
    return body + "".join(f"{note}\n" for note in notes)


def parse_at(value: str, now: dt.datetime) -> dt.datetime:
    """`--at`: an RFC 3339 time with its offset, or `+duration` from now."""
    value = value.strip()
    match = _DURATION.match(value)
    if match and any(match.groups()):
        d, h, m, s = (int(g or 0) for g in match.groups())
        return now + dt.timedelta(days=d, hours=h, minutes=m, seconds=s)
    if re.match(RFC3339_WITH_OFFSET, value):
        try:
            return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
        except ValueError:
            pass
    raise PluginError(f"--at {value!r}: expected {AT_HELP}")


# --- verbs (pure) ------------------------------------------------------------------------

VERBS = ("retry", "suspend", "resume", "reschedule", "publish-now")


def refusal(verb: str, obj: dict[str, Any], now: dt.datetime) -> str | None:
    """Why `verb` makes no sense for the post as it is, or None when it does."""
    name = obj["metadata"]["name"]
    status, spec = _status(obj), _spec(obj)
    phase = phase_of(obj)
    suspended = bool(spec.get("suspend"))
    published = f"it was published {relative(parse_time(status.get('publishedAt')), now)}"
    in_flight = f"it is being published (attempt {status.get('attempt', 0)} is in flight)"
    # A Pending post has no nextAttemptAt yet: it is due at its publishAt.
    next_at = status.get("nextAttemptAt") or spec.get("publishAt")
    next_attempt = relative(parse_time(next_at), now)

    def use(other: str) -> str:
        return f"`kubectl herald {other} {name}`"

    if verb == "retry":
        if phase in (Phase.FAILED, Phase.RETRYING):
            return None
        if phase is Phase.PUBLISHED:
            why = f"{published}: there is nothing to retry"
        elif phase is Phase.PUBLISHING:
            why = f"{in_flight}: a failed attempt is retried automatically"
        elif phase in (Phase.PENDING, Phase.SCHEDULED):
            why = (
                f"it has not failed, it is due {next_attempt}; {use('publish-now')} sends it early"
            )
        elif phase is Phase.SUSPENDED:
            why = f"it is suspended; {use('resume')} lets it be dispatched"
        else:
            why = "the operator has not accepted it yet"
        return f"cannot retry {name}: {why} (retry applies to Failed and Retrying posts)"
    if verb == "suspend":
        if suspended:
            return f"{name} is already suspended"
        if phase in (None, Phase.PENDING, Phase.SCHEDULED, Phase.RETRYING):
            return None
        if phase is Phase.PUBLISHED:
            return f"cannot suspend {name}: {published}"
        if phase is Phase.PUBLISHING:
            return f"cannot suspend {name}: {in_flight} and cannot be called back"
        return f"cannot suspend {name}: it failed, and is not dispatched again unless retried"
    if verb == "resume":
        return None if suspended else f"{name} is not suspended (spec.suspend is false)"
    if verb in ("reschedule", "publish-now"):
        action = "reschedule" if verb == "reschedule" else "publish now"
        if phase is Phase.PUBLISHED:
            return f"cannot {action} {name}: {published}"
        if phase is Phase.PUBLISHING:
            return f"cannot {action} {name}: {in_flight}"
        if phase is Phase.FAILED:
            return f"cannot {action} {name}: it failed; {use('retry')} tries again now"
        if verb == "publish-now" and (suspended or phase is Phase.SUSPENDED):
            return f"cannot publish {name} now: it is suspended; {use('resume')} first"
        if verb == "publish-now" and phase is Phase.RETRYING:
            return (
                f"cannot publish {name} now: it is retrying (next attempt {next_attempt}); "
                f"{use('retry')} tries again at once"
            )
        return None
    raise PluginError(f"unknown verb {verb!r}")


def patch_for(
    verb: str, obj: dict[str, Any], now: dt.datetime, at: dt.datetime | None = None
) -> dict[str, Any]:
    """The merge patch for `verb`, conditional on the resourceVersion it was checked on."""
    meta: dict[str, Any] = {"resourceVersion": obj["metadata"]["resourceVersion"]}
    body: dict[str, Any] = {"metadata": meta}
    if verb == "retry":
        meta["annotations"] = {RETRY_ANNOTATION: rfc3339(now)}
    elif verb == "suspend":
        body["spec"] = {"suspend": True}
    elif verb == "resume":
        body["spec"] = {"suspend": False}
    elif verb == "reschedule":
        if at is None:
            raise PluginError("reschedule needs --at")
        body["spec"] = {"publishAt": rfc3339(at)}
    elif verb == "publish-now":
        body["spec"] = {"publishAt": rfc3339(now)}
    else:
        raise PluginError(f"unknown verb {verb!r}")
    return body


def done_message(verb: str, obj: dict[str, Any], patch: dict[str, Any]) -> str:
    name = f"{RESOURCE}/{obj['metadata']['name']}"
    spec = patch.get("spec") or {}
    return {
        "retry": f"{name} retry requested",
        "suspend": f"{name} suspended",
        "resume": f"{name} resumed",
        "reschedule": f"{name} rescheduled to {spec.get('publishAt')}",
        "publish-now": f"{name} publishing now ({spec.get('publishAt')})",
    }[verb]


# --- API calls ---------------------------------------------------------------------------


class Api:
    """The plugin's few requests, on a synchronous httpx client with Herald's login."""

    def __init__(
        self,
        conn: Connection,
        timeout: float | None = 15.0,
        impersonate: str | None = None,
        groups: Sequence[str] = (),
    ) -> None:
        # kubectl's --as/--as-group: the API server's impersonation headers, one per group.
        headers = [*(conn.headers or {}).items()]
        if impersonate:
            headers.append(("Impersonate-User", impersonate))
        headers += [("Impersonate-Group", group) for group in groups]
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=conn.server,
            verify=conn.tls,
            auth=conn.auth,
            headers=headers,
            proxy=conn.proxy,
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise KubeError(
                f"{what}: no answer within --request-timeout={self.timeout:g}s ({exc})"
            ) from exc
        except httpx.HTTPError as exc:
            raise KubeError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise_for(Reply(response.status_code, response.content), what)
        result: dict[str, Any] = response.json()
        return result

    @staticmethod
    def _path(namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{GROUP}/{VERSION}"
        path = f"{base}/namespaces/{namespace}/{PLURAL}" if namespace else f"{base}/{PLURAL}"
        return f"{path}/{name}" if name else path

    def list_posts(
        self,
        namespace: str | None,
        phase: str | None = None,
        selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        fields = ",".join(f for f in (field_selector, phase and f"status.phase={phase}") if f)
        params = {"fieldSelector": fields} if fields else {}
        if selector:
            params["labelSelector"] = selector
        body = self._request("GET", self._path(namespace), "list scheduledposts", params=params)
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    def list_accounts(self, namespace: str) -> list[dict[str, Any]]:
        url = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{ACCOUNT_PLURAL}"
        body = self._request("GET", url, "list socialaccounts")
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    def list_cluster_accounts(self) -> list[dict[str, Any]] | None:
        """None when the user may not list them (they are for cluster administrators)."""
        try:
            body = self._request(
                "GET", f"/apis/{GROUP}/{VERSION}/{CLUSTER_ACCOUNT_PLURAL}", "list cluster accounts"
            )
        except Forbidden:
            return None
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        """None when the user may not read the namespace."""
        try:
            body = self._request("GET", f"/api/v1/namespaces/{namespace}", f"get {namespace}")
        except Forbidden:
            return None
        labels: dict[str, str] = (body.get("metadata") or {}).get("labels") or {}
        return labels

    def namespaces(self) -> list[str]:
        body = self._request("GET", "/api/v1/namespaces", "list namespaces")
        return [item["metadata"]["name"] for item in body.get("items") or []]

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self._request("GET", self._path(namespace, name), f"get {name}")
        except NotFound:
            raise PluginError(
                f'scheduledpost "{name}" not found in namespace "{namespace}"'
            ) from None

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request(
            "PATCH",
            self._path(namespace, name),
            f"patch {name}",
            json=body,
            headers={"Content-Type": MERGE_PATCH},
        )

    def events(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.uid={uid}"
        body = self._request(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            f"events of {name}",
            params={"fieldSelector": selector},
        )
        items: list[dict[str, Any]] = body.get("items") or []
        return items


# --- command line ------------------------------------------------------------------------


@dataclass
class Context:
    api: Api
    namespace: str
    now: Callable[[], dt.datetime]


class _Parser(argparse.ArgumentParser):
    """Usage errors as kubectl reports them: `error: …`, a pointer to --help, exit 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message}\nSee '{self.prog} --help' for usage.\n")


_TIMEOUT = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def request_timeout(value: str) -> float | None:
    """kubectl's --request-timeout: a plain number of seconds, or a duration (500ms, 1m30s,
    2h); 0 waits forever."""
    value = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    elif value and _TIMEOUT.sub("", value) == "":
        seconds = sum(float(n) * _UNIT[u] for n, u in _TIMEOUT.findall(value))
    else:
        raise argparse.ArgumentTypeError(
            f"invalid --request-timeout {value!r}: a number of seconds or a duration "
            "with a unit (1s, 2m, 3h); 0 for none"
        )
    return seconds or None


def _common() -> _Parser:
    # SUPPRESS: the flags may come before or after the verb without one erasing the other.
    common = _Parser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--kubeconfig", default=s, help="kubeconfig file(s), like kubectl's")
    common.add_argument("--context", default=s, help="the kubeconfig context to use")
    common.add_argument(
        "-n", "--namespace", default=s, help="the namespace (default: the context's)"
    )
    common.add_argument(
        "--as", dest="as_user", default=s, metavar="USER", help="act as this user (impersonation)"
    )
    common.add_argument(
        "--as-group",
        dest="as_group",
        action="append",
        default=s,
        metavar="GROUP",
        help="act as a member of this group (repeatable; impersonation)",
    )
    common.add_argument(
        "--request-timeout",
        type=request_timeout,
        default=s,
        metavar="DURATION",
        help="give up on a request after this long (1s, 2m, 3h; 0: never; default 15s)",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        help="json|yaml (the objects as kubectl prints them), name "
        "(scheduledpost.herald.dev/NAME) or wide (more columns, nothing shortened)",
    )


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="posts of every namespace"
    )
    parser.add_argument(
        "-l", "--selector", help="label selector, as kubectl's (-l app=blog,tier!=test)"
    )
    parser.add_argument(
        "--field-selector",
        help="field selector: status.phase, spec.channel, spec.target, metadata.name, "
        "metadata.namespace (e.g. spec.channel=linkedin)",
    )


def parser() -> argparse.ArgumentParser:
    common = _common()
    main = _Parser(
        prog="kubectl herald",
        parents=[common],
        description="Inspect and steer Herald's ScheduledPosts.",
    )
    sub = main.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    ls = sub.add_parser(
        "list", parents=[common], help="list posts: phase, when, attempts, last error"
    )
    _selection(ls)
    ls.add_argument(
        "--phase",
        type=_phase,
        help="only posts in this phase: " + ", ".join(p.value for p in Phase),
    )
    _output(ls)
    desc = sub.add_parser(
        "describe",
        parents=[common],
        help="status, attempt history, conditions and recent Events of a post "
        "(or of every post -l/--field-selector/-A select, as kubectl describe)",
    )
    desc.add_argument("name", nargs="?")
    _selection(desc)
    _output(desc)
    for verb, text in (
        ("retry", "retry a Failed (or Retrying) post from attempt 1, now"),
        ("suspend", "stop a post from being dispatched (spec.suspend: true)"),
        ("resume", "let a suspended post be dispatched again (spec.suspend: false)"),
        ("publish-now", "publish a scheduled post at once (spec.publishAt: now)"),
    ):
        verb_parser = sub.add_parser(verb, parents=[common], help=text)
        verb_parser.add_argument("name")
    resched = sub.add_parser(
        "reschedule", parents=[common], help="move a post's publishAt (--at TIME or +DURATION)"
    )
    resched.add_argument("name")
    resched.add_argument("--at", required=True, help=AT_HELP)
    accts = sub.add_parser(
        "accounts",
        parents=[common],
        help="the accounts posts in the namespace may publish as: its SocialAccounts and "
        "the ClusterSocialAccounts that admit it (channel, handle, Ready)",
    )
    _output(accts)
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Completion for `kubectl-herald`; `kubectl herald` itself is completed "
        "by kubectl's own completion through the kubectl_complete-herald command.",
    )
    completion.add_argument("shell", choices=SHELLS)
    return main


def _phase(value: str) -> str:
    for phase in Phase:
        if phase.value.lower() == value.lower():
            return phase.value
    raise argparse.ArgumentTypeError(
        f"unknown phase {value!r}; one of {', '.join(p.value for p in Phase)}"
    )


def run_verb(ctx: Context, verb: str, name: str, at_text: str | None = None) -> str:
    """Check the verb against the post's phase and apply it to that same version."""
    for _ in range(5):
        obj = ctx.api.get(ctx.namespace, name)
        now = ctx.now()
        reason = refusal(verb, obj, now)
        if reason:
            raise PluginError(reason)
        at = parse_at(at_text, now) if at_text is not None else None
        patch = patch_for(verb, obj, now, at)
        try:
            ctx.api.patch(ctx.namespace, name, patch)
        except Conflict:
            continue  # the post changed since we read it: check again
        except NotFound:
            raise PluginError(f'scheduledpost "{name}" was deleted meanwhile') from None
        return done_message(verb, obj, patch)
    raise PluginError(f"{name} keeps changing; try again")


def execute(args: argparse.Namespace, ctx: Context, all_namespaces: bool) -> str:
    output = getattr(args, "output", None)
    if args.verb == "list":
        items = ctx.api.list_posts(
            None if all_namespaces else ctx.namespace,
            args.phase,
            args.selector,
            args.field_selector,
        )
        if output in ("json", "yaml"):
            return dump(as_list(items), output)  # an empty List when nothing matches
        if output == "name":
            return names(items)
        if not items:
            where = "" if all_namespaces else f" in {ctx.namespace} namespace"
            raise _Empty(f"No resources found{where}.")
        return list_table(items, ctx.now(), all_namespaces, wide=output == "wide")
    if args.verb == "accounts":
        own = ctx.api.list_accounts(ctx.namespace)
        cluster = ctx.api.list_cluster_accounts()
        if output in ("json", "yaml"):
            return dump(as_list([*own, *(cluster or [])]), output)
        labels = ctx.api.namespace_labels(ctx.namespace)
        return accounts_table(ctx.namespace, own, cluster, labels, ctx.now())
    if args.verb == "describe" and args.name is None:
        return describe_selected(args, ctx, all_namespaces)
    if args.verb == "describe":
        if args.selector or args.field_selector:
            # kubectl describe's own refusal, in its words
            raise PluginError("name cannot be provided when a selector is specified")
        if all_namespaces:
            raise PluginError("a resource cannot be retrieved by name across all namespaces")
        obj = ctx.api.get(ctx.namespace, args.name)
        if output in ("json", "yaml"):
            return dump(as_object(obj), output)
        if output == "name":
            return names([obj])
        events = ctx.api.events(ctx.namespace, args.name, obj["metadata"]["uid"])
        return describe(obj, events, ctx.now(), wide=output == "wide")
    return run_verb(ctx, args.verb, args.name, getattr(args, "at", None)) + "\n"


def describe_selected(args: argparse.Namespace, ctx: Context, all_namespaces: bool) -> str:
    """`describe` without a name: every post the selectors pick, one after the other,
    as `kubectl describe` prints several objects (-o json|yaml: one List)."""
    output = getattr(args, "output", None)
    namespace = None if all_namespaces else ctx.namespace
    items = ctx.api.list_posts(namespace, None, args.selector, args.field_selector)
    if output in ("json", "yaml"):
        return dump(as_list(items), output)
    if output == "name":
        return names(items)
    if not items:
        where = "" if all_namespaces else f" in {ctx.namespace} namespace"
        raise _Empty(f"No resources found{where}.")
    now, wide = ctx.now(), output == "wide"
    blocks = []
    for obj in items:
        meta = obj["metadata"]
        events = ctx.api.events(meta["namespace"], meta["name"], meta["uid"])
        blocks.append(describe(obj, events, now, wide=wide))
    return "\n\n".join(blocks)


class _Empty(Exception):
    """Nothing to list: kubectl's message on stderr, exit 0."""


def _now() -> dt.datetime:
    return SYSTEM.wall()


def connect(args: argparse.Namespace, timeout: float | None = 15.0) -> tuple[Api, str]:
    """The API client and namespace the flags ask for, logged in as Herald does."""
    conn = discover(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    namespace = getattr(args, "namespace", None) or conn.namespace or "default"
    api = Api(
        conn,
        timeout=getattr(args, "request_timeout", timeout),
        impersonate=getattr(args, "as_user", None),
        groups=getattr(args, "as_group", None) or (),
    )
    return api, namespace


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [COMPLETE]:
        return complete_main(argv[1:])
    args = parser().parse_args(argv)
    if args.verb == "completion":
        sys.stdout.write(completion_script(args.shell))
        return 0
    all_namespaces = bool(getattr(args, "all_namespaces", False))
    try:
        if args.verb == "reschedule":
            parse_at(args.at, _now())  # a bad --at is reported before any API call
        api, namespace = connect(args)
        try:
            sys.stdout.write(execute(args, Context(api, namespace, _now), all_namespaces))
        finally:
            api.close()
    except _Empty as exc:
        sys.stderr.write(f"{exc}\n")
    except (PluginError, KubeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


# --- shell completion --------------------------------------------------------------------

SHELLS = ("bash", "zsh")
COMPLETE = "__complete"  # cobra's hidden command, which kubectl's plugin completion calls
NO_FILES = 4  # cobra's ShellCompDirectiveNoFileComp: offer no file names
_VALUES = {
    "-o": list(OUTPUTS),
    "--output": list(OUTPUTS),
    "--phase": [p.value for p in Phase],
}
_TAKES_VALUE = {
    "--kubeconfig",
    "--context",
    "-n",
    "--namespace",
    "--as",
    "--as-group",
    "--request-timeout",
    "-l",
    "--selector",
    "--field-selector",
    "--at",
    *_VALUES,
}
_NAMED = ("describe", *VERBS)


def _flags(verb: str | None) -> list[str]:
    common = ["--kubeconfig", "--context", "--namespace", "--as", "--as-group"]
    common.append("--request-timeout")
    extra = {
        "list": ["--all-namespaces", "--phase", "--selector", "--field-selector", "--output"],
        "describe": ["--all-namespaces", "--selector", "--field-selector", "--output"],
        "reschedule": ["--at"],
        "accounts": ["--output"],
    }
    return common + extra.get(verb or "", [])


def completions(
    words: Sequence[str],
    partial: str,
    post_names: Callable[[str | None], list[str]],
    namespaces: Callable[[], list[str]],
) -> list[str]:
    """What may come next after `words` (the arguments so far), starting with `partial`.
    `post_names(namespace)` lists the posts to offer for a verb's NAME, `namespaces()`
    the namespaces for -n."""
    previous = words[-1] if words else ""
    if previous in _TAKES_VALUE:
        if previous in ("-n", "--namespace"):
            candidates = namespaces()
        else:
            candidates = _VALUES.get(previous, [])
        return [c for c in candidates if c.startswith(partial)]
    positional, namespace, skip = [], None, False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word in _TAKES_VALUE:
            skip = True
            if word in ("-n", "--namespace") and i + 1 < len(words):
                namespace = words[i + 1]
            continue
        if not word.startswith("-"):
            positional.append(word)
    verb = positional[0] if positional else None
    if partial.startswith("-"):
        return [f for f in _flags(verb) if f.startswith(partial)]
    if verb is None:
        return [v for v in ("list", "accounts", *_NAMED, "completion") if v.startswith(partial)]
    if verb == "completion" and len(positional) == 1:
        return [s for s in SHELLS if s.startswith(partial)]
    if verb in _NAMED and len(positional) == 1:
        return [n for n in post_names(namespace) if n.startswith(partial)]
    return []


def complete_main(words: list[str]) -> int:
    """`kubectl herald __complete ARGS… PARTIAL`: cobra's protocol, which kubectl's own
    completion uses for plugins (through `kubectl_complete-herald`): one candidate a line,
    then `:<directive>`."""
    *before, partial = words or [""]
    args = argparse.Namespace()
    for flag, attr in (("--kubeconfig", "kubeconfig"), ("--context", "context")):
        if flag in before[:-1]:
            setattr(args, attr, before[before.index(flag) + 1])

    def ask(question: Callable[[Api, str], list[str]]) -> list[str]:
        try:
            api, namespace = connect(args, timeout=5.0)
            try:
                return question(api, namespace)
            finally:
                api.close()
        except (KubeError, PluginError, httpx.HTTPError):
            return []  # completion offers nothing rather than failing

    def post_names(namespace: str | None) -> list[str]:
        return ask(lambda api, ns: [o["metadata"]["name"] for o in api.list_posts(namespace or ns)])

    def namespaces() -> list[str]:
        return ask(lambda api, _: api.namespaces())

    for candidate in completions(before, partial, post_names, namespaces):
        sys.stdout.write(f"{candidate}\n")
    sys.stdout.write(f":{NO_FILES}\n")
    return 0


def kubectl_complete() -> int:
    """The `kubectl_complete-herald` command: kubectl runs it to complete `kubectl herald …`."""
    return complete_main(sys.argv[1:])


_BASH = r"""# bash completion for kubectl-herald.  Load it: source <(kubectl herald completion bash)
# (`kubectl herald <TAB>` itself is completed by kubectl's completion, through the
# kubectl_complete-herald command that is installed next to kubectl-herald.)
_kubectl_herald() {
    local cur="${COMP_WORDS[COMP_CWORD]}" line
    local -a out
    mapfile -t out < <(kubectl-herald __complete \
        "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null)
    COMPREPLY=()
    for line in "${out[@]}"; do
        [[ $line == :* ]] && continue
        COMPREPLY+=("$line")
    done
}
complete -F _kubectl_herald kubectl-herald
"""

_ZSH = r"""#compdef kubectl-herald
# zsh completion for kubectl-herald.  Load it: source <(kubectl herald completion zsh)
# (`kubectl herald <TAB>` itself is completed by kubectl's completion, through the
# kubectl_complete-herald command that is installed next to kubectl-herald.)
_kubectl_herald() {
    local -a out
    out=("${(@f)$(kubectl-herald __complete \
        "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" 2>/dev/null)}")
    compadd -- "${(@)out:#:*}"
}
compdef _kubectl_herald kubectl-herald
"""


def completion_script(shell: str) -> str:
    return _BASH if shell == "bash" else _ZSH


if __name__ == "__main__":
    sys.exit(main())
