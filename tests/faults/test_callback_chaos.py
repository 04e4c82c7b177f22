"""Duplicate and reordered callbacks: n8n delivers every callback 3 times at random
moments (seeded) within 10 s, so copies of attempt 1's failure report interleave with
attempt 2's success. The end state is consistent and each outcome is one transition:
one Published Event per post, one RetryScheduled per failed first attempt, exactly one
callback copy per (post, attempt, outcome) answered "applied"."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.fake_n8n import published_callback
from tests.support.faults import create_posts, events_by_post

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

COPIES = 3
SPREAD = 10.0


def outcomes(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Posts named twice-*: attempt 1 fails (retryable) by callback; the rest publish."""
    if body["name"].startswith("twice-") and body["attempt"] == 1:
        return [
            {
                "status": "failed",
                "error": {
                    "message": "LinkedIn answered 503",
                    "code": "Upstream503",
                    "retryable": True,
                },
            }
        ]
    return published_callback(body)


@pytest.mark.timeout(240)
def test_duplicated_and_reordered_callbacks(herald: Herald, n8n: StartN8n, report: Report) -> None:
    once = size("callback_posts", 70)
    twice = size("callback_retried_posts", 30)
    fake = n8n(
        auto_callback=True,
        callback_bodies=outcomes,
        callback_copies=COPIES,
        callback_spread=SPREAD,
        seed=7,
    )
    # Published Events are routine (off by default): turned on, they show that each
    # outcome was applied exactly once.
    herald.sidecar(routine_events="true")
    herald.operator(fake.url, "herald-0", routine_events="true")
    t0 = time.time() + 5.0
    retry = {"backoffSeconds": 1, "maxBackoffSeconds": 2}
    plan = [(f"once-{i:03d}", t0 + i * 0.1, {}) for i in range(once)]
    plan += [(f"twice-{i:03d}", t0 + i * 0.1, {"retry": retry}) for i in range(twice)]
    create_posts(herald.client, herald.namespace, plan)
    report.update({"posts": once + twice, "retried_posts": twice, "copies": COPIES})

    result, objs = herald.finish(fake, once + twice, report, timeout=120, grace=SPREAD + 1)
    time.sleep(1.0)  # Events are posted in the background after each transition
    events = events_by_post(herald.client, herald.namespace)

    answers: Counter[str] = Counter()
    applied: Counter[tuple[str, int, str]] = Counter()
    for d in fake.deliveries:
        try:
            result_name = json.loads(d.answer).get("result") or json.loads(d.answer)["code"]
        except (ValueError, KeyError):
            result_name = f"http{d.status}"
        answers[f"{d.status} {result_name}"] += 1
        if result_name == "applied":
            applied[(d.uid, d.attempt, d.outcome)] += 1
    report["callback_answers"] = dict(answers)
    expected_outcomes = once + 2 * twice
    report["outcomes_applied_once"] = sum(1 for n in applied.values() if n == 1)
    # Evidence that the order really was scrambled across attempts.
    second_sent = {r.message[0]: r.at for r in fake.snapshot() if r.message and r.message[1] == 2}
    report["attempt1_copies_after_attempt2_sent"] = sum(
        1 for d in fake.deliveries if d.attempt == 1 and d.at > second_sent.get(d.uid, 1e18)
    )

    problems: list[str] = []
    for obj in objs:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        history = [h["outcome"] for h in status.get("history") or []]
        reasons = events.get(name, Counter())
        want_attempt, want_history = (
            (2, ["Transient", "Published"]) if name.startswith("twice-") else (1, ["Published"])
        )
        if status.get("phase") != "Published":
            problems.append(f"{name}: phase {status.get('phase')}")
        if status.get("attempt") != want_attempt or history != want_history:
            problems.append(f"{name}: attempt {status.get('attempt')}, history {history}")
        if reasons["Published"] != 1:
            problems.append(f"{name}: {reasons['Published']} Published events")
        if name.startswith("twice-") and reasons["RetryScheduled"] != 1:
            problems.append(f"{name}: {reasons['RetryScheduled']} RetryScheduled events")
    twice_applied = [k for k, n in applied.items() if n > 1]
    report["inconsistent_posts"] = len({p.split(":")[0] for p in problems})
    assert not result.violations, result.summary()
    assert not problems, problems[:10]
    assert not twice_applied, f"outcomes applied more than once: {twice_applied[:5]}"
    assert len(applied) == expected_outcomes, f"{len(applied)} of {expected_outcomes} applied"
    assert not any(d.status >= 500 or d.status == 0 for d in fake.deliveries), answers
