"""The callback sidecar: n8n reports an attempt's outcome, the post's status follows.

`POST /v1/callbacks` validates the body (namespace and name must be Kubernetes names,
so nothing else reaches the API server's URL), authenticates the per-attempt token, reads
the post, asks the same state machine as the operator (`engine.callback`) and writes the
result with a compare-and-swap, re-reading and re-deciding when it loses. Every answer
is JSON with a machine-readable `code`; nothing about the server's insides leaks out.
Also serves /healthz, /readyz, /metrics and /openapi.json.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal, get_args

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald import engine, logs, signing
from herald.clock import SYSTEM, Clock
from herald.config import Settings
from herald.kube import (
    Conflict,
    Forbidden,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    Unavailable,
    discover,
)
from herald.ledger import Ledger
from herald.metrics import Metrics
from herald.models import ErrorClass, ScheduledPostSpec
from herald.writer import Writer

log = logging.getLogger("herald.callbacks")
CALLBACK_PATH = "/v1/callbacks"
MAX_CAS_ROUNDS = 8
# Kubernetes' own name rules (apimachinery's IsDNS1123Label / IsDNS1123Subdomain). A name
# that breaks them cannot exist, and would otherwise end up in the API server's URL path.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


RETRY_AFTER_MAX_SECONDS = 7 * 86400
"""The longest wait a callback may ask for: a week covers daily and weekly limits."""


class CallbackError(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    message: str = Field(default="n8n reported a failure", max_length=1024)
    code: str = Field(
        default="N8nError",
        min_length=1,
        max_length=128,
        description="Machine-readable, e.g. HTTP429, ReconnectAccount, Duplicate, "
        "ChannelNotConfigured, UnknownAccount.",
    )
    retryable: bool = Field(
        default=False, description="True when a later attempt may succeed (n8n's judgement)."
    )
    retry_after_seconds: float | None = Field(
        default=None,
        alias="retryAfterSeconds",
        ge=0,
        le=RETRY_AFTER_MAX_SECONDS,
        allow_inf_nan=False,
        description="With retryable: the network said when to try again (Retry-After or "
        "its rate-limit reset), in seconds from now. The next attempt goes no earlier, "
        "even past the post's maxBackoffSeconds; one attempt is spent.",
    )


class CallbackBody(BaseModel):
    """What n8n sends when an attempt has ended."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Validated first (pydantic checks fields in order), before the token or the API
    # server sees them. pydantic's regex engine anchors `$` at the very end, so a
    # trailing newline does not slip through as it would with Python's `re`.
    namespace: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS1123_LABEL,
        description="The post's namespace (a DNS-1123 label).",
    )
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="The post's name (a DNS-1123 subdomain).",
    )
    uid: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1, le=1000)
    status: Literal["published", "failed"]
    external_id: str | None = Field(default=None, alias="externalId", max_length=512)
    external_url: str | None = Field(
        default=None, alias="externalUrl", max_length=2048, pattern=r"^https?://"
    )
    error: CallbackError | None = None

    def to_engine(self) -> engine.Callback:
        if self.status == "published":
            return engine.Callback(
                self.attempt, published=engine.Published(self.external_id, self.external_url)
            )
        err = self.error or CallbackError()
        klass = ErrorClass.TRANSIENT if err.retryable else ErrorClass.PERMANENT
        failure = engine.Failure(
            klass, err.code, err.message, not_before_seconds=err.retry_after_seconds
        )
        return engine.Callback(self.attempt, failure=failure)


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.json_response(
        {"code": code, "message": message, **extra}, status=status, headers=headers
    )


def openapi() -> dict[str, Any]:
    """The OpenAPI 3 document shipped as herald/openapi.json (tests keep it current)."""
    body = CallbackBody.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    defs = body.pop("$defs", {})
    err = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }

    def reply(description: str, schema: str = "Error") -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald callback API",
            "version": "1",
            "description": "n8n reports the outcome of a ScheduledPost's publishing attempt. "
            "Authenticate with the per-attempt token from the dispatch: "
            "`Authorization: Bearer <callback.token>`.",
        },
        "paths": {
            CALLBACK_PATH: {
                "post": {
                    "operationId": "reportOutcome",
                    "security": [{"callbackToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CallbackBody"}
                            }
                        },
                    },
                    "responses": {
                        "200": reply("Applied, or a duplicate of an applied outcome.", "Result"),
                        "400": reply("The body is not valid; `field` names the culprit."),
                        "401": reply("Missing or wrong token."),
                        "404": reply("No such post (or it was deleted and re-created)."),
                        "409": reply("Stale attempt, or a transition the post cannot make."),
                        "413": reply("Body larger than the limit."),
                        "415": reply("Content-Type is not application/json."),
                        "503": reply(
                            "The API server is unreachable or refused the update: retry later."
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": {"description": "The process is alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "The API server is reachable."},
                        "503": {"description": "It is not."},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"callbackToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "CallbackBody": body,
                **defs,
                "Error": err,
                "Result": {
                    "type": "object",
                    "required": ["result"],
                    "properties": {"result": {"type": "string", "enum": ["applied", "duplicate"]}},
                },
            },
        },
    }


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def known_fields(model: type[BaseModel], raw: Any) -> Any:
    """`raw` without the keys `model` (and the models nested in it) does not know.

    The stored post may carry spec fields of a newer CRD (a rolling update applies the CRD
    before it replaces this sidecar). Recording an attempt's outcome does not depend on
    them, so the sidecar reads the post as this version knows it rather than failing.
    """
    if not isinstance(raw, dict):
        return raw
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    fields.update(model.model_fields)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        info = fields.get(key)
        if info is None:
            continue
        nested = _models_in(info.annotation)
        if nested and isinstance(value, list):
            out[key] = [known_fields(nested[0], v) for v in value]
        elif nested:
            out[key] = known_fields(nested[0], value)
        else:
            out[key] = value
    return out


