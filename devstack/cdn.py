"""The CDN stand-in: what CloudFront does for Vidline, on 127.0.0.1.

    GET /, /index.html, /config.json   the built front end, revalidated on every load
    GET /assets/<hash>/...             its assets, cached for good (their names change with them)
    GET /media/<key>                   a private media object, for a valid signature only
    OPTIONS /media/<key>               a CORS preflight, for a signed URL from an allowed origin

Like the CloudFront distribution in `infra/`, media comes from the private
media bucket and only to requests signed with the stage's key (RSA-SHA1),
checked as CloudFront checks them:

- a canned policy (`Expires`, `Signature`, `Key-Pair-Id`), rebuilt from the
  URL itself, so it opens that one URL;
- a custom policy (`Policy`, `Signature`, `Key-Pair-Id`): the signature is
  over the policy's bytes; its one statement's Resource may hold `*` and `?`
  wildcards and is matched against the full URL without the signing
  parameters; DateLessThan is required, DateGreaterThan and IpAddress are
  optional;
- the same values from the query string or, when the query has none, from
  the cookies `CloudFront-Policy` (or `CloudFront-Expires`),
  `CloudFront-Signature` and `CloudFront-Key-Pair-Id` (what native HLS sends,
  as it cannot add a query to the URIs in a playlist).

Anything else is 403. The path is normalised first (RFC 3986 dot segments,
as CloudFront does), so `/media/../` never reaches a media key, and a key
that would still climb out (`..` behind an encoded slash) is refused. Byte
ranges are passed to S3 so a `<video>` can seek; the object's Content-Type
and Cache-Control are relayed (playlists under processing say no-cache).
Media answers CORS for the configured front-end origins, so hls.js on
another origin can read it. ETags let the browser revalidate the HTML and
config with a 304.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import string
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.exceptions import ClientError
from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from deploy.frontend import SiteFile
from devstack.http_server import BackgroundHTTPServer

log = logging.getLogger(__name__)

MEDIA_PREFIX = "/media/"
_SIGNING_PARAMS = frozenset({"Expires", "Policy", "Signature", "Key-Pair-Id"})
_COOKIE_PREFIX = "CloudFront-"
_CONDITIONS = frozenset({"DateLessThan", "DateGreaterThan", "IpAddress"})
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# What a player may ask for and read across origins.
_CORS_ALLOW_METHODS = "GET, HEAD"
_CORS_ALLOW_HEADERS = "Range"
_CORS_EXPOSE_HEADERS = "Content-Length, Content-Range"
_CORS_MAX_AGE_S = "600"
_CHUNK = 256 * 1024
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True)
class _Page:
    body: bytes
    content_type: str
    cache_control: str
    etag: str


class SignedUrlVerifier:
    """Checks CloudFront signed URLs and cookies, canned or custom, as CloudFront does before serving."""

    def __init__(self, private_key_pem: bytes, key_pair_id: str, base_url: str, clock: Any = time.time):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the CDN signing key must be an RSA key")
        self._public_key = key.public_key()
        self._key_pair_id = key_pair_id
        self._base_url = base_url.rstrip("/")
        self._clock = clock

    def problem(
        self,
        path: str,
        query: str,
        *,
        cookies: Mapping[str, str] | None = None,
        client_ip: str = "127.0.0.1",
    ) -> str | None:
        """Why a request for `path` + `query` (with these cookies, from this address) is refused, or None."""
        pairs = [name for name, _ in parse_qsl(query, keep_blank_values=True) if name in _SIGNING_PARAMS]
        if pairs:
            # A signed URL wins over signed cookies. What was signed is the
            # URL with any other query parameters, as sent.
            if len(pairs) != len(set(pairs)):
                return "Access denied: a signing parameter is repeated"
            signed = {k: v for k, v in parse_qsl(query, keep_blank_values=True) if k in _SIGNING_PARAMS}
            others = "&".join(p for p in query.split("&") if p.split("=", 1)[0] not in _SIGNING_PARAMS)
            url = f"{self._base_url}{path}" + (f"?{others}" if others else "")
        else:
            signed = {
                name.removeprefix(_COOKIE_PREFIX): value
                for name, value in (cookies or {}).items()
                if name.startswith(_COOKIE_PREFIX) and name.removeprefix(_COOKIE_PREFIX) in _SIGNING_PARAMS
            }
            url = f"{self._base_url}{path}" + (f"?{query}" if query else "")
        if "Key-Pair-Id" not in signed:
            return "Missing Key-Pair-Id query parameter or cookie value"
        if "Signature" not in signed or ("Policy" in signed) == ("Expires" in signed):
            return "Access denied: a signature needs either Expires (canned) or Policy (custom)"
        if signed["Key-Pair-Id"] != self._key_pair_id:
            return "Unknown Key"
        try:
            signature = _cloudfront_b64decode(signed["Signature"])
        except ValueError:
            return "Invalid signature"
        if "Expires" in signed:
            return self._canned_problem(url, signed["Expires"], signature)
        return self._custom_problem(url, signed["Policy"], signature, client_ip)

    def _canned_problem(self, url: str, expires_value: str, signature: bytes) -> str | None:
        try:
            expires = datetime.fromtimestamp(int(expires_value), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return "Invalid signature"
        if expires.timestamp() <= self._clock():
            return "Access denied: the URL has expired"
        # A canned policy is not sent: it is rebuilt from the URL, so it opens only that URL.
        policy = CloudFrontSigner(self._key_pair_id, _no_signer).build_policy(url, expires)
        if not self._signed(policy.encode(), signature):
            return "Access denied: the signature does not match"
        return None

    def _custom_problem(self, url: str, encoded_policy: str, signature: bytes, client_ip: str) -> str | None:
        try:
            policy = _cloudfront_b64decode(encoded_policy)
        except ValueError:
            return "Malformed Policy"
        # The signature covers the policy's exact bytes; only then is it read.
        if not self._signed(policy, signature):
            return "Access denied: the signature does not match"
        statement = _statement(policy)
        if statement is None:
            return "Malformed Policy"
        resource, conditions = statement
        if not _wildcard_matches(resource, url):
            return "Access denied: the policy's Resource does not cover this URL"
        now = self._clock()
        if conditions["DateLessThan"] <= now:
            return "Access denied: the policy has expired"
        not_before = conditions.get("DateGreaterThan")
        if not_before is not None and now < not_before:
            return "Access denied: the policy is not valid yet"
        network = conditions.get("IpAddress")
        if network is not None and not _address_in(client_ip, str(network)):
            return "Access denied: the policy does not allow this address"
        return None

    def _signed(self, message: bytes, signature: bytes) -> bool:
        try:
            self._public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            return False
        return True


def _cloudfront_b64decode(value: str) -> bytes:
    """CloudFront's URL-safe base64 ('+=/' sent as '-_~'); ValueError if it is not that."""
    return base64.b64decode(value.translate(str.maketrans("-_~", "+=/")), validate=True)


