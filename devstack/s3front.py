"""The enforcing S3 front: what S3 checks on a presigned request, before moto.

moto accepts any upload: it checks neither a POST policy nor a presigned
URL's signature or expiry. In local mode presigned POSTs and URLs point here
(`VIDLINE_S3_PUBLIC_ENDPOINT_URL`) and this server on 127.0.0.1 passes a
request on to moto's S3 only if S3 would accept it; the apps' own boto3 calls
still go straight to moto. Signatures are recomputed with botocore's own
SigV4 code (`botocore.auth`) and the local stack's known credentials.

- A browser POST (multipart/form-data to a bucket): the SigV4 signature over
  the base64 policy, its credential (access key, region, service), the
  policy's expiration, and every condition: `eq` and `starts-with` on any
  field (`$key`, `$Content-Type`, `$x-amz-*`, `$success_action_status`...,
  and `bucket` against the URL's bucket) and `content-length-range`, counted
  on the file's bytes as they arrive (refused as soon as they pass the
  maximum; a Content-Length, of the request or of the part, is never
  trusted). A form field no condition names is refused, except
  x-amz-signature, file, policy and x-ignore-*; fields after the file are
  ignored, as S3 ignores them (moto never sees them).
- A presigned request of any method (X-Amz-Algorithm, -Credential, -Date,
  -Expires, -SignedHeaders, -Signature, -Security-Token in the query): the
  signature over the method, path, query and every signed header (host,
  If-Match...), and X-Amz-Expires against now (at most a week).
- Either way, an x-amz-* header the signature does not cover is refused.
- A request signed in its Authorization header (AWS4-HMAC-SHA256): the
  signature, the clock skew (15 minutes), and a signed payload hash
  (x-amz-content-sha256) against the body's bytes.
- Anything else is refused (403 AccessDenied), except a CORS preflight,
  which is answered as the bucket's CORS rules would (the allowed origins;
  GET, HEAD, PUT, POST; any request header; ETag and Location exposed).

Refusals are S3's XML errors with S3's status and code. Bodies stream both
ways in 1 MiB chunks. A refused upload never reaches moto complete: the front
holds back the body's last byte until every check has passed, and moto drops
a request whose body ends early.

Not enforced: IAM permissions, bucket policies, ACLs and Block Public Access
(there is one principal, the stack's key, and it may do anything); the
signatures of aws-chunked (STREAMING-*) payload chunks; `${filename}` in a
POST key; virtual-host addressing (the presigner uses path style); chunked
request bodies (refused: 411 MissingContentLength, as S3 does for a PUT).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler
from typing import ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth, S3SigV4PostAuth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.http_server import BackgroundHTTPServer

logger = logging.getLogger(__name__)

# Read and write bodies in pieces this big: large enough that Python's
# per-chunk work is noise next to the copying, small enough to never matter.
CHUNK_BYTES = 1024 * 1024
# S3 refuses a POST whose fields before the file exceed 20 KB.
MAX_POST_PREDATA_BYTES = 20 * 1024
# S3's limits on presigned URLs and on a header-signed request's clock.
MAX_EXPIRES_S = 7 * 24 * 3600
MAX_SKEW = timedelta(minutes=15)
# After refusing an upload the front reads (and drops) what the client is
# still sending for at most this long, so the client sees the answer instead
# of a connection reset; then it closes the connection.
LINGER_S = 2.0
# A refused request's body up to this size is read and dropped, keeping the
# connection open for the next request.
DRAIN_BYTES = 64 * 1024
# Seconds a client may stay silent, mid-request or between two requests.
CLIENT_TIMEOUT_S = 60.0
CORS_METHODS = ("GET", "HEAD", "PUT", "POST")
CORS_EXPOSED = "ETag, Location"
CORS_MAX_AGE_S = 3000
ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
QUERY_AUTH = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
# Form fields a POST policy need not name (S3's documented exemptions).
POLICY_EXEMPT = frozenset({"x-amz-signature", "file", "policy"})
POST_REQUIRED = ("key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "host",
    }
)
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
_MALFORMED_POST = "The body of your POST request is not well-formed multipart/form-data."
_CORS_REFUSED = (
    "CORSResponse: This CORS request is not allowed. This is usually because the evalution of "
    "Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers "
    "are not whitelisted by the resource's CORS spec."
)


class S3Refusal(Exception):
    """A request S3 would refuse: its status, error code, message and extra XML elements."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def xml(self, resource: str) -> bytes:
        """The body S3 sends: `<Error><Code>...</Code><Message>...</Message>...</Error>`."""
        elements = {"Code": self.code, "Message": self.message, **self.extra}
        elements |= {"Resource": resource, "RequestId": uuid.uuid4().hex[:16].upper()}
        inner = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in elements.items())
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def access_denied(message: str = "Access Denied", **extra: object) -> S3Refusal:
    """403 AccessDenied, S3's answer to a request it will not serve."""
    return S3Refusal(403, "AccessDenied", message, **extra)