def readable(obj: dict[str, Any]) -> dict[str, Any]:
    """The stored object with only the spec fields this version knows (see known_fields)."""
    return {**obj, "spec": known_fields(ScheduledPostSpec, obj.get("spec") or {})}


class CallbackServer:
    def __init__(
        self, settings: Settings, kube: KubeClient, metrics: Metrics, *, clock: Clock = SYSTEM
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.defaults = settings.defaults()
        self.key = settings.callback_key_bytes()
        self.shared_secret = settings.shared_secret_bytes()
        self.writer = Writer(
            kube,
            metrics,
            f"{settings.identity}/callback",
            routine_events=settings.routine_events,
            ledger=Ledger(kube),
        )
        self.openapi_doc = resources.files("herald").joinpath("openapi.json").read_bytes()

    # --- app -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors], client_max_size=self.settings.callback_max_body_bytes
        )
        app.router.add_post(CALLBACK_PATH, self.handle_callback)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        # prometheus-client's own handler: content negotiation (OpenMetrics when the
        # scraper asks for it), `name[]` filtering and gzip.
        app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))
        app.router.add_get("/openapi.json", self.openapi_endpoint)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        await self.writer.drain()
        await self.kube.aclose()

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(
                413,
                "payload_too_large",
                f"body exceeds {self.settings.callback_max_body_bytes} bytes",
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            return error(exc.status, code, exc.reason)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error(500, "internal", "internal error; see the sidecar's log")

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        if await self.kube.ready():
            return web.json_response({"status": "ready"})
        return error(503, "unavailable", "the Kubernetes API server is unreachable")

    async def openapi_endpoint(self, _: web.Request) -> web.Response:
        return web.Response(body=self.openapi_doc, content_type="application/json")

    # --- the callback ------------------------------------------------------------------

    async def handle_callback(self, request: web.Request) -> web.Response:
        with self.metrics.callback_duration.time():
            response = await self._callback(request)
        result = getattr(response, "herald_result", None) or "invalid"
        self.metrics.callbacks.labels(result).inc()
        return response

    async def _callback(self, request: web.Request) -> web.Response:
        def answer(result: str, response: web.Response) -> web.Response:
            response.herald_result = result  # type: ignore[attr-defined]
            return response

        if request.content_type != "application/json":
            return answer(
                "unsupported_media_type",
                error(415, "unsupported_media_type", "Content-Type must be application/json"),
            )
        if (request.content_length or 0) > self.settings.callback_max_body_bytes:
            return answer(
                "too_large",
                error(
                    413,
                    "payload_too_large",
                    f"body exceeds {self.settings.callback_max_body_bytes} bytes",
                ),
            )
        token = _bearer(request.headers.get("Authorization", ""))
        if token is None:
            return answer(
                "unauthorized",
                error(401, "unauthorized", "Authorization: Bearer <callback token> is required"),
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return answer(
                "too_large",
                error(
                    413,
                    "payload_too_large",
                    f"body exceeds {self.settings.callback_max_body_bytes} bytes",
                ),
            )
        try:
            # pydantic parses the JSON itself, with a nesting limit: a deeply nested body
            # is an invalid body, not a RecursionError.
            body = CallbackBody.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                return answer("invalid", error(400, "invalid_json", "the body is not valid JSON"))
            field = ".".join(str(p) for p in first["loc"]) or "(body)"
            return answer(
                "invalid", error(400, "invalid_body", f"{field}: {first['msg']}", field=field)
            )
        if not self._authorized(token, body):
            return answer(
                "unauthorized",
                error(401, "unauthorized", "the token is not valid for this post and attempt"),
            )
        try:
            result, detail = await self._apply(body)
        except Unavailable as exc:
            log.warning("API server unavailable: %s", exc)
            return answer(
                "unavailable",
                error(503, "unavailable", "the Kubernetes API server is unreachable; retry later"),
            )
        except Forbidden as exc:
            log.error("the sidecar's ServiceAccount lacks a permission: %s", exc)
            return answer(
                "unavailable",
                error(503, "unavailable", "the sidecar cannot update the post; retry later"),
            )
        except KubeError as exc:
            # Any other answer of the API server is about the server or its policies (an
            # admission policy refusing the write, say), not the callback: n8n should try
            # again later rather than give up on the outcome.
            log.error("the API server refused the callback's write: %s", exc)
            return answer(
                "unavailable",
                error(
                    503,
                    "api_error",
                    "the Kubernetes API server refused the status update; retry later",
                ),
            )
        if result == "not_found":
            return answer("not_found", error(404, "not_found", detail))
        if result == "conflict":
            return answer("conflict", error(409, "conflict", detail))
        if result == "rejected":
            return answer("rejected", error(422, "status_rejected", detail))
        return answer(result, web.json_response({"result": result}))

    def _authorized(self, token: str, body: CallbackBody) -> bool:
        if not signing.printable_ascii(token):
            # Header bytes that are not ASCII arrive surrogate-escaped; no token has them.
            return False
        if signing.verify_callback_token(
            self.key, token, body.namespace, body.name, body.uid, body.attempt
        ):
            return True
        if self.shared_secret is not None:
            return signing.constant_time_equal(token.encode(), self.shared_secret)
        return False

    async def _apply(self, body: CallbackBody) -> tuple[str, str]:
        """Decide and write, re-reading after a lost compare-and-swap. (result, detail)."""
        callback = body.to_engine()
        for _ in range(MAX_CAS_ROUNDS):
            try:
                obj = await self.kube.get_post(body.namespace, body.name)
            except NotFound:
                await self._deleted(body, callback)
                return "not_found", f"no ScheduledPost {body.namespace}/{body.name}"
            if obj["metadata"]["uid"] != body.uid:
                await self._deleted(body, callback)
                return "not_found", (
                    f"ScheduledPost {body.namespace}/{body.name} was deleted and re-created; "
                    "this callback was for the old one"
                )
            post = engine.from_object(readable(obj))
            now = self.clock.wall()
            verdict = engine.callback(post, now, callback, self.defaults)
            if verdict.result is engine.CallbackResult.CONFLICT:
                return "conflict", verdict.reason
            if verdict.result is engine.CallbackResult.DUPLICATE:
                return "duplicate", ""
            try:
                await self.writer.apply(obj, post, verdict.decision, now)
            except Conflict:
                continue  # someone wrote first: look again and decide again
            except NotFound:
                return "not_found", f"no ScheduledPost {body.namespace}/{body.name}"
            except Invalid as exc:
                # A bug in Herald, not a passing problem: n8n retrying would not help.
                return "rejected", f"the API server rejected the status update: {exc}"
            return "applied", ""
        raise Unavailable("the post kept changing under the callback")

    async def _deleted(self, body: CallbackBody, callback: engine.Callback) -> None:
        """The post is gone, but what n8n published stays published: its publication
        record says so, so the same manifest applied again is not sent again."""
        ledger = self.writer.ledger
        if callback.published is not None and ledger is not None:
            await ledger.finish_deleted(
                body.namespace, body.uid, callback.published, self.clock.wall()
            )


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def build(settings: Settings) -> web.Application:
    metrics = Metrics()
    metrics.initialise(settings.targets)
    # n8n calls back once per dispatch, so about as many callbacks are in flight as the
    # operator's dispatches; each holds one connection at a time (read, then write).
    kube = KubeClient(
        discover(),
        component="herald-callback",
        on_connect=metrics.kube_connected,
        max_connections=settings.concurrency,
    )
    server = CallbackServer(settings, kube, metrics)
    return server.app()


def serve(settings: Settings) -> int:
    """`herald callback-server`: serve until SIGTERM/SIGINT (the first one, see
    herald.stopping), then let in-flight callbacks finish."""
    import asyncio

    logs.configure(settings.log_format, settings.log_level)
    asyncio.run(_serve(build(settings), settings))
    return 0


async def _serve(app: web.Application, settings: Settings) -> None:
    # web.run_app() by hand: its signal handlers raise GracefulExit again on a second signal.
    from herald import stopping

    signals = stopping.StopSignals()
    received = signals.install()
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=30, access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.callback_host, settings.callback_port).start()
        log.info("callback server on %s:%s", settings.callback_host, settings.callback_port)
        sig = await received
        log.info("Signal %s is received. Callback server is stopping.", sig.name)
    finally:
        await runner.cleanup()
        signals.ignore_from_now_on()
