"""The operator process: kopf handlers, kept thin, around the dispatcher.

Startup puts the shared clients in kopf's memo (an httpx client for n8n, an aiohttp one
for the API server, the metrics server) and starts the dispatcher loop; cleanup stops
claiming, lets requests in flight finish and be recorded, and closes the clients. The event
handler only hands the object to the dispatcher, whose workers plan, write (retrying with
backoff when a write fails) and dispatch. The accounts' handler writes their Ready
condition. Handlers return None, so kopf writes nothing of its own into `.status`; there
are no finalizers, timers or daemons per object, and kopf's diff base is off (NoDiffBase).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kopf
from prometheus_client import start_http_server

from herald import engine, history, kubeauth, ledger, logs
from herald.accountstore import report_ready
from herald.clock import SYSTEM
from herald.config import Settings, load
from herald.dispatcher import DispatchConfig, Dispatcher
from herald.kube import KubeClient, discover
from herald.ledger import Ledger
from herald.metrics import Metrics
from herald.models import ACCOUNT_PLURAL, CLUSTER_ACCOUNT_PLURAL, GROUP, PLURAL, VERSION
from herald.n8n import N8nClient
from herald.writer import Writer

log = logging.getLogger("herald.controller")
registry = kopf.OperatorRegistry()


@dataclass
class Runtime:
    settings: Settings
    defaults: engine.Defaults
    kube: KubeClient
    n8n: N8nClient
    writer: Writer
    metrics: Metrics
    dispatcher: Dispatcher
    loop_task: asyncio.Task[None] | None = None
    sweep_task: asyncio.Task[None] | None = None
    history_task: asyncio.Task[None] | None = None
    watching: bool = False


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["herald"]
    return runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base, which Herald's handlers never read: none kept, none built.

    On every event kopf builds the object's "essence" (a deep copy of its body) and diffs it
    against the last handled one; only change handlers (on.create/update/resume/delete/field)
    and daemons read that diff. Herald has event handlers only, and the copy was 12 % of the
    operator's CPU in a 2,000-post burst (bench/RESULTS.md). A test keeps the registry free
    of handlers that would need it."""

    _NOTHING: kopf.BodyEssence = {}

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return self._NOTHING

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._NOTHING

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.login(registry=registry)
async def login(**_: Any) -> kopf.ConnectionInfo:
    # The same credentials herald.kube.discover() uses, loaded by the Kubernetes client
    # library (exec plugins, OIDC, every $KUBECONFIG file). kopf calls this again when the
    # credentials reach their `expiration` and after a 401; a failed plugin run is retried.
    try:
        creds = await kubeauth.load(kubeauth.Source())
    except kubeauth.LoginError as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    return kubeauth.connection_info(creds)


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # `herald run` hands its settings over in the memo; kopf's in-process KopfRunner (the
    # tests) cannot pass a memo, so there they come from the environment, as they would.
    config: Settings = memo["settings"] if "settings" in memo else load()
    # Herald is safe active-active (every status write is a compare-and-swap), so kopf's
    # peering, which would freeze all but one replica, is not used.
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    # Only live posts: a Published one leaves the watch (kopf gets a DELETED event and
    # forgets it); herald.history sweeps them at a low rate instead.
    settings.watching.field_selectors[GROUP, PLURAL] = history.WATCH_SELECTOR
    settings.watching.chunk_size = config.watch_chunk_size or None
    settings.watching.initial_streaming = config.watch_initial_streaming
    # kopf's worker for an object keeps the last raw event it handled until it exits,
    # idle_timeout after that event: the whole object, when Herald keeps a projection.
    settings.queueing.idle_timeout = config.watch_worker_idle_seconds
    me = f"{config.identity}/{secrets.token_hex(4)}"
    metrics = Metrics()
    metrics.initialise(config.targets)
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
    conn = discover()
    kube = KubeClient(
        conn,
        component="herald-operator",
        on_connect=metrics.kube_connected,
        # One per dispatch slot; more requests at once wait (herald.kube.POOL_CONNECTIONS).
        max_connections=config.concurrency,
    )
    clock = SYSTEM  # one clock for the dispatcher and the n8n client
    n8n = N8nClient(
        config.targets, config.signing_key_bytes(), max_connections=config.concurrency, clock=clock
    )
    writer = Writer(kube, metrics, me, routine_events=config.routine_events, ledger=Ledger(kube))
    dispatcher = Dispatcher(
        DispatchConfig(
            defaults=config.defaults(),
            me=me,
            callback_endpoint=config.callback_endpoint(),
            callback_key=config.callback_key_bytes(),
            concurrency=config.concurrency,
            circuit_threshold=config.circuit_failure_threshold,
            circuit_window=config.circuit_window_seconds,
            circuit_open_for=config.circuit_open_seconds,
            circuit_open_min=config.circuit_open_min_seconds,
            target_concurrency={
                name: t.concurrency for name, t in config.targets.items() if t.concurrency
            },
            record_grace=config.record_grace_seconds,
            # The pod's own namespace (its ServiceAccount's), or the kubeconfig context's.
            quota_namespace=conn.namespace or "default",
            request_timeout=max((t.timeout_seconds for t in config.targets.values()), default=10.0),
        ),
        kube,
        n8n,
        writer,
        metrics,
        clock=clock,
    )
    runtime = Runtime(config, config.defaults(), kube, n8n, writer, metrics, dispatcher)
    runtime.loop_task = asyncio.create_task(dispatcher.run(), name="herald-dispatcher")
    runtime.sweep_task = asyncio.create_task(
        ledger.sweep_forever(
            kube,
            config.namespaces,
            clock.wall,
            config.publication_retention_days,
            config.ledger_sweep_seconds,
        ),
        name="herald-ledger-sweep",
    )
    runtime.history_task = asyncio.create_task(
        history.sweep_forever(
            kube,
            writer,
            config.namespaces,
            clock.wall,
            config.defaults(),
            me,
            config.history_sweep_seconds,
            dispatcher.count_published,
        ),
        name="herald-history-sweep",
    )
    memo["herald"] = runtime
    log.info("herald operator %s: targets %s", me, ", ".join(sorted(config.targets)) or "none")


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    await runtime.dispatcher.stop(runtime.settings.shutdown_grace_seconds)
    if runtime.loop_task is not None:
        runtime.loop_task.cancel()
    for task in (runtime.sweep_task, runtime.history_task):
        if task is not None:
            task.cancel()
    await runtime.n8n.aclose()
    await runtime.kube.aclose()


