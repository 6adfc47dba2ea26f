"""Bearer tokens: who may change anything, who may read, and whose job is whose."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.config import Settings, SettingsError
from streams.web.auth import OPERATOR, Tokens, owner_refusal


def tokens(**changes: str) -> Tokens:
    return Tokens.from_settings(replace(Settings(), **changes))  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_configured_token_is_accepted_as_the_operators() -> None:
    """A request with `Authorization: Bearer <WEB_TOKEN>` passes, named `operator`."""
    assert tokens(web_token="s3cret").writer(bearer("s3cret")) == (OPERATOR, "")


def test_missing_wrong_or_malformed_tokens_are_refused_with_a_reason() -> None:
    """No header, another scheme, an empty or a wrong token: each is refused and says why."""
    configured = tokens(web_token="s3cret")
    for headers in ({}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": "Bearer "}):
        assert "Authorization: Bearer" in configured.writer(headers)[1]
    assert configured.writer(bearer("guess")) == ("", "the bearer token is not the configured one")


def test_without_a_configured_token_every_change_is_refused() -> None:
    """An unset token disables changes instead of opening them to anyone."""
    assert "disabled" in tokens().writer(bearer(""))[1]
    assert "disabled" in tokens().writer(bearer("anything"))[1]


def test_job_tokens_name_their_clients() -> None:
    """Each job token is its client's name; the read token is no write token."""
    configured = tokens(web_token="ops", web_job_tokens="alice=a-token, bob=b=token", web_read_token="r")
    assert configured.writer(bearer("a-token")) == ("alice", "")
    assert configured.writer(bearer("b=token")) == ("bob", "")
    assert configured.writer(bearer("r"))[0] == ""


@pytest.mark.parametrize("job_tokens", ["alice", "=Zk9", "alice=", "operator=Zk9", "alice=Zk9,alice=Zk9x",
                                        "a b=Zk9", "trigger:x=Zk9"])
def test_badly_formed_job_tokens_stop_the_worker_without_showing_a_token(job_tokens: str) -> None:
    """A pair without a name or a token, a name that is not plain or is `operator`, a name twice: refused."""
    with pytest.raises(SettingsError, match="WEB_JOB_TOKENS") as refused:
        tokens(web_job_tokens=job_tokens)
    assert "Zk9" not in str(refused.value)


def test_one_token_under_two_names_is_refused() -> None:
    """The same token as WEB_TOKEN and a job token (or the read token) would make its owner ambiguous."""
    with pytest.raises(SettingsError, match="all be different"):
        tokens(web_token="t", web_job_tokens="alice=t")
    with pytest.raises(SettingsError, match="all be different"):
        tokens(web_token="t", web_read_token="t")


def test_reads_are_open_until_a_read_token_is_configured() -> None:
    """No read token: anyone reads. A read token: it, or any write token, reads; nothing else does."""
    assert tokens(web_token="w").read_refusal({}) is None
    configured = tokens(web_token="w", web_job_tokens="alice=a", web_read_token="r")
    assert all(configured.read_refusal(bearer(token)) is None for token in ("r", "w", "a"))
    assert "Authorization: Bearer" in (configured.read_refusal({}) or "")
    assert "not a configured one" in (configured.read_refusal(bearer("guess")) or "")
    assert configured.read_headers() == bearer("r") and tokens().read_headers() == {}


def test_a_job_is_changed_by_its_owner_or_the_operators_only() -> None:
    """alice's job: alice and the operators may change it, bob may not, and the refusal names the owner."""
    assert owner_refusal("alice", "alice", "j1") is None
    assert owner_refusal(OPERATOR, "alice", "j1") is None
    assert owner_refusal(OPERATOR, "trigger:reduce", "j1") is None
    assert "belongs to alice" in (owner_refusal("bob", "alice", "j1") or "")
    assert owner_refusal("bob", "", "j1") is not None
