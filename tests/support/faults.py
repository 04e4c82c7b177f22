"""Helpers for the fault-injection suite: bulk posts, waiting, metrics, and the audit.

The audit is the suite's definition of "correct under faults": from the final posts and
what the fake n8n recorded it computes the figures every scenario reports and the
violations of Herald's promise ("every post goes out once, at its time, or ends `Failed`
with a reason"):

- every post ends `Published`, or `Failed` with a reason (lastError and a False
  Published condition);
- n8n saw each (uid, attempt) at most once;
- nothing reached n8n after n8n had answered 2xx to a request with the same
  Idempotency-Key (`after_2xx`), except a stale recovery's re-send (a later attempt,
  same Idempotency-Key, after the accepted attempt ended `Stale` in the post's history)
  or the retry of an attempt n8n itself reported failed by callback (it ended
  `Transient`); both are counted apart;
- every request carried Idempotency-Key == the post's uid, and every `Published` post
  had a request n8n accepted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from herald import engine
from tests.support.fake_n8n import Received

API = "/apis/herald.dev/v1alpha1"
TERMINAL = frozenset({"Published", "Failed"})
CANARY = "canary"


def iso(at: float) -> str:
    """A unix time as RFC 3339 with milliseconds, the way publishAt is written."""
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- posts in bulk -------------------------------------------------------------------


def post_body(namespace: str, name: str, publish_at: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"publishAt": publish_at, "content": {"text": f"Post {name}"}, **spec},
    }


def create_posts(
    client: httpx.Client,
    namespace: str,
    posts: Iterable[tuple[str, float, dict[str, Any]]],
    workers: int = 8,
) -> float:
    """Create (name, publish-at unix time, extra spec) posts in parallel; returns seconds."""
    started = time.monotonic()
    url = f"{API}/namespaces/{namespace}/scheduledposts"

    def create(item: tuple[str, float, dict[str, Any]]) -> None:
        name, at, spec = item
        problem = "no attempt"
        for _ in range(10):
            try:
                response = client.post(url, json=post_body(namespace, name, iso(at), **spec))
            except httpx.TransportError as exc:  # the API server restarting
                problem = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
                continue
            if response.status_code == 201:
                return
            problem = f"{response.status_code} {response.text}"
            if response.status_code < 500 and response.status_code != 429:
                break
            time.sleep(0.5)
        raise AssertionError(f"create {name}: {problem}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(create, list(posts)))
    return time.monotonic() - started


def create_canary(client: httpx.Client, namespace: str) -> None:
    """A suspended post far in the future: the operator's watch has something to see."""
    create_posts(client, namespace, [(CANARY, time.time() + 86400, {"suspend": True})])


def list_posts(client: httpx.Client, namespace: str) -> list[dict[str, Any]]:
    """The namespace's posts, without the canary."""
    response = client.get(f"{API}/namespaces/{namespace}/scheduledposts", timeout=30)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return [o for o in items if o["metadata"]["name"] != CANARY]


def phase(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


def wait_terminal(
    client: httpx.Client, namespace: str, expected: int, timeout: float, poll: float = 1.5
) -> tuple[list[dict[str, Any]], float]:
    """Poll until `expected` posts are all Published or Failed, or `timeout` passes.

    Never raises for unfinished posts: the audit reports them. Returns (posts, seconds).
    An API server that is down while polling only delays the answer."""
    started = time.monotonic()
    deadline = started + timeout
    objs: list[dict[str, Any]] = []
    while True:
        try:
            objs = list_posts(client, namespace)
        except httpx.HTTPError:
            objs = objs or []
        done = len(objs) >= expected and all(phase(o) in TERMINAL for o in objs)
        if done or time.monotonic() >= deadline:
            return objs, time.monotonic() - started
        time.sleep(poll)


def events_by_post(client: httpx.Client, namespace: str) -> dict[str, Counter[str]]:
    """Event reasons per involved post name (an Event's count is honoured)."""
    response = client.get(f"/api/v1/namespaces/{namespace}/events", timeout=30)
    response.raise_for_status()
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for event in response.json()["items"]:
        out[event["involvedObject"]["name"]][event["reason"]] += int(event.get("count") or 1)
    return out


# --- metrics -------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{label="v",...}': value} (labels sorted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape(url: str, client: httpx.Client | None = None) -> dict[str, float]:
    """Scrape a /metrics endpoint (a plain URL, or a path on `client`)."""
    response = client.get(url, timeout=15) if client is not None else httpx.get(url, timeout=5)
    response.raise_for_status()
    return parse_metrics(response.text)


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest for w in wanted):
            total += value
    return total


