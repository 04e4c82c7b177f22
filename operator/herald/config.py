"""Herald's configuration: one pydantic-settings model read by the operator and the sidecar.

Sources, later ones winning: field defaults, the YAML file named by `HERALD_CONFIG_FILE`
(the Helm chart mounts one), then environment variables prefixed `HERALD_`, with `__`
between nested names (`HERALD_TARGETS__DEFAULT__URL=https://n8n/webhook/herald`).
Secrets can be given as values or, better, as `*_FILE` paths to Secret-mounted files.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from herald import signing
from herald.engine import Defaults


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


def _read_secret(value: SecretStr | None, path: Path | None, name: str) -> bytes | None:
    if value is not None and path is not None:
        raise ConfigError(f"set {name} or {name}_file, not both")
    if path is not None:
        try:
            return path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_file {path}: {exc.strerror}") from exc
    return value.get_secret_value().encode() if value is not None else None


HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
"""An HTTP field name is one RFC 9110 token."""


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value; None when it can."""
    if not value.isascii():
        return "not ASCII: an HTTP header value must be ASCII (httpx cannot send this one)"
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
        return "contains a control character (such as a line break)"
    return None


class Target(BaseModel):
    """An n8n webhook that posts may name in `spec.target`."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="The n8n Webhook node's production URL.")
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Deadline of one webhook request, all of it (connect, send, response).",
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Requests to this target at once; unset: only the global concurrency "
        "limit applies. Set it so one slow target cannot hold every slot.",
    )
    auth_header_name: str | None = Field(
        default=None,
        pattern=HEADER_NAME,
        description="Header for n8n's Header Auth credential, e.g. X-Herald-Auth.",
    )
    auth_header_value: SecretStr | None = Field(default=None, description="Its value.")
    auth_header_value_file: Path | None = Field(
        default=None, description="A file holding its value (a mounted Secret)."
    )

    @field_validator("auth_header_value")
    @classmethod
    def _sendable(cls, value: SecretStr | None) -> SecretStr | None:
        problem = header_value_problem(value.get_secret_value()) if value is not None else None
        if problem is not None:
            raise ValueError(problem)  # pydantic names the field; the value stays secret
        return value

    def auth_header(self) -> tuple[str, str] | None:
        """(name, value), read now (the value may be in a file); a value no HTTP request
        can carry is a ConfigError naming the setting."""
        value = _read_secret(
            self.auth_header_value, self.auth_header_value_file, "auth_header_value"
        )
        if self.auth_header_name is None:
            if value is not None:
                raise ConfigError("auth_header_value is set but auth_header_name is not")
            return None
        if value is None:
            raise ConfigError(f"auth_header_name {self.auth_header_name} has no value")
        where = (
            f"auth_header_value_file {self.auth_header_value_file}"
            if self.auth_header_value_file is not None
            else "auth_header_value"
        )
        text = value.decode("utf-8", errors="replace")
        problem = header_value_problem(text)
        if problem is not None:
            raise ConfigError(f"{where}: {problem}")
        return self.auth_header_name, text


class Settings(BaseSettings):
    """Everything `herald run` and `herald callback-server` read at startup."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    # --- identity and scope ---
    identity: str = Field(
        default_factory=socket.gethostname,
        description="This operator instance's name in status.claimedBy (the pod name).",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: all namespaces."
    )

    # --- n8n ---
    targets: dict[str, Target] = Field(
        default_factory=dict,
        description="n8n webhooks by name; a post's spec.target must name one of them.",
    )
    callback_url: HttpUrl | None = Field(
        default=None,
        description="Base URL at which n8n reaches the callback sidecar, e.g. "
        "http://herald-callback.herald.svc:8080. Dispatches carry <callback_url>/v1/callbacks.",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks key for the webhook-signature header of dispatches: "
        "whsec_<base64>. A plain string is deprecated (its bytes are the raw key).",
    )
    signing_key_file: Path | None = None
    callback_key: SecretStr | None = Field(
        default=None, description="Key for the per-attempt callback tokens."
    )
    callback_key_file: Path | None = None
    callback_shared_secret: SecretStr | None = Field(
        default=None,
        description="Compatibility mode: also accept this static bearer secret on callbacks. "
        "Off unless set; per-attempt tokens are safer.",
    )
    callback_shared_secret_file: Path | None = None

    # --- policy defaults (a post's spec overrides them) ---
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_seconds: int = Field(default=60, ge=0)
    max_backoff_seconds: int = Field(default=3600, ge=0)
    stale_after_seconds: int = Field(
        default=600,
        ge=1,
        description="How long a dispatched attempt may wait for n8n's callback (the one value "
        "used everywhere, as in the design notes' 10 minutes).",
    )
    jitter_ratio: float = Field(default=0.1, ge=0, le=1)
    default_starting_deadline_seconds: int = Field(
        default=86400,
        ge=0,
        le=31536000,
        description="A post that the operator can first dispatch more than this many seconds "
        "after its publishAt (the operator was down, the post was created or restored late) "
        "fails with reason MissedDeadline instead of being published late. A post's "
        "spec.startingDeadlineSeconds overrides it. 0: no default deadline (late posts "
        "without their own deadline are published, however late).",
    )
    ttl_seconds_after_published: int | None = Field(
        default=None,
        ge=0,
        description="Delete Published posts this long after they were published (a post's "
        "spec.ttlSecondsAfterFinished overrides it). Unset: keep them.",
    )
    ttl_seconds_after_failed: int | None = Field(
        default=None,
        ge=0,
        description="Delete Failed posts this long after they failed. Unset: keep them.",
    )

    # --- dispatcher ---
    concurrency: int = Field(default=16, ge=1, le=1024, description="Concurrent dispatches.")
    circuit_failure_threshold: int = Field(
        default=10, ge=1, description="Failures within the window that open a target's circuit."
    )
    circuit_window_seconds: float = Field(default=600, gt=0)
    circuit_open_seconds: float = Field(
        default=300,
        gt=0,
        description="The longest an open circuit defers dispatches: the open period starts "
        "at circuit_open_min_seconds and doubles with each failed probe up to this.",
    )
    circuit_open_min_seconds: float = Field(
        default=10,
        gt=0,
        description="The first open period: a short outage costs seconds, not minutes.",
    )
    claim_ahead_seconds: float = Field(
        default=30,
        ge=0,
        le=600,
        description="Claim posts up to this long before their time, so that at the due "
        "second only the webhook request goes out.",
    )
    ledger_recheck_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="How often a post whose publication record another object of the same "
        "post holds (that object was deleted or re-created while its send was under way) "
        "reads the record again, until the holder's outcome is recorded or its claim "
        "timeout plus stale time has passed.",
    )
    publication_retention_days: int = Field(
        default=400,
        ge=1,
        le=3650,
        description="Keep each publication ledger record this many days after its post was "
        "published (or its send began); a post applied again after that is published again. "
        "Longer than a year, so that a yearly re-sync of old manifests stays harmless.",
    )
    ledger_sweep_seconds: float = Field(
        default=3600,
        ge=1,
        le=86400,
        description="How often the operator sweeps expired publication records (listed in "
        "pages of 100, each deleted with uid and resourceVersion preconditions).",
    )
    watch_chunk_size: int = Field(
        default=500,
        ge=0,
        le=100000,
        description="The watch's initial list of live posts (at start-up and after a lost "
        "watch) in pages of this many (limit/continue), so the whole list is never held "
        "at once. 0: one response.",
    )
    watch_worker_idle_seconds: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description="How long kopf keeps a post's event worker, and with it the whole "
        "object last seen (about 12 KB), after the post's last event. kopf's default is "
        "5 s: 20,000 posts taken in at start-up then held about 95 MiB more "
        "(bench/RESULTS.md).",
    )
    watch_initial_streaming: bool = Field(
        default=False,
        description="Take the initial list as a watch stream (sendInitialEvents, "
        "Kubernetes >= 1.34 with etcd >= 3.5.13) instead of a paged list; measured slower "
        "and larger than pages on the project's API server (bench/RESULTS.md).",
    )
    history_sweep_seconds: float = Field(
        default=300,
        ge=1,
        le=86400,
        description="How often the operator sweeps the Published posts, which it does not "
        "watch (listed in pages of 100 with a field selector on status.phase): it deletes "
        "those past their TTL (with uid and resourceVersion preconditions, so a TTL is "
        "applied up to this late), writes ChangedAfterDispatch on those edited after "
        'publication, and counts them for herald_posts{phase="Published"}.',
    )
    record_grace_seconds: float = Field(
        default=5,
        ge=0,
        le=300,
        description="After n8n's 2xx, wait this long for its callback before recording the "
        "acknowledgement (the callback usually makes the record unnecessary).",
    )
    shutdown_grace_seconds: float = Field(
        default=25,
        ge=0,
        description="On SIGTERM, how long in-flight dispatches get to finish and be recorded; "
        "keep it below the pod's terminationGracePeriodSeconds.",
    )
    routine_events: bool = Field(
        default=False,
        description="Also post Normal Events for the steps every post takes (Scheduled, "
        "Published): one more API write each. Warnings and user-driven changes are always "
        "posted.",
    )
    heartbeat_timeout_seconds: float = Field(
        default=60, gt=0, description="Liveness fails when the dispatcher loop is this late."
    )

    # --- ports and logs ---
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Operator /metrics.")
    health_port: int = Field(default=8081, ge=0, le=65535, description="Operator /healthz.")
    callback_host: str = Field(default="0.0.0.0", description="Sidecar bind address.")
    callback_port: int = Field(default=8080, ge=0, le=65535, description="Sidecar port.")
    callback_max_body_bytes: int = Field(default=65536, ge=1024)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError("max_backoff_seconds must be >= backoff_seconds")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("HERALD_CONFIG_FILE")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # --- derived ---

    def defaults(self) -> Defaults:
        timeouts = [t.timeout_seconds for t in self.targets.values()] or [10.0]
        return Defaults(
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            stale_after_seconds=self.stale_after_seconds,
            jitter_ratio=self.jitter_ratio,
            # Another instance may take a claim over only after the claimant's request
            # has certainly ended (its deadline) and it had time to record the result.
            claim_timeout_seconds=max(timeouts) + self.record_grace_seconds + 10.0,
            claim_ahead_seconds=self.claim_ahead_seconds,
            # 0 switches the default off: as a default it would fail every post the
            # operator reaches a second late, which nobody wants; a post can still ask
            # for 0 in its own spec.
            starting_deadline_seconds=self.default_starting_deadline_seconds or None,
            ledger_recheck_seconds=self.ledger_recheck_seconds,
            ttl_after_published=self.ttl_seconds_after_published,
            ttl_after_failed=self.ttl_seconds_after_failed,
            targets=frozenset(self.targets),
        )

    def signing_key_bytes(self) -> bytes:
        key = _read_secret(self.signing_key, self.signing_key_file, "signing_key")
        if not key:
            raise ConfigError("signing_key (or signing_key_file) is required")
        try:
            signing.check_signing_key(key)
        except signing.SigningKeyError as exc:
            raise ConfigError(f"signing_key: {exc}") from None
        return key

    def callback_key_bytes(self) -> bytes:
        key = _read_secret(self.callback_key, self.callback_key_file, "callback_key")
        if not key:
            raise ConfigError("callback_key (or callback_key_file) is required")
        return key

    def shared_secret_bytes(self) -> bytes | None:
        return _read_secret(
            self.callback_shared_secret,
            self.callback_shared_secret_file,
            "callback_shared_secret",
        )

    def callback_endpoint(self) -> str:
        if self.callback_url is None:
            raise ConfigError("callback_url is required: n8n must know where to report back")
        return str(self.callback_url).rstrip("/") + "/v1/callbacks"


def load(**overrides: Any) -> Settings:
    """Read the settings; a ConfigError names the bad setting."""
    config_file = os.environ.get("HERALD_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"HERALD_CONFIG_FILE {config_file}: no such file")
    try:
        return Settings(**overrides)
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"HERALD_CONFIG_FILE {config_file}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