@kopf.on.probe(id="dispatcher", registry=registry)
def dispatcher_alive(memo: kopf.Memo, **_: Any) -> float:
    runtime = _runtime(memo)
    age = runtime.dispatcher.heartbeat_age()
    task = runtime.loop_task
    if task is not None and task.done():
        raise kopf.PermanentError("the dispatcher loop has stopped")
    if age > runtime.settings.heartbeat_timeout_seconds:
        # PermanentError makes the probe answer 500 at once instead of retrying.
        raise kopf.PermanentError(f"the dispatcher loop is stuck: last beat {age:.0f}s ago")
    return age


@kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
async def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    if not runtime.watching:
        runtime.watching = True
        log.info("watch is live: first ScheduledPost event received")
    obj: dict[str, Any] = dict(event["object"])
    if event["type"] == "DELETED":
        runtime.dispatcher.forget(obj["metadata"]["uid"])
    else:
        runtime.dispatcher.observe(obj)


@kopf.on.event(GROUP, VERSION, ACCOUNT_PLURAL, registry=registry)
@kopf.on.event(GROUP, VERSION, CLUSTER_ACCOUNT_PLURAL, registry=registry)
async def on_account(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Posts read their accounts when claimed (herald.accountstore); the watch only keeps
    # each account's Ready condition current.
    if event["type"] == "DELETED":
        return
    runtime = _runtime(memo)
    obj: dict[str, Any] = dict(event["object"])
    await report_ready(runtime.kube, obj, runtime.defaults.targets, SYSTEM.wall())


def run(settings: Settings) -> int:
    """`herald run`: the operator, until SIGTERM/SIGINT (the first one; see herald.stopping)."""
    logs.configure(settings.log_format, settings.log_level)
    asyncio.run(_operate(settings))
    return 0


async def _operate(settings: Settings) -> None:
    # kopf.operator() in its two halves, to put Herald's signal handlers over kopf's: kopf
    # fails on a second stop signal (herald.stopping says how).
    from herald import stopping

    kopf_settings = kopf.OperatorSettings()
    signals = stopping.StopSignals(kopf_settings.process.ultimate_exiting_timeout)
    received = signals.install()
    existing = asyncio.all_tasks()
    try:
        tasks = await kopf.spawn_tasks(
            registry=registry,
            settings=kopf_settings,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=(
                f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
            ),
            memo=kopf.Memo(settings=settings),
            # kopf logs "Signal SIGTERM is received. Operator is stopping." for it.
            stop_flag=received,
        )
        signals.install()  # spawn_tasks() has just installed kopf's own
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        signals.ignore_from_now_on()