def policy_refusal(reason: str) -> S3Refusal:
    """403 AccessDenied for a POST its policy does not allow."""
    return access_denied(f"Invalid according to Policy: {reason}")


def _query_parameters_error(message: str) -> S3Refusal:
    return S3Refusal(400, "AuthorizationQueryParametersError", message)


@dataclass(frozen=True)
class Scope:
    """The parts of a SigV4 credential: `AKID/20260101/us-east-1/s3/aws4_request`."""

    access_key: str
    date: str
    region: str
    service: str

    @classmethod
    def parse(cls, credential: str, error: Callable[[str], S3Refusal]) -> Scope:
        """The credential's parts; `error(message)` is raised when it is malformed."""
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise error(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
                'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
            )
        return cls(*parts[:4])


class Signatures:
    """Recomputes SigV4 signatures with botocore for one set of credentials and region."""

    def __init__(self, access_key: str, secret_key: str, token: str | None, region: str) -> None:
        self._credentials = Credentials(access_key, secret_key, token)
        self.region = region

    def check_scope(self, scope: Scope, error: Callable[[str], S3Refusal]) -> None:
        """Refuse an unknown access key, or a credential for another region or service."""
        if scope.access_key != self._credentials.access_key:
            raise S3Refusal(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=scope.access_key,
            )
        if scope.region != self.region:
            raise error(
                f"Error parsing the X-Amz-Credential parameter; the region '{scope.region}' is wrong; "
                f"expecting '{self.region}'"
            )
        if scope.service != "s3":
            raise error(
                "Error parsing the X-Amz-Credential parameter; incorrect service "
                f'"{scope.service}". This endpoint belongs to "s3".'
            )

    def check_token(self, token: str | None) -> None:
        """A session token, when one is sent, must be the credentials' own."""
        if token is not None and not hmac.compare_digest(token, self._credentials.token or ""):
            raise S3Refusal(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")

    def check_request(
        self,
        signer_class: type[SigV4Auth],
        *,
        method: str,
        host: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        timestamp: str,
        signature: str,
    ) -> None:
        """Refuse unless `signature` is what `signer_class` computes for this request.

        `headers` are the signed headers only (name -> value as received);
        `query` the decoded query without X-Amz-Signature. The path is
        canonicalised as S3 does: every byte URI-encoded once.
        """
        canonical_path = quote(unquote(path), safe="/~")
        request = AWSRequest(
            method=method, url=f"http://{host}{canonical_path}", headers=dict(headers), params=list(query)
        )
        request.context["timestamp"] = timestamp
        signer = signer_class(self._credentials, "s3", self.region)
        canonical_request = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical_request)
        expected = signer.signature(string_to_sign, request)
        if not hmac.compare_digest(expected, signature):
            raise S3Refusal(
                403,
                "SignatureDoesNotMatch",
                _SIGNATURE_MISMATCH,
                AWSAccessKeyId=self._credentials.access_key,
                StringToSign=string_to_sign,
                SignatureProvided=signature,
                CanonicalRequest=canonical_request,
            )

    def check_policy(self, policy_b64: str, scope: Scope, signature: str) -> None:
        """Refuse unless `signature` is the POST signature of the base64 policy."""
        request = AWSRequest(method="POST", url="http://s3")
        request.context["timestamp"] = f"{scope.date}T000000Z"  # only the date is used
        expected = S3SigV4PostAuth(self._credentials, "s3", self.region).signature(policy_b64, request)
        if not hmac.compare_digest(expected, signature):
            raise S3Refusal(
                403,
                "SignatureDoesNotMatch",
                _SIGNATURE_MISMATCH,
                AWSAccessKeyId=self._credentials.access_key,
                StringToSign=policy_b64,
                SignatureProvided=signature,
            )