def _statement(policy: bytes) -> tuple[str, dict[str, Any]] | None:
    """The Resource and conditions of a custom policy's one statement, or None if malformed.

    Conditions map DateLessThan/DateGreaterThan to epoch seconds and IpAddress to a CIDR.
    """
    try:
        document = json.loads(policy)
    except (ValueError, UnicodeDecodeError):
        return None
    statements = document.get("Statement") if isinstance(document, dict) else None
    if not isinstance(statements, list) or len(statements) != 1 or not isinstance(statements[0], dict):
        return None
    statement = statements[0]
    # Without a Resource a policy covers every URL of the distribution (CloudFront's rule).
    resource = statement.get("Resource", "*")
    condition = statement.get("Condition")
    if not isinstance(resource, str) or not isinstance(condition, dict):
        return None
    if not condition.keys() <= _CONDITIONS or "DateLessThan" not in condition:
        return None
    conditions: dict[str, Any] = {}
    for name in ("DateLessThan", "DateGreaterThan"):
        if name in condition:
            moment = condition[name]
            epoch = moment.get("AWS:EpochTime") if isinstance(moment, dict) else None
            if not isinstance(epoch, int) or isinstance(epoch, bool) or len(moment) != 1:
                return None
            conditions[name] = epoch
    if "IpAddress" in condition:
        address = condition["IpAddress"]
        source = address.get("AWS:SourceIp") if isinstance(address, dict) else None
        if not isinstance(source, str) or len(address) != 1:
            return None
        conditions["IpAddress"] = source
    return resource, conditions


