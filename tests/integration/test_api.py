"""The REST API on moto, through chalice.test.Client."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import jwt
import pytest
from botocore.stub import Stubber
from chalice.test import Client
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.adapters.cdn import SignedCdnUrls, ssm_secret
from chalicelib.adapters.cognito import CognitoIdentity
from chalicelib.bootstrap import Container
from chalicelib.domain import Outputs, Rendition, Rung, Video, VideoStatus
from chalicelib.settings import Settings
from devstack.client import ROOT

PASSWORD = "Corr3ct-Horse!"


class Api:
    """A small caller of the API that speaks JSON."""

    def __init__(self, client: Client):
        self.client = client

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = getattr(self.client.http, method.lower())(path, headers=all_headers, body=payload)
        data = json.loads(response.body) if response.body else None
        return response.status_code, data

    def sign_up_and_log_in(self, email: str | None = None) -> str:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        status, body = self.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})
        assert status == 201, body
        status, body = self.call("POST", "/auth/login", {"email": email, "password": PASSWORD})
        assert status == 200, body
        token: str = body["id_token"]
        return token

    def create_video(self, token: str, **overrides: Any) -> tuple[int, Any]:
        body = {
            "title": "Holiday",
            "filename": "holiday.mp4",
            "content_type": "video/mp4",
            "size_bytes": 1000,
        }
        return self.call("POST", "/videos", {**body, **overrides}, token=token)


@pytest.fixture(scope="module")
def api(api_module: ModuleType) -> Any:
    with Client(api_module.app, stage_name="local") as client:
        yield Api(client)


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    return api.sign_up_and_log_in()


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


def test_sign_up_log_in_and_create_a_video(api: Api, settings: Settings) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    status, body = api.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})
    assert status == 201
    assert body["user"]["email"] == email and body["user"]["id"]
    status, tokens = api.call("POST", "/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200 and tokens["expires_in"] > 0

    status, created = api.create_video(tokens["id_token"], title="  My trip  ")
    assert status == 201, created
    video, upload = created["video"], created["upload"]
    assert video["status"] == "awaiting_upload" and video["progress"] == 0
    assert video["title"] == "My trip" and video["error"] is None and video["outputs"] is None
    assert upload["max_bytes"] == 1000
    assert upload["url"].startswith(settings.aws_endpoint_url or "https://")


def test_presigned_post_binds_key_size_type_and_expiry(api: Api, token: str, settings: Settings) -> None:
    before = datetime.now(UTC)
    _, created = api.create_video(token, size_bytes=12345, content_type="video/webm")
    fields = created["upload"]["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    owner = jwt.decode(token, options={"verify_signature": False})["sub"]
    key = f"uploads/{owner}/{created['video']['id']}/source"
    assert fields["key"] == key and {"key": key} in conditions
    assert ["content-length-range", 1, 12345] in conditions
    assert {"Content-Type": "video/webm"} in conditions and fields["Content-Type"] == "video/webm"
    assert {"bucket": settings.uploads_bucket} in conditions
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"  # SigV4
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert expiration <= before + timedelta(minutes=15, seconds=5)


def test_list_is_newest_first_and_paginates(api: Api) -> None:
    token = api.sign_up_and_log_in()
    ids = []
    for n in range(5):
        _, created = api.create_video(token, title=f"clip {n}")
        ids.append(created["video"]["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/videos?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = api.call("GET", path, token=token)
        assert status == 200, page
        seen += [v["id"] for v in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


def test_get_and_delete_a_video(api: Api, token: str, aws: Any, settings: Settings) -> None:
    _, created = api.create_video(token)
    video_id = created["video"]["id"]
    key = created["upload"]["fields"]["key"]
    aws.s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=b"x")
    media_key = key.replace("uploads/", "media/").replace("/source", "/720p.mp4")
    aws.s3.put_object(Bucket=settings.media_bucket, Key=media_key, Body=b"x")

    status, video = api.call("GET", f"/videos/{video_id}", token=token)
    assert status == 200 and video["id"] == video_id

    status, body = api.call("DELETE", f"/videos/{video_id}", token=token)
    assert status == 204 and body is None
    status, body = api.call("GET", f"/videos/{video_id}", token=token)
    assert_error(status, body, 404, "not_found")
    for bucket, prefix in ((settings.uploads_bucket, key), (settings.media_bucket, media_key)):
        assert aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0


def test_another_users_video_is_not_found(api: Api, token: str) -> None:
    _, created = api.create_video(token)
    video_id = created["video"]["id"]
    stranger = api.sign_up_and_log_in()
    for method in ("GET", "DELETE"):
        status, body = api.call(method, f"/videos/{video_id}", token=stranger)
        assert_error(status, body, 404, "not_found")
    status, page = api.call("GET", "/videos", token=stranger)
    assert status == 200 and page["items"] == []
    status, _ = api.call("GET", f"/videos/{video_id}", token=token)
    assert status == 200


# presentation: playable while processing, then ready

RUNGS = (Rung("1080p", 1920, 1080, 5_328_000), Rung("720p", 1280, 720, 3_328_000))


def stored_video(api_module: ModuleType, token: str, video_id: str) -> Video:
    container = api_module.container
    video: Video | None = container.videos.get(container.identity.verify(token).user_id, video_id)
    assert video is not None
    return video


def made_playable(api_module: ModuleType, video: Video, **outputs: Any) -> Video:
    """What the worker records once the first segments of every rung are stored."""
    master = f"{video.hls_prefix('run1')}master.m3u8"
    playable = replace(
        Outputs(renditions=(), thumbnail_key=None, hls_master_key=master, rungs=RUNGS), **outputs
    )
    updated: Video = api_module.container.videos.update(
        video, status=VideoStatus.PROCESSING, progress=30, playable=True, outputs=playable
    )
    return updated


def cdn_policy(url: str) -> dict[str, Any]:
    """The custom policy a CloudFront signed URL carries, decoded."""
    query = parse_qs(urlsplit(url).query)
    assert set(query) == {"Policy", "Signature", "Key-Pair-Id"}
    encoded = query["Policy"][0].translate(str.maketrans("-_~", "+=/"))
    policy: dict[str, Any] = json.loads(base64.b64decode(encoded))
    return policy


def test_a_playable_video_still_processing_shows_its_signed_stream(
    api: Api, token: str, api_module: ModuleType, settings: Settings
) -> None:
    video_id = api.create_video(token)[1]["video"]["id"]
    video = made_playable(api_module, stored_video(api_module, token, video_id))
    prefix = video.hls_prefix("run1")

    status, shown = api.call("GET", f"/videos/{video_id}", token=token)

    assert status == 200, shown
    assert (shown["status"], shown["playable"]) == ("processing", True)
    outputs = shown["outputs"]
    assert outputs["renditions"] == [] and outputs["thumbnail_url"] is None
    assert outputs["rungs"] == [
        {"name": "1080p", "width": 1920, "height": 1080, "bandwidth": 5_328_000},
        {"name": "720p", "width": 1280, "height": 720, "bandwidth": 3_328_000},
    ]
    # One signature for the whole run's hls/ prefix, so playlists' relative URIs work.
    base = settings.media_base_url.rstrip("/")
    assert outputs["hls_url"].startswith(f"{base}/{quote(prefix)}master.m3u8?")
    (statement,) = cdn_policy(outputs["hls_url"])["Statement"]
    assert statement["Resource"] == f"{base}/{quote(prefix)}*"

    status, page = api.call("GET", "/videos", token=token)
    listed = next(item for item in page["items"] if item["id"] == video_id)
    assert listed["playable"] is True and listed["outputs"]["rungs"] == outputs["rungs"]

    # Nobody else sees that it exists, playable or not.
    stranger = api.sign_up_and_log_in()
    status, body = api.call("GET", f"/videos/{video_id}", token=stranger)
    assert_error(status, body, 404, "not_found")


def test_a_ready_video_shows_its_stream_mp4_and_thumbnail(
    api: Api, token: str, api_module: ModuleType
) -> None:
    video_id = api.create_video(token)[1]["video"]["id"]
    video = stored_video(api_module, token, video_id)
    run = video.outputs_prefix("run1")
    mp4 = Rendition("720p", 1280, 720, f"{run}720p.mp4")
    video = made_playable(api_module, video, renditions=(mp4,), thumbnail_key=f"{run}thumbnail.jpg")
    api_module.container.videos.update(video, status=VideoStatus.READY, progress=100)

    status, shown = api.call("GET", f"/videos/{video_id}", token=token)

    assert status == 200, shown
    assert (shown["status"], shown["playable"]) == ("ready", True)
    outputs = shown["outputs"]
    assert [(r["name"], r["width"], r["height"]) for r in outputs["renditions"]] == [("720p", 1280, 720)]
    assert "/720p.mp4?" in outputs["renditions"][0]["url"] and "Signature=" in outputs["renditions"][0]["url"]
    assert "/thumbnail.jpg?" in outputs["thumbnail_url"] and "Signature=" in outputs["thumbnail_url"]
    assert "/hls/master.m3u8?" in outputs["hls_url"] and [r["name"] for r in outputs["rungs"]] == [
        "1080p",
        "720p",
    ]


def test_a_processing_video_not_yet_playable_shows_no_outputs(
    api: Api, token: str, api_module: ModuleType
) -> None:
    video_id = api.create_video(token)[1]["video"]["id"]
    video = stored_video(api_module, token, video_id)
    api_module.container.videos.update(video, status=VideoStatus.PROCESSING, progress=10)

    status, shown = api.call("GET", f"/videos/{video_id}", token=token)

    assert status == 200
    assert (shown["status"], shown["playable"], shown["outputs"]) == ("processing", False, None)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "bad\u0000title"}, "title"),
        ({"content_type": "image/png"}, "content_type"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": 11 * 1024**3}, "size_bytes"),  # over the 10 GiB default
        ({"size_bytes": "big"}, "size_bytes"),
        ({"filename": ""}, "filename"),
        ({"extra": 1}, "extra"),
        ({"title": "\ud800"}, "title"),  # a lone surrogate DynamoDB would refuse
        ({"filename": "a\udfffb.mp4"}, "filename"),
    ],
)
def test_invalid_video_bodies_get_400_naming_the_field(
    api: Api, token: str, overrides: dict[str, Any], field: str
) -> None:
    status, body = api.create_video(token, **overrides)
    assert_error(status, body, 400, "invalid_request")
    assert field in [d["field"] for d in body["error"]["details"]]


@pytest.mark.parametrize(
    "size",
    ["true", "false", "1.5", "1.0", '"1"', '"1000"', "1e400", "-1", "0", "null", "[1]", "10" + "0" * 30],
)
def test_size_bytes_must_be_a_json_integer_in_range(api: Api, token: str, size: str) -> None:
    """No lax coercion: `true` is not 1 byte, `"1000"` is not a number."""
    fields = '"title": "x", "filename": "x.mp4", "content_type": "video/mp4"'
    raw = f'{{{fields}, "size_bytes": {size}}}'
    status, body = api.call("POST", "/videos", raw=raw, token=token)
    assert_error(status, body, 400, "invalid_request")
    assert [d["field"] for d in body["error"]["details"]] == ["size_bytes"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/videos", {"title": 5}, "title"),
        ("/videos", {"filename": True}, "filename"),
        ("/videos", {"content_type": ["video/mp4"]}, "content_type"),
        ("/auth/signup", {"email": 42, "password": PASSWORD}, "email"),
        ("/auth/signup", {"email": "a@example.com", "password": 12345678}, "password"),
        ("/auth/login", {"email": "a@example.com", "password": False}, "password"),
        ("/auth/confirm", {"email": "a@example.com", "code": 123456}, "code"),
    ],
)
def test_text_fields_take_only_json_strings(
    api: Api, token: str, path: str, body: dict[str, Any], field: str
) -> None:
    if path == "/videos":
        status, answer = api.create_video(token, **body)
    else:
        status, answer = api.call("POST", path, body)
    assert_error(status, answer, 400, "invalid_request")
    assert field in [d["field"] for d in answer["error"]["details"]]


def test_a_plain_number_in_the_query_string_is_a_limit(api: Api, token: str) -> None:
    assert api.call("GET", "/videos?limit=20", token=token)[0] == 200
    assert api.call("GET", "/videos?limit=001", token=token)[0] == 200


@pytest.mark.parametrize(
    "raw, headers",
    [
        ("{not json", {}),
        ("[1, 2]", {}),
        ("", {}),
        ('"a string"', {}),
        ('{"title": "x", "size_bytes": 1' + "0" * 5000 + "}", {}),  # past int's digit limit
        ("[" * 50_000 + "]" * 50_000, {}),  # deeper than the parser recurses
        (b"\xff\xfe{}".decode("latin-1"), {}),
    ],
)
def test_malformed_bodies_get_400(api: Api, token: str, raw: str, headers: dict[str, str]) -> None:
    status, body = api.call("POST", "/videos", raw=raw, token=token, headers=headers)
    assert_error(status, body, 400, "invalid_request")


def test_wrong_content_type_gets_415_in_our_error_shape(api: Api, token: str) -> None:
    status, body = api.call(
        "POST", "/videos", raw="title=x", token=token, headers={"Content-Type": "text/plain"}
    )
    assert_error(status, body, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "limit=-1",
        "limit=true",
        "limit=1.5",
        "limit=20.0",
        "limit=%2B5",  # +5
        "limit=%205",  # " 5"
        "limit=1_0",
        "limit=1e1",
        "limit=" + "9" * 30,
        "limit=",
        "cursor=garbage!!",
        "cursor=YWJj",
    ],
)
def test_bad_list_queries_get_400(api: Api, token: str, query: str) -> None:
    status, body = api.call("GET", f"/videos?{query}", token=token)
    assert_error(status, body, 400, "invalid_request")


def forged_token(claims: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dummy"})


def test_missing_garbage_forged_and_expired_tokens_get_401(api: Api, token: str, settings: Settings) -> None:
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = {**claims, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": f"Bearer {forged_token(claims)}"},
        {"Authorization": f"Bearer {forged_token(expired)}"},
        {"Authorization": f"Bearer {forged_token({**claims, 'alg': 'none'})}"},
    ]
    for headers in cases:
        for method, path in (("GET", "/videos"), ("POST", "/videos"), ("GET", "/videos/x")):
            status, body = api.call(method, path, body={}, headers=headers)
            assert_error(status, body, 401, "unauthorized")


def test_the_access_token_is_not_accepted_as_an_id_token(api: Api) -> None:
    email = f"tok-{uuid.uuid4().hex[:8]}@example.com"
    api.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})
    _, tokens = api.call("POST", "/auth/login", {"email": email, "password": PASSWORD})
    status, body = api.call("GET", "/videos", token=tokens["access_token"])
    assert_error(status, body, 401, "unauthorized")


def test_account_errors(api: Api) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    assert api.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})[0] == 201
    status, body = api.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})
    assert_error(status, body, 409, "conflict")
    status, body = api.call("POST", "/auth/login", {"email": email, "password": "wrong-password"})
    assert_error(status, body, 401, "unauthorized")
    status, body = api.call("POST", "/auth/login", {"email": "nobody@example.com", "password": PASSWORD})
    assert_error(status, body, 401, "unauthorized")
    status, body = api.call("POST", "/auth/signup", {"email": "not-an-email", "password": PASSWORD})
    assert_error(status, body, 400, "invalid_request")
    status, body = api.call("POST", "/auth/signup", {"email": f"w{email}", "password": "short"})
    assert_error(status, body, 400, "invalid_request")
    status, body = api.call("POST", "/auth/signup", {"email": f"x{email}", "password": "longbutweak"})
    assert_error(status, body, 400, "invalid_request")


def test_an_unconfirmed_account_is_asked_for_its_code(api: Api, aws: Any, settings: Settings) -> None:
    email = f"unconfirmed-{uuid.uuid4().hex[:8]}@example.com"
    # Signed up the way Cognito does on AWS: not confirmed until the emailed code comes back.
    aws.cognito_idp.sign_up(ClientId=settings.user_pool_client_id, Username=email, Password=PASSWORD)
    status, body = api.call("POST", "/auth/login", {"email": email, "password": PASSWORD})
    assert_error(status, body, 403, "not_confirmed")

    assert api.call("POST", "/auth/confirm", {"email": email, "code": "123456"})[0] == 200
    assert api.call("POST", "/auth/login", {"email": email, "password": PASSWORD})[0] == 200


def test_resend_in_local_mode_answers_sent_for_any_account(api: Api, aws: Any, settings: Settings) -> None:
    """Local accounts are confirmed at sign-up: nothing to resend, and no 500 from moto."""
    confirmed = f"confirmed-{uuid.uuid4().hex[:8]}@example.com"
    assert api.call("POST", "/auth/signup", {"email": confirmed, "password": PASSWORD})[0] == 201
    unconfirmed = f"unconfirmed-{uuid.uuid4().hex[:8]}@example.com"
    aws.cognito_idp.sign_up(ClientId=settings.user_pool_client_id, Username=unconfirmed, Password=PASSWORD)
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    for email in (confirmed, unconfirmed, unknown):
        assert api.call("POST", "/auth/resend", {"email": email}) == (200, {"sent": True}), email


@pytest.fixture
def aws_cognito(
    api_module: ModuleType, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> Iterator[Stubber]:
    """The API's accounts on a stubbed Cognito that answers as AWS does (not auto-confirming)."""
    client = boto3.client(
        "cognito-idp", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    identity = CognitoIdentity(
        client,
        user_pool_id="us-east-1_p",
        client_id="app",
        region="us-east-1",
        auto_confirm=False,
        endpoint_url=None,
    )
    monkeypatch.setattr(api_module, "container", Container(settings, identity=identity))
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def test_resend_on_aws_tells_nothing_about_accounts_and_limits_abuse(api: Api, aws_cognito: Stubber) -> None:
    aws_cognito.add_response("resend_confirmation_code", {"CodeDeliveryDetails": {}})
    sent = api.call("POST", "/auth/resend", {"email": "waiting@example.com"})
    assert sent == (200, {"sent": True})
    for code, message in [
        ("UserNotFoundException", "Username/client id combination not found."),
        ("InvalidParameterException", "User is already confirmed."),
    ]:
        aws_cognito.add_client_error("resend_confirmation_code", code, message, http_status_code=400)
        assert api.call("POST", "/auth/resend", {"email": "who@example.com"}) == sent, code

    aws_cognito.add_client_error("resend_confirmation_code", "LimitExceededException", http_status_code=400)
    status, body = api.call("POST", "/auth/resend", {"email": "waiting@example.com"})
    assert_error(status, body, 429, "rate_limited")


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-email"}, {"email": 42}, {"email": True}, {}, {"email": "a@b.co", "extra": 1}],
)
def test_resend_refuses_a_malformed_request_before_asking_cognito(
    api: Api, aws_cognito: Stubber, body: dict[str, Any]
) -> None:
    status, answer = api.call("POST", "/auth/resend", body)
    assert_error(status, answer, 400, "invalid_request")
    assert {"email", "extra"} & {d["field"] for d in answer["error"]["details"]}


