"""Bearer tokens on the state-changing web endpoints."""

from __future__ import annotations

from streams.web.auth import bearer_refusal


def test_the_configured_token_is_accepted() -> None:
    """A request with `Authorization: Bearer <token>` passes."""
    assert bearer_refusal({"Authorization": "Bearer s3cret"}, "s3cret") is None


def test_missing_wrong_or_malformed_tokens_are_refused_with_a_reason() -> None:
    """No header, another scheme, an empty or a wrong token: each is refused and says why."""
    assert "Authorization: Bearer" in (bearer_refusal({}, "s3cret") or "")
    assert "Authorization: Bearer" in (bearer_refusal({"Authorization": "Basic czNjcmV0"}, "s3cret") or "")
    assert "Authorization: Bearer" in (bearer_refusal({"Authorization": "Bearer "}, "s3cret") or "")
    assert "not the configured" in (bearer_refusal({"Authorization": "Bearer guess"}, "s3cret") or "")


def test_without_a_configured_token_every_change_is_refused() -> None:
    """An unset token disables changes instead of opening them to anyone."""
    assert "disabled" in (bearer_refusal({"Authorization": "Bearer "}, "") or "")
    assert "disabled" in (bearer_refusal({"Authorization": "Bearer anything"}, "") or "")
