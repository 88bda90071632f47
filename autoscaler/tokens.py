"""Cluster tokens: derived, never stored.

A cluster's token is HMAC-SHA256(key, "<cluster name>/<generation>"), where the key is the app setting
`CLUSTER_TOKEN_KEY`. The token authenticates the control plane to the head agent, Ray's token auth
(`RAY_AUTH_MODE=token`) and the head agent's wake-up calls back to the control plane. It never goes in a table
or a log: whoever holds the key re-derives it. A new generation (a deleted name reused) gets a new token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def cluster_token(key: bytes, cluster_name: str, generation: int) -> str:
    digest = hmac.new(key, f"{cluster_name}/{generation}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def tokens_match(presented: str, expected: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the token."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when absent or of another scheme."""
    if not authorization_header:
        return None
    scheme, _, value = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
