"""Message authentication: webhook signatures for n8n and per-attempt callback tokens.

Pure functions of keys and bytes. Dispatches are signed the Standard Webhooks way
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body`) so an n8n Code node, or any Standard Webhooks library, can verify
them. Callback tokens are capabilities for exactly one attempt of one post: an HMAC of
(namespace, name, uid, attempt) under the callback key, so a leaked token can only
report on the attempt it was minted for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

TOKEN_PREFIX = "v1."


def _key(secret: bytes) -> bytes:
    # Standard Webhooks secrets are often written "whsec_<base64>"; accept both forms.
    if secret.startswith(b"whsec_"):
        return base64.b64decode(secret[len(b"whsec_") :])
    return secret


def message_id(uid: str, attempt: int) -> str:
    """Stable for a given attempt, so a re-sent attempt is recognisably the same message."""
    return f"msg_{uid}_{attempt}"


def webhook_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook_signature(
    secret: bytes, msg_id: str, timestamp: int, body: bytes, header: str
) -> bool:
    """True when any `v1,` signature in the (space-separated) header matches."""
    expected = webhook_signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())


def callback_token(secret: bytes, namespace: str, name: str, uid: str, attempt: int) -> str:
    material = f"{namespace}\n{name}\n{uid}\n{attempt}".encode()
    digest = hmac.new(secret, material, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify_callback_token(
    secret: bytes, token: str, namespace: str, name: str, uid: str, attempt: int
) -> bool:
    expected = callback_token(secret, namespace, name, uid, attempt)
    return hmac.compare_digest(expected.encode(), token.encode())


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
