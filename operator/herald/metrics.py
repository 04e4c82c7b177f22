"""Every Prometheus metric Herald exports, in one place.

Both processes build a `Metrics` on their own registry; the operator's dispatcher and the
callback sidecar each fill in their part. Labels are bounded by construction: phase,
namespace, target, outcome, result and channel come from enums or from configuration,
never from a post's name or uid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from herald import __version__
from herald.models import Channel

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
TIME_TO_PUBLISHED_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

DISPATCH_OUTCOMES = ("accepted", "published", "transient", "permanent", "deferred_circuit_open")
CALLBACK_RESULTS = (
    "applied",
    "duplicate",
    "conflict",
    "unauthorized",
    "invalid",
    "not_found",
    "too_large",
    "unsupported_media_type",
    "unavailable",
    "rejected",
)
ACTIONABLE_CODES = (
    "ReconnectAccount",
    "UnknownAccount",
    "NoAccount",
    "ChannelNotConfigured",
    "Duplicate",
)
"""Codes of a permanent failure reported by n8n's workflows that tell a person what to do
(reconnect a credential, fix spec.account, configure the channel, look at the existing
post). herald_failed_total counts them under their own reason; every other code stays
PermanentFailure, so the label keeps a fixed set of values whatever n8n sends."""
FAILED_REASONS = (
    "PermanentFailure",
    "RetriesExhausted",
    "MissedDeadline",
    "UnknownTarget",
    # The operator's refusals of a post's account (herald.accounts.Refusal).
    "AccountNotAllowed",
    "AccountChannelMismatch",
    "AccountTargetMismatch",
    *ACTIONABLE_CODES,
)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


def failed_reason(condition_reason: str, error_code: str | None) -> str:
    """herald_failed_total's `reason` for a post that has just failed: the reason of its
    Published condition, or the workflow's code when it is one of ACTIONABLE_CODES."""
    if condition_reason == "PermanentFailure" and error_code in ACTIONABLE_CODES:
        return error_code
    return condition_reason


@dataclass(frozen=True)
class PhaseCount:
    phase: str
    namespace: str
    count: int


class _SnapshotCollector(Collector):
    """Gauges computed at scrape time from the operator's cache of posts."""

    def __init__(self, phases: Callable[[], Iterable[PhaseCount]], backlog: Callable[[], int]):
        self._phases = phases
        self._backlog = backlog

    def collect(self) -> Iterable[Metric]:
        posts = GaugeMetricFamily(
            "herald_posts",
            "ScheduledPosts by phase, as the operator last saw them (Published: as the "
            "last history sweep counted them).",
            labels=["phase", "namespace"],
        )
        for item in self._phases():
            posts.add_metric([item.phase, item.namespace], item.count)
        yield posts
        yield GaugeMetricFamily(
            "herald_backlog",
            "Posts whose dispatch time has come but that are not dispatched yet.",
            value=self._backlog(),
        )


