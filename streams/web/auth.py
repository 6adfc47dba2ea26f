"""Bearer tokens of the web endpoints: who may change anything, who may read, and whose job is whose.

Writes always need a write token (`PROMPT_STREAMS_WEB_TOKEN`, named `operator`, or one of the named
`PROMPT_STREAMS_WEB_JOB_TOKENS`); with none configured they are all refused. Reads need a token only
when `PROMPT_STREAMS_WEB_READ_TOKEN` is set; then the read token or any write token will do.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from streams.config import PREFIX, Settings, SettingsError

OPERATOR = "operator"
"""The name of PROMPT_STREAMS_WEB_TOKEN: the operators', who may act on every job."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="prompt-streams"'}
"""The header of a 401: the scheme the client must use."""


def _given(headers: Mapping[str, str]) -> str | None:
    """The bearer token a request carries (None: no bearer header, or an empty one)."""
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def parse_job_tokens(text: str) -> dict[str, str]:
    """`name=token` pairs, comma-separated, as name -> token.

    Raises:
        SettingsError: a pair without a name or a token, a name that is not plain (letters, digits, `_.@-`,
            at most 64) or is `operator`, or a name given twice; the message never shows a token.
    """
    tokens: dict[str, str] = {}
    for number, pair in enumerate((p.strip() for p in text.split(",") if p.strip()), start=1):
        name, _, token = (part.strip() for part in pair.partition("="))
        if not NAME.match(name) or name == OPERATOR or not token or name in tokens:
            raise SettingsError(f"{PREFIX}WEB_JOB_TOKENS: pair {number} is not name=token with a plain name "
                                f"(letters, digits, _.@-; not {OPERATOR!r}) given once")
        tokens[name] = token
    return tokens


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, read once from the settings."""

    writers: Mapping[str, str]
    """Owner name -> write token."""
    reader: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        """The tokens of these settings.

        Raises:
            SettingsError: badly formed job tokens, or one token configured under two names.
        """
        writers = ({OPERATOR: settings.web_token} if settings.web_token else {}) \
            | parse_job_tokens(settings.web_job_tokens)
        every = [*writers.values(), *([settings.web_read_token] if settings.web_read_token else [])]
        if len(set(every)) < len(every):
            raise SettingsError(f"{PREFIX}WEB_TOKEN, {PREFIX}WEB_JOB_TOKENS and {PREFIX}WEB_READ_TOKEN must "
                                "all be different tokens")
        return cls(writers, settings.web_read_token)

    def writer(self, headers: Mapping[str, str]) -> tuple[str, str]:
        """(the owner name of the request's write token, "") or ("", why the request may change nothing)."""
        if not self.writers:
            return "", f"changes over the web are disabled: no {PREFIX}WEB_TOKEN is configured"
        given = _given(headers)
        if given is None:
            return "", "this endpoint changes state: send 'Authorization: Bearer <token>'"
        for name, token in self.writers.items():
            if _same(given, token):
                return name, ""
        return "", "the bearer token is not the configured one"

    def read_refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why the request may not read (None: it may; reads are open when no read token is configured)."""
        if not self.reader:
            return None
        given = _given(headers)
        if given is None:
            return "reading needs 'Authorization: Bearer <token>' (the read token or a write token)"
        if any(_same(given, token) for token in (self.reader, *self.writers.values())):
            return None
        return "the bearer token is not a configured one"

    def read_headers(self) -> dict[str, str]:
        """The headers a worker sends another one to read its slice (none when reads are open)."""
        return {"Authorization": f"Bearer {self.reader}"} if self.reader else {}


def owner_refusal(caller: str, owner: str, job_id: str) -> str | None:
    """Why `caller` may not change a job of `owner` (None: its owner or the operator may)."""
    if caller in (OPERATOR, owner):
        return None
    return (f"job {job_id} belongs to {owner or 'no named client'}: only its owner's token or "
            f"{PREFIX}WEB_TOKEN may change it")
