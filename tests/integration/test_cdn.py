"""The CDN stand-in and the front-end build: what a browser gets, with which caching headers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
import requests

from chalicelib.adapters.cdn import SignedCdnUrls
from chalicelib.settings import Settings
from deploy.executor import new_signing_key
from deploy.frontend import IMMUTABLE, REVALIDATE, build_site, frontend_config
from devstack.cdn import CdnServer, SignedUrlVerifier
from devstack.client import free_port

KEY_PAIR_ID = "K2TESTKEY"
VIDEO_BYTES = bytes(range(256)) * 400  # 100 KiB
MEDIA_KEY = "media/user-1/01J0000000000000000000000/720p.mp4"


@pytest.fixture(scope="module")
def signing_key() -> bytes:
    return new_signing_key()[0].encode()


@pytest.fixture
def frontend(tmp_path: Path) -> Path:
    source = tmp_path / "frontend"
    (source / "assets" / "js").mkdir(parents=True)
    (source / "index.html").write_text(
        '<link rel="stylesheet" href="assets/app.css"><script type="module" src="assets/js/main.js"></script>'
    )
    (source / "assets" / "app.css").write_text("body { color: black }")
    (source / "assets" / "js" / "main.js").write_text('import "./api.js";')
    (source / "assets" / "js" / "api.js").write_text("export const api = 1;")
    return source


@pytest.fixture
def cdn(settings: Settings, aws: Any, signing_key: bytes, frontend: Path, tmp_path: Path) -> Iterator[str]:
    aws.s3.put_object(
        Bucket=settings.media_bucket,
        Key=MEDIA_KEY,
        Body=VIDEO_BYTES,
        ContentType="video/mp4",
        CacheControl="max-age=31536000, immutable",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = CdnServer(
        "127.0.0.1",
        port,
        s3=aws.s3,
        media_bucket=settings.media_bucket,
        verifier=SignedUrlVerifier(signing_key, KEY_PAIR_ID, base),
    )
    config = frontend_config(
        "http://127.0.0.1:8000",
        "test",
        needs_confirmation=False,
        max_upload_bytes=1000,
        allowed_content_types=["video/mp4"],
    )
    server.publish(build_site(config, tmp_path / "site", frontend))
    server.start()
    yield base
    server.stop()


def signed(base: str, key: str, signing_key: bytes, ttl_s: int = 600, clock: Any = None) -> str:
    urls = SignedCdnUrls(base, KEY_PAIR_ID, lambda: signing_key, ttl_s, **({"clock": clock} if clock else {}))
    return urls.url_for(key)


def test_the_build_names_assets_by_content_and_writes_the_config(frontend: Path, tmp_path: Path) -> None:
    config = {"apiUrl": "https://api.example.com"}
    built = build_site(config, tmp_path / "one", frontend)
    files = {f.key: f for f in built}
    # Uploaded in this order, the HTML never names an asset not there yet.
    assert [f.key for f in built][-2:] == ["config.json", "index.html"]

    html = files["index.html"].path.read_text()
    (css,) = [key for key in files if key.endswith("app.css")]
    assert f'href="/{css}"' in html and css.startswith("assets/") and css.count("/") == 2
    assert files["index.html"].cache_control == files["config.json"].cache_control == REVALIDATE
    assert files[css].cache_control == IMMUTABLE and files[css].content_type.startswith("text/css")
    assert files["config.json"].path.read_text().count("https://api.example.com") == 1

    # A changed asset is a new URL; the same sources build the same one.
    again = {f.key for f in build_site(config, tmp_path / "two", frontend)}
    assert again == files.keys()
    (frontend / "assets" / "app.css").write_text("body { color: navy }")
    changed = {f.key for f in build_site(config, tmp_path / "three", frontend)}
    assert css not in changed and len(changed) == len(files)


def test_the_html_and_config_are_revalidated_and_assets_cached_for_good(cdn: str) -> None:
    index = requests.get(f"{cdn}/", timeout=5)
    assert index.status_code == 200 and index.headers["Cache-Control"] == "no-cache"
    assert index.headers["Content-Type"].startswith("text/html")
    revalidated = requests.get(f"{cdn}/", headers={"If-None-Match": index.headers["ETag"]}, timeout=5)
    assert revalidated.status_code == 304

    config = requests.get(f"{cdn}/config.json", timeout=5)
    assert config.json()["apiUrl"] == "http://127.0.0.1:8000"
    assert config.headers["Cache-Control"] == "no-cache"

    script = index.text.split('src="')[1].split('"')[0]
    module = requests.get(f"{cdn}{script}", timeout=5)
    assert module.status_code == 200 and "immutable" in module.headers["Cache-Control"]
    assert module.headers["Content-Type"].startswith("text/javascript")
    # Its relative import resolves next to it, under the same version.
    assert requests.get(f"{cdn}{script.replace('main.js', 'api.js')}", timeout=5).status_code == 200
    assert requests.get(f"{cdn}/assets/nothing.js", timeout=5).status_code == 404


def test_media_is_served_only_for_a_valid_signed_url(cdn: str, signing_key: bytes) -> None:
    url = signed(cdn, MEDIA_KEY, signing_key)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200 and response.content == VIDEO_BYTES
    assert response.headers["Content-Type"] == "video/mp4"
    assert "immutable" in response.headers["Cache-Control"]

    path, query = url.split("?")
    other = MEDIA_KEY.replace("user-1", "user-2")
    assert requests.get(path, timeout=5).status_code == 403
    assert requests.get(f"{cdn}/{other}?{query}", timeout=5).status_code == 403  # signed for another key
    expired = signed(cdn, MEDIA_KEY, signing_key, ttl_s=60, clock=lambda: 1_000_000_000.0)
    assert requests.get(expired, timeout=5).status_code == 403
    forged = signed(cdn, MEDIA_KEY, new_signing_key()[0].encode())
    assert requests.get(forged, timeout=5).status_code == 403


def test_media_supports_byte_ranges_so_a_video_can_seek(cdn: str, signing_key: bytes) -> None:
    url = signed(cdn, MEDIA_KEY, signing_key)
    response = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert response.status_code == 206
    assert response.content == VIDEO_BYTES[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(VIDEO_BYTES)}"


def test_a_missing_media_object_is_404(cdn: str, signing_key: bytes) -> None:
    missing = signed(cdn, MEDIA_KEY.replace("720p", "1080p"), signing_key)
    assert requests.get(missing, timeout=5).status_code == 404


def test_signed_urls_are_stable_for_a_while_so_caches_work(signing_key: bytes) -> None:
    base = "https://cdn.example.com"
    first = signed(base, MEDIA_KEY, signing_key, ttl_s=6 * 3600, clock=lambda: 1_700_000_000.0)
    later = signed(base, MEDIA_KEY, signing_key, ttl_s=6 * 3600, clock=lambda: 1_700_000_100.0)
    assert first == later
    expires = int(parse_qs(urlsplit(first).query)["Expires"][0])
    assert 6 * 3600 <= expires - 1_700_000_000 <= 7 * 3600


def test_tampered_or_malformed_signed_urls_are_refused_not_dropped(cdn: str, signing_key: bytes) -> None:
    url = signed(cdn, MEDIA_KEY, signing_key)
    path, query = url.split("?")
    params = dict(parse_qsl(query))
    far_future = urlencode({**params, "Expires": "9" * 30})
    garbled = urlencode({**params, "Signature": "%%%" + params["Signature"]})
    assert requests.get(f"{path}?{far_future}", timeout=5).status_code == 403
    assert requests.get(f"{path}?{garbled}", timeout=5).status_code == 403
    # Another query parameter is part of what was signed, as on CloudFront.
    assert requests.get(f"{url}&download=1", timeout=5).status_code == 403
    signer = SignedCdnUrls(cdn, KEY_PAIR_ID, lambda: signing_key, 600)._signer
    expires = datetime.now(tz=UTC) + timedelta(minutes=5)
    for parameters in ("download=1", "name=a%20b&x=%2F"):
        accepted = signer.generate_presigned_url(f"{cdn}/{MEDIA_KEY}?{parameters}", date_less_than=expires)
        assert requests.get(accepted, timeout=5).status_code == 200


def test_revalidation_and_bad_ranges_answer_as_http_says(cdn: str, signing_key: bytes) -> None:
    url = signed(cdn, MEDIA_KEY, signing_key)
    etag = requests.get(url, timeout=5).headers["ETag"]
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=5)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag and "immutable" in again.headers["Cache-Control"]

    index = requests.get(f"{cdn}/", timeout=5).headers["ETag"]
    for header in (f"W/{index}", f'"other", {index}', "*"):
        assert requests.get(f"{cdn}/", headers={"If-None-Match": header}, timeout=5).status_code == 304

    beyond = requests.get(url, headers={"Range": f"bytes={len(VIDEO_BYTES) + 10}-"}, timeout=5)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(VIDEO_BYTES)}"