class Metrics:
    """The metric objects; one instance per process, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        Info("herald_build", "Herald's version.", registry=r).info({"version": __version__})
        # --- operator: dispatcher ---
        self.dispatch_total = Counter(
            "herald_dispatch_total",
            "Webhook dispatches to n8n by outcome: accepted (2xx), published (2xx with a "
            "synchronous result), transient, permanent, deferred_circuit_open.",
            ["target", "outcome"],
            registry=r,
        )
        self.dispatch_duration = Histogram(
            "herald_dispatch_duration_seconds",
            "Duration of webhook requests to n8n.",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_lateness = Histogram(
            "herald_publish_lateness_seconds",
            "First dispatch start minus publishAt (how late the operator sent the post).",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.stale_recoveries = Counter(
            "herald_stale_recoveries_total",
            "Attempts that never got n8n's callback in staleAfterSeconds.",
            registry=r,
        )
        self.reclaims = Counter(
            "herald_reclaims_total",
            "Claims taken over because their claimant died before n8n acknowledged them.",
            registry=r,
        )
        self.retries_scheduled = Counter(
            "herald_retries_scheduled_total",
            "Transient failures that scheduled a retry.",
            registry=r,
        )
        self.failed = Counter(
            "herald_failed_total",
            "Posts that ended Failed, by reason: PermanentFailure, RetriesExhausted, "
            "MissedDeadline, UnknownTarget, the post's account (UnknownAccount, "
            "AccountNotAllowed, AccountChannelMismatch, AccountTargetMismatch), or the "
            "workflow's ReconnectAccount, UnknownAccount, NoAccount, ChannelNotConfigured, "
            "Duplicate.",
            ["reason"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "herald_circuit_state",
            "State of each target's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["target"],
            registry=r,
        )
        self.in_flight = Gauge(
            "herald_dispatch_in_flight",
            "Webhook requests under way.",
            registry=r,
        )
        self.heartbeat = Gauge(
            "herald_dispatcher_heartbeat_timestamp_seconds",
            "Unix time of the dispatcher loop's last iteration.",
            registry=r,
        )
        self.claim_conflicts = Counter(
            "herald_claim_conflicts_total",
            "Status writes that lost a compare-and-swap to another writer.",
            registry=r,
        )
        self.write_errors = Counter(
            "herald_status_write_errors_total",
            "Status writes that failed other than by losing a race: invalid (the API server "
            "rejected the status: a bug) or unavailable (retried with backoff).",
            ["reason"],
            registry=r,
        )
        self.deleted = Counter(
            "herald_posts_deleted_total",
            "Finished posts deleted because their TTL passed, by phase.",
            ["phase"],
            registry=r,
        )
        # --- both: whoever applies the Published transition ---
        self.published = Counter(
            "herald_published_total",
            "Posts that reached Published.",
            ["channel"],
            registry=r,
        )
        self.time_to_published = Histogram(
            "herald_time_to_published_seconds",
            "publishedAt minus publishAt.",
            buckets=TIME_TO_PUBLISHED_BUCKETS,
            registry=r,
        )
        # --- both: the API-server client (herald.kube) ---
        self.kube_connections = Counter(
            "herald_kube_connections_total",
            "New connections to the API server, by kind: tcp (connected), tls (TLS handshake "
            "started). Rising under a steady load means the client's pool is too small.",
            ["kind"],
            registry=r,
        )
        # --- sidecar ---
        self.callbacks = Counter(
            "herald_callbacks_total",
            "Callbacks from n8n by result.",
            ["result"],
            registry=r,
        )
        self.callback_duration = Histogram(
            "herald_callback_duration_seconds",
            "Time to handle one callback.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def initialise(self, targets: Iterable[str]) -> None:
        """Create every bounded label combination at zero, so rate() and absent()-style
        alerts see a series from the first scrape instead of from the first event."""
        for target in targets:
            for outcome in DISPATCH_OUTCOMES:
                self.dispatch_total.labels(target, outcome)
            self.circuit_state.labels(target).set(0)
        for result in CALLBACK_RESULTS:
            self.callbacks.labels(result)
        for reason in FAILED_REASONS:
            self.failed.labels(reason)
        for reason in ("invalid", "unavailable"):
            self.write_errors.labels(reason)
        for phase in ("Published", "Failed"):
            self.deleted.labels(phase)
        for channel in Channel:
            self.published.labels(channel.value)
        for kind in ("tcp", "tls"):
            self.kube_connections.labels(kind)

    def kube_connected(self, kind: str) -> None:
        """herald.kube's `on_connect`: count a new connection to the API server."""
        self.kube_connections.labels(kind).inc()

    def watch_cache(
        self, phases: Callable[[], Iterable[PhaseCount]], backlog: Callable[[], int]
    ) -> None:
        """Export herald_posts and herald_backlog from the operator's cache."""
        self.registry.register(_SnapshotCollector(phases, backlog))
