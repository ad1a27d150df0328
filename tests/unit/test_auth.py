"""Reading the caller from API Gateway's Cognito authorizer claims."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters.cognito import CognitoIdentity, principal_from_claims
from chalicelib.domain import Conflict, NotAuthenticated, Principal, RateLimited


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


@pytest.fixture
def cognito() -> Iterator[tuple[CognitoIdentity, Stubber]]:
    """The adapter on a stubbed Cognito client (moto has no ResendConfirmationCode)."""
    client = boto3.client(
        "cognito-idp", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    identity = CognitoIdentity(
        client,
        user_pool_id="eu-west-1_p",
        client_id="app",
        region="eu-west-1",
        auto_confirm=False,
        endpoint_url=None,
    )
    with Stubber(client) as stubber:
        yield identity, stubber
        stubber.assert_no_pending_responses()


def test_a_new_confirmation_code_is_sent_to_an_unconfirmed_account(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    expected = {"ClientId": "app", "Username": "me@example.com"}
    stubber.add_response("resend_confirmation_code", {"CodeDeliveryDetails": {}}, expected)
    identity.resend_code("me@example.com")


def test_resending_tells_nothing_about_unknown_accounts_and_refuses_confirmed_ones(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    stubber.add_client_error("resend_confirmation_code", "UserNotFoundException", http_status_code=400)
    identity.resend_code("nobody@example.com")  # as if sent

    stubber.add_client_error("resend_confirmation_code", "InvalidParameterException", http_status_code=400)
    with pytest.raises(Conflict, match="already confirmed"):
        identity.resend_code("confirmed@example.com")
    stubber.add_client_error("resend_confirmation_code", "LimitExceededException", http_status_code=400)
    with pytest.raises(RateLimited):
        identity.resend_code("me@example.com")
