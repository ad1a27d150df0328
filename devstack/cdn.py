"""The CDN stand-in: what CloudFront does for Vidline, on 127.0.0.1.

    GET /, /index.html, /config.json   the built front end, revalidated on every load
    GET /assets/<hash>/...             its assets, cached for good (their names change with them)
    GET /media/<key>?Expires&Signature&Key-Pair-Id
                                       a private media object, for a valid signed URL only

Like the CloudFront distribution in `infra/`, media comes from the private
media bucket and only through URLs signed with the stage's key (canned
policy, RSA-SHA1); anything else is 403. Byte ranges are passed to S3 so
the browser's `<video>` can seek. ETags let the browser revalidate the HTML
and config with a 304.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
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
_SIGNING_PARAMS = frozenset({"Expires", "Signature", "Key-Pair-Id"})
_CHUNK = 256 * 1024
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True)
class _Page:
    body: bytes
    content_type: str
    cache_control: str
    etag: str


class SignedUrlVerifier:
    """Checks CloudFront canned-policy signed URLs, as CloudFront does before serving."""

    def __init__(self, private_key_pem: bytes, key_pair_id: str, base_url: str, clock: Any = time.time):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the CDN signing key must be an RSA key")
        self._public_key = key.public_key()
        self._key_pair_id = key_pair_id
        self._base_url = base_url.rstrip("/")
        self._clock = clock

    def problem(self, path: str, query: str) -> str | None:
        """Why the signed URL for `path` + `query` is refused, or None if it is good."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        if not params.keys() >= _SIGNING_PARAMS:
            return "Missing Key-Pair-Id query parameter or cookie value"
        if params["Key-Pair-Id"] != self._key_pair_id:
            return "Unknown Key"
        try:
            expires = datetime.fromtimestamp(int(params["Expires"]), tz=UTC)
            encoded = params["Signature"].translate(str.maketrans("-_~", "+=/"))
            signature = base64.b64decode(encoded, validate=True)
        except (ValueError, OverflowError, OSError):
            return "Invalid signature"
        if expires.timestamp() <= self._clock():
            return "Access denied: the URL has expired"
        # The signed resource is the URL with any other query parameters, as sent.
        others = "&".join(p for p in query.split("&") if p.split("=", 1)[0] not in _SIGNING_PARAMS)
        resource = f"{self._base_url}{path}" + (f"?{others}" if others else "")
        policy = CloudFrontSigner(self._key_pair_id, _no_signer).build_policy(resource, expires)
        try:
            self._public_key.verify(signature, policy.encode(), padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            return "Access denied: the signature does not match"
        return None


class CdnServer(BackgroundHTTPServer):
    """The stand-in's HTTP server, in a background thread."""

    def __init__(self, host: str, port: int, *, s3: Any, media_bucket: str, verifier: SignedUrlVerifier):
        self.s3 = s3
        self.media_bucket = media_bucket
        self.verifier = verifier
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        cdn = self

        class Handler(_CdnHandler):
            server_cdn = cdn

        return Handler


class _CdnHandler(BaseHTTPRequestHandler):
    server_cdn: CdnServer
    protocol_version = "HTTP/1.1"
    _headers_sent = False

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def end_headers(self) -> None:
        self._headers_sent = True
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("cdn: " + format, *args)

    def _serve(self, *, with_body: bool) -> None:
        self._headers_sent = False
        url = urlsplit(self.path)
        try:
            if url.path.startswith(MEDIA_PREFIX):
                self._serve_media(url.path, url.query, with_body=with_body)
            else:
                self._serve_site(url.path, with_body=with_body)
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

    def _serve_media(self, path: str, query: str, *, with_body: bool) -> None:
        cdn = self.server_cdn
        problem = cdn.verifier.problem(path, query)
        if problem is not None:
            self._send_text(HTTPStatus.FORBIDDEN, problem, with_body=with_body)
            return
        request: dict[str, Any] = {"Bucket": cdn.media_bucket, "Key": unquote(path).lstrip("/")}
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
        """Send the status line and the headers that have a value."""
        self.send_response(status)
        for name, value in headers.items():
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
