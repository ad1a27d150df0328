"""Signed CDN URLs for private media: CloudFront signed URLs.

Media stays in a private bucket; CloudFront (locally, the stand-in in
`devstack/cdn.py`) serves it only to URLs signed with the stage's private
key. The key lives in SSM Parameter Store as a SecureString and is read
once per process, on the first URL asked for.

One object (an MP4, a thumbnail) gets a canned-policy URL. An HLS stream
gets one custom policy whose Resource ends in a wildcard, so the same
Policy, Signature and Key-Pair-Id open every playlist and segment under the
run's hls/ prefix: hls.js adds them to each request as a query, native HLS
receives them as CloudFront's signed cookies.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.domain import ServiceUnavailable

logger = logging.getLogger(__name__)

# URLs stay the same within this window, so browsers and the CDN can cache
# what they point at; each is valid for at least the configured TTL.
STABLE_WINDOW_S = 3600


class SignedCdnUrls:
    """MediaUrls that hand out CloudFront signed URLs, valid for at least `ttl_s`."""

    def __init__(
        self,
        base_url: str,
        key_pair_id: str,
        private_key_pem: Callable[[], bytes],
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ):
        self._base_url = base_url.rstrip("/")
        self._key_pair_id = key_pair_id
        self._private_key_pem = private_key_pem
        self._ttl_s = ttl_s
        self._clock = clock

    def url_for(self, key: str) -> str:
        url = f"{self._base_url}/{quote(key)}"
        signed: str = self._signer.generate_presigned_url(url, date_less_than=self._expiry())
        return signed

    def stream_url_for(self, master_key: str, prefix: str) -> str:
        """The master playlist's URL signed with a CUSTOM policy whose Resource is
        f"{base}/{quote(prefix)}*": one signature (Policy, Signature, Key-Pair-Id query)
        valid for every object under the run's hls/ prefix, stable within the same
        hour window as url_for."""
        # A prefix without its closing slash would also open its siblings
        # ("…/run1*" matches "…/run10/…"); a master outside it would be refused.
        if not prefix.endswith("/"):
            raise ValueError(f"a stream prefix ends with '/': {prefix!r}")
        if not master_key.startswith(prefix) or master_key == prefix:
            raise ValueError(f"the master playlist {master_key!r} is not under {prefix!r}")
        # quote() escapes '*' and '?', so a key can never widen the wildcard.
        policy = self._signer.build_policy(f"{self._base_url}/{quote(prefix)}*", self._expiry())
        signed: str = self._signer.generate_presigned_url(
            f"{self._base_url}/{quote(master_key)}", policy=policy
        )
        return signed

    def check(self) -> None:
        """Raise unless the signing key can be read and used."""
        self._signer.generate_presigned_url(f"{self._base_url}/health", date_less_than=self._expiry())

    def _expiry(self) -> datetime.datetime:
        # Rounded up to the window so the same object gets the same URL for a while.
        window = min(STABLE_WINDOW_S, self._ttl_s)
        expires = math.ceil((self._clock() + self._ttl_s) / window) * window
        return datetime.datetime.fromtimestamp(expires, tz=datetime.UTC)

    @cached_property
    def _signer(self) -> CloudFrontSigner:
        try:
            key = serialization.load_pem_private_key(self._private_key_pem(), password=None)
        except (ClientError, ValueError, TypeError) as error:
            # Misconfiguration, not the caller's fault: logged, and a 503 for the client.
            logger.error("cannot load the CDN signing key: %s", error)
            raise ServiceUnavailable("Media links cannot be made right now; try again later.") from error
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ServiceUnavailable("Media links cannot be made right now; try again later.")

        def sign(message: bytes) -> bytes:
            # CloudFront's signed URLs use RSA-SHA1 with PKCS#1 v1.5 padding.
            return key.sign(message, padding.PKCS1v15(), hashes.SHA1())

        return CloudFrontSigner(self._key_pair_id, sign)


def ssm_secret(ssm: Any, name: str) -> Callable[[], bytes]:
    """A reader of the SecureString parameter `name`, for a key read on first use."""

    def read() -> bytes:
        value: str = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        return value.encode()

    return read
