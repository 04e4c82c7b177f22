"""Herald's settings (herald.config): environment, YAML file, secrets and validation."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import HttpUrl, SecretStr

from herald import config
from herald.config import ConfigError, Settings, Target
from herald.engine import Defaults


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HERALD_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("HERALD_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- sources -----------------------------------------------------------------------------


def test_defaults() -> None:
    s = config.load()
    assert s.identity == socket.gethostname()  # the pod name
    assert s.targets == {}
    assert s.namespaces == []
    assert (s.max_attempts, s.backoff_seconds, s.max_backoff_seconds) == (5, 60, 3600)
    assert (s.stale_after_seconds, s.jitter_ratio) == (600, 0.1)
    assert s.defaults() == Defaults(
        max_attempts=5,
        backoff_seconds=60,
        max_backoff_seconds=3600,
        stale_after_seconds=600,
        jitter_ratio=0.1,
        # No target: the 10 s default request deadline + record_grace_seconds (10) + 5.
        claim_timeout_seconds=25.0,
        claim_ahead_seconds=30.0,
        starting_deadline_seconds=86400,  # a day late at most, unless a post says otherwise
        ttl_after_published=None,
        ttl_after_failed=None,
        targets=frozenset(),
    )
    assert (s.record_grace_seconds, s.shutdown_grace_seconds) == (5, 25)
    assert (s.circuit_open_min_seconds, s.circuit_open_seconds) == (10, 300)
    assert s.routine_events is False


def test_env_with_prefix_and_nesting_builds_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__URL", "https://n8n.example/webhook/herald")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__AUTH_HEADER_NAME", "X-Herald-Auth")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__AUTH_HEADER_VALUE", "hunter2")
    monkeypatch.setenv("HERALD_TARGETS__EU_WEST__URL", "https://eu.n8n.example/webhook/h")
    monkeypatch.setenv("HERALD_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("HERALD_IDENTITY", "herald-0")
    monkeypatch.setenv("HERALD_NAMESPACES", '["marketing", "sales"]')
    s = config.load()
    assert sorted(s.targets) == ["default", "eu_west"]
    default = s.targets["default"]
    assert default.url == HttpUrl("https://n8n.example/webhook/herald")
    assert default.timeout_seconds == 2.5
    assert default.auth_header() == ("X-Herald-Auth", "hunter2")
    assert s.targets["eu_west"].timeout_seconds == 10.0
    assert s.targets["eu_west"].auth_header() is None
    assert s.max_attempts == 7
    assert s.identity == "herald-0"
    assert s.namespaces == ["marketing", "sales"]
    # The slowest target's deadline (10 s) + record_grace_seconds (10 s) + 5 s.
    assert s.defaults().claim_timeout_seconds == 25.0
    assert s.defaults().targets == frozenset({"default", "eu_west"})
    assert s.targets["default"].concurrency is None


def test_yaml_file_is_read_and_env_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "herald.yaml",
        "identity: from-yaml\n"
        "max_attempts: 4\n"
        "backoff_seconds: 30\n"
        "log_format: json\n"
        "targets:\n"
        "  default:\n"
        "    url: http://n8n.yaml/webhook/herald\n"
        "    timeout_seconds: 20\n",
    )
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(path))
    monkeypatch.setenv("HERALD_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__TIMEOUT_SECONDS", "3")
    s = config.load()
    assert s.identity == "from-yaml"
    assert s.backoff_seconds == 30
    assert s.log_format == "json"
    assert s.max_attempts == 9  # env wins
    assert s.targets["default"].url == HttpUrl("http://n8n.yaml/webhook/herald")
    assert s.targets["default"].timeout_seconds == 3.0  # env wins, merged into the YAML target
    assert s.defaults().claim_timeout_seconds == 18.0  # 3 s + 5 s grace + 10 s


def test_new_settings_reach_the_engine_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__URL", "https://n8n.example/webhook/herald")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("HERALD_TARGETS__DEFAULT__CONCURRENCY", "3")
    monkeypatch.setenv("HERALD_RECORD_GRACE_SECONDS", "2")
    monkeypatch.setenv("HERALD_CLAIM_AHEAD_SECONDS", "45")
    monkeypatch.setenv("HERALD_TTL_SECONDS_AFTER_PUBLISHED", "86400")
    monkeypatch.setenv("HERALD_TTL_SECONDS_AFTER_FAILED", "0")
    monkeypatch.setenv("HERALD_ROUTINE_EVENTS", "true")
    monkeypatch.setenv("HERALD_CIRCUIT_OPEN_MIN_SECONDS", "5")
    monkeypatch.setenv("HERALD_SHUTDOWN_GRACE_SECONDS", "7")
    s = config.load()
    assert s.targets["default"].concurrency == 3
    assert (s.routine_events, s.circuit_open_min_seconds, s.shutdown_grace_seconds) == (
        True,
        5,
        7,
    )
    d = s.defaults()
    assert d.claim_timeout_seconds == 16.0  # 4 s + 2 s grace + 10 s
    assert d.claim_ahead_seconds == 45.0
    assert (d.ttl_after_published, d.ttl_after_failed) == (86400, 0)
    assert d.targets == frozenset({"default"})


@pytest.mark.parametrize(("value", "expected"), [("3600", 3600), ("0", None)])
def test_default_starting_deadline_from_env_and_0_switches_it_off(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    monkeypatch.setenv("HERALD_DEFAULT_STARTING_DEADLINE_SECONDS", value)
    assert config.load().defaults().starting_deadline_seconds == expected


def test_init_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_CONCURRENCY", "8")
    assert config.load(concurrency=32).concurrency == 32
    assert config.load().concurrency == 8


def test_unknown_key_in_yaml_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(write(tmp_path / "h.yaml", "max_attemps: 3\n")))
    with pytest.raises(ConfigError, match="max_attemps"):
        config.load()


def test_malformed_yaml_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """load() promises a ConfigError (cli prints it and exits 2); a YAML syntax error
    escapes as yaml.YAMLError, i.e. a traceback."""
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(write(tmp_path / "h.yaml", "targets: [\n")))
    with pytest.raises(ConfigError):
        config.load()


def test_malformed_env_list_is_a_config_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HERALD_NAMESPACES=team-a,team-b (not JSON) escapes load() as a
    pydantic_settings.SettingsError instead of a ConfigError."""
    monkeypatch.setenv("HERALD_NAMESPACES", "team-a,team-b")
    with pytest.raises(ConfigError, match="namespaces"):
        config.load()


