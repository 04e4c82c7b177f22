"""The alert rules and the Grafana dashboard shipped in charts/herald/files.

Checks that promtool accepts the rules and passes their unit tests, that every alert is
documented, that the dashboard is well formed, and that every metric and label the PromQL
refers to is one `herald.metrics.Metrics` actually exports. promtool is required (CI
installs it with hack/ci-deps.sh): without it these tests fail rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from herald.metrics import FAILED_REASONS, Metrics, PhaseCount, failed_reason

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "herald" / "files"
RULES = FILES / "herald-alerts.rules.yaml"
DASHBOARD = FILES / "herald-dashboard.json"
RULE_TESTS = ROOT / "tests" / "promtool" / "herald-alerts.test.yaml"
RUNBOOK = "https://github.com/herald-dev/herald/blob/main/README.md#"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds at scrape time, usable in any selector or grouping.
TARGET_LABELS = frozenset({"job", "instance", "pod"})
# A post's identity must never become a label (unbounded cardinality).
FORBIDDEN_LABELS = frozenset({"name", "uid", "post", "scheduledpost", "post_name", "post_uid"})
# Grafana's variables, replaced by something PromQL accepts before promtool sees the query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$target": ".*",
}

METRIC = re.compile(r"\bherald_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(herald_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"\s*,?")
GROUPING = re.compile(r"\b(by|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(
    r"label_values\(\s*(herald_[a-z0-9_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)"
)
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run hack/ci-deps.sh (Debian package prometheus)"
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> None:
    proc = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


# --- what Herald exports -------------------------------------------------------------------


def exported() -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """Family name -> type, and family name -> labels, from a fresh Metrics registry."""
    m = Metrics()
    m.watch_cache(lambda: [PhaseCount("Scheduled", "default", 1)], lambda: 0)
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            sample = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            assert sample, line
            names = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", sample.group(2) or ""))
            labels.setdefault(sample.group(1), set()).update(names)
    # Labelled metrics without children print no samples: take their declared label names.
    for metric in vars(m).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name
            kind = metric._type
            family = f"{name}_total" if kind == "counter" else name
            labels.setdefault(family, set()).update(metric._labelnames)
    # Older prometheus_client prints a counter's TYPE without the _total suffix.
    for name, kind in list(types.items()):
        if kind == "counter" and not name.endswith("_total"):
            types[f"{name}_total"] = kind
    return types, {name: frozenset(values) for name, values in labels.items()}


TYPES, LABELS = exported()


def family(series_name: str) -> str | None:
    """The exported family a series name belongs to, or None if Herald exports no such name."""
    if TYPES.get(series_name) not in (None, "histogram"):
        return series_name
    for suffix in HISTOGRAM_SUFFIXES:
        base = series_name.removesuffix(suffix)
        if base != series_name and TYPES.get(base) == "histogram":
            return base
    if TYPES.get(series_name) == "histogram":
        return None  # a histogram is only ever queried through its _bucket/_sum/_count series
    return None


def labels_of(series_name: str) -> frozenset[str]:
    base = family(series_name)
    assert base is not None
    declared = set(LABELS.get(base, frozenset())) | set(LABELS.get(series_name, frozenset()))
    if series_name.endswith("_bucket"):
        declared.add("le")
    return frozenset(declared | TARGET_LABELS)


def test_exported_names_cover_the_documented_metrics() -> None:
    expected = {
        "herald_build_info": "gauge",
        "herald_dispatch_total": "counter",
        "herald_dispatch_duration_seconds": "histogram",
        "herald_publish_lateness_seconds": "histogram",
        "herald_stale_recoveries_total": "counter",
        "herald_reclaims_total": "counter",
        "herald_retries_scheduled_total": "counter",
        "herald_failed_total": "counter",
        "herald_circuit_state": "gauge",
        "herald_dispatch_in_flight": "gauge",
        "herald_dispatcher_heartbeat_timestamp_seconds": "gauge",
        "herald_claim_conflicts_total": "counter",
        "herald_published_total": "counter",
        "herald_time_to_published_seconds": "histogram",
        "herald_callbacks_total": "counter",
        "herald_callback_duration_seconds": "histogram",
        "herald_posts": "gauge",
        "herald_backlog": "gauge",
        "herald_status_write_errors_total": "counter",
        "herald_posts_deleted_total": "counter",
        "herald_kube_connections_total": "counter",
    }
    for name, kind in expected.items():
        assert TYPES.get(name) == kind, name
    assert labels_of("herald_dispatch_total") >= {"target", "outcome"}
    assert labels_of("herald_posts") >= {"phase", "namespace"}
    assert labels_of("herald_status_write_errors_total") >= {"reason"}
    assert labels_of("herald_posts_deleted_total") >= {"phase"}


def test_labelled_counters_start_at_zero_for_every_known_value() -> None:
    """A rate() over a series that appears only on its first increment misses that
    increment: initialise() exports every label value the code can use at 0."""
    m = Metrics()
    m.initialise(["default"])
    text = generate_latest(m.registry).decode()
    for series in (
        'herald_failed_total{reason="UnknownTarget"} 0.0',
        'herald_failed_total{reason="MissedDeadline"} 0.0',
        'herald_failed_total{reason="ReconnectAccount"} 0.0',
        'herald_failed_total{reason="UnknownAccount"} 0.0',
        'herald_failed_total{reason="ChannelNotConfigured"} 0.0',
        'herald_failed_total{reason="Duplicate"} 0.0',
        'herald_status_write_errors_total{reason="invalid"} 0.0',
        'herald_status_write_errors_total{reason="unavailable"} 0.0',
        'herald_posts_deleted_total{phase="Published"} 0.0',
        'herald_posts_deleted_total{phase="Failed"} 0.0',
        'herald_callbacks_total{result="rejected"} 0.0',
        'herald_kube_connections_total{kind="tls"} 0.0',
    ):
        assert series in text.splitlines(), series


@pytest.mark.parametrize(
    ("condition", "code", "reason"),
    [
        ("PermanentFailure", "ReconnectAccount", "ReconnectAccount"),
        ("PermanentFailure", "UnknownAccount", "UnknownAccount"),
        ("PermanentFailure", "ChannelNotConfigured", "ChannelNotConfigured"),
        ("PermanentFailure", "Duplicate", "Duplicate"),
        # Any other code n8n sends stays PermanentFailure: the label keeps a fixed set.
        ("PermanentFailure", "HTTP400", "PermanentFailure"),
        ("PermanentFailure", "reconnectaccount", "PermanentFailure"),
        ("PermanentFailure", None, "PermanentFailure"),
        # Out of attempts after a transient code: the reason is the exhaustion.
        ("RetriesExhausted", "ReconnectAccount", "RetriesExhausted"),
        ("MissedDeadline", "MissedDeadline", "MissedDeadline"),
    ],
)
def test_failed_reason(condition: str, code: str | None, reason: str) -> None:
    assert failed_reason(condition, code) == reason
    assert reason in FAILED_REASONS


# --- PromQL analysis -----------------------------------------------------------------------


def _balanced(text: str, start: int) -> str | None:
    """The text inside the parenthesis that opens at text[start], or None."""
    if start >= len(text) or text[start] != "(":
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def _preceding_group(text: str, end: int) -> str | None:
    """The text inside the parenthesised group that closes just before text[end]."""
    i = end - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    if i < 0 or text[i] != ")":
        return None
    depth = 0
    for j in range(i, -1, -1):
        depth += {")": 1, "(": -1}.get(text[j], 0)
        if depth == 0:
            return text[j + 1 : i]
    return None


def label_problems(expr: str) -> list[str]:
    """Unknown metrics, and labels a selector or grouping uses that its metrics lack."""
    problems = [f"unknown metric {name}" for name in METRIC.findall(expr) if family(name) is None]
    if problems:
        return problems
    for name, matchers in SELECTOR.findall(expr):
        used = MATCHER.findall(matchers)
        assert "".join(MATCHER.sub("", matchers).split()) == "", f"unparsed matchers: {matchers}"
        problems += [f"{name} has no label {lab}" for lab in used if lab not in labels_of(name)]
        problems += [
            f"{name}: post identity label {lab}" for lab in used if lab in FORBIDDEN_LABELS
        ]
    for match in GROUPING.finditer(expr):
        grouped = [lab.strip() for lab in match.group(2).split(",") if lab.strip()]
        problems += [f"post identity label {lab}" for lab in grouped if lab in FORBIDDEN_LABELS]
        # `agg by (...) (expr)` or `agg (expr) by (...)`: the metrics the grouping applies to.
        rest = expr[match.end() :].lstrip()
        body = _balanced(rest, 0) if rest.startswith("(") else None
        if body is None:
            body = _preceding_group(expr, match.start())
        assert body is not None, f"cannot find the argument of {match.group(0)!r} in {expr}"
        names = METRIC.findall(body)
        assert names, f"{match.group(0)!r} groups no Herald metric in {expr}"
        allowed = frozenset().union(*(labels_of(name) for name in names))
        problems += [
            f"{match.group(0)}: none of {sorted(set(names))} has label {lab}"
            for lab in grouped
            if lab not in allowed
        ]
    return problems


def test_label_checker_catches_mistakes() -> None:
    assert label_problems('sum by (outcome) (rate(herald_dispatch_total{target="a"}[5m]))') == []
    assert label_problems("herald_dispatch_totals") == ["unknown metric herald_dispatch_totals"]
    assert label_problems("herald_publish_lateness_seconds") != []  # histogram, no suffix
    assert label_problems('herald_backlog{phase="Failed"}') != []
    assert label_problems("sum by (channel) (rate(herald_dispatch_total[5m]))") != []
    assert label_problems("sum(rate(herald_failed_total[5m])) by (name)") != []
    assert label_problems("sum by (le) (rate(herald_time_to_published_seconds_bucket[5m]))") == []
    assert label_problems("sum by (le) (rate(herald_time_to_published_seconds_count[5m]))") != []


# --- alert rules ---------------------------------------------------------------------------


def load_rules() -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    assert isinstance(doc, dict)
    return doc


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(RULES))


def test_promtool_rule_unit_tests() -> None:
    run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_rules_file_is_a_plain_rules_file() -> None:
    doc = load_rules()
    # The chart embeds this file as a PrometheusRule's spec: `groups` and nothing else.
    assert list(doc) == ["groups"]
    assert {rule["alert"] for rule in alert_rules()} >= {
        "HeraldDispatcherStalled",
        "HeraldPostsStuckPublishing",
        "HeraldPublishFailureRatioHigh",
        "HeraldCircuitOpen",
        "HeraldBacklogGrowing",
        "HeraldPublishLatenessHigh",
    }


def test_every_alert_is_documented() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name} lacks {key}"
        assert annotations["runbook_url"] == RUNBOOK + name.lower(), name
        assert "{{" in annotations["description"], f"{name}'s description shows no value"


def test_every_alert_has_unit_tests_both_ways() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never seen firing"
    assert names - silent == set(), "alerts never seen silent"


def test_rule_promql_uses_exported_metrics_and_labels() -> None:
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            assert METRIC.search(rule["expr"]), f"{name} uses no Herald metric"
            assert label_problems(rule["expr"]) == [], name
            texts = [str(v) for v in rule.get("annotations", {}).values()]
            for text in texts:
                for lab in TEMPLATE_LABEL.findall(text):
                    assert lab not in FORBIDDEN_LABELS, f"{name} templates {lab}"


# --- dashboard -----------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    assert exprs
    return exprs


def template_queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert "dashboard" not in dashboard, "plain dashboard JSON, not an API envelope"
    assert dashboard["uid"] == "herald-overview"
    assert dashboard["title"] == "Herald"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "datasource" in variables, "the dashboard needs a `datasource` variable"
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}

    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        title = panel.get("title")
        grid = panel["gridPos"]
        assert set(grid) >= {"x", "y", "w", "h"}, title
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), title
        assert grid["w"] > 0, title
        assert grid["h"] > 0, title
        assert grid["x"] + grid["w"] <= 24, title
        if panel["type"] == "row":
            assert not panel.get("targets"), title
            continue
        assert title, panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        targets = panel.get("targets")
        assert targets, title
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in targets:
            assert target["refId"], title
            assert str(target["expr"]).strip(), title
            if "datasource" in target:
                assert target["datasource"]["uid"] == "${datasource}", title


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(load_dashboard()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_promql_uses_exported_metrics_and_labels() -> None:
    dashboard = load_dashboard()
    used: set[str] = set()
    for expr in dashboard_queries(dashboard):
        assert METRIC.search(expr), f"no Herald metric in {expr}"
        assert label_problems(expr) == [], expr
        used.update(family(name) or name for name in METRIC.findall(expr))
    for query in template_queries(dashboard):
        match = LABEL_VALUES.fullmatch(query.strip())
        assert match, query
        assert family(match.group(1)) is not None, query
        assert match.group(2) in labels_of(match.group(1)), query
    # Every metric Herald exports is on the dashboard.
    families = {
        name
        for name, kind in TYPES.items()
        if not name.endswith("_created") and (kind != "counter" or name.endswith("_total"))
    }
    assert families - used == set(), "metrics missing from the dashboard"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule, variables substituted)."""
    rules = []
    for i, query in enumerate(dashboard_queries(load_dashboard())):
        expr = query
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {query}"
        rules.append({"record": f"herald:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (uid) (herald_posts{phase="Failed"})',
        'herald_dispatch_total{name="my-post"}',
    ],
)
def test_post_identity_labels_are_rejected(expr: str) -> None:
    assert any("post identity" in problem for problem in label_problems(expr))