# --- the audit -----------------------------------------------------------------------


@dataclass
class Audit:
    """Figures and violations of one scenario's end state (see the module docstring)."""

    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    lateness: dict[str, float] = field(default_factory=dict)
    """First request's arrival minus publishAt, per post name."""

    def summary(self) -> str:
        return json.dumps({"violations": self.violations, **self.figures}, indent=1, default=str)


def _request_key(r: Received) -> tuple[str, int]:
    msg = r.message
    if msg is not None:
        return msg
    return str(r.body.get("id")), int(r.body.get("attempt") or 0)


def after_2xx(requests: Iterable[Received]) -> list[tuple[Received, Received]]:
    """(accepted, later) for every request that reached n8n after n8n had answered 2xx to
    a request with the same Idempotency-Key: the same publication sent again.

    Keyed by Idempotency-Key, not by webhook-id: a take-over or a retry sends a new
    attempt (a new webhook-id) of the same publication under the same key, and that is
    exactly the re-send to count. (A manual retry changes the key: not counted.)"""
    by_key: dict[str, list[Received]] = defaultdict(list)
    for r in requests:
        by_key[r.idempotency_key or _request_key(r)[0]].append(r)
    out: list[tuple[Received, Received]] = []
    for rs in by_key.values():
        rs.sort(key=lambda r: r.at)
        last_ok: Received | None = None
        for r in rs:
            if last_ok is not None:
                out.append((last_ok, r))
            if r.accepted:
                last_ok = r
    return out


def overlapping(requests: Iterable[Received], deadline: float) -> list[tuple[Received, Received]]:
    """Pairs of requests with the same Idempotency-Key that were at n8n at the same time
    (a request lasts until it was answered or abandoned, else `deadline` seconds)."""
    by_key: dict[str, list[Received]] = defaultdict(list)
    for r in requests:
        by_key[r.idempotency_key or _request_key(r)[0]].append(r)
    out: list[tuple[Received, Received]] = []
    for rs in by_key.values():
        rs.sort(key=lambda r: r.at)
        for i, first in enumerate(rs):
            ended = first.answered_at or first.at + deadline
            out += [(first, later) for later in rs[i + 1 :] if later.at < ended]
    return out


