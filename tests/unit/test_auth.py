"""Reading the caller from API Gateway's Cognito authorizer claims."""

from __future__ import annotations

import pytest

from chalicelib.adapters.cognito import principal_from_claims
from chalicelib.domain import NotAuthenticated, Principal


def test_id_token_claims_name_the_principal() -> None:
    claims = {"sub": "u-1", "email": "a@example.com", "token_use": "id"}
    assert principal_from_claims(claims) == Principal(user_id="u-1", email="a@example.com")


@pytest.mark.parametrize(
    "claims",
    [{}, {"sub": "u-1"}, {"email": "a@example.com"}, {"sub": "u-1", "email": "a@b.c", "token_use": "access"}],
)
def test_incomplete_or_access_token_claims_are_refused(claims: dict[str, str]) -> None:
    with pytest.raises(NotAuthenticated):
        principal_from_claims(claims)
