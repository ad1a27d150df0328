"""Stream URLs: one custom-policy signature for a whole HLS run, as CloudFront reads it."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.adapters.cdn import SignedCdnUrls
from deploy.executor import new_signing_key

BASE = "https://cdn.example.com"
PREFIX = "media/user-1/01J0000000000000000000000/run-1/hls/"
MASTER = PREFIX + "master.m3u8"
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def private_pem() -> bytes:
    return new_signing_key()[0].encode()


def urls(private_pem: bytes, now: float = NOW, ttl_s: int = 6 * 3600) -> SignedCdnUrls:
    return SignedCdnUrls(BASE, "K2TESTKEY", lambda: private_pem, ttl_s, clock=lambda: now)


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def cloudfront_b64decode(value: str) -> bytes:
    return base64.b64decode(value.translate(str.maketrans("-_~", "+=/")), validate=True)


def policy_of(url: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(cloudfront_b64decode(query(url)["Policy"]))
    return document


def test_the_stream_url_is_the_master_signed_for_everything_under_the_prefix(private_pem: bytes) -> None:
    url = urls(private_pem).stream_url_for(MASTER, PREFIX)

    assert url.split("?")[0] == f"{BASE}/{MASTER}"
    assert set(query(url)) == {"Policy", "Signature", "Key-Pair-Id"}  # custom policy: no Expires
    assert query(url)["Key-Pair-Id"] == "K2TESTKEY"
    (statement,) = policy_of(url)["Statement"]
    assert statement["Resource"] == f"{BASE}/{PREFIX}*"
    assert set(statement["Condition"]) == {"DateLessThan"}


def test_the_signature_is_rsa_sha1_over_the_policy_bytes(private_pem: bytes) -> None:
    url = urls(private_pem).stream_url_for(MASTER, PREFIX)
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)

    policy = cloudfront_b64decode(query(url)["Policy"])
    signature = cloudfront_b64decode(query(url)["Signature"])
    key.public_key().verify(signature, policy, padding.PKCS1v15(), hashes.SHA1())  # raises if not


def test_the_stream_url_expires_like_url_for_and_is_stable_within_the_window(private_pem: bytes) -> None:
    first = urls(private_pem, NOW).stream_url_for(MASTER, PREFIX)
    later = urls(private_pem, NOW + 100).stream_url_for(MASTER, PREFIX)
    next_window = urls(private_pem, NOW + 3600).stream_url_for(MASTER, PREFIX)

    assert first == later  # browsers and the CDN can cache what it points at
    assert next_window != first
    (statement,) = policy_of(first)["Statement"]
    expires = statement["Condition"]["DateLessThan"]["AWS:EpochTime"]
    canned = urls(private_pem, NOW).url_for(MASTER)
    assert expires == int(query(canned)["Expires"])  # the same window as url_for
    assert 6 * 3600 <= expires - NOW <= 7 * 3600 and expires % 3600 == 0


def test_a_short_ttl_rounds_to_its_own_length(private_pem: bytes) -> None:
    url = urls(private_pem, NOW, ttl_s=600).stream_url_for(MASTER, PREFIX)
    (statement,) = policy_of(url)["Statement"]
    expires = statement["Condition"]["DateLessThan"]["AWS:EpochTime"]
    assert 600 <= expires - NOW < 1200 and expires % 600 == 0


@pytest.mark.parametrize(
    ("master", "prefix"),
    [
        (MASTER, PREFIX.rstrip("/")),  # "…/hls*" would also open "…/hls2/…"
        ("media/user-2/01J0000000000000000000000/run-1/hls/master.m3u8", PREFIX),  # outside
        (PREFIX, PREFIX),  # the prefix itself is no playlist
    ],
)
def test_a_prefix_that_would_open_more_or_not_the_master_is_refused(
    private_pem: bytes, master: str, prefix: str
) -> None:
    with pytest.raises(ValueError):
        urls(private_pem).stream_url_for(master, prefix)


def test_wildcard_characters_in_a_key_are_escaped_not_widened(private_pem: bytes) -> None:
    prefix = "media/user-*/v?/hls/"
    url = urls(private_pem).stream_url_for(prefix + "master.m3u8", prefix)
    (statement,) = policy_of(url)["Statement"]
    assert statement["Resource"] == f"{BASE}/media/user-%2A/v%3F/hls/*"
    assert statement["Resource"].count("*") == 1
