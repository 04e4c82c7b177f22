"""Webhook signatures (Standard Webhooks) and per-attempt callback tokens (herald.signing)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import logging
import secrets

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from herald import signing
from herald.config import ConfigError, Settings

# The normal form, as the chart generates it: whsec_ + base64 of 32 random bytes.
RAW_KEY = bytes(range(32))
SECRET = b"whsec_" + base64.b64encode(RAW_KEY)
PLAIN = b"a-plain-signing-key"
MSG_ID = "msg_0b1f6a52_1"
TS = 1_893_488_400
BODY = b'{"attempt":1,"content":{"text":"hello \xc3\xa9"},"id":"0b1f6a52"}'


def independent_signature(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    """Standard Webhooks: v1,<base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))>."""
    signed = msg_id.encode() + b"." + str(ts).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_signature_matches_an_independent_hmac() -> None:
    assert signing.webhook_signature(SECRET, MSG_ID, TS, BODY) == independent_signature(
        RAW_KEY, MSG_ID, TS, BODY
    )


def test_the_official_library_verifies_a_fresh_signature() -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    key = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    headers = signing.webhook_headers(key.encode(), MSG_ID, now, BODY)
    # The receiver's side, exactly as the library's README shows it.
    assert Webhook(key).verify(BODY, headers) == {
        "attempt": 1,
        "content": {"text": "hello \u00e9"},
        "id": "0b1f6a52",
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(key).verify(BODY + b" ", headers)


def test_a_plain_key_is_the_whsec_key_of_its_bytes() -> None:
    """The documented conversion: a deprecated plain key signs as whsec_ + base64(key)."""
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signing.webhook_headers(PLAIN, MSG_ID, now, BODY)
    converted = signing.whsec_form(PLAIN)
    assert converted == "whsec_" + base64.b64encode(PLAIN).decode()
    Webhook(converted).verify(BODY, headers)
    Webhook(PLAIN).verify(BODY, headers)  # the library's bytes form: the raw key
    assert headers == signing.webhook_headers(converted.encode(), MSG_ID, now, BODY)
    # Handing the plain string to a library as if it were base64 is what fails:
    with pytest.raises((WebhookVerificationError, ValueError)):
        Webhook(PLAIN.decode()).verify(BODY, headers)
    assert signing.whsec_form(SECRET) == SECRET.decode()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"whsec_", id="prefix-only"),
        pytest.param(b"whsec_not base64!", id="not-base64"),
        pytest.param(b"whsec_\xc3\xa9\xc3\xa9", id="non-ascii"),
    ],
)
def test_unusable_keys_are_refused(key: bytes) -> None:
    with pytest.raises(signing.SigningKeyError) as caught:
        signing.check_signing_key(key)
    message = str(caught.value)
    assert message and (not key[6:] or key[6:].decode(errors="replace") not in message)


def test_unpadded_whsec_keys_are_accepted_as_the_library_does() -> None:
    padded = b"whsec_" + base64.b64encode(b"0123456789abcdefghij")
    assert padded.endswith(b"=")
    unpadded = padded.rstrip(b"=")
    assert signing.webhook_signature(unpadded, MSG_ID, TS, BODY) == signing.webhook_signature(
        padded, MSG_ID, TS, BODY
    )


def test_plain_key_warns_at_startup_and_whsec_does_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="herald.signing"):
        assert Settings(signing_key=SECRET.decode()).signing_key_bytes() == SECRET
        assert not caplog.records
        assert Settings(signing_key=PLAIN.decode()).signing_key_bytes() == PLAIN
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "deprecated" in record.getMessage() and "whsec_" in record.getMessage()
    assert PLAIN.decode() not in record.getMessage()


def test_a_bad_whsec_key_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="signing_key: a whsec_ signing key must be"):
        Settings(signing_key="whsec_%%%").signing_key_bytes()


def test_signature_matches_a_known_vector() -> None:
    # The published test vector of the Standard Webhooks specification.
    signed = b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    got = signing.webhook_signature(
        b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert got == expected
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_whsec_secret_is_base64_decoded() -> None:
    assert signing.webhook_signature(SECRET, MSG_ID, TS, BODY) == independent_signature(
        RAW_KEY, MSG_ID, TS, BODY
    )
    assert signing.webhook_signature(SECRET, MSG_ID, TS, BODY) != independent_signature(
        SECRET, MSG_ID, TS, BODY
    )
    assert signing.webhook_signature(PLAIN, MSG_ID, TS, BODY) == independent_signature(
        PLAIN, MSG_ID, TS, BODY
    )


def test_signature_format() -> None:
    sig = signing.webhook_signature(SECRET, MSG_ID, TS, BODY)
    version, encoded = sig.split(",", 1)
    assert version == "v1"
    assert len(base64.b64decode(encoded, validate=True)) == 32


def test_verify_accepts_its_own_signature() -> None:
    header = signing.webhook_signature(SECRET, MSG_ID, TS, BODY)
    assert signing.verify_webhook_signature(SECRET, MSG_ID, TS, BODY, header) is True


def test_verify_accepts_any_of_several_space_separated_signatures() -> None:
    good = signing.webhook_signature(SECRET, MSG_ID, TS, BODY)
    other = signing.webhook_signature(b"rotated-out-key", MSG_ID, TS, BODY)
    assert signing.verify_webhook_signature(SECRET, MSG_ID, TS, BODY, f"{other} {good}")
    assert not signing.verify_webhook_signature(SECRET, MSG_ID, TS, BODY, other)


@pytest.mark.parametrize(
    ("secret", "msg_id", "ts", "body"),
    [
        pytest.param(SECRET, MSG_ID, TS, BODY + b" ", id="tampered-body"),
        pytest.param(SECRET, MSG_ID, TS, BODY.replace(b"hello", b"HELLO"), id="edited-body"),
        pytest.param(SECRET, MSG_ID, TS + 1, BODY, id="tampered-timestamp"),
        pytest.param(SECRET, "msg_0b1f6a52_2", TS, BODY, id="tampered-id"),
        pytest.param(b"another-key", MSG_ID, TS, BODY, id="wrong-key"),
    ],
)
def test_verify_rejects_tampering(secret: bytes, msg_id: str, ts: int, body: bytes) -> None:
    header = signing.webhook_signature(SECRET, MSG_ID, TS, BODY)
    assert signing.verify_webhook_signature(secret, msg_id, ts, body, header) is False


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("v1,", id="no-digest"),
        pytest.param("v1,AAAA", id="garbage-digest"),
        pytest.param("v1,\udcff", id="surrogate"),
        pytest.param("v1,é", id="non-ascii"),
    ],
)
def test_verify_rejects_malformed_headers(header: str) -> None:
    assert signing.verify_webhook_signature(SECRET, MSG_ID, TS, BODY, header) is False


def test_message_id_is_stable_per_attempt() -> None:
    assert signing.message_id("uid-1", 3) == "msg_uid-1_3"
    assert signing.message_id("uid-1", 3) == signing.message_id("uid-1", 3)
    assert signing.message_id("uid-1", 3) != signing.message_id("uid-1", 4)


# --- callback tokens -------------------------------------------------------------------

CALLBACK_KEY = b"callback-key-0123456789"
TUPLES = [
    ("marketing", "launch", "uid-1", 1),
    ("marketing", "launch", "uid-1", 2),
    ("marketing", "launch", "uid-2", 1),
    ("marketing", "launch-2", "uid-1", 1),
    ("sales", "launch", "uid-1", 1),
    # Field boundaries must matter: "a\nb" + "c" is not "a" + "b\nc".
    ("mar", "keting", "uid-1", 1),
]


def test_token_format() -> None:
    token = signing.callback_token(CALLBACK_KEY, *TUPLES[0])
    assert token.startswith("v1.")
    digest = base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4))
    material = b"marketing\nlaunch\nuid-1\n1"
    assert digest == hmac.new(CALLBACK_KEY, material, hashlib.sha256).digest()
    assert "=" not in token


def test_tokens_differ_per_namespace_name_uid_and_attempt() -> None:
    tokens = [signing.callback_token(CALLBACK_KEY, *t) for t in TUPLES]
    assert len(set(tokens)) == len(TUPLES)


def test_token_is_deterministic() -> None:
    assert signing.callback_token(CALLBACK_KEY, *TUPLES[0]) == signing.callback_token(
        CALLBACK_KEY, *TUPLES[0]
    )


@pytest.mark.parametrize(
    ("minted_for", "presented_for"),
    list(itertools.product(TUPLES, TUPLES)),
    ids=[
        f"{a[0]}/{a[1]}/{a[2]}/{a[3]}->{b[0]}/{b[1]}/{b[2]}/{b[3]}"
        for a, b in itertools.product(TUPLES, TUPLES)
    ],
)
def test_token_verifies_only_for_its_own_tuple(
    minted_for: tuple[str, str, str, int], presented_for: tuple[str, str, str, int]
) -> None:
    token = signing.callback_token(CALLBACK_KEY, *minted_for)
    assert signing.verify_callback_token(CALLBACK_KEY, token, *presented_for) is (
        minted_for == presented_for
    )


def test_token_from_another_key_is_rejected() -> None:
    token = signing.callback_token(b"other-key", *TUPLES[0])
    assert signing.verify_callback_token(CALLBACK_KEY, token, *TUPLES[0]) is False


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("v1.", id="prefix-only"),
        pytest.param("Bearer x", id="garbage"),
        pytest.param("v1.é", id="non-ascii"),
        pytest.param("v1.\udcff\udcfe", id="surrogate-escaped-header-bytes"),
        pytest.param("v1.\x00", id="control-character"),
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    assert signing.verify_callback_token(CALLBACK_KEY, token, *TUPLES[0]) is False


def test_truncated_token_is_rejected() -> None:
    token = signing.callback_token(CALLBACK_KEY, *TUPLES[0])
    assert signing.verify_callback_token(CALLBACK_KEY, token[:-1], *TUPLES[0]) is False


def test_constant_time_equal() -> None:
    assert signing.constant_time_equal(b"abc", b"abc") is True
    assert signing.constant_time_equal(b"abc", b"abd") is False
    assert signing.constant_time_equal(b"abc", b"abcd") is False
