"""Accounts and tokens on a Cognito user pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, cast

import jwt
from botocore.exceptions import ClientError

from chalicelib.domain import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    NotConfirmed,
    Principal,
    RateLimited,
    ServiceUnavailable,
    Tokens,
)

logger = logging.getLogger(__name__)

# Cognito error codes that are the caller's mistake, and how we answer them.
#
# The app client has PreventUserExistenceErrors ENABLED (infra/stack.yaml,
# devstack/resources.py), and these tables keep what Cognito hides hidden:
# every answer that could tell an unknown email from a known one is the
# same for both. What still tells them apart is listed in the README
# ("Accounts and user enumeration").
_SIGNUP_ERRORS = {
    # Cognito's SignUp says UsernameExistsException whatever the client's
    # setting; in a pool whose usernames are emails it cannot do otherwise.
    # A fake success would not hide it (confirm and sign-in then differ) and
    # would leave a real owner waiting for a code that never comes, so the
    # API says so plainly: the one answer that reveals an account.
    "UsernameExistsException": (Conflict, "An account with this email already exists."),
    "InvalidPasswordException": (
        InvalidRequest,
        "The password is too weak: use at least 8 characters with upper and lower case "
        "letters, a number and a symbol.",
    ),
    "InvalidParameterException": (InvalidRequest, "The email or password is not valid."),
}
# One answer for a wrong, expired or unknown code, an unknown email and an
# account that is already confirmed, so confirm does not tell who has an account.
_NOT_CONFIRMED_BY_CODE = (
    InvalidRequest,
    "That code does not confirm an account for this email: it may be mistyped or expired. "
    "Ask for a new code, or sign in if your account is already confirmed.",
)
_CONFIRM_ERRORS = {
    "CodeMismatchException": _NOT_CONFIRMED_BY_CODE,
    "ExpiredCodeException": _NOT_CONFIRMED_BY_CODE,
    "UserNotFoundException": _NOT_CONFIRMED_BY_CODE,
    # "User cannot be confirmed. Current status is CONFIRMED" (or disabled).
    "NotAuthorizedException": _NOT_CONFIRMED_BY_CODE,
}
# ResendConfirmationCode errors answered as if a code had been sent: an
# unknown email (LEGACY clients), an account that is already confirmed
# ("User is already confirmed."), a disabled one, and the
# InvalidParameterException that an ENABLED client gives some unknown users
# instead of a simulated delivery.
_RESEND_AS_IF_SENT = {"UserNotFoundException", "InvalidParameterException", "NotAuthorizedException"}
_RESEND_ERRORS = {
    "CodeDeliveryFailureException": (
        ServiceUnavailable,
        "We could not send the email just now: try again in a few minutes.",
    ),
}
_LOGIN_ERRORS = {
    # The same answer for an unknown email and a wrong password.
    "NotAuthorizedException": (NotAuthenticated, "Wrong email or password."),
    "UserNotFoundException": (NotAuthenticated, "Wrong email or password."),
    # Cognito checks the password first: only its owner learns this.
    "UserNotConfirmedException": (
        NotConfirmed,
        "Confirm your email first: enter the code we sent you.",
    ),
    "PasswordResetRequiredException": (Forbidden, "Reset your password first."),
}


_THROTTLED = {"TooManyRequestsException", "LimitExceededException", "TooManyFailedAttemptsException"}


def _translate(exc: ClientError, table: Mapping[str, tuple[type[Exception], str]]) -> Exception:
    """The domain error for a Cognito error: from `table`, else by kind."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in table:
        error_type, message = table[code]
        return error_type(message)
    if code in _THROTTLED:
        return RateLimited("Too many attempts: wait a minute and try again.")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
    if 400 <= status < 500 and code != "AccessDeniedException":
        return InvalidRequest(f"The request was refused ({code}).")
    return cast(Exception, exc)


