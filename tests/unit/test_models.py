"""The pydantic models (herald.models) and the CRD generated from them (herald.crdgen).

The committed CRD must be exactly what the models produce; every model field must be in
the CRD's schema and every schema property in the models; the models must reject what
the API server rejects (the same table as tests/e2e/test_crd.py); the samples validate.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from herald import crdgen, models
from herald.models import ScheduledPostSpec, ScheduledPostStatus
from tests.e2e.test_crd import INVALID, LIMIT_CASES, NETWORK_LIMITS, VALID

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "scheduledposts.herald.dev.yaml"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))


def committed_crd() -> dict[str, Any]:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def crd_schema(part: str) -> dict[str, Any]:
    (version,) = committed_crd()["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]["properties"][part]
    assert isinstance(schema, dict)
    return schema


# --- the committed CRD is generated ------------------------------------------------------


def test_committed_crd_is_what_crdgen_renders() -> None:
    assert CRD_FILE.read_text() == crdgen.render(), (
        "crds/scheduledposts.herald.dev.yaml is out of date with operator/herald/models.py: "
        "run `make crd` and commit the result"
    )


def test_committed_publication_crd_is_what_crdgen_renders() -> None:
    committed = (ROOT / "crds" / "publications.herald.dev.yaml").read_text()
    assert committed == crdgen.render("publications"), (
        "crds/publications.herald.dev.yaml is out of date with operator/herald/models.py: "
        "run `make crd` and commit the result"
    )


@pytest.mark.parametrize("plural", ["socialaccounts", "clustersocialaccounts"])
def test_committed_account_crds_are_what_crdgen_renders(plural: str) -> None:
    committed = (ROOT / "crds" / f"{plural}.herald.dev.yaml").read_text()
    assert committed == crdgen.render(plural), (
        f"crds/{plural}.herald.dev.yaml is out of date with operator/herald/models.py: "
        "run `make crd` and commit the result"
    )


def test_crd_identity() -> None:
    crd = committed_crd()
    assert crd["metadata"]["name"] == "scheduledposts.herald.dev"
    assert crd["spec"]["group"] == models.GROUP
    assert crd["spec"]["names"]["kind"] == "ScheduledPost"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == models.VERSION
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]


# --- every field both ways --------------------------------------------------------------


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The BaseModel inside `annotation` (through Optional, list, Annotated) and whether
    it is a list of them."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is list:
        inner, _ = _nested_model(typing.get_args(annotation)[0])
        return inner, True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            inner, is_list = _nested_model(arg)
            if inner is not None:
                return inner, is_list
    return None, False


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        inner, is_list = _nested_model(info.annotation)
        if inner is not None:
            paths |= model_paths(inner, f"{path}[]" if is_list else path)
    return paths


def schema_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        paths |= schema_paths(sub, path)
    if "items" in node:
        paths |= schema_paths(node["items"], f"{prefix}[]")
    return paths


@pytest.mark.parametrize(
    ("part", "model"),
    [
        pytest.param("spec", ScheduledPostSpec, id="spec"),
        pytest.param("status", ScheduledPostStatus, id="status"),
    ],
)
def test_every_model_field_is_in_the_crd_and_back(part: str, model: type[BaseModel]) -> None:
    in_models = model_paths(model)
    in_crd = schema_paths(crd_schema(part))
    assert in_models - in_crd == set(), "model fields missing from the CRD"
    assert in_crd - in_models == set(), "CRD properties without a model field"


def test_the_field_walk_reaches_nested_models() -> None:
    spec = model_paths(ScheduledPostSpec)
    status = model_paths(ScheduledPostStatus)
    assert {"content.media[].altText", "retry.maxBackoffSeconds", "publishAt"} <= spec
    assert {"lastError.class", "history[].finishedAt", "conditions[].lastTransitionTime"} <= status
    assert "ttlSecondsAfterFinished" in spec
    assert {"claimedGeneration", "retryEpoch", "retryBaseAttempt"} <= status
    assert len(spec) == 19  # + edition (the publication ledger)
    assert len(status) == 38  # + account (kind, name, handle): the account it was sent as


def test_required_fields_match() -> None:
    spec = crd_schema("spec")
    assert sorted(spec["required"]) == ["content", "publishAt"]
    assert spec["properties"]["content"]["required"] == ["text"]
    assert sorted(spec["properties"]["content"]["properties"]["media"]["items"]["required"]) == [
        "url"
    ]
    status = crd_schema("status")
    assert "required" not in status
    assert sorted(status["properties"]["lastError"]["required"]) == [
        "at",
        "class",
        "code",
        "message",
    ]


def test_crd_carries_the_model_constraints() -> None:
    spec = crd_schema("spec")["properties"]
    assert spec["content"]["properties"]["text"]["maxLength"] == models.TEXT_MAX
    assert spec["content"]["properties"]["media"]["maxItems"] == models.MEDIA_MAX
    assert spec["channel"]["enum"] == [c.value for c in models.Channel]
    assert spec["channel"]["default"] == "linkedin"
    assert spec["target"]["default"] == "default"
    assert spec["publishAt"]["pattern"] == models.RFC3339_WITH_OFFSET
    assert spec["retry"]["x-kubernetes-validations"][0]["fieldPath"] == ".maxBackoffSeconds"
    status = crd_schema("status")["properties"]
    assert status["history"]["maxItems"] == models.HISTORY_LIMIT
    assert status["phase"]["enum"] == [p.value for p in models.Phase]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_crd_carries_the_constraints_of_the_ttl_and_retry_fields() -> None:
    ttl = crd_schema("spec")["properties"]["ttlSecondsAfterFinished"]
    assert (ttl["type"], ttl["minimum"], ttl["maximum"]) == ("integer", 0, 315360000)
    assert "default" not in ttl  # unset: the operator's defaults apply
    status = crd_schema("status")["properties"]
    assert status["claimedGeneration"]["minimum"] == 0
    assert "default" not in status["claimedGeneration"]
    for name in ("retryEpoch", "retryBaseAttempt"):
        assert (status[name]["type"], status[name]["minimum"], status[name]["default"]) == (
            "integer",
            0,
            0,
        ), name


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param(None, True, id="unset"),
        pytest.param(0, True, id="zero-deletes-at-once"),
        pytest.param(315360000, True, id="ten-years"),
        pytest.param(-1, False, id="negative"),
        pytest.param(315360001, False, id="over-ten-years"),
    ],
)
def test_ttl_seconds_after_finished_bounds(value: int | None, ok: bool) -> None:
    manifest = {**VALID["spec"], "ttlSecondsAfterFinished": value}
    if ok:
        spec = ScheduledPostSpec.model_validate(manifest)
        assert spec.ttl_seconds_after_finished == value
    else:
        with pytest.raises(ValidationError) as caught:
            ScheduledPostSpec.model_validate(manifest)
        assert [e["loc"] for e in caught.value.errors()] == [("ttlSecondsAfterFinished",)]


# --- the models reject what the API server rejects ----------------------------------------

SPEC_CASES = [case for case in INVALID if case[0] != "missing-spec"]


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@pytest.mark.parametrize(
    ("case", "manifest", "expected"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES]
)
def test_model_rejects_what_the_api_server_rejects(
    case: str, manifest: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        ScheduledPostSpec.model_validate(manifest["spec"])
    server_field = expected[0]
    paths = [_field_path(err["loc"]) for err in caught.value.errors()]
    # pydantic names the field the server names, or (for a cross-field rule) its parent.
    assert any(server_field == p or server_field.startswith(p + ".") for p in paths), (
        f"{case}: pydantic blamed {paths}, the API server {server_field}"
    )


@pytest.mark.parametrize(("case", "spec", "expected"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_channel_violations_match_the_api_server(
    case: str, spec: dict[str, Any], expected: list[str] | None
) -> None:
    """channel_violations() refuses exactly what the CRD's CEL rules refuse, for the same
    field; the post itself still parses (the operator reads posts stored before a limit)."""
    parsed = ScheduledPostSpec.model_validate(spec)
    broken = models.channel_violations(parsed)
    if expected is None:
        assert broken == [], f"{case}: {[r.message for r in broken]}"
        return
    assert [f"spec{r.field_path}" for r in broken] == [expected[0]], case
    for needle in expected[1:]:
        assert needle in broken[0].message, f"{case}: {needle!r} not in {broken[0].message!r}"


def test_every_channel_has_its_limits_and_rules_in_the_crd() -> None:
    assert set(models.CHANNEL_LIMITS) == set(models.Channel)
    assert {
        ch.value: (limits.text, limits.media) for ch, limits in models.CHANNEL_LIMITS.items()
    } == NETWORK_LIMITS
    rules = crd_schema("spec")["x-kubernetes-validations"]
    assert rules == [rule.cel() for rule in models.channel_rules()]
    for channel in models.Channel:
        mine = [r for r in rules if f"'{channel.value}'" in r["rule"]]
        assert {r["fieldPath"] for r in mine} >= {".content.text", ".content.media"}, channel
    # The schema's bounds never refuse first: the channel's rule names the channel.
    spec = crd_schema("spec")["properties"]["content"]["properties"]
    assert spec["text"]["maxLength"] > max(lim.text for lim in models.CHANNEL_LIMITS.values())
    assert spec["media"]["maxItems"] > max(lim.media for lim in models.CHANNEL_LIMITS.values())


def test_missing_spec_case_is_the_only_one_left_out() -> None:
    assert {c[0] for c in INVALID} - {c[0] for c in SPEC_CASES} == {"missing-spec"}
    assert "unknown-field" in {c[0] for c in SPEC_CASES}


def test_the_e2e_valid_manifest_validates() -> None:
    spec = ScheduledPostSpec.model_validate(VALID["spec"])
    assert spec.publish_at == dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC)
    assert spec.channel is models.Channel.LINKEDIN
    assert spec.target == "default"
    assert spec.suspend is False
    assert spec.retry is None


@pytest.mark.parametrize(
    ("publish_at", "utc"),
    [
        pytest.param("2030-01-01T09:00:00Z", dt.datetime(2030, 1, 1, 9), id="zulu"),
        pytest.param("2030-01-01T10:00:00+01:00", dt.datetime(2030, 1, 1, 9), id="plus-one"),
        pytest.param("2030-01-01T04:30:00-04:30", dt.datetime(2030, 1, 1, 9), id="minus-4-30"),
        pytest.param(
            "2030-01-01T09:00:00.250Z", dt.datetime(2030, 1, 1, 9, 0, 0, 250000), id="fraction"
        ),
    ],
)
def test_publish_at_is_normalised_to_utc(publish_at: str, utc: dt.datetime) -> None:
    spec = ScheduledPostSpec.model_validate({**VALID["spec"], "publishAt": publish_at})
    assert spec.publish_at == utc.replace(tzinfo=dt.UTC)
    assert spec.publish_at.utcoffset() == dt.timedelta(0)


def test_time_serialisation_is_rfc3339_zulu() -> None:
    assert (
        models.format_time(dt.datetime(2030, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1))))
        == "2030-01-01T09:00:00Z"
    )
    assert models.format_time(dt.datetime(2030, 1, 1, 9, 0, 0, 123456, tzinfo=dt.UTC)) == (
        "2030-01-01T09:00:00.123Z"
    )


def test_status_ignores_unknown_fields_from_a_newer_herald() -> None:
    status = ScheduledPostStatus.model_validate({"phase": "Scheduled", "attempt": 0, "future": 1})
    assert status.phase is models.Phase.SCHEDULED


def test_status_round_trips_through_json() -> None:
    raw = {
        "phase": "Failed",
        "attempt": 2,
        "claimedAt": "2030-01-01T09:00:00Z",
        "claimedBy": "herald-0/abcd",
        "claimedGeneration": 3,
        "retryEpoch": 1,
        "retryBaseAttempt": 1,
        "lastError": {
            "class": "Permanent",
            "code": "HTTP400",
            "message": "bad",
            "at": "2030-01-01T09:00:01.500Z",
        },
        "history": [
            {"attempt": 2, "finishedAt": "2030-01-01T09:00:01.500Z", "outcome": "Permanent"}
        ],
        "conditions": [
            {
                "type": "Published",
                "status": "False",
                "reason": "PermanentFailure",
                "message": "",
                "lastTransitionTime": "2030-01-01T09:00:01Z",
                "observedGeneration": 1,
            }
        ],
        "observedGeneration": 1,
    }
    status = ScheduledPostStatus.model_validate(raw)
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json") == raw
    assert (status.claimed_generation, status.retry_epoch, status.retry_base_attempt) == (3, 1, 1)


def test_status_written_before_manual_retry_epochs_reads_as_epoch_0() -> None:
    """A status an older Herald wrote has none of the new fields: no manual retry yet,
    no claimed generation (an orphan of it is re-claimed, not released)."""
    old = {"phase": "Publishing", "attempt": 2, "claimedBy": "herald-0/abcd"}
    status = ScheduledPostStatus.model_validate(old)
    assert (status.claimed_generation, status.retry_epoch, status.retry_base_attempt) == (
        None,
        0,
        0,
    )
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json") == {
        **old,
        "retryEpoch": 0,
        "retryBaseAttempt": 0,
    }


# --- samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_sample_validates(sample: Path) -> None:
    doc = yaml.safe_load(sample.read_text())
    assert doc["apiVersion"] == models.API_VERSION
    assert doc["kind"] == models.KIND
    spec = ScheduledPostSpec.model_validate(doc["spec"])
    assert spec.publish_at.tzinfo is not None


def test_samples_are_the_expected_ones() -> None:
    assert [s.name for s in SAMPLES] == [
        "linkedin-launch.yaml",
        "suspended-draft.yaml",
        "with-media-and-retry.yaml",
    ]
    by_name = {
        s.name: ScheduledPostSpec.model_validate(yaml.safe_load(s.read_text())["spec"])
        for s in SAMPLES
    }
    photos = by_name["with-media-and-retry.yaml"]
    assert photos.publish_at == dt.datetime(2030, 3, 2, 16, 30, tzinfo=dt.UTC)
    assert photos.retry == models.RetryPolicy(
        max_attempts=3, backoff_seconds=30, max_backoff_seconds=300
    )
    assert photos.content.media is not None
    assert [m.alt_text for m in photos.content.media] == [
        "The speaker on stage in front of a full room",
        "The team after the talk",
    ]
    assert by_name["suspended-draft.yaml"].suspend is True
    assert by_name["linkedin-launch.yaml"].account == "company-page"
