"""The enforcing S3 front (devstack.s3front) in front of moto: it lets through
what S3 accepts and refuses what S3 refuses, with S3's status and XML code.
Also the presigner that points the URLs and POSTs others use at it."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from chalicelib.adapters.s3 import S3BlobStore
from chalicelib.bootstrap import Container
from chalicelib.domain import UploadTicket
from chalicelib.settings import Settings
from devstack.aws import LOCAL_CREDENTIALS
from devstack.client import free_port
from devstack.s3front import S3Front

APP_ORIGIN = "http://app.test"
MIB = 1024 * 1024


def start_front(
    moto_endpoint: str, settings: Settings, shift: timedelta = timedelta(0), client_timeout_s: float = 60
) -> S3Front:
    front = S3Front(
        "127.0.0.1",
        free_port(),
        upstream_url=moto_endpoint,
        region=settings.region,
        credentials=LOCAL_CREDENTIALS,
        cors_origins=(APP_ORIGIN,),
        now=lambda: datetime.now(UTC) + shift,
        client_timeout_s=client_timeout_s,
    )
    front.start()
    return front


@pytest.fixture(scope="module")
def front(moto_endpoint: str, settings: Settings) -> Iterator[S3Front]:
    running = start_front(moto_endpoint, settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def front_an_hour_later(moto_endpoint: str, settings: Settings) -> Iterator[S3Front]:
    """The same front on a clock one hour ahead: what a client sees after waiting."""
    running = start_front(moto_endpoint, settings, timedelta(hours=1))
    yield running
    running.stop()


def s3_client(endpoint: str, settings: Settings, secret: str | None = None) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.region,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def moto_s3(moto_endpoint: str, settings: Settings) -> Any:
    """Straight to moto, past the front: what is really stored."""
    return s3_client(moto_endpoint, settings)


@pytest.fixture(scope="module")
def presigner(front: S3Front, settings: Settings) -> Any:
    """Signs URLs for the front, as the apps' presigner does in local mode."""
    return s3_client(front.url, settings)


@pytest.fixture(scope="module")
def uploads(front: S3Front, settings: Settings) -> S3BlobStore:
    store = Container(settings.model_copy(update={"s3_public_endpoint_url": front.url})).uploads
    assert isinstance(store, S3BlobStore)
    return store


def new_key() -> str:
    return f"test/{uuid.uuid4().hex}/source"