# --- validation --------------------------------------------------------------------------


def test_max_backoff_below_backoff_is_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_BACKOFF_SECONDS", "120")
    monkeypatch.setenv("HERALD_MAX_BACKOFF_SECONDS", "60")
    with pytest.raises(ConfigError, match="max_backoff_seconds must be >= backoff_seconds"):
        config.load()


def test_max_backoff_equal_to_backoff_is_fine() -> None:
    s = config.load(backoff_seconds=60, max_backoff_seconds=60)
    assert (s.backoff_seconds, s.max_backoff_seconds) == (60, 60)


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        pytest.param("HERALD_MAX_ATTEMPTS", "0", "max_attempts", id="zero-attempts"),
        pytest.param("HERALD_JITTER_RATIO", "1.5", "jitter_ratio", id="jitter-above-one"),
        pytest.param("HERALD_LOG_FORMAT", "xml", "log_format", id="log-format"),
        pytest.param(
            "HERALD_TARGETS__DEFAULT__URL", "not a url", "targets.default.url", id="target-url"
        ),
        pytest.param(
            "HERALD_TARGETS__DEFAULT__TIMEOUT_SECONDS",
            "0",
            "targets.default",
            id="target-timeout-zero",
        ),
        pytest.param("HERALD_CALLBACK_URL", "n8n-callback", "callback_url", id="callback-url"),
        pytest.param(
            "HERALD_CLAIM_AHEAD_SECONDS", "601", "claim_ahead_seconds", id="claim-ahead-too-long"
        ),
        pytest.param(
            "HERALD_CLAIM_AHEAD_SECONDS", "-1", "claim_ahead_seconds", id="claim-ahead-negative"
        ),
        pytest.param(
            "HERALD_RECORD_GRACE_SECONDS", "301", "record_grace_seconds", id="record-grace-long"
        ),
        pytest.param(
            "HERALD_TTL_SECONDS_AFTER_PUBLISHED",
            "-1",
            "ttl_seconds_after_published",
            id="ttl-published-negative",
        ),
        pytest.param(
            "HERALD_TTL_SECONDS_AFTER_FAILED", "-5", "ttl_seconds_after_failed", id="ttl-failed"
        ),
        pytest.param(
            "HERALD_CIRCUIT_OPEN_MIN_SECONDS", "0", "circuit_open_min_seconds", id="open-min-zero"
        ),
        pytest.param(
            "HERALD_DEFAULT_STARTING_DEADLINE_SECONDS",
            "-1",
            "default_starting_deadline_seconds",
            id="default-deadline-negative",
        ),
        pytest.param(
            "HERALD_SHUTDOWN_GRACE_SECONDS", "-1", "shutdown_grace_seconds", id="shutdown-grace"
        ),
        pytest.param(
            "HERALD_TARGETS__DEFAULT__CONCURRENCY",
            "0",
            "targets.default",
            id="target-concurrency-zero",
        ),
    ],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    if env.startswith("HERALD_TARGETS__") and not env.endswith("__URL"):
        monkeypatch.setenv("HERALD_TARGETS__DEFAULT__URL", "http://n8n/webhook")
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        config.load()
    assert field in str(caught.value)


