"""The Cognito adapter: the caller from API Gateway's claims, and Cognito's errors as our answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib.adapters.cognito import CognitoIdentity, principal_from_claims
from chalicelib.domain import (
    Conflict,
    DomainError,
    NotAuthenticated,
    Principal,
    RateLimited,
    ServiceUnavailable,
)


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


def identity_on(client: Any, *, auto_confirm: bool = False) -> CognitoIdentity:
    return CognitoIdentity(
        client,
        user_pool_id="eu-west-1_p",
        client_id="app",
        region="eu-west-1",
        auto_confirm=auto_confirm,
        endpoint_url=None,
    )


@pytest.fixture
def cognito() -> Iterator[tuple[CognitoIdentity, Stubber]]:
    """The adapter on a stubbed Cognito client that answers as AWS does."""
    client = boto3.client(
        "cognito-idp", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield identity_on(client), stubber
        stubber.assert_no_pending_responses()


def answer(call: Callable[[], object]) -> tuple[str, str]:
    """What the API would say: ("ok", "") or the domain error's code and message."""
    try:
        call()
    except DomainError as error:
        return error.code, error.message
    return "ok", ""


def test_a_new_confirmation_code_is_sent_to_an_unconfirmed_account(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    expected = {"ClientId": "app", "Username": "me@example.com"}
    stubber.add_response("resend_confirmation_code", {"CodeDeliveryDetails": {}}, expected)
    identity.resend_code("me@example.com")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("UserNotFoundException", "Username/client id combination not found."),  # a LEGACY client
        ("InvalidParameterException", "User is already confirmed."),
        # An ENABLED client answers some unknown users this way instead of a simulated delivery.
        ("InvalidParameterException", "Cannot resend codes. Auto verification not turned on."),
        ("NotAuthorizedException", "User is disabled."),
    ],
)
def test_resending_answers_as_if_sent_whether_or_not_the_account_exists(
    cognito: tuple[CognitoIdentity, Stubber], code: str, message: str
) -> None:
    identity, stubber = cognito
    stubber.add_client_error("resend_confirmation_code", code, message, http_status_code=400)
    identity.resend_code("someone@example.com")  # no error: the same 200 as a real send


@pytest.mark.parametrize("code", ["LimitExceededException", "TooManyRequestsException"])
def test_resending_too_often_is_rate_limited(cognito: tuple[CognitoIdentity, Stubber], code: str) -> None:
    identity, stubber = cognito
    stubber.add_client_error("resend_confirmation_code", code, http_status_code=400)
    with pytest.raises(RateLimited):
        identity.resend_code("me@example.com")


def test_a_failed_delivery_is_unavailable_and_a_server_error_is_not_swallowed(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    stubber.add_client_error("resend_confirmation_code", "CodeDeliveryFailureException", http_status_code=400)
    with pytest.raises(ServiceUnavailable):
        identity.resend_code("me@example.com")
    stubber.add_client_error("resend_confirmation_code", "InternalErrorException", http_status_code=500)
    with pytest.raises(ClientError):
        identity.resend_code("me@example.com")


def test_local_mode_has_no_code_to_resend_so_cognito_is_not_asked() -> None:
    client = boto3.client(
        "cognito-idp", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:  # any call would fail: nothing is stubbed
        identity_on(client, auto_confirm=True).resend_code("me@example.com")
        stubber.assert_no_pending_responses()


def test_confirm_answers_alike_for_unknown_emails_confirmed_accounts_and_bad_codes(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    answers = set()
    for code, message in [
        ("CodeMismatchException", "Invalid verification code provided, please try again."),
        ("ExpiredCodeException", "Invalid code provided, please request a code again."),
        ("UserNotFoundException", "Username/client id combination not found."),
        ("NotAuthorizedException", "User cannot be confirmed. Current status is CONFIRMED"),
    ]:
        stubber.add_client_error("confirm_sign_up", code, message, http_status_code=400)
        answers.add(answer(lambda: identity.confirm("someone@example.com", "123456")))
    (only,) = answers
    assert only[0] == "invalid_request" and "sign in if your account is already confirmed" in only[1]


def test_sign_in_answers_alike_for_an_unknown_email_and_a_wrong_password(
    cognito: tuple[CognitoIdentity, Stubber],
) -> None:
    identity, stubber = cognito
    answers = set()
    for code, message in [
        ("NotAuthorizedException", "Incorrect username or password."),
        ("UserNotFoundException", "User does not exist."),  # a LEGACY client
    ]:
        stubber.add_client_error("initiate_auth", code, message, http_status_code=400)
        answers.add(answer(lambda: identity.log_in("someone@example.com", "Wrong-passw0rd!")))
    assert answers == {("unauthorized", "Wrong email or password.")}


def test_sign_up_of_a_taken_email_is_a_conflict(cognito: tuple[CognitoIdentity, Stubber]) -> None:
    """The one answer that reveals an account: Cognito's SignUp has no way to hide it."""
    identity, stubber = cognito
    stubber.add_client_error("sign_up", "UsernameExistsException", http_status_code=400)
    with pytest.raises(Conflict, match="already exists"):
        identity.sign_up("taken@example.com", "Corr3ct-Horse!")
