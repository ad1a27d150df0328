"""Vidline's REST API (Chalice on API Gateway + Lambda).

Routes are thin: parse the request, call one service function, shape the
response. Every error leaves as `{"error": {"code", "message", "details"}}`
with the status that `ERROR_STATUS` gives its domain error.
"""

import functools
import json
from collections.abc import Callable
from typing import Any

from chalice.app import Chalice, CognitoUserPoolAuthorizer, CORSConfig, Response
from pydantic import BaseModel

from chalicelib import telemetry
from chalicelib.adapters.cognito import principal_from_claims
from chalicelib.api import schemas
from chalicelib.api.openapi import Operation, build_document
from chalicelib.api.parse import parse
from chalicelib.api.present import Presenter
from chalicelib.bootstrap import Container
from chalicelib.domain import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidRequest,
    NewVideo,
    NotAuthenticated,
    NotFound,
    Principal,
    RateLimited,
    ServiceUnavailable,
    is_video_id,
)
from chalicelib.settings import get_settings

settings = get_settings()
# Logs go through chalicelib.telemetry's handler (JSON on AWS, text locally).
app = Chalice(app_name="vidline-api", configure_logs=False)
telemetry.configure(settings, "vidline-api", app.log)
app.api.cors = CORSConfig(
    allow_origin=settings.cors_origin,
    allow_headers=["Authorization", "Content-Type"],
    max_age=600,
)
container = Container(settings)

ERROR_STATUS: dict[type[DomainError], int] = {
    InvalidRequest: 400,
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    ServiceUnavailable: 503,
}


def error_status(error: DomainError) -> int:
    """The HTTP status of a domain error: its own class's, or its nearest base class's."""
    return next(ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in ERROR_STATUS)


# Chalice's own error codes (bad JSON, wrong content type, unknown method...).
CHALICE_ERROR_CODES = {
    "BadRequestError": "invalid_request",
    "UnsupportedMediaType": "unsupported_media_type",
    "MethodNotAllowedError": "method_not_allowed",
    "NotFoundError": "not_found",
    "UnauthorizedError": "unauthorized",
    "ForbiddenError": "forbidden",
    "InternalServerError": "internal_error",
}

OPERATIONS: list[Operation] = []

_authorizer = (
    CognitoUserPoolAuthorizer("VidlineUsers", provider_arns=[settings.user_pool_arn])
    if settings.auth_mode == "apigateway"
    else None
)


def error_response(code: str, message: str, status: int, details: list[Any] | None = None) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})


@app.middleware("http")
def observed(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Correlate the request's log lines with the video in its path (create sets
    the new id itself), and write its metrics when it ends."""
    video_id = (event.uri_params or {}).get("video_id") or ""
    return telemetry.handle(event, get_response, video_id=video_id if is_video_id(video_id) else None)


@app.middleware("http")
def uniform_errors(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Give Chalice's own error responses our error shape."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = CHALICE_ERROR_CODES.get(body["Code"], "error")
        message = body["Message"]
        if code == "internal_error":
            message = "Something went wrong on our side; it has been logged."
        fresh = error_response(code, message, response.status_code)
        fresh.headers = {**response.headers, **fresh.headers}
        return fresh
    return response


def principal() -> Principal:
    """Who is calling: from API Gateway's verified claims, or verified here."""
    request = app.current_request
    assert request is not None
    if settings.auth_mode == "apigateway":
        claims = (request.context.get("authorizer") or {}).get("claims") or {}
        return principal_from_claims(claims)
    return container.accounts.authenticate(request.headers.get("authorization"))


def presenter() -> Presenter:
    """Shapes domain objects for responses (built per call: tests swap the container)."""
    return Presenter(container.media_urls, settings)


