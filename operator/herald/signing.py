"""Message authentication: webhook signatures for n8n and per-attempt callback tokens.

Dispatches are signed by the official Standard Webhooks library (`standardwebhooks`):
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body`, so an n8n Code node, or any Standard Webhooks library, verifies them.

The signing key's normal form is the Standard Webhooks one, `whsec_<base64 of the raw
key>`, which every such library base64-decodes. A plain key (any other string, as older
Herald charts generated) still works but is deprecated: its UTF-8 bytes are the raw key,
so it is the same key as `whsec_` + base64(plain key), and a receiver verifies with that.

Callback tokens are capabilities for exactly one attempt of one post: an HMAC of
(namespace, name, uid, attempt) under the callback key, so a leaked token can only
report on the attempt it was minted for.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging

from standardwebhooks import Webhook

log = logging.getLogger("herald.signing")
TOKEN_PREFIX = "v1."
WHSEC_PREFIX = "whsec_"
PLAIN_KEY_DEPRECATED = (
    "the signing key is a plain string, which is deprecated: Standard Webhooks keys are "
    "whsec_<base64>. Herald uses the plain key's bytes as the raw key, so it is the same "
    "key as whsec_ + base64(plain key) (shell: whsec_$(printf %s KEY | base64 -w0)): set "
    "that value instead (signatures stay the same) and give it to receivers"
)


class SigningKeyError(ValueError):
    """The signing key cannot be used; the message says why (never the key)."""


def is_plain_key(secret: bytes) -> bool:
    """True for a deprecated plain key, False for the `whsec_` form."""
    return not secret.startswith(WHSEC_PREFIX.encode())


def whsec_form(secret: bytes) -> str:
    """The `whsec_` form of a key: itself if it has it, else `whsec_` + base64(raw bytes)."""
    if not is_plain_key(secret):
        return secret.decode("ascii")
    return WHSEC_PREFIX + base64.b64encode(secret).decode("ascii")


def webhook(secret: bytes) -> Webhook:
    """The Standard Webhooks signer for a key in either form (see the module docstring)."""
    if not secret:
        raise SigningKeyError("the signing key is empty")
    if is_plain_key(secret):
        # Bytes go to the library as the raw key; a str would be base64-decoded.
        return Webhook(secret)
    encoded = secret[len(WHSEC_PREFIX) :]
    try:
        # Strict here, because the library's own decoding skips characters it does not
        # know and would sign with a key other than the one the receiver has.
        raw = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(
            "a whsec_ signing key must be whsec_ followed by standard base64"
        ) from None
    if not raw:
        raise SigningKeyError("the whsec_ signing key holds no key bytes")
    return Webhook(raw)


def check_signing_key(secret: bytes) -> None:
    """At startup: refuse an unusable key, and warn once about a deprecated plain one."""
    webhook(secret)
    if is_plain_key(secret):
        log.warning(PLAIN_KEY_DEPRECATED)


def message_id(uid: str, attempt: int) -> str:
    """Stable for a given attempt, so a re-sent attempt is recognisably the same message."""
    return f"msg_{uid}_{attempt}"


def webhook_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` for a UTF-8 body (Herald's bodies are JSON)."""
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return webhook(secret).sign(msg_id, when, body.decode("utf-8"))


def webhook_headers(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of a signed request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(secret, msg_id, timestamp, body),
    }


def verify_webhook_signature(
    secret: bytes, msg_id: str, timestamp: int, body: bytes, header: str
) -> bool:
    """True when any `v1,` signature in the (space-separated) header matches.

    Unlike `Webhook.verify`, no clock tolerance: for checking a recorded request later.
    """
    expected = webhook_signature(secret, msg_id, timestamp, body)
    return any(
        printable_ascii(candidate) and hmac.compare_digest(expected, candidate)
        for candidate in header.split()
    )


def callback_token(secret: bytes, namespace: str, name: str, uid: str, attempt: int) -> str:
    material = f"{namespace}\n{name}\n{uid}\n{attempt}".encode()
    digest = hmac.new(secret, material, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify_callback_token(
    secret: bytes, token: str, namespace: str, name: str, uid: str, attempt: int
) -> bool:
    if not printable_ascii(token):
        # No token has other characters; a header's undecodable bytes arrive as
        # surrogates, which `str.encode` would refuse.
        return False
    expected = callback_token(secret, namespace, name, uid, attempt)
    return hmac.compare_digest(expected.encode(), token.encode())


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def printable_ascii(text: str) -> bool:
    """Token and signature text is printable ASCII; anything else is not one."""
    return text.isascii() and text.isprintable()
