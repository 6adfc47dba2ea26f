"""Bearer tokens for the web endpoints that change anything (read-only ones need none)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def bearer_refusal(headers: Mapping[str, str], token: str) -> str | None:
    """Why a state-changing request is refused, or None when it carries the configured bearer token.

    With no token configured, every such request is refused: an open write endpoint is never the default.
    """
    if not token:
        return "changes over the web are disabled: no PROMPT_STREAMS_WEB_TOKEN is configured"
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return "this endpoint changes state: send 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "the bearer token is not the configured one"
    return None