def json_body() -> Any:
    request = app.current_request
    assert request is not None
    raw = request.raw_body
    if not raw:
        raise InvalidRequest("The request needs a JSON body.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, huge numbers, deep nesting
        raise InvalidRequest("The request body is not valid JSON.") from None


def endpoint(
    path: str,
    method: str,
    *,
    summary: str,
    response: type[BaseModel] | None,
    status: int = 200,
    request: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: bool = True,
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a route, its error mapping and its OpenAPI operation."""
    OPERATIONS.append(Operation(method, path, summary, status, response, request, query, auth, errors))

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def handle(**path_params: str) -> Response:
            try:
                result = view(**path_params)
            except DomainError as exc:
                return error_response(exc.code, exc.message, error_status(exc), exc.details)
            if isinstance(result, Response):
                return result
            body = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            return Response(body=body, status_code=status)

        kwargs: dict[str, Any] = {"methods": [method], "content_types": ["application/json"]}
        if auth and _authorizer is not None:
            kwargs["authorizer"] = _authorizer
        app.route(path, **kwargs)(handle)
        return view

    return register


# --- accounts ---


@endpoint(
    "/auth/signup",
    "POST",
    summary="Create an account",
    request=schemas.SignupRequest,
    response=schemas.SignupResponse,
    status=201,
    auth=False,
    errors=(409,),
)
def sign_up() -> schemas.SignupResponse:
    request = parse(schemas.SignupRequest, json_body(), settings)
    user_id, confirmed = container.accounts.sign_up(request.email, request.password)
    return schemas.SignupResponse(user=schemas.UserOut(id=user_id, email=request.email), confirmed=confirmed)


@endpoint(
    "/auth/confirm",
    "POST",
    summary="Confirm an account with the emailed code",
    request=schemas.ConfirmRequest,
    response=None,
    auth=False,
    errors=(),
)
def confirm() -> dict[str, Any]:
    request = parse(schemas.ConfirmRequest, json_body(), settings)
    container.accounts.confirm(request.email, request.code)
    return {"confirmed": True}


@endpoint(
    "/auth/resend",
    "POST",
    summary="Email a new confirmation code",
    request=schemas.ResendCodeRequest,
    response=None,
    auth=False,
    errors=(429, 503),
)
def resend_code() -> dict[str, Any]:
    container.accounts.resend_code(parse(schemas.ResendCodeRequest, json_body(), settings).email)
    return {"sent": True}


@endpoint(
    "/auth/login",
    "POST",
    summary="Sign in; returns Cognito tokens",
    request=schemas.LoginRequest,
    response=schemas.TokensOut,
    auth=False,
    errors=(401, 403),
)
def log_in() -> schemas.TokensOut:
    request = parse(schemas.LoginRequest, json_body(), settings)
    tokens = container.accounts.log_in(request.email, request.password)
    return schemas.TokensOut(
        id_token=tokens.id_token,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


# --- videos ---


@endpoint(
    "/videos",
    "POST",
    summary="Create a video and get its presigned upload (429 quota_exceeded over a quota)",
    request=schemas.CreateVideoRequest,
    response=schemas.CreateVideoResponse,
    status=201,
    errors=(429,),
)
def create_video() -> schemas.CreateVideoResponse:
    owner = principal()
    request = parse(schemas.CreateVideoRequest, json_body(), settings)
    video, ticket = container.video_service.create(
        owner,
        NewVideo(
            title=request.title,
            filename=request.filename,
            content_type=request.content_type,
            size_bytes=request.size_bytes,
        ),
    )
    shape = presenter()
    return schemas.CreateVideoResponse(video=shape.video(video), upload=shape.upload(ticket))


@endpoint(
    "/videos",
    "GET",
    summary="Your videos, newest first",
    query=schemas.ListVideosQuery,
    response=schemas.VideoListOut,
)
def list_videos() -> schemas.VideoListOut:
    owner = principal()
    request = app.current_request
    assert request is not None
    query = parse(schemas.ListVideosQuery, dict(request.query_params or {}), settings)
    page = container.video_service.list(owner, query.limit, query.cursor)
    shape = presenter()
    return schemas.VideoListOut(
        items=[shape.video(v) for v in page.items],
        next_cursor=page.next_cursor,
    )


@endpoint("/videos/{video_id}", "GET", summary="One of your videos", response=schemas.VideoOut, errors=(404,))
def get_video(video_id: str) -> schemas.VideoOut:
    owner = principal()
    return presenter().video(container.video_service.get(owner, video_id))


@endpoint(
    "/videos/{video_id}",
    "DELETE",
    summary="Delete a video and its files",
    response=None,
    status=204,
    errors=(404,),
)
def delete_video(video_id: str) -> Response:
    container.video_service.delete(principal(), video_id)
    return Response(body="", status_code=204)


# --- usage ---


def stats_query() -> schemas.StatsQuery:
    request = app.current_request
    assert request is not None
    return parse(schemas.StatsQuery, dict(request.query_params or {}), settings)


@endpoint(
    "/stats",
    "GET",
    summary="Your usage per UTC day and your quotas (cached: today may lag by VIDLINE_STATS_CACHE_TTL_S)",
    query=schemas.StatsQuery,
    response=schemas.StatsOut,
)
def user_stats() -> schemas.StatsOut:
    owner = principal()
    query = stats_query()
    return presenter().stats(container.usage_service.user_stats(owner, query.first, query.last))


@endpoint(
    "/stats/site",
    "GET",
    summary="Site-wide usage per UTC day, for VIDLINE_SITE_STATS_READERS (cached briefly)",
    query=schemas.StatsQuery,
    response=schemas.StatsOut,
    errors=(403,),
)
def site_stats() -> schemas.StatsOut:
    reader = principal()
    query = stats_query()
    return presenter().stats(container.usage_service.site_stats(reader, query.first, query.last))


# --- multipart uploads (chalicelib.uploads) ---


@endpoint(
    "/videos/{video_id}/upload/parts",
    "POST",
    summary="Presigned PUT URLs for parts of a multipart upload",
    request=schemas.PartUrlsRequest,
    response=schemas.PartUrlsOut,
    errors=(404, 409),
)
def upload_part_urls(video_id: str) -> schemas.PartUrlsOut:
    owner = principal()
    request = parse(schemas.PartUrlsRequest, json_body(), settings)
    urls = container.multipart_uploads.part_urls(owner, video_id, request.part_numbers)
    return presenter().part_urls(urls)


@endpoint(
    "/videos/{video_id}/upload",
    "GET",
    summary="A multipart upload's plan and the parts already stored (to resume)",
    response=schemas.MultipartStatusOut,
    errors=(404, 409),
)
def upload_status(video_id: str) -> schemas.MultipartStatusOut:
    owner = principal()
    plan, parts = container.multipart_uploads.status(owner, video_id)
    return presenter().multipart_status(plan, parts)


@endpoint(
    "/videos/{video_id}/upload/complete",
    "POST",
    summary="Complete a multipart upload; processing starts",
    request=schemas.CompleteUploadRequest,
    response=schemas.VideoOut,
    errors=(404, 409),
)
def complete_upload(video_id: str) -> schemas.VideoOut:
    owner = principal()
    request = parse(schemas.CompleteUploadRequest, json_body(), settings)
    parts = [(part.part_number, part.etag) for part in request.parts]
    return presenter().video(container.multipart_uploads.complete(owner, video_id, parts))


# --- operations ---


@endpoint(
    "/health",
    "GET",
    summary="Checks every dependency in parallel (503 names the failing ones); deep=false: liveness only",
    query=schemas.HealthQuery,
    response=schemas.HealthOut,
    auth=False,
    errors=(400, 503),
)
def health() -> Response:
    request = app.current_request
    assert request is not None
    if not parse(schemas.HealthQuery, dict(request.query_params or {}), settings).deep:
        return Response(body=schemas.HealthOut(status="ok", checks={}).model_dump(mode="json"))
    report = container.health.run()
    # For the health alarm (infra/stack.yaml): whoever polls this makes it page.
    telemetry.count("HealthChecksFailing", len(report.failing))
    body = schemas.HealthOut(
        status="ok" if report.healthy else "failing",
        checks=report.checks,
        failing=report.failing,
        dead_letters=report.dead_letters,
        warnings=report.warnings,
    )
    return Response(body=body.model_dump(mode="json"), status_code=200 if report.healthy else 503)


@endpoint("/openapi.json", "GET", summary="This document", response=None, auth=False)
def openapi() -> dict[str, Any]:
    return build_document(OPERATIONS, settings)