def test_confirm_on_aws_answers_alike_for_unknown_confirmed_and_wrong(api: Api, aws_cognito: Stubber) -> None:
    answers = []
    for code in ("UserNotFoundException", "NotAuthorizedException", "CodeMismatchException"):
        aws_cognito.add_client_error("confirm_sign_up", code, http_status_code=400)
        answers.append(api.call("POST", "/auth/confirm", {"email": "who@example.com", "code": "123456"}))
    assert answers[0] == answers[1] == answers[2]
    assert_error(*answers[0], 400, "invalid_request")


def test_the_local_app_client_prevents_user_existence_errors_like_the_deployed_one(
    aws: Any, settings: Settings
) -> None:
    client = aws.cognito_idp.describe_user_pool_client(
        UserPoolId=settings.user_pool_id, ClientId=settings.user_pool_client_id
    )["UserPoolClient"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_sign_in_does_not_tell_an_unknown_email_from_a_wrong_password(api: Api) -> None:
    email = f"known-{uuid.uuid4().hex[:8]}@example.com"
    assert api.call("POST", "/auth/signup", {"email": email, "password": PASSWORD})[0] == 201
    wrong_password = api.call("POST", "/auth/login", {"email": email, "password": "Wr0ng-password!"})
    unknown = api.call("POST", "/auth/login", {"email": f"x{email}", "password": "Wr0ng-password!"})
    assert wrong_password == unknown
    assert_error(*unknown, 401, "unauthorized")


def test_confirming_an_unknown_email_answers_like_a_wrong_code(api: Api) -> None:
    status, body = api.call("POST", "/auth/confirm", {"email": "nobody@example.com", "code": "123456"})
    assert_error(status, body, 400, "invalid_request")
    assert "already confirmed" in body["error"]["message"]


def test_emails_are_not_case_sensitive(api: Api) -> None:
    name = uuid.uuid4().hex[:8]
    status, body = api.call(
        "POST", "/auth/signup", {"email": f"Mixed.{name}@Example.COM", "password": PASSWORD}
    )
    assert status == 201 and body["user"]["email"] == f"mixed.{name}@example.com"
    status, _ = api.call("POST", "/auth/login", {"email": f"mixed.{name}@example.com", "password": PASSWORD})
    assert status == 200
    status, body = api.call(
        "POST", "/auth/signup", {"email": f"MIXED.{name}@example.com", "password": PASSWORD}
    )
    assert_error(status, body, 409, "conflict")


def test_unknown_query_parameters_are_ignored(api: Api, token: str) -> None:
    status, body = api.call("GET", "/videos?_=1700000000&limit=5", token=token)
    assert status == 200, body


def test_health_reports_every_check(api: Api) -> None:
    status, body = api.call("GET", "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {
        "database",
        "uploads_bucket",
        "media_bucket",
        "jobs_queue",
        "dead_letter_queue",
        "cache",
        "identity",
        "email",
        "cdn_signing_key",
    }


def test_without_its_signing_key_the_api_says_so_instead_of_failing(
    api: Api,
    token: str,
    api_module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    aws: Any,
    settings: Settings,
) -> None:
    lost = SignedCdnUrls("http://cdn.test", "K", ssm_secret(aws.ssm, "/vidline/missing-key"), 3600)
    container = Container(settings, media_urls=lost)
    monkeypatch.setattr(api_module, "container", container)
    status, body = api.call("GET", "/health")
    assert status == 503 and body["checks"]["cdn_signing_key"] == "failing"

    # A ready video needs signed links: its listing is a 503 with a reason, not a 500.
    video_id = api.create_video(token)[1]["video"]["id"]
    record = container.videos.get(container.identity.verify(token).user_id, video_id)
    assert record is not None
    outputs = Outputs(
        renditions=(Rendition("720p", 1280, 720, "media/x/720p.mp4"),), thumbnail_key="media/x/t.jpg"
    )
    container.videos.update(record, status=VideoStatus.READY, outputs=outputs)
    status, body = api.call("GET", "/videos", token=token)
    assert_error(status, body, 503, "service_unavailable")


def test_health_names_the_failing_check(
    api: Api, api_module: ModuleType, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    # As if the media bucket were gone: the API is wired to one that does not exist.
    gone = settings.model_copy(update={"media_bucket": "vidline-missing"})
    monkeypatch.setattr(api_module, "container", Container(gone))
    status, body = api.call("GET", "/health")
    assert status == 503
    assert body["status"] == "failing"
    assert body["checks"]["media_bucket"] == "failing"  # the details stay in the log
    assert body["checks"]["database"] == "ok"


def test_openapi_document_describes_the_routes(api: Api, settings: Settings) -> None:
    status, doc = api.call("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert {"post", "get"} <= set(doc["paths"]["/videos"])
    assert {"get", "delete"} <= set(doc["paths"]["/videos/{video_id}"])
    for path in ("/auth/signup", "/auth/confirm", "/auth/resend", "/auth/login", "/health", "/openapi.json"):
        assert path in doc["paths"]
    create = doc["components"]["schemas"]["CreateVideoRequest"]
    assert create["properties"]["content_type"]["enum"] == list(settings.allowed_content_types)
    assert create["properties"]["size_bytes"]["maximum"] == settings.max_upload_bytes
    schemas = doc["components"]["schemas"]
    video = schemas["VideoOut"]
    assert set(video["properties"]) >= {"id", "title", "status", "progress", "error", "source", "outputs"}
    # Adaptive streaming, with the names of ../shared/API.md.
    assert video["properties"]["playable"]["type"] == "boolean" and "playable" in video["required"]
    outputs = schemas["OutputsOut"]["properties"]
    assert set(outputs) == {"renditions", "hls_url", "rungs", "thumbnail_url"}
    for nullable in ("hls_url", "thumbnail_url"):
        assert {"type": "null"} in outputs[nullable]["anyOf"]
    assert outputs["rungs"]["items"] == {"$ref": "#/components/schemas/RungOut"}
    rung = schemas["RungOut"]
    assert set(rung["properties"]) == set(rung["required"]) == {"name", "width", "height", "bandwidth"}
    assert rung["properties"]["name"]["examples"] == [f"{side}p" for side in settings.ladder]


def test_deployed_routes_use_the_cognito_authorizer_except_the_public_ones() -> None:
    script = (
        "import json, app\n"
        "print(json.dumps({f'{m} {p}': bool(e.authorizer) for p, ms in app.app.routes.items()"
        " for m, e in ms.items()}))"
    )
    env = {
        **os.environ,
        "VIDLINE_AUTH_MODE": "apigateway",
        "VIDLINE_USER_POOL_ARN": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_x",
    }
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    protected = json.loads(output.splitlines()[-1])
    public = {
        "POST /auth/signup",
        "POST /auth/confirm",
        "POST /auth/resend",
        "POST /auth/login",
        "GET /health",
        "GET /openapi.json",
    }
    assert {route for route, has_authorizer in protected.items() if not has_authorizer} == public
    assert {"GET /videos", "POST /videos", "GET /videos/{video_id}", "DELETE /videos/{video_id}"} <= set(
        protected
    )