def _wildcard_matches(resource: str, url: str) -> bool:
    """CloudFront's Resource match: `*` is any run of characters (none included), `?` exactly one."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in resource)
    return re.fullmatch(pattern, url, flags=re.DOTALL) is not None


def _address_in(client_ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(client_ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def normalize_path(path: str) -> str:
    """The path as CloudFront reads it (RFC 3986): unreserved characters decoded, dot segments removed."""

    def decode_unreserved(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0)

    return _remove_dot_segments(_PERCENT.sub(decode_unreserved, path))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    output: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith(("./", "/./")):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if output:
                output.pop()
        elif rest == "/..":
            rest = "/"
            if output:
                output.pop()
        elif rest in {".", ".."}:
            rest = ""
        else:
            start = 1 if rest.startswith("/") else 0
            end = rest.find("/", start)
            end = len(rest) if end < 0 else end
            output.append(rest[:end])
            rest = rest[end:]
    return "".join(output)


def _media_key(path: str) -> str | None:
    """The media bucket key of a normalised /media/ path, or None if it would climb out of its folder."""
    key = unquote(path).lstrip("/")
    # Only an encoded slash ("..%2F") can still bring dot segments here; S3
    # would take them literally, but no key of ours has them.
    if any(segment in {".", ".."} for segment in key.split("/")):
        return None
    return key


class CdnServer(BackgroundHTTPServer):
    """The stand-in's HTTP server, in a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        s3: Any,
        media_bucket: str,
        verifier: SignedUrlVerifier,
        cors_origins: Sequence[str] = (),
    ):
        self.s3 = s3
        self.media_bucket = media_bucket
        self.verifier = verifier
        # Front-end origins whose scripts may read media ("*": any), like the
        # response headers policy on CloudFront's media behaviour.
        self.cors_origins = frozenset(cors_origins)
        self._site: dict[str, _Page] = {}
        self._lock = threading.Lock()
        super().__init__(host, port, self._handler_class(), "cdn")

    def publish(self, files: Iterable[SiteFile]) -> None:
        """Serve these files from now on, in place of the previous build (like a deploy + invalidation)."""
        site: dict[str, _Page] = {}
        for file in files:
            body = file.path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            site[file.key] = _Page(body, file.content_type, file.cache_control, etag)
        with self._lock:
            self._site = site

    def page(self, key: str) -> _Page | None:
        with self._lock:
            return self._site.get(key)

    def allowed_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin for a request from `origin`, or None if it may not read media."""
        if origin is None:
            return None
        if "*" in self.cors_origins:
            return "*"
        return origin if origin in self.cors_origins else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        cdn = self

        class Handler(_CdnHandler):
            server_cdn = cdn

        return Handler


class _CdnHandler(BaseHTTPRequestHandler):
    server_cdn: CdnServer
    protocol_version = "HTTP/1.1"
    _headers_sent = False
    _cors: Mapping[str, str] = {}

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def do_OPTIONS(self) -> None:
        """A CORS preflight. Media only; like every request to the media behaviour, it must be signed."""
        self._headers_sent = False
        self._cors = {}
        url = urlsplit(self.path)
        path = normalize_path(url.path)
        if not path.startswith(MEDIA_PREFIX):
            self._send_text(HTTPStatus.FORBIDDEN, "This method is not allowed for this path", with_body=True)
            return
        problem = self._media_problem(path, url.query)
        allowed = self.server_cdn.allowed_origin(self.headers.get("Origin"))
        method = self.headers.get("Access-Control-Request-Method", "")
        if problem is None and (allowed is None or method not in {"GET", "HEAD"}):
            problem = "CORS: this origin or method is not allowed"
        if problem is not None:
            self._send_text(HTTPStatus.FORBIDDEN, problem, with_body=True)
            return
        assert allowed is not None
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": _CORS_ALLOW_METHODS,
            "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": _CORS_MAX_AGE_S,
            "Vary": "Origin",
        }
        self._send(HTTPStatus.NO_CONTENT, headers, b"", with_body=False)

    def end_headers(self) -> None:
        self._headers_sent = True
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("cdn: " + format, *args)

    def _serve(self, *, with_body: bool) -> None:
        self._headers_sent = False
        self._cors = {}
        url = urlsplit(self.path)
        path = normalize_path(url.path)  # before choosing media or site, as CloudFront does
        try:
            if path.startswith(MEDIA_PREFIX):
                self._cors = self._cors_headers()
                self._serve_media(path, url.query, with_body=with_body)
            else:
                self._serve_site(path, with_body=with_body)
        except _DISCONNECTS:
            pass  # the browser moved on (a <video> does this all the time)
        except Exception:  # any other failure is the origin's, as CloudFront would say
            log.exception("cdn: failed to serve %s", url.path)
            if self._headers_sent:
                self.close_connection = True  # a response is under way: cut it off, don't garble it
            else:
                self._send_text(HTTPStatus.BAD_GATEWAY, "The origin failed", with_body=with_body)

    def _serve_site(self, path: str, *, with_body: bool) -> None:
        key = unquote(path).lstrip("/") or "index.html"
        page = self.server_cdn.page(key)
        if page is None:
            self._send_text(HTTPStatus.NOT_FOUND, "Not found", with_body=with_body)
            return
        headers = {"Content-Type": page.content_type, "Cache-Control": page.cache_control, "ETag": page.etag}
        if _matches(self.headers.get("If-None-Match"), page.etag):
            self._start(HTTPStatus.NOT_MODIFIED, headers)  # no Content-Length: it would be the page's
            return
        self._send(HTTPStatus.OK, headers, page.body, with_body=with_body)

    def _cors_headers(self) -> dict[str, str]:
        allowed = self.server_cdn.allowed_origin(self.headers.get("Origin"))
        if allowed is None:
            return {}
        return {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Expose-Headers": _CORS_EXPOSE_HEADERS,
            "Vary": "Origin",
        }

    def _cookies(self) -> dict[str, str]:
        """The request's cookies; of a repeated name the first (browsers send the longest path first)."""
        cookies: dict[str, str] = {}
        for header in self.headers.get_all("Cookie") or []:
            for pair in header.split(";"):
                name, _, value = pair.strip().partition("=")
                if name and name not in cookies:
                    cookies[name] = value.strip().strip('"')
        return cookies

    def _media_problem(self, path: str, query: str) -> str | None:
        if _media_key(path) is None:
            return "Access denied: not a media key"
        return self.server_cdn.verifier.problem(
            path, query, cookies=self._cookies(), client_ip=self.client_address[0]
        )

    def _serve_media(self, path: str, query: str, *, with_body: bool) -> None:
        cdn = self.server_cdn
        problem = self._media_problem(path, query)
        key = _media_key(path)
        if problem is not None or key is None:
            self._send_text(HTTPStatus.FORBIDDEN, problem or "Access denied", with_body=with_body)
            return
        request: dict[str, Any] = {"Bucket": cdn.media_bucket, "Key": key}
        if self.headers.get("Range"):
            request["Range"] = self.headers["Range"]
        if self.headers.get("If-None-Match"):
            request["IfNoneMatch"] = self.headers["If-None-Match"]
        try:
            obj = cdn.s3.get_object(**request)
        except ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code", ""))
            if code in {"NoSuchKey", "404"}:
                self._send_text(HTTPStatus.NOT_FOUND, "Not found", with_body=with_body)
            elif code in {"304", "NotModified"}:
                head = cdn.s3.head_object(Bucket=request["Bucket"], Key=request["Key"])
                self._start(
                    HTTPStatus.NOT_MODIFIED, {"ETag": head["ETag"], "Cache-Control": head.get("CacheControl")}
                )
            elif code == "InvalidRange":
                size = details.get("ActualObjectSize", "*")
                range_headers = {"Content-Range": f"bytes */{size}"}
                self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, range_headers, b"", with_body=False)
            else:
                log.warning("cdn: S3 error for %s: %s", path, error)
                self._send_text(HTTPStatus.BAD_GATEWAY, "The origin failed", with_body=with_body)
            return
        headers = {
            "Content-Type": obj.get("ContentType", "application/octet-stream"),
            "Content-Length": str(obj["ContentLength"]),
            "Accept-Ranges": "bytes",
            "ETag": obj.get("ETag", ""),
        }
        if obj.get("CacheControl"):  # the origin's, relayed as CloudFront does
            headers["Cache-Control"] = obj["CacheControl"]
        status = HTTPStatus.OK
        if obj.get("ContentRange"):
            status = HTTPStatus.PARTIAL_CONTENT
            headers["Content-Range"] = obj["ContentRange"]
        self._start(status, headers)
        body = obj["Body"]
        try:
            if with_body:
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    self.wfile.write(chunk)
        finally:
            body.close()

    def _start(self, status: HTTPStatus, headers: Mapping[str, str | None]) -> None:
        """Send the status line and the headers that have a value (and CORS's, for media)."""
        self.send_response(status)
        for name, value in {**self._cors, **headers}.items():
            if value is not None:
                self.send_header(name, value)
        self.end_headers()

    def _send_text(self, status: HTTPStatus, message: str, *, with_body: bool) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
        self._send(status, headers, (message + "\n").encode(), with_body=with_body)

    def _send(self, status: HTTPStatus, headers: dict[str, str], body: bytes, *, with_body: bool) -> None:
        self._start(status, {**headers, "Content-Length": str(len(body))})
        if with_body:
            self.wfile.write(body)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header (a list, maybe weak tags, or *) names `etag`."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _no_signer(message: bytes) -> bytes:
    raise AssertionError("only build_policy is used here")