def parse_amz_date(value: str, error: Callable[[str], S3Refusal]) -> datetime:
    """An X-Amz-Date (`20260101T120000Z`) as an aware datetime."""
    try:
        return datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- presigned and header-signed requests ---------------------------------


def check_presigned(
    signatures: Signatures,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Message,
    now: datetime,
) -> None:
    """Refuse a request presigned in its query string unless S3 would accept it."""
    params: dict[str, str] = {}
    for name, value in query:
        if name in QUERY_AUTH and name in params:
            raise _query_parameters_error(f"{name} is given more than once.")
        params[name] = value
    if any(name not in params for name in QUERY_AUTH):
        raise _query_parameters_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_parameters_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    scope = Scope.parse(params["X-Amz-Credential"], _query_parameters_error)
    signatures.check_scope(scope, _query_parameters_error)
    signed_at = parse_amz_date(params["X-Amz-Date"], _query_parameters_error)
    try:
        expires_s = int(params["X-Amz-Expires"])
    except ValueError:
        raise _query_parameters_error("X-Amz-Expires should be a number") from None
    if expires_s < 0:
        raise _query_parameters_error("X-Amz-Expires must be non-negative")
    if expires_s > MAX_EXPIRES_S:
        raise _query_parameters_error(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES_S}"
        )
    signatures.check_token(params.get("X-Amz-Security-Token"))
    if signed_at - now > MAX_SKEW:
        # Signed in the future: S3 refuses it rather than let it live longer.
        raise access_denied("Request is not valid yet", **{"X-Amz-Date": params["X-Amz-Date"]})
    expires_at = signed_at + timedelta(seconds=expires_s)
    if now > expires_at:
        raise access_denied(
            "Request has expired",
            **{"X-Amz-Expires": expires_s, "Expires": _iso(expires_at), "ServerTime": _iso(now)},
        )
    signatures.check_request(
        S3SigV4QueryAuth,
        method=method,
        host=host,
        path=path,
        query=[(name, value) for name, value in query if name != "X-Amz-Signature"],
        headers=_signed_headers(headers, params["X-Amz-SignedHeaders"]),
        timestamp=params["X-Amz-Date"],
        signature=params["X-Amz-Signature"],
    )


