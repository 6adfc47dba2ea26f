"""Secrets never leave the worker: configured secret values are masked in anything sent out.

A pipeline's error message and a shell pipeline's output go into `ccd-result`, from there to the
SAL bridge and the unauthenticated `GET /ocps/jobs/{id}/error`; a command that prints its
environment or a credentials file, or an exception that quotes a connection string, must not
publish the SASL password or the web token. The logs mask the same values (`streams.observability.logs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from streams.config import variables

MASK = "***"


def secret_variables() -> frozenset[str]:
    """The environment variables of the secret settings (`PROMPT_STREAMS_SASL_PASSWORD`, ...): never handed to a
    command, whatever a configuration asks."""
    return frozenset(variable.name for variable in variables() if variable.field.metadata["secret"])


def _forms(secret: str) -> set[str]:
    """How a value may appear in text: as it is, escaped by `repr` (an error message's `{value!r}`) or by JSON."""
    return {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every (non-empty) secret replaced by `***`, longest first (a secret that holds
    another is masked whole). Scrub before truncating: a cut could leave part of a secret unrecognised."""
    for form in sorted({form for secret in secrets if secret for form in _forms(secret)}, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text
