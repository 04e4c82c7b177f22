"""The chart's Argo CD health check (charts/herald/files/argocd-health.lua), run in a real
Lua 5.1 interpreter (lupa; Argo CD's gopher-lua speaks Lua 5.1).

Two sources of objects: the fixtures in argocd_health/ (one post per phase, listed in
health_test.yaml in the format of Argo CD's resource_customizations/*/health_test.yaml),
and statuses the real state machine writes for every phase, so the script cannot drift
from what the operator produces.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from herald import engine
from herald.engine import Callback, Failure, Published
from herald.models import ErrorClass, parse_spec, parse_status
from tests.unit.test_engine import DEFAULTS, ME, NOW, at, post

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts/herald/files/argocd-health.lua"
FIXTURES = Path(__file__).parent / "argocd_health"
CASES = yaml.safe_load((FIXTURES / "health_test.yaml").read_text())["tests"]

# What Argo CD's Lua VM offers a health script without useOpenLibs: the base and table
# libraries (and a package loader). Everything else is removed here, so a script that
# calls string.*, os.* or io.* fails this test as it would fail in Argo CD.
NOT_IN_ARGO_SANDBOX = ("string", "os", "io", "math", "coroutine", "debug", "require")


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script as Argo CD does: the object as the global `obj`, and the returned
    table's status and message."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua_globals = lua.globals()
    for name in NOT_IN_ARGO_SANDBOX:
        lua_globals[name] = None
    lua_globals.obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    assert result is not None, "the script returned nothing"
    out = dict(result.items())
    assert set(out) <= {"status", "message"}, out
    return {key: str(value) for key, value in out.items()}


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_of_fixture(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
    # The fixture is a post the operator could have written: it parses as one.
    parse_spec(obj["spec"])
    parse_status(obj.get("status"))
    assert health(obj) == case["healthStatus"]


def test_every_phase_has_a_fixture() -> None:
    phases = set()
    for case in CASES:
        obj = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
        phases.add((obj.get("status") or {}).get("phase"))
    assert phases == {
        None,
        "Pending",
        "Scheduled",
        "Suspended",
        "Publishing",
        "Retrying",
        "Published",
        "Failed",
    }


def as_object(p: engine.Post) -> dict[str, Any]:
    """The post as the API server would return it (JSON, as Argo CD hands it to Lua)."""
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"namespace": p.namespace, "name": p.name, "uid": p.uid, "generation": 1},
        "spec": p.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": p.status.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def walk() -> dict[str, engine.Post]:
    """One post through every phase, by the state machine's own decisions."""
    seen: dict[str, engine.Post] = {}

    def write(p: engine.Post, decision: engine.Decision) -> engine.Post:
        assert decision.status is not None
        p = engine.replace_status(p, decision.status)
        seen.setdefault(str(p.status.phase), p)  # the first post to reach it
        return p

    new = post(publish_at=at(5))
    assert engine.plan(new, NOW, DEFAULTS) == engine.NOTHING
    seen["Pending"] = new  # as the API server shows it: nothing written yet
    p = write(new, engine.act(new, NOW, DEFAULTS, ME))  # the claim is its first write
    busy = Failure(ErrorClass.TRANSIENT, "HTTP503", "n8n answered 503")
    p = write(p, engine.dispatch_result(p, at(5), busy, DEFAULTS, ME))
    p = write(p, engine.act(p, at(600), DEFAULTS, ME))
    done = Callback(p.status.attempt, published=Published("urn:1", "https://x.test/1"))
    write(p, engine.callback(p, at(601), done, DEFAULTS).decision)
    late = post(publish_at=NOW - dt.timedelta(days=3))
    write(
        late,
        engine.act(late, NOW, dataclasses.replace(DEFAULTS, starting_deadline_seconds=86400), ME),
    )
    held = post(suspend=True, publish_at=at(5))
    held = write(held, engine.plan(held, NOW, DEFAULTS))
    resumed = engine.Post(
        held.namespace,
        held.name,
        held.uid,
        2,
        held.spec.model_copy(update={"suspend": False}),
        held.status,
    )
    write(resumed, engine.plan(resumed, NOW, DEFAULTS))  # Scheduled, written by the resume
    return seen


EXPECTED = {
    "Pending": "Healthy",
    "Scheduled": "Healthy",
    "Suspended": "Suspended",
    "Publishing": "Progressing",
    "Retrying": "Progressing",
    "Published": "Healthy",
    "Failed": "Degraded",
}


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_health_of_what_the_engine_writes(phase: str) -> None:
    p = walk()[phase]
    got = health(as_object(p))
    assert got["status"] == EXPECTED[phase], got
    # A Pending post says what the operator reads it as (engine.as_planned).
    message = engine.as_planned(p).status.message
    assert message is not None and message in got["message"], got


def test_scheduled_message_says_when() -> None:
    got = health(as_object(walk()["Scheduled"]))
    assert got == {
        "status": "Healthy",
        "message": "Publishes at 2030-01-15T09:00:05Z via target default",
    }


def test_failed_message_names_the_reason() -> None:
    got = health(as_object(walk()["Failed"]))
    assert got["status"] == "Degraded"
    assert got["message"].startswith("MissedDeadline: First dispatch possible 259200s (3d 0h)")


def test_readme_snippet_is_the_shipped_script() -> None:
    """The argocd-cm block of the README is copy-pasteable: the same script, as YAML."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm")
    block = readme[start + len("```yaml\n") : readme.index("```", start + 3)]
    data = yaml.safe_load(block)["data"]
    assert data == {"resource.customizations.health.herald.dev_ScheduledPost": SCRIPT.read_text()}