def _has_reason(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    error = status.get("lastError") or {}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Published"), {})
    return bool(error.get("message")) and cond.get("status") == "False" and bool(cond.get("reason"))


def audit(
    objs: list[dict[str, Any]],
    requests: list[Received],
    *,
    expected: int,
    examples: int = 5,
) -> Audit:
    result = Audit()
    by_uid = {o["metadata"]["uid"]: o for o in objs}
    phases = Counter(phase(o) for o in objs)
    failed = [o for o in objs if phase(o) == "Failed"]
    failed_codes = Counter(
        ((o.get("status") or {}).get("lastError") or {}).get("code", "?") for o in failed
    )
    unfinished = sorted(o["metadata"]["name"] for o in objs if phase(o) not in TERMINAL)
    no_reason = sorted(o["metadata"]["name"] for o in failed if not _has_reason(o))
    ours = [r for r in requests if _request_key(r)[0] in by_uid]

    attempts = Counter(_request_key(r) for r in ours)
    duplicates = {k: n for k, n in attempts.items() if n > 1}
    # The key is the post's fingerprint (herald.engine; no manual retries in these runs).
    # Only metadata and spec make the fingerprint: the status is not parsed here.
    key_of = {
        uid: engine.fingerprint(engine.from_object({"metadata": o["metadata"], "spec": o["spec"]}))
        for uid, o in by_uid.items()
    }
    wrong_key = [r for r in ours if r.idempotency_key != key_of[_request_key(r)[0]]]

    per_uid: dict[str, list[Received]] = defaultdict(list)
    for r in ours:
        per_uid[_request_key(r)[0]].append(r)
    resent: list[str] = []
    stale_resends = 0
    failure_retries = 0
    for ok, r in after_2xx(ours):
        uid = _request_key(r)[0]
        history = (by_uid[uid].get("status") or {}).get("history") or []
        ended = {h.get("attempt"): h.get("outcome") for h in history}
        ok_attempt, attempt = _request_key(ok)[1], _request_key(r)[1]
        outcome = ended.get(ok_attempt)
        if attempt > ok_attempt and r.idempotency_key == key_of[uid] and outcome == "Stale":
            stale_resends += 1
        elif attempt > ok_attempt and outcome == "Transient":
            failure_retries += 1  # n8n's own callback said the attempt failed
        else:
            name = by_uid[uid]["metadata"]["name"]
            resent.append(
                f"{name} attempt {attempt} sent {r.at - ok.at:.2f}s after n8n "
                f"accepted attempt {ok_attempt} (which ended {outcome or 'unrecorded'})"
            )
    published_unsent = sorted(
        o["metadata"]["name"]
        for o in objs
        if phase(o) == "Published" and not any(r.accepted for r in per_uid[o["metadata"]["uid"]])
    )
    for uid, rs in per_uid.items():
        spec = by_uid[uid].get("spec") or {}
        first = min(rs, key=lambda r: r.at)
        if spec.get("publishAt"):
            result.lateness[by_uid[uid]["metadata"]["name"]] = first.at - parse_time(
                spec["publishAt"]
            )
    late = list(result.lateness.values())

    result.figures = {
        "posts": len(objs),
        "expected_posts": expected,
        "phases": dict(phases),
        "failed_codes": dict(failed_codes),
        "unfinished": len(unfinished),
        "requests_to_n8n": len(ours),
        "requests_accepted": sum(1 for r in ours if r.accepted),
        "distinct_attempts": len(attempts),
        "duplicated_attempts": len(duplicates),
        "duplicate_requests": sum(n - 1 for n in duplicates.values()),
        "resent_after_2xx": len(resent),
        "stale_resends": stale_resends,
        "retries_after_failed_callback": failure_retries,
        "lateness_p50_s": rounded(percentile(late, 50)),
        "lateness_p99_s": rounded(percentile(late, 99)),
        "lateness_max_s": rounded(max(late) if late else None),
    }
    v = result.violations
    if len(objs) != expected:
        v.append(f"{len(objs)} posts exist, {expected} expected (lost or extra posts)")
    if unfinished:
        where = Counter(phase(by_name) for by_name in objs if phase(by_name) not in TERMINAL)
        v.append(f"{len(unfinished)} posts not Published/Failed {dict(where)}: {unfinished[:5]}")
    if no_reason:
        v.append(f"{len(no_reason)} Failed posts without a reason: {no_reason[:examples]}")
    if duplicates:
        names = [
            f"{by_uid[u]['metadata']['name']}#{a}x{n}" for (u, a), n in list(duplicates.items())
        ]
        v.append(f"{len(duplicates)} (uid, attempt) sent more than once: {names[:examples]}")
    if resent:
        v.append(f"{len(resent)} sends after n8n had accepted the post: {resent[:examples]}")
    if wrong_key:
        v.append(f"{len(wrong_key)} requests whose Idempotency-Key is not the post's fingerprint")
    if published_unsent:
        v.append(f"Published without an accepted request: {published_unsent[:examples]}")
    return result


def write_details(
    path: Path, objs: list[dict[str, Any]], requests: list[Received], result: Audit
) -> None:
    """Per post: phase, attempts, lateness and every request n8n saw (times relative
    to publishAt), for digging into a scenario's figures after the fact."""
    by_uid: dict[str, list[Received]] = defaultdict(list)
    for r in requests:
        by_uid[_request_key(r)[0]].append(r)
    out = {}
    for obj in sorted(objs, key=lambda o: o["spec"].get("publishAt", "")):
        status = obj.get("status") or {}
        due = parse_time(obj["spec"]["publishAt"])
        name = obj["metadata"]["name"]
        out[name] = {
            "phase": status.get("phase"),
            "attempt": status.get("attempt"),
            "claimedBy": status.get("claimedBy"),
            "lastError": (status.get("lastError") or {}).get("code"),
            "lateness_s": rounded(result.lateness.get(name)),
            "requests": [
                [_request_key(r)[1], round(r.at - due, 3), r.answered, r.abandoned]
                for r in sorted(by_uid[obj["metadata"]["uid"]], key=lambda r: r.at)
            ],
        }
    path.write_text(json.dumps(out, indent=1))