def check_header_signed(
    signatures: Signatures,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Message,
    now: datetime,
) -> str:
    """Refuse a request signed in its Authorization header unless S3 would
    accept its headers; the payload hash it claims (x-amz-content-sha256)."""

    def malformed(message: str) -> S3Refusal:
        return S3Refusal(400, "AuthorizationHeaderMalformed", message)

    authorization = headers.get("Authorization", "")
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise S3Refusal(
            400, "InvalidArgument", "Unsupported Authorization Type", ArgumentName="Authorization"
        )
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
        raise malformed(
            "The authorization header is malformed; the authorization header requires three "
            "components: Credential, SignedHeaders, and Signature."
        )
    scope = Scope.parse(parts["Credential"], malformed)
    signatures.check_scope(scope, malformed)
    timestamp = headers.get("X-Amz-Date")
    if timestamp is None:
        raise access_denied("AWS authentication requires a valid Date or x-amz-date header")
    signed_at = parse_amz_date(timestamp, malformed)
    if abs(now - signed_at) > MAX_SKEW:
        raise S3Refusal(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            RequestTime=timestamp,
            ServerTime=_iso(now),
            MaxAllowedSkewMilliseconds=int(MAX_SKEW.total_seconds() * 1000),
        )
    payload = headers.get("X-Amz-Content-SHA256")
    if payload is None:
        raise S3Refusal(
            400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    signatures.check_token(headers.get("X-Amz-Security-Token"))
    signatures.check_request(
        S3SigV4Auth,
        method=method,
        host=host,
        path=path,
        query=query,
        headers=_signed_headers(headers, parts["SignedHeaders"]),
        timestamp=timestamp,
        signature=parts["Signature"],
    )
    return payload


def _signed_headers(headers: Message, names: str) -> dict[str, str]:
    """The signed headers' values; refuses x-amz-* headers that are not signed, as S3 does."""
    wanted = {name.lower() for name in names.split(";")}
    unsigned = sorted({name.lower() for name in headers if name.lower().startswith("x-amz-")} - wanted)
    if unsigned:
        raise access_denied(
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )
    # A signed header the request lacks is left out, so the signature differs.
    signed: dict[str, str] = {}
    for name in names.split(";"):
        values = headers.get_all(name)
        if values:
            signed[name] = ",".join(values)
    return signed


# --- browser POSTs ----------------------------------------------------------


@dataclass(frozen=True)
class PostForm:
    """The fields of a browser POST before its file, and where the file starts."""

    fields: dict[str, tuple[str, str]]  # lower-case name -> (name as sent, value)
    filename: str
    file_offset: int  # in the bytes read so far


def _ambiguous_disposition(part: Message) -> bool:
    """True when parsers may disagree on what a part is named: more than one
    Content-Disposition, a parameter given twice (`name="x-ignore-a"; name="key"`:
    Python's parser takes the first, moto's werkzeug the last, so a field the
    policy exempts would reach moto as the key), or an RFC 2231 `name*`."""
    dispositions = part.get_all("content-disposition") or []
    if len(dispositions) != 1:
        return True
    names = [key.lower() for key, _ in (part.get_params(header="content-disposition") or [])[1:]]
    return len(names) != len(set(names)) or any("*" in key for key in names)


def parse_post_head(head: bytes, boundary: bytes) -> PostForm | None:
    """The fields before the file part in `head`, the start of a multipart
    body; None if the file part's headers are not complete in it yet."""
    delimiter = b"--" + boundary
    if not head.startswith(delimiter + b"\r\n"):
        if len(head) < len(delimiter) + 2:
            return None
        raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
    fields: dict[str, tuple[str, str]] = {}
    position = len(delimiter) + 2
    while True:
        end_of_headers = head.find(b"\r\n\r\n", position)
        if end_of_headers < 0:
            return None
        part = BytesHeaderParser().parsebytes(head[position : end_of_headers + 2])
        if _ambiguous_disposition(part):
            raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not isinstance(name, str):
            raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
        data_start = end_of_headers + 4
        if name.lower() == "file":
            filename = part.get_param("filename", header="content-disposition")
            return PostForm(fields, filename if isinstance(filename, str) else "", data_start)
        end = head.find(b"\r\n" + delimiter, data_start)
        if end < 0:
            return None
        if name.lower() in fields:
            raise S3Refusal(
                400,
                "InvalidArgument",
                f"Bucket POST must contain exactly one field named '{name}'.",
                ArgumentName=name,
            )
        fields[name.lower()] = (name, head[data_start:end].decode("utf-8", "replace"))
        after = end + 2 + len(delimiter)
        if head[after : after + 2] == b"--":
            raise S3Refusal(
                400,
                "IncorrectNumberOfFilesInPostRequest",
                "POST requires exactly one file upload per request.",
            )
        if len(head) < after + 2:
            return None
        if head[after : after + 2] != b"\r\n":
            raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
        position = after + 2


@dataclass(frozen=True)
class SizeRange:
    """A policy's content-length-range: the file's size must be within it."""

    minimum: int
    maximum: int


def check_post(signatures: Signatures, form: PostForm, bucket: str, now: datetime) -> SizeRange | None:
    """Refuse a browser POST's fields unless S3 would accept them; the size
    range the file must then fit (None: any size)."""
    fields = form.fields
    if "policy" not in fields and "x-amz-signature" not in fields:
        raise access_denied()  # an anonymous POST to a private bucket
    for name in POST_REQUIRED:
        if name not in fields:
            raise S3Refusal(
                400,
                "InvalidArgument",
                f"Bucket POST must contain a field named '{name}'.  If it is specified, "
                "please check the order of the fields.",
                ArgumentName=name,
                ArgumentValue="",
            )

    def invalid(message: str) -> S3Refusal:
        return S3Refusal(400, "InvalidArgument", message, ArgumentName="x-amz-credential")

    if fields["x-amz-algorithm"][1] != ALGORITHM:
        raise S3Refusal(400, "InvalidArgument", f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    scope = Scope.parse(fields["x-amz-credential"][1], invalid)
    signatures.check_scope(scope, invalid)
    signatures.check_token(fields.get("x-amz-security-token", (None, None))[1])
    policy_b64 = fields["policy"][1]
    signatures.check_policy(policy_b64, scope, fields["x-amz-signature"][1])
    policy = _decode_policy(policy_b64)
    if now >= _policy_expiration(policy):
        raise policy_refusal("Policy expired.")
    covered = {"bucket"}
    size: SizeRange | None = None
    for condition in _conditions(policy):
        if isinstance(condition, SizeRange):
            size = condition
            continue
        operator, field, expected = condition
        covered.add(field.lower())
        actual = bucket if field.lower() == "bucket" else fields.get(field.lower(), (None, None))[1]
        if not _holds(operator, field, actual, expected):
            shown = json.dumps([operator, f"${field}", expected])
            raise policy_refusal(f"Policy Condition failed: {shown}")
    extra = [
        sent
        for name, (sent, _) in fields.items()
        if name not in covered and name not in POLICY_EXEMPT and not name.startswith("x-ignore-")
    ]
    if extra:
        raise policy_refusal(f"Extra input fields: {', '.join(extra)}")
    return size


def _decode_policy(policy_b64: str) -> dict[str, object]:
    try:
        policy = json.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        raise S3Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise S3Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    return policy


def _policy_expiration(policy: Mapping[str, object]) -> datetime:
    value = policy.get("expiration")
    if not isinstance(value, str):
        raise S3Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    for layout in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(value, layout).replace(tzinfo=UTC)
    raise S3Refusal(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid 'expiration' value: '{value}'")


def _conditions(policy: Mapping[str, object]) -> Iterable[tuple[str, str, str] | SizeRange]:
    """The policy's conditions as (operator, field without "$", value) or a SizeRange."""
    conditions = policy.get("conditions")
    if not isinstance(conditions, list):
        raise S3Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    for condition in conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            [(field, value)] = condition.items()
            if isinstance(value, str):
                yield "eq", field, value
                continue
        elif isinstance(condition, list) and len(condition) == 3:
            operator, first, second = condition
            operator = str(operator).lower()
            if operator == "content-length-range" and _are_sizes(first, second):
                yield SizeRange(int(first), int(second))
                continue
            if (
                operator in {"eq", "starts-with"}
                and isinstance(first, str)
                and first.startswith("$")
                and isinstance(second, str)
            ):
                yield operator, first[1:], second
                continue
        raise S3Refusal(
            400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {json.dumps(condition)}"
        )


def _are_sizes(*values: object) -> bool:
    return all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in values)


def _holds(operator: str, field: str, actual: str | None, expected: str) -> bool:
    if actual is None:
        return False
    if operator == "eq":
        return actual == expected
    if field.lower() == "content-type":
        # S3 allows a comma-separated list of types, each of which must match.
        return all(part.strip().startswith(expected) for part in actual.split(","))
    return actual.startswith(expected)


# --- the server -------------------------------------------------------------


class _HeldBackWriter:
    """Writes a request body to moto, always keeping its last byte back until
    `finish`, so a body the front refuses part-way never reaches moto whole."""

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        assert connection.sock is not None, "write after endheaders()"
        self._sock: socket.socket = connection.sock
        # Small writes go out at once: Nagle's algorithm would hold the
        # held-back byte until moto acknowledges, stalling every chunk.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._held = b""

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        view = memoryview(data)
        self._send([self._held, view[:-1]])  # one system call, no copy
        self._held = bytes(view[-1:])

    def finish(self) -> None:
        self._send([self._held])
        self._held = b""

    def _send(self, buffers: list[bytes | memoryview]) -> None:
        views = [memoryview(buffer) for buffer in buffers if len(buffer)]
        while views:
            sent = self._sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]


class _Body:
    """The request body, read from the client in chunks up to its Content-Length."""

    def __init__(self, handler: BaseHTTPRequestHandler, length: int) -> None:
        self._handler = handler
        self.remaining = length

    def read(self, limit: int = CHUNK_BYTES) -> bytes:
        """Up to `limit` more bytes; raises IncompleteBody if the client stops early."""
        if self.remaining <= 0:
            return b""
        try:
            data = self._handler.rfile.read(min(limit, self.remaining))
        except TimeoutError:
            raise S3Refusal(
                400,
                "RequestTimeout",
                "Your socket connection to the server was not read from or written to within "
                "the timeout period. Idle connections will be closed.",
            ) from None
        if not data:
            raise S3Refusal(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )
        self.remaining -= len(data)
        return data


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT_S
    front: ClassVar[S3Front]

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_OPTIONS(self) -> None:
        self._preflight()

    # The request as S3 sees it.

    def _split_target(self) -> tuple[str, list[tuple[str, str]], str]:
        target = urlsplit(self.path)
        query = parse_qsl(target.query, keep_blank_values=True)
        return target.path or "/", query, target.query

    def _serve(self) -> None:
        body: _Body | None = None
        path, query, raw_query = self._split_target()
        try:
            length_header = self.headers.get("Content-Length")
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or (
                length_header is None and self.command in {"PUT", "POST"}
            ):
                self.close_connection = True
                raise S3Refusal(
                    411, "MissingContentLength", "You must provide the Content-Length HTTP header."
                )
            try:
                length = int(length_header or 0)
            except ValueError:
                self.close_connection = True
                raise S3Refusal(
                    400, "BadRequest", "An error occurred when parsing the HTTP request."
                ) from None
            body = _Body(self, length)
            self._dispatch(path, query, raw_query, body)
        except S3Refusal as refusal:
            self._refuse(refusal, path, body)
        except (ConnectionError, TimeoutError, http.client.HTTPException) as error:
            logger.info("S3 front: %s %s failed: %s", self.command, self.path, error)
            self.close_connection = True

    # Every method goes through the same checks; the signature binds it.
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve

    def _dispatch(self, path: str, query: list[tuple[str, str]], raw_query: str, body: _Body) -> None:
        front = self.front
        now = front.now()
        host = self.headers.get("Host", "")
        payload_hash: str | None = None
        if any(name == "X-Amz-Signature" for name, _ in query):
            if "Authorization" in self.headers:
                raise S3Refusal(
                    400,
                    "InvalidArgument",
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                    "Signature query string parameter or the Authorization header should be specified",
                    ArgumentName="Authorization",
                )
            check_presigned(front.signatures, self.command, host, path, query, self.headers, now)
        elif "Authorization" in self.headers:
            payload_hash = check_header_signed(
                front.signatures, self.command, host, path, query, self.headers, now
            )
        elif self.command == "POST" and _is_form(self.headers.get("Content-Type", "")):
            if raw_query:
                # A form POST uploads an object; with a query (?delete, ?uploads...)
                # moto would take it for another operation that no policy allowed.
                raise access_denied()
            self._browser_post(path, raw_query, body, now)
            return
        else:
            raise access_denied()
        expected_sha256 = None
        if payload_hash is not None and len(payload_hash) == 64 and not payload_hash.startswith("STREAMING"):
            expected_sha256 = payload_hash.lower()
        self._forward(path, raw_query, body, expected_sha256)

    def _browser_post(self, path: str, raw_query: str, body: _Body, now: datetime) -> None:
        bucket = path.strip("/")
        if not bucket or "/" in bucket:
            raise S3Refusal(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource."
            )
        _, params = _parse_content_type(self.headers.get("Content-Type", ""))
        boundary = params.get("boundary", "").encode()
        if not boundary:
            raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
        head = b""
        form: PostForm | None = None
        while form is None:
            more = body.read(min(CHUNK_BYTES, MAX_POST_PREDATA_BYTES + 4096))
            if not more:
                raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
            head += more
            form = parse_post_head(head, boundary)
            if form is None and len(head) > MAX_POST_PREDATA_BYTES:
                raise S3Refusal(
                    400,
                    "MaxPostPreDataLengthExceededError",
                    "Your POST request fields preceding the upload file were too large.",
                )
        size = check_post(self.front.signatures, form, bucket, now)
        connection, writer = self._open_upstream(path, raw_query, body.remaining + len(head))
        try:
            writer.write(memoryview(head)[: form.file_offset])
            received = self._stream_file(body, writer, head[form.file_offset :], b"\r\n--" + boundary, size)
            if size is not None and received < size.minimum:
                raise S3Refusal(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                    ProposedSize=received,
                    MinSizeAllowed=size.minimum,
                )
            writer.finish()
            self._relay(connection.getresponse())
        finally:
            connection.close()

    def _stream_file(
        self, body: _Body, writer: _HeldBackWriter, pending: bytes, delimiter: bytes, size: SizeRange | None
    ) -> int:
        """Pass the file's bytes on until its closing delimiter, counting them;
        then what follows, with any further parts turned into the multipart
        epilogue (S3 ignores fields after the file). The file's size."""
        received = 0
        keep = len(delimiter) - 1  # a delimiter may straddle two chunks
        while True:
            end = pending.find(delimiter)
            if end >= 0:
                received += end
                self._check_size(received, size)
                writer.write(memoryview(pending)[: end + len(delimiter)])
                self._finish_form(body, writer, pending[end + len(delimiter) :])
                return received
            if len(pending) > keep:
                received += len(pending) - keep
                self._check_size(received, size)
                writer.write(memoryview(pending)[: len(pending) - keep])
                pending = pending[len(pending) - keep :]
            more = body.read()
            if not more:
                raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
            pending += more

    @staticmethod
    def _check_size(received: int, size: SizeRange | None) -> None:
        if size is not None and received > size.maximum:
            raise S3Refusal(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=received,
                MaxSizeAllowed=size.maximum,
            )

    @staticmethod
    def _finish_form(body: _Body, writer: _HeldBackWriter, rest: bytes) -> None:
        while len(rest) < 2 and body.remaining:
            rest += body.read(2)
        if len(rest) < 2:
            raise S3Refusal(400, "MalformedPOSTRequest", _MALFORMED_POST)
        if rest.startswith(b"--"):  # the closing delimiter: the rest is the epilogue
            writer.write(rest)
            while chunk := body.read():
                writer.write(chunk)
            return
        # More parts follow the file: close the form there and pass the same
        # number of bytes on as epilogue, so the length moto was told holds.
        writer.write(b"--" + b" " * (len(rest) - 2))
        while chunk := body.read():
            writer.write(b" " * len(chunk))

    def _forward(self, path: str, raw_query: str, body: _Body, expected_sha256: str | None) -> None:
        connection, writer = self._open_upstream(
            path, raw_query, body.remaining if self._has_body() else None
        )
        try:
            digest = hashlib.sha256() if expected_sha256 is not None else None
            while chunk := body.read():
                if digest is not None:
                    digest.update(chunk)
                writer.write(chunk)
            if digest is not None and not hmac.compare_digest(digest.hexdigest(), expected_sha256 or ""):
                raise S3Refusal(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    ClientComputedContentSHA256=expected_sha256,
                    S3ComputedContentSHA256=digest.hexdigest(),
                )
            writer.finish()
            self._relay(connection.getresponse())
        finally:
            connection.close()

    def _has_body(self) -> bool:
        return "Content-Length" in self.headers

    def _open_upstream(
        self, path: str, raw_query: str, length: int | None
    ) -> tuple[http.client.HTTPConnection, _HeldBackWriter]:
        front = self.front
        connection = http.client.HTTPConnection(front.upstream_host, front.upstream_port, timeout=300)
        target = path + (f"?{raw_query}" if raw_query else "")
        connection.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", f"{front.upstream_host}:{front.upstream_port}")
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                connection.putheader(name, value)
        if length is not None:
            connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection, _HeldBackWriter(connection)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """Send moto's answer back as it comes, with the bucket's CORS headers."""
        self.send_response(response.status, response.reason)
        length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower.startswith("access-control-") or lower in {"server", "date"}:
                continue
            self.send_header(name, value)
        if length is None and self.command != "HEAD" and response.status not in {204, 304}:
            self.close_connection = True  # the end of the body is where moto closes
            self.send_header("Connection", "close")
        self._cors_headers()
        self.end_headers()
        if self.command == "HEAD":
            return
        while chunk := response.read(CHUNK_BYTES):
            self.wfile.write(chunk)

    # Refusals and CORS.

    def _refuse(self, refusal: S3Refusal, path: str, body: _Body | None) -> None:
        logger.info("S3 front refused %s %s: %s %s", self.command, path, refusal.code, refusal.message)
        unread = body.remaining if body is not None else 0
        if 0 < unread <= DRAIN_BYTES:
            with contextlib.suppress(S3Refusal, OSError):
                while body is not None and body.read():
                    pass
            unread = body.remaining if body is not None else 0
        if unread:
            self.close_connection = True
        content = b"" if self.command == "HEAD" else refusal.xml(path)
        try:
            self.send_response(refusal.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(content)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self._cors_headers()
            self.end_headers()
            self.wfile.write(content)
        except OSError:  # the client is gone
            self.close_connection = True
            return
        if unread:
            self._linger()

    def _linger(self) -> None:
        # Close only after the client has had the answer: closing a socket with
        # unread data sends a reset, which can destroy the answer in flight.
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            self.connection.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    if not self.connection.recv(CHUNK_BYTES):
                        break
                except TimeoutError:
                    continue

    def _allowed_origin(self) -> str | None:
        origin = self.headers.get("Origin")
        if origin is None:
            return None
        origins = self.front.cors_origins
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    def _cors_headers(self) -> None:
        allowed = self._allowed_origin()
        if allowed is None:
            return
        self.send_header("Access-Control-Allow-Origin", allowed)
        self.send_header("Access-Control-Allow-Methods", ", ".join(CORS_METHODS))
        self.send_header("Access-Control-Expose-Headers", CORS_EXPOSED)
        self.send_header("Access-Control-Max-Age", str(CORS_MAX_AGE_S))
        self.send_header("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")

    def _preflight(self) -> None:
        path, _, _ = self._split_target()
        method = self.headers.get("Access-Control-Request-Method")
        if self.headers.get("Origin") is None or method is None:
            self._refuse(
                S3Refusal(
                    400,
                    "BadRequest",
                    "Insufficient information. Origin request header needed.",
                ),
                path,
                _Body(self, int(self.headers.get("Content-Length") or 0)),
            )
            return
        if self._allowed_origin() is None or method not in CORS_METHODS:
            self._refuse(access_denied(_CORS_REFUSED), path, _Body(self, 0))
            return
        self.send_response(200)
        self._cors_headers()
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested:
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _is_form(content_type: str) -> bool:
    return _parse_content_type(content_type)[0] == "multipart/form-data"


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Type"] = value
    params = {str(k).lower(): str(v) for k, v in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


class S3Front(BackgroundHTTPServer):
    """The enforcing front on `host:port`, passing accepted requests to `upstream_url` (moto)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        upstream_url: str,
        region: str,
        credentials: Mapping[str, str],
        cors_origins: Sequence[str] = ("*",),
        now: Callable[[], datetime] | None = None,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        """`credentials` as in `devstack.aws.LOCAL_CREDENTIALS` (AWS_ACCESS_KEY_ID ...);
        `now` is the clock that expiries are checked against (tests move it);
        `client_timeout_s` how long a client may stay silent."""
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http" or upstream.hostname is None or upstream.port is None:
            raise ValueError(f"the S3 front needs an http://host:port upstream, not {upstream_url!r}")
        self.upstream_host: str = upstream.hostname
        self.upstream_port: int = upstream.port
        self.signatures = Signatures(
            credentials["AWS_ACCESS_KEY_ID"],
            credentials["AWS_SECRET_ACCESS_KEY"],
            credentials.get("AWS_SESSION_TOKEN"),
            region,
        )
        self.cors_origins = tuple(cors_origins)
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        handler = type("S3FrontHandler", (_FrontHandler,), {"front": self, "timeout": client_timeout_s})
        super().__init__(host, port, handler, name="s3-front")