def stored(moto_s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        body: bytes = moto_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        assert error.response["Error"]["Code"] in {"NoSuchKey", "404"}
        return None
    return body


def s3_error(response: requests.Response) -> tuple[int, str, str]:
    root = ET.fromstring(response.content)
    return response.status_code, root.findtext("Code") or "", root.findtext("Message") or ""


def post(
    ticket: UploadTicket, data: bytes, headers: dict[str, str] | None = None, **changes: str
) -> requests.Response:
    fields = {**ticket.fields, **changes}
    files = {"file": ("clip.mp4", data, "video/mp4")}
    return requests.post(ticket.url, data=fields, files=files, headers=headers, timeout=60)


def form_body(
    fields: dict[str, str], data: bytes, boundary: str, after: dict[str, str] | None = None
) -> bytes:
    """A multipart/form-data body written by hand: the file last, or `after` behind it."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
        f"Content-Type: video/mp4\r\nContent-Length: 10\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (after or {}).items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def raw_post(url: str, body: bytes, boundary: str, *, content_length: int) -> tuple[int, bytes]:
    """POST `body` with a Content-Length of our choosing; the status and body of the answer."""
    target = urlsplit(url)
    with socket.create_connection((target.hostname, target.port), timeout=30) as sock:
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # the front may close once it has answered
            sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# --- the presigner ------------------------------------------------------------


def test_presigned_urls_point_at_the_public_endpoint_while_calls_go_to_moto(settings: Settings) -> None:
    public = "http://127.0.0.1:9"
    container = Container(settings.model_copy(update={"s3_public_endpoint_url": public}))

    ticket = container.uploads.presign_upload("u/v/source", "video/mp4", 10, 60)
    download = container.media.presign_download("some/key", if_match="abc", expires_s=60)

    assert ticket.url == f"{public}/{settings.uploads_bucket}"
    assert urlsplit(download.location).netloc == "127.0.0.1:9"
    container.uploads.check()  # still answered by moto: nothing listens on port 9


def test_without_a_public_endpoint_presigned_urls_point_where_the_calls_go(settings: Settings) -> None:
    container = Container(settings)

    ticket = container.uploads.presign_upload("u/v/source", "video/mp4", 10, 60)

    assert ticket.url == f"{settings.aws_endpoint_url}/{settings.uploads_bucket}"


# --- what S3 accepts ----------------------------------------------------------


def test_a_post_made_by_presign_upload_is_stored(
    uploads: S3BlobStore, moto_s3: Any, clip: Path, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", 10 * MIB, 60)

    response = post(ticket, clip.read_bytes(), {"Origin": APP_ORIGIN})

    assert response.status_code == 204, response.text
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert stored(moto_s3, settings.uploads_bucket, key) == clip.read_bytes()
    assert moto_s3.head_object(Bucket=settings.uploads_bucket, Key=key)["ContentType"] == "video/mp4"


def test_fields_after_the_file_are_ignored_as_s3_ignores_them(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    data = os.urandom(1000)
    body = form_body(ticket.fields, data, "b0undary", after={"Content-Type": "text/html", "key": "elsewhere"})

    status, answer = raw_post(ticket.url, body, "b0undary", content_length=len(body))

    assert status == 204, answer
    assert stored(moto_s3, settings.uploads_bucket, key) == data
    assert moto_s3.head_object(Bucket=settings.uploads_bucket, Key=key)["ContentType"] == "video/mp4"
    assert stored(moto_s3, settings.uploads_bucket, "elsewhere") is None


def test_a_presigned_part_put_is_stored_and_its_etag_exposed_to_the_web_app(
    presigner: Any, moto_s3: Any, settings: Settings
) -> None:
    bucket, key = settings.uploads_bucket, new_key()
    upload_id = moto_s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    etags = []
    for number, data in enumerate(parts, start=1):
        url = presigner.generate_presigned_url(
            "upload_part",
            Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
            ExpiresIn=60,
        )
        response = requests.put(url, data=data, headers={"Origin": APP_ORIGIN}, timeout=60)
        assert response.status_code == 200, response.text
        assert "ETag" in response.headers["Access-Control-Expose-Headers"]
        etags.append(response.headers["ETag"])

    moto_s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )
    assert stored(moto_s3, bucket, key) == b"".join(parts)


def test_a_part_url_takes_only_a_part_of_its_planned_size(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    upload_id = uploads.start_multipart_upload(key, "video/mp4")
    url = uploads.presign_part_upload(key, upload_id, 1, 5 * MIB, 60)

    bigger = requests.put(url, data=os.urandom(5 * MIB + 1), timeout=60)
    exact = requests.put(url, data=os.urandom(5 * MIB), timeout=60)

    assert s3_error(bigger)[:2] == (403, "SignatureDoesNotMatch")
    assert exact.status_code == 200
    assert [part.part_number for part in uploads.list_parts(key, upload_id)] == [1]


def test_a_presigned_get_with_if_match_serves_a_range(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key, data = new_key(), os.urandom(3 * MIB)
    etag = moto_s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data)["ETag"].strip('"')
    source = uploads.presign_download(key, if_match=etag, expires_s=60)

    ranged = requests.get(
        source.location, headers={**dict(source.headers), "Range": "bytes=100-2000099"}, timeout=60
    )
    whole = requests.get(source.location, headers=dict(source.headers), timeout=60)

    assert ranged.status_code == 206
    assert ranged.content == data[100:2000100]
    assert whole.content == data


def test_a_presigned_head_is_served_and_a_get_url_cannot_be_used_for_head(
    presigner: Any, moto_s3: Any, settings: Settings
) -> None:
    params = {"Bucket": settings.uploads_bucket, "Key": new_key()}
    moto_s3.put_object(**params, Body=b"12345")
    head_url = presigner.generate_presigned_url("head_object", Params=params, ExpiresIn=60)
    get_url = presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=60)

    head = requests.head(head_url, timeout=10)
    misused = requests.head(get_url, timeout=10)

    assert head.status_code == 200 and head.headers["Content-Length"] == "5"
    assert head.content == b""
    # S3 signs the method too; a HEAD refusal has no body to carry the code.
    assert misused.status_code == 403


def test_a_client_that_signs_its_headers_is_served(front: S3Front, settings: Settings) -> None:
    client = s3_client(front.url, settings)
    key, data = new_key(), os.urandom(2000)

    client.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data)

    assert client.get_object(Bucket=settings.uploads_bucket, Key=key)["Body"].read() == data


def test_a_preflight_is_answered_as_the_buckets_cors_would(front: S3Front, settings: Settings) -> None:
    url = f"{front.url}/{settings.uploads_bucket}/some/key"
    asks = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"}

    allowed = requests.options(url, headers={"Origin": APP_ORIGIN, **asks}, timeout=10)
    foreign = requests.options(url, headers={"Origin": "http://evil.test", **asks}, timeout=10)

    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "PUT" in allowed.headers["Access-Control-Allow-Methods"]
    assert allowed.headers["Access-Control-Allow-Headers"] == "content-type"
    assert s3_error(foreign)[:2] == (403, "AccessDenied")


# --- what S3 refuses ----------------------------------------------------------


def test_an_expired_post_is_refused(
    uploads: S3BlobStore, front_an_hour_later: S3Front, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    later = UploadTicket(
        url=ticket.url.replace(urlsplit(ticket.url).netloc, urlsplit(front_an_hour_later.url).netloc),
        fields=ticket.fields,
        expires_at=ticket.expires_at,
        max_bytes=ticket.max_bytes,
    )

    response = post(later, b"data")

    assert s3_error(response) == (403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_an_oversize_body_is_refused_as_it_arrives(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)

    response = post(ticket, os.urandom(MIB + 1))

    status, code, _ = s3_error(response)
    assert (status, code) == (400, "EntityTooLarge")
    assert ET.fromstring(response.content).findtext("MaxSizeAllowed") == str(MIB)
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_an_empty_file_is_too_small(uploads: S3BlobStore, moto_s3: Any, settings: Settings) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)

    assert s3_error(post(ticket, b""))[:2] == (400, "EntityTooSmall")
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_lying_content_length_does_not_let_an_oversize_file_through(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    # The file part claims 10 bytes; the request, a length that fits the policy.
    body = form_body(ticket.fields, os.urandom(3 * MIB), "b0undary")

    part_lies = raw_post(ticket.url, body, "b0undary", content_length=len(body))
    request_lies = raw_post(ticket.url, body, "b0undary", content_length=MIB // 2)

    assert part_lies[0] == 400 and b"<Code>EntityTooLarge</Code>" in part_lies[1]
    assert request_lies[0] == 400 and b"<Code>MalformedPOSTRequest</Code>" in request_lies[1]
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_wrong_content_type_is_refused(uploads: S3BlobStore, moto_s3: Any, settings: Settings) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)

    response = post(ticket, b"<html>", **{"Content-Type": "text/html"})

    assert s3_error(response) == (
        403,
        "AccessDenied",
        'Invalid according to Policy: Policy Condition failed: ["eq", "$Content-Type", "video/mp4"]',
    )
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_key_outside_the_policy_is_refused(uploads: S3BlobStore, moto_s3: Any, settings: Settings) -> None:
    ticket = uploads.presign_upload(new_key(), "video/mp4", MIB, 60)
    other = new_key()

    response = post(ticket, b"data", key=other)

    status, code, message = s3_error(response)
    assert (status, code) == (403, "AccessDenied")
    assert message.startswith('Invalid according to Policy: Policy Condition failed: ["eq", "$key", ')
    assert stored(moto_s3, settings.uploads_bucket, other) is None


def test_a_field_the_policy_does_not_name_is_refused(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)

    response = post(ticket, b"data", acl="public-read", **{"x-ignore-me": "fine"})

    assert s3_error(response) == (403, "AccessDenied", "Invalid according to Policy: Extra input fields: acl")
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_field_whose_name_parsers_read_differently_is_refused(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    # `name="x-ignore-a"; name="key"`: read as an exempt x-ignore-* field by one
    # parser and as the key by another (moto's werkzeug), it would store the
    # file outside the policy, e.g. over another user's upload.
    key, victim = new_key(), new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    boundary = "vidline-smuggle"
    body = form_body({'x-ignore-a"; name="key': victim, **ticket.fields}, b"0123456789", boundary)

    status, answer = raw_post(ticket.url, body, boundary, content_length=len(body))

    assert status == 400 and b"<Code>MalformedPOSTRequest</Code>" in answer
    assert stored(moto_s3, settings.uploads_bucket, victim) is None
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_tampered_signature_is_refused(
    uploads: S3BlobStore, presigner: Any, moto_s3: Any, settings: Settings
) -> None:
    bucket, key = settings.uploads_bucket, new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    signature = ticket.fields["x-amz-signature"]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    put_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60
    )

    forged_post = post(ticket, b"data", **{"x-amz-signature": forged})
    other_key = requests.put(put_url.replace(key, new_key()), data=b"data", timeout=10)
    longer_life = requests.put(
        put_url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"), data=b"data", timeout=10
    )

    assert s3_error(forged_post)[:2] == (403, "SignatureDoesNotMatch")
    assert s3_error(other_key)[:2] == (403, "SignatureDoesNotMatch")
    assert s3_error(longer_life)[:2] == (403, "SignatureDoesNotMatch")
    assert stored(moto_s3, bucket, key) is None


def test_a_get_signed_for_one_version_needs_its_if_match(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    etag = moto_s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=b"v1")["ETag"].strip('"')
    source = uploads.presign_download(key, if_match=etag, expires_s=60)

    response = requests.get(source.location, timeout=10)

    assert s3_error(response)[:2] == (403, "SignatureDoesNotMatch")


def test_a_put_url_replayed_after_its_expiry_is_refused(
    presigner: Any, front: S3Front, front_an_hour_later: S3Front, moto_s3: Any, settings: Settings
) -> None:
    bucket, key = settings.uploads_bucket, new_key()
    url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
    assert requests.put(url, data=b"first", timeout=10).status_code == 200

    replay = url.replace(urlsplit(front.url).netloc, urlsplit(front_an_hour_later.url).netloc)
    response = requests.put(replay, data=b"second", timeout=10)

    assert s3_error(response) == (403, "AccessDenied", "Request has expired")
    assert stored(moto_s3, bucket, key) == b"first"


def test_a_url_signed_for_later_or_signed_twice_is_refused(
    presigner: Any, front: S3Front, moto_endpoint: str, moto_s3: Any, settings: Settings
) -> None:
    bucket, key = settings.uploads_bucket, new_key()
    url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
    an_hour_ago = start_front(moto_endpoint, settings, timedelta(hours=-1))
    try:
        early = requests.put(
            url.replace(urlsplit(front.url).netloc, urlsplit(an_hour_ago.url).netloc), data=b"x", timeout=10
        )
    finally:
        an_hour_ago.stop()
    both = requests.put(
        url, data=b"x", headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"}, timeout=10
    )

    assert s3_error(early)[:2] == (403, "AccessDenied")
    assert s3_error(both)[:2] == (400, "InvalidArgument")
    assert stored(moto_s3, bucket, key) is None


def test_a_form_post_with_a_query_is_not_taken_for_another_operation(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)
    ticket = UploadTicket(f"{ticket.url}?uploads", ticket.fields, ticket.expires_at, ticket.max_bytes)

    response = post(ticket, b"data")

    assert s3_error(response)[:2] == (403, "AccessDenied")
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_an_unsigned_request_is_refused(front: S3Front, moto_s3: Any, settings: Settings) -> None:
    bucket, key = settings.uploads_bucket, new_key()
    moto_s3.put_object(Bucket=bucket, Key=key, Body=b"private")

    put = requests.put(f"{front.url}/{bucket}/{new_key()}", data=b"data", timeout=10)
    get = requests.get(f"{front.url}/{bucket}/{key}", timeout=10)
    anonymous_post = requests.post(
        f"{front.url}/{bucket}", files={"key": (None, key), "file": b"x"}, timeout=10
    )

    assert s3_error(put) == (403, "AccessDenied", "Access Denied")
    assert s3_error(get) == (403, "AccessDenied", "Access Denied")
    assert s3_error(anonymous_post) == (403, "AccessDenied", "Access Denied")
    assert stored(moto_s3, bucket, key) == b"private"


def test_a_client_with_the_wrong_secret_is_refused(front: S3Front, settings: Settings) -> None:
    client = s3_client(front.url, settings, secret="not-the-secret")

    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=settings.uploads_bucket, Key=new_key(), Body=b"data")

    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_every_kind_of_post_condition_is_enforced(presigner: Any, moto_s3: Any, settings: Settings) -> None:
    bucket, prefix = settings.uploads_bucket, f"test/{uuid.uuid4().hex}/"
    form = presigner.generate_presigned_post(
        bucket,
        prefix + "${filename}",
        Fields={"success_action_status": "201", "x-amz-meta-owner": "ann"},
        Conditions=[
            ["starts-with", "$key", prefix],
            {"success_action_status": "201"},
            ["eq", "$x-amz-meta-owner", "ann"],
            ["content-length-range", 10, 100],
        ],
        ExpiresIn=60,
    )
    ticket = UploadTicket(url=form["url"], fields=form["fields"], expires_at=datetime.now(UTC), max_bytes=100)

    accepted = post(ticket, b"x" * 10, key=prefix + "ok")
    outside = post(ticket, b"x" * 10, key="elsewhere/ok")
    wrong_owner = post(ticket, b"x" * 10, key=prefix + "owner", **{"x-amz-meta-owner": "bob"})
    too_small = post(ticket, b"x" * 9, key=prefix + "small")
    too_large = post(ticket, b"x" * 101, key=prefix + "large")

    assert accepted.status_code == 201, accepted.text
    assert stored(moto_s3, bucket, prefix + "ok") == b"x" * 10
    assert s3_error(outside) == (
        403,
        "AccessDenied",
        f'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "{prefix}"]',
    )
    assert s3_error(wrong_owner)[:2] == (403, "AccessDenied")
    assert s3_error(too_small)[:2] == (400, "EntityTooSmall")
    assert s3_error(too_large)[:2] == (400, "EntityTooLarge")
    for name in ("owner", "small", "large"):
        assert stored(moto_s3, bucket, prefix + name) is None


def test_a_body_that_differs_from_its_signed_hash_is_refused(
    front: S3Front, moto_s3: Any, settings: Settings
) -> None:
    url = f"{front.url}/{settings.uploads_bucket}/{new_key()}"
    signed = AWSRequest(method="PUT", url=url, data=b"the signed body")
    signed.context["payload_signing_enabled"] = True
    credentials = Credentials(
        LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
    )
    S3SigV4Auth(credentials, "s3", settings.region).add_auth(signed)

    swapped = requests.put(url, data=b"another body!!!", headers=dict(signed.headers), timeout=10)
    honest = requests.put(url, data=b"the signed body", headers=dict(signed.headers), timeout=10)

    assert s3_error(swapped)[:2] == (400, "XAmzContentSHA256Mismatch")
    assert honest.status_code == 200, honest.text
    assert stored(moto_s3, settings.uploads_bucket, urlsplit(url).path.split("/", 2)[2]) == b"the signed body"


def test_a_client_that_stops_sending_gets_a_request_timeout_and_nothing_is_stored(
    moto_endpoint: str, settings: Settings, moto_s3: Any
) -> None:
    impatient = start_front(moto_endpoint, settings, client_timeout_s=0.5)
    try:
        key = new_key()
        url = s3_client(impatient.url, settings).generate_presigned_url(
            "put_object", Params={"Bucket": settings.uploads_bucket, "Key": key}, ExpiresIn=60
        )
        target = urlsplit(url)
        with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
            sock.sendall(
                f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                "Content-Length: 1000\r\n\r\n".encode()
                + b"x" * 500
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        impatient.stop()

    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"<Code>RequestTimeout</Code>" in answer
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_a_post_without_a_file_or_with_too_much_before_it_is_refused(
    uploads: S3BlobStore, moto_s3: Any, settings: Settings
) -> None:
    key = new_key()
    ticket = uploads.presign_upload(key, "video/mp4", MIB, 60)

    no_file = requests.post(
        ticket.url, files={name: (None, value) for name, value in ticket.fields.items()}, timeout=10
    )
    padded = post(ticket, b"data", **{"x-ignore-padding": "x" * 30_000})

    assert s3_error(no_file) == (
        400,
        "IncorrectNumberOfFilesInPostRequest",
        "POST requires exactly one file upload per request.",
    )
    assert s3_error(padded)[:2] == (400, "MaxPostPreDataLengthExceededError")
    assert stored(moto_s3, settings.uploads_bucket, key) is None


def test_an_x_amz_header_the_url_does_not_sign_is_refused(
    presigner: Any, moto_s3: Any, settings: Settings
) -> None:
    params = {"Bucket": settings.uploads_bucket, "Key": new_key()}
    url = presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=60)

    response = requests.put(url, data=b"data", headers={"x-amz-acl": "public-read"}, timeout=10)

    assert s3_error(response) == (
        403,
        "AccessDenied",
        "There were headers present in the request which were not signed",
    )
    assert stored(moto_s3, params["Bucket"], params["Key"]) is None