class CognitoIdentity:
    """Identity on a Cognito user pool whose usernames are emails."""

    def __init__(
        self,
        client: Any,
        *,
        user_pool_id: str,
        client_id: str,
        region: str,
        auto_confirm: bool,
        endpoint_url: str | None,
    ):
        self._idp = client
        self._pool_id = user_pool_id
        self._client_id = client_id
        self._auto_confirm = auto_confirm
        self.issuer = f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"
        # moto serves the pool's keys under its own endpoint; AWS under the issuer.
        base = f"{endpoint_url.rstrip('/')}/{user_pool_id}" if endpoint_url else self.issuer
        self.jwks_url = f"{base}/.well-known/jwks.json"
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_lock = threading.Lock()

    def sign_up(self, email: str, password: str) -> str:
        """Create an account (confirmed at once with `auto_confirm`); returns its user id.

        Conflict if the email has an account: Cognito's SignUp cannot hide that.
        """
        try:
            response = self._idp.sign_up(
                ClientId=self._client_id,
                Username=email,
                Password=password,
                UserAttributes=[{"Name": "email", "Value": email}],
            )
            if self._auto_confirm:
                self._idp.admin_confirm_sign_up(UserPoolId=self._pool_id, Username=email)
        except ClientError as exc:
            raise _translate(exc, _SIGNUP_ERRORS) from None
        user_id: str = response["UserSub"]
        return user_id

    def confirm(self, email: str, code: str) -> None:
        """Confirm an account with its emailed code.

        One InvalidRequest for a wrong or expired code, an unknown email and an
        account that is already confirmed, so the answer tells no one which.
        """
        try:
            self._idp.confirm_sign_up(ClientId=self._client_id, Username=email, ConfirmationCode=code)
        except ClientError as exc:
            raise _translate(exc, _CONFIRM_ERRORS) from None

    def resend_code(self, email: str) -> None:
        """Email a new confirmation code; answers alike whether or not the account exists.

        Only throttling (RateLimited) and a failed delivery (ServiceUnavailable)
        are errors. With `auto_confirm` (local mode) every account is confirmed
        when it signs up, so there is never a code to resend and Cognito is not
        asked (moto has no ResendConfirmationCode).
        """
        if self._auto_confirm:
            return
        try:
            self._idp.resend_confirmation_code(ClientId=self._client_id, Username=email)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _RESEND_AS_IF_SENT:
                logger.info("resend confirmation code: answered as sent (Cognito said %s)", code)
                return
            raise _translate(exc, _RESEND_ERRORS) from None

    def log_in(self, email: str, password: str) -> Tokens:
        """Cognito's tokens for a right email and password; the same 401 for an unknown email."""
        try:
            response = self._idp.initiate_auth(
                ClientId=self._client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": email, "PASSWORD": password},
            )
        except ClientError as exc:
            raise _translate(exc, _LOGIN_ERRORS) from None
        result = response.get("AuthenticationResult")
        if not result:
            raise Forbidden("This account needs another sign-in step that Vidline does not support.")
        return Tokens(
            id_token=result["IdToken"],
            access_token=result["AccessToken"],
            refresh_token=result.get("RefreshToken"),
            expires_in=int(result.get("ExpiresIn", 3600)),
        )

    def _jwks_client(self) -> jwt.PyJWKClient:
        with self._jwks_lock:
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=3600)
            return self._jwks

    def verify(self, id_token: str) -> Principal:
        """Check signature, issuer, audience, expiry and token use."""
        try:
            key = self._jwks_client().get_signing_key_from_jwt(id_token)
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=["RS256"],
                audience=self._client_id,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("Your session has expired: sign in again.") from None
        except jwt.PyJWKClientConnectionError as exc:
            raise ServiceUnavailable(f"Cannot check sign-ins right now: {exc}") from exc
        except (jwt.PyJWTError, ValueError):
            raise NotAuthenticated("The token is not valid: sign in again.") from None
        if claims.get("token_use") != "id" or not claims.get("email"):
            raise NotAuthenticated("Send the IdToken from /auth/login, not another token.")
        return Principal(user_id=str(claims["sub"]), email=str(claims["email"]))

    def check(self) -> None:
        self._idp.describe_user_pool(UserPoolId=self._pool_id)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of claims API Gateway's Cognito authorizer has verified."""
    user_id, email = claims.get("sub"), claims.get("email")
    if not user_id or not email or claims.get("token_use", "id") != "id":
        raise NotAuthenticated("Send the IdToken from /auth/login.")
    return Principal(user_id=str(user_id), email=str(email))
