"""Accounts and tokens on a Cognito user pool."""

from __future__ import annotations

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

# Cognito error codes that are the caller's mistake, and how we answer them.
_SIGNUP_ERRORS = {
    "UsernameExistsException": (Conflict, "An account with this email already exists."),
    "InvalidPasswordException": (
        InvalidRequest,
        "The password is too weak: use at least 8 characters with upper and lower case "
        "letters, a number and a symbol.",
    ),
    "InvalidParameterException": (InvalidRequest, "The email or password is not valid."),
}
_CONFIRM_ERRORS = {
    "CodeMismatchException": (InvalidRequest, "That confirmation code is not right."),
    "ExpiredCodeException": (InvalidRequest, "That confirmation code has expired."),
    # Same answer as a wrong code, so confirm does not tell who has an account.
    "UserNotFoundException": (InvalidRequest, "That confirmation code is not right."),
    "NotAuthorizedException": (Conflict, "This account is already confirmed."),
}
_RESEND_ERRORS = {
    "InvalidParameterException": (Conflict, "This account is already confirmed."),
}
_LOGIN_ERRORS = {
    "NotAuthorizedException": (NotAuthenticated, "Wrong email or password."),
    "UserNotFoundException": (NotAuthenticated, "Wrong email or password."),
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
        try:
            self._idp.confirm_sign_up(ClientId=self._client_id, Username=email, ConfirmationCode=code)
        except ClientError as exc:
            raise _translate(exc, _CONFIRM_ERRORS) from None

    def resend_code(self, email: str) -> None:
        try:
            self._idp.resend_confirmation_code(ClientId=self._client_id, Username=email)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "UserNotFoundException":
                return  # as if sent: whether an account exists stays unknown
            raise _translate(exc, _RESEND_ERRORS) from None

    def log_in(self, email: str, password: str) -> Tokens:
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