def test_target_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match=r"targets\.default\.uri"):
        config.load(targets={"default": {"uri": "http://n8n/webhook"}})


# --- secrets ------------------------------------------------------------------------------


def test_secrets_from_files_are_read_and_stripped(tmp_path: Path) -> None:
    s = config.load(
        signing_key_file=write(tmp_path / "sign", "sign-key\n"),
        callback_key_file=write(tmp_path / "cb", "  cb-key  \n"),
        callback_shared_secret_file=write(tmp_path / "shared", "shared\n"),
    )
    assert s.signing_key_bytes() == b"sign-key"
    assert s.callback_key_bytes() == b"cb-key"
    assert s.shared_secret_bytes() == b"shared"


def test_secrets_from_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SIGNING_KEY", "env-sign")
    monkeypatch.setenv("HERALD_CALLBACK_KEY", "env-cb")
    s = config.load()
    assert s.signing_key_bytes() == b"env-sign"
    assert s.callback_key_bytes() == b"env-cb"
    assert s.shared_secret_bytes() is None
    assert "env-sign" not in repr(s)
    assert "env-sign" not in s.model_dump_json()


def test_secret_file_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_SIGNING_KEY_FILE", str(write(tmp_path / "k", "from-file\n")))
    assert config.load().signing_key_bytes() == b"from-file"


@pytest.mark.parametrize(
    ("name", "read"),
    [
        pytest.param("signing_key", Settings.signing_key_bytes, id="signing-key"),
        pytest.param("callback_key", Settings.callback_key_bytes, id="callback-key"),
        pytest.param("callback_shared_secret", Settings.shared_secret_bytes, id="shared-secret"),
    ],
)
def test_value_and_file_together_is_an_error(name: str, read: object, tmp_path: Path) -> None:
    s = config.load(**{name: "value", f"{name}_file": write(tmp_path / "f", "file\n")})
    assert callable(read)
    with pytest.raises(ConfigError, match=f"set {name} or {name}_file, not both"):
        read(s)


@pytest.mark.parametrize(
    ("name", "read"),
    [
        pytest.param("signing_key", Settings.signing_key_bytes, id="signing-key"),
        pytest.param("callback_key", Settings.callback_key_bytes, id="callback-key"),
    ],
)
def test_required_keys_missing_or_empty(name: str, read: object, tmp_path: Path) -> None:
    assert callable(read)
    with pytest.raises(ConfigError, match=f"{name} \\(or {name}_file\\) is required"):
        read(config.load())
    with pytest.raises(ConfigError, match="is required"):
        read(config.load(**{f"{name}_file": write(tmp_path / "empty", "\n")}))


def test_missing_secret_file_names_the_setting(tmp_path: Path) -> None:
    s = config.load(signing_key_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"signing_key_file .*nope: No such file"):
        s.signing_key_bytes()


def test_target_auth_header_from_file(tmp_path: Path) -> None:
    target = Target(
        url="http://n8n/webhook",
        auth_header_name="X-Herald-Auth",
        auth_header_value_file=write(tmp_path / "auth", "tok\n"),
    )
    assert target.auth_header() == ("X-Herald-Auth", "tok")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"auth_header_value": SecretStr("v")},
            "auth_header_value is set but auth_header_name is not",
            id="value-without-name",
        ),
        pytest.param(
            {"auth_header_name": "X-Auth"},
            "auth_header_name X-Auth has no value",
            id="name-without-value",
        ),
        pytest.param(
            {
                "auth_header_name": "X-Auth",
                "auth_header_value": SecretStr("v"),
                "auth_header_value_file": Path("/dev/null"),
            },
            "set auth_header_value or auth_header_value_file, not both",
            id="value-and-file",
        ),
    ],
)
def test_target_auth_header_errors(fields: dict[str, object], message: str) -> None:
    target = Target(url="http://n8n/webhook", **fields)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        target.auth_header()


# --- callback endpoint ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        pytest.param(
            "http://herald-callback.herald.svc:8080",
            "http://herald-callback.herald.svc:8080/v1/callbacks",
            id="host-and-port",
        ),
        pytest.param(
            "http://herald-callback.herald.svc:8080/",
            "http://herald-callback.herald.svc:8080/v1/callbacks",
            id="trailing-slash",
        ),
        pytest.param(
            "https://hooks.example.com/herald/",
            "https://hooks.example.com/herald/v1/callbacks",
            id="with-path",
        ),
    ],
)
def test_callback_endpoint_appends_v1_callbacks(
    monkeypatch: pytest.MonkeyPatch, base: str, endpoint: str
) -> None:
    monkeypatch.setenv("HERALD_CALLBACK_URL", base)
    assert config.load().callback_endpoint() == endpoint


def test_missing_callback_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="callback_url is required"):
        config.load().callback_endpoint()
