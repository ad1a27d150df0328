"""The CDN stand-in and the front-end build: what a browser gets, with which caching headers.

Media access is checked as CloudFront checks it: canned and custom policies,
from the query (hls.js) or from signed cookies (native HLS).
"""

from __future__ import annotations

import base64
import http.client
import json
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
FRONT_END = "http://app.example.test"
UP = "../"  # a front end on another origin than the CDN

# Three HLS runs: this user's, another run of the same video, another user's.
PREFIX = "media/user-1/01J0000000000000000000000/run-1/hls/"
OTHER_RUN = "media/user-1/01J0000000000000000000000/run-2/hls/"
OTHER_USER = "media/user-2/01J1111111111111111111111/run-1/hls/"
PLAYLIST = "application/vnd.apple.mpegurl"
SEGMENT = "video/iso.segment"
SEGMENT_BYTES = bytes(range(256)) * 64  # 16 KiB
HLS_OBJECTS = {
    "master.m3u8": (b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n", PLAYLIST, "no-cache"),
    "720p/index.m3u8": (b'#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\nseg00000.m4s\n', PLAYLIST, "no-cache"),
    "720p/init.mp4": (b"init", "video/mp4", "max-age=31536000, immutable"),
    "720p/seg00000.m4s": (SEGMENT_BYTES, SEGMENT, "max-age=31536000, immutable"),
}


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
    for prefix in (PREFIX, OTHER_RUN, OTHER_USER):
        for name, (body, content_type, cache_control) in HLS_OBJECTS.items():
            aws.s3.put_object(
                Bucket=settings.media_bucket,
                Key=prefix + name,
                Body=body,
                ContentType=content_type,
                CacheControl=cache_control,
            )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = CdnServer(
        "127.0.0.1",
        port,
        s3=aws.s3,
        media_bucket=settings.media_bucket,
        verifier=SignedUrlVerifier(signing_key, KEY_PAIR_ID, base),
        cors_origins=(FRONT_END,),
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


def stream(base: str, prefix: str, signing_key: bytes, ttl_s: int = 600, clock: Any = None) -> str:
    """The API's hls_url for the run under `prefix`."""
    urls = SignedCdnUrls(base, KEY_PAIR_ID, lambda: signing_key, ttl_s, **({"clock": clock} if clock else {}))
    return urls.stream_url_for(prefix + "master.m3u8", prefix)


def custom(base: str, url: str, signing_key: bytes, resource: str, **conditions: Any) -> str:
    """`url` signed by us with a hand-made custom policy (DateLessThan in 5 minutes unless given)."""
    signer = SignedCdnUrls(base, KEY_PAIR_ID, lambda: signing_key, 600)._signer
    expires = conditions.pop("date_less_than", datetime.now(tz=UTC) + timedelta(minutes=5))
    policy = signer.build_policy(resource, expires, **conditions)
    signed_url: str = signer.generate_presigned_url(url, policy=policy)
    return signed_url


def with_query(url: str, base: str, key: str) -> str:
    """What hls.js asks for: `key`, with the master URL's query appended."""
    return f"{base}/{key}?{urlsplit(url).query}"


def as_cookies(url: str) -> dict[str, str]:
    """The signed URL's values as CloudFront's signed cookies (what native HLS sends)."""
    return {
        "Cookie": "; ".join(f"CloudFront-{name}={value}" for name, value in parse_qsl(urlsplit(url).query))
    }


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `target` exactly as written (requests would resolve dot segments itself)."""
    host = urlsplit(base)
    connection = http.client.HTTPConnection(host.hostname or "", host.port, timeout=5)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().translate(str.maketrans("+=/", "-_~"))


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


# ------------------------------------------------------------ HLS streams


def test_a_stream_url_opens_every_playlist_and_segment_of_its_run_hls_js_style(
    cdn: str, signing_key: bytes
) -> None:
    master = stream(cdn, PREFIX, signing_key)
    response = requests.get(master, timeout=5)
    assert response.status_code == 200 and response.content == HLS_OBJECTS["master.m3u8"][0]
    assert response.headers["Content-Type"] == PLAYLIST
    assert response.headers["Cache-Control"] == "no-cache"  # a playlist that still grows

    # hls.js appends the master's query to each URI the playlists name.
    variant = requests.get(with_query(master, cdn, PREFIX + "720p/index.m3u8"), timeout=5)
    assert variant.status_code == 200 and variant.headers["Content-Type"] == PLAYLIST
    segment_url = with_query(master, cdn, PREFIX + "720p/seg00000.m4s")
    segment = requests.get(segment_url, timeout=5)
    assert segment.status_code == 200 and segment.content == SEGMENT_BYTES
    assert segment.headers["Content-Type"] == SEGMENT
    assert "immutable" in segment.headers["Cache-Control"]
    init = requests.get(with_query(master, cdn, PREFIX + "720p/init.mp4"), timeout=5)
    assert init.status_code == 200 and init.headers["Content-Type"] == "video/mp4"

    part = requests.get(segment_url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206 and part.content == SEGMENT_BYTES[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(SEGMENT_BYTES)}"


def test_the_same_values_as_signed_cookies_open_the_run_native_hls_style(
    cdn: str, signing_key: bytes
) -> None:
    cookies = as_cookies(stream(cdn, PREFIX, signing_key))
    for name in ("master.m3u8", "720p/index.m3u8", "720p/seg00000.m4s"):
        response = requests.get(f"{cdn}/{PREFIX}{name}", headers=cookies, timeout=5)
        assert response.status_code == 200, name
        assert response.content == HLS_OBJECTS[name][0]
    part = requests.get(
        f"{cdn}/{PREFIX}720p/seg00000.m4s", headers={**cookies, "Range": "bytes=0-9"}, timeout=5
    )
    assert part.status_code == 206 and part.content == SEGMENT_BYTES[:10]
    # A canned policy as cookies (CloudFront-Expires) opens its one URL, as on CloudFront.
    canned = as_cookies(signed(cdn, MEDIA_KEY, signing_key))
    assert requests.get(f"{cdn}/{MEDIA_KEY}", headers=canned, timeout=5).status_code == 200
    assert requests.get(f"{cdn}/{PREFIX}master.m3u8", headers=canned, timeout=5).status_code == 403


@pytest.mark.parametrize("name", ["master.m3u8", "720p/index.m3u8", "720p/seg00000.m4s"])
def test_unsigned_or_expired_playlists_and_segments_are_refused(
    cdn: str, signing_key: bytes, name: str
) -> None:
    assert requests.get(f"{cdn}/{PREFIX}{name}", timeout=5).status_code == 403

    expired = stream(cdn, PREFIX, signing_key, ttl_s=60, clock=lambda: 1_000_000_000.0)
    assert requests.get(with_query(expired, cdn, PREFIX + name), timeout=5).status_code == 403
    assert requests.get(f"{cdn}/{PREFIX}{name}", headers=as_cookies(expired), timeout=5).status_code == 403


@pytest.mark.parametrize("name", ["master.m3u8", "720p/seg00000.m4s"])
def test_a_tampered_policy_or_signature_is_refused(cdn: str, signing_key: bytes, name: str) -> None:
    params = dict(parse_qsl(urlsplit(stream(cdn, PREFIX, signing_key)).query))
    assert requests.get(f"{cdn}/{PREFIX}{name}?{urlencode(params)}", timeout=5).status_code == 200
    # The policy widened to the whole CDN, the old signature kept.
    policy = json.loads(base64.b64decode(params["Policy"].translate(str.maketrans("-_~", "+=/"))))
    policy["Statement"][0]["Resource"] = f"{cdn}/*"
    widened = {**params, "Policy": b64(json.dumps(policy, separators=(",", ":")).encode())}
    # The signature with one byte changed, or from another key.
    signature = bytearray(base64.b64decode(params["Signature"].translate(str.maketrans("-_~", "+=/"))))
    signature[5] ^= 1
    flipped = {**params, "Signature": b64(bytes(signature))}
    forged = dict(parse_qsl(urlsplit(stream(cdn, PREFIX, new_signing_key()[0].encode())).query))
    garbled = {**params, "Policy": "%%%" + params["Policy"]}
    unknown_key = {**params, "Key-Pair-Id": "K2OTHERKEY"}
    for tampered in (widened, flipped, forged, garbled, unknown_key):
        query = urlencode(tampered)
        assert requests.get(f"{cdn}/{PREFIX}{name}?{query}", timeout=5).status_code == 403, tampered
        cookie = {"Cookie": "; ".join(f"CloudFront-{k}={v}" for k, v in tampered.items())}
        assert requests.get(f"{cdn}/{PREFIX}{name}", headers=cookie, timeout=5).status_code == 403, tampered


@pytest.mark.parametrize("other", [OTHER_USER, OTHER_RUN], ids=["another user", "another run"])
def test_a_stream_signature_opens_only_its_own_runs_prefix(cdn: str, signing_key: bytes, other: str) -> None:
    mine = stream(cdn, PREFIX, signing_key)
    theirs = stream(cdn, other, signing_key)
    for name in ("master.m3u8", "720p/index.m3u8", "720p/seg00000.m4s"):
        assert requests.get(with_query(theirs, cdn, PREFIX + name), timeout=5).status_code == 403
        assert requests.get(with_query(mine, cdn, other + name), timeout=5).status_code == 403
        assert requests.get(f"{cdn}/{PREFIX}{name}", headers=as_cookies(theirs), timeout=5).status_code == 403
    # Nor does it open the video's MP4 beside the run.
    assert requests.get(with_query(mine, cdn, MEDIA_KEY), timeout=5).status_code == 403


def test_a_signed_url_in_the_query_wins_over_signed_cookies(cdn: str, signing_key: bytes) -> None:
    """As on CloudFront: a bad query is not rescued by good cookies."""
    mine = stream(cdn, PREFIX, signing_key)
    theirs = stream(cdn, OTHER_USER, signing_key)
    response = requests.get(
        with_query(theirs, cdn, PREFIX + "master.m3u8"), headers=as_cookies(mine), timeout=5
    )
    assert response.status_code == 403


def test_the_policys_start_date_and_ip_address_are_enforced(cdn: str, signing_key: bytes) -> None:
    url, resource = f"{cdn}/{PREFIX}master.m3u8", f"{cdn}/{PREFIX}*"
    now = datetime.now(tz=UTC)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"date_greater_than": now + timedelta(minutes=1)}, 403),
        ({"date_greater_than": now - timedelta(minutes=1)}, 200),
        ({"ip_address": "192.0.2.0/24"}, 403),
        ({"ip_address": "127.0.0.1"}, 200),
        ({"ip_address": "127.0.0.0/8"}, 200),
        ({"date_less_than": now - timedelta(seconds=1)}, 403),
    ]
    for conditions, status in cases:
        response = requests.get(custom(cdn, url, signing_key, resource, **conditions), timeout=5)
        assert response.status_code == status, conditions


def test_wildcards_match_as_cloudfront_matches_them(cdn: str, signing_key: bytes) -> None:
    url = f"{cdn}/{PREFIX}720p/seg00000.m4s"
    accepted = [f"{cdn}/*", f"{cdn}/media/user-1/*/run-1/hls/*", f"{cdn}/{PREFIX}720p/seg0000?.m4s", url]
    refused = [
        f"{cdn}/{PREFIX}720p/seg0000?",
        f"{cdn}/{PREFIX}720p/seg?.m4s",
        f"{cdn}/media/user-2/*",
        f"{cdn}/",
    ]
    for resource in accepted:
        assert requests.get(custom(cdn, url, signing_key, resource), timeout=5).status_code == 200, resource
    for resource in refused:
        assert requests.get(custom(cdn, url, signing_key, resource), timeout=5).status_code == 403, resource


def test_malformed_custom_policies_are_refused_even_when_signed(cdn: str, signing_key: bytes) -> None:
    signer = SignedCdnUrls(cdn, KEY_PAIR_ID, lambda: signing_key, 600)._signer
    url, later = f"{cdn}/{PREFIX}master.m3u8", int((datetime.now(tz=UTC) + timedelta(minutes=5)).timestamp())
    statement: dict[str, Any] = {
        "Resource": f"{cdn}/{PREFIX}*",
        "Condition": {"DateLessThan": {"AWS:EpochTime": later}},
    }
    good = {"Statement": [statement]}
    assert (
        requests.get(signer.generate_presigned_url(url, policy=json.dumps(good)), timeout=5).status_code
        == 200
    )
    malformed: list[Any] = [
        {"Statement": [{"Resource": statement["Resource"], "Condition": {}}]},  # no DateLessThan
        {"Statement": [{**statement, "Condition": {"DateLessThan": {"AWS:EpochTime": str(later)}}}]},
        {"Statement": [{**statement, "Condition": {**statement["Condition"], "StringLike": {"x": "y"}}}]},
        {"Statement": [statement, statement]},
        {"Statement": []},
        [statement],
        "not json {",
    ]
    for policy in malformed:
        text = policy if isinstance(policy, str) else json.dumps(policy)
        response = requests.get(signer.generate_presigned_url(url, policy=text), timeout=5)
        assert response.status_code == 403, policy
    # Repeated signing parameters are not guessed at.
    query = urlsplit(stream(cdn, PREFIX, signing_key)).query
    assert requests.get(f"{url}?{query}&{query}", timeout=5).status_code == 403


def test_paths_are_normalised_and_never_climb_out_of_a_signed_prefix(cdn: str, signing_key: bytes) -> None:
    query = urlsplit(stream(cdn, PREFIX, signing_key)).query
    theirs = OTHER_USER + "720p/seg00000.m4s"
    assert PREFIX.count("/") == 5  # so five "../" lead from the prefix to the root
    climbs = [
        f"/{PREFIX}{UP * 5}{theirs}",  # resolved: their key, which the policy does not cover
        f"/{PREFIX}%2e%2e/%2E%2E/../../../{theirs}",  # encoded dots are dots
        f"/{PREFIX}{'..%2F' * 5}{theirs}",  # an encoded slash: refused, never passed to S3
        f"/{PREFIX}720p/{'..%2f' * 6}{theirs}",
    ]
    for target in climbs:
        status, _ = raw_get(cdn, f"{target}?{query}")
        assert status == 403, target
    # Dot segments inside the prefix resolve to the object, as on CloudFront.
    status, body = raw_get(cdn, f"/{PREFIX}720p/../720p/./seg00000.m4s?{query}")
    assert (status, body) == (200, SEGMENT_BYTES)
    # Leaving /media/ leaves the media behaviour: it is the public site, not a media object.
    status, body = raw_get(cdn, f"/media/../index.html?{query}")
    assert status == 200 and body.startswith(b"<link")
    assert raw_get(cdn, f"/media/%2E%2e/config.json?{query}")[0] == 200
    assert raw_get(cdn, f"/media/%2e%2e/{theirs}?{query}")[0] == 403  # back into media/, not covered
    # A policy for the whole CDN, signed by us, opens any media, still only once normalised.
    everything = urlsplit(custom(cdn, f"{cdn}/{theirs}", signing_key, f"{cdn}/*")).query
    assert raw_get(cdn, f"/{PREFIX}{UP * 5}{theirs}?{everything}") == (200, SEGMENT_BYTES)
    assert raw_get(cdn, f"/{PREFIX}{'..%2F' * 5}{theirs}?{everything}")[0] == 403


# ------------------------------------------------------------------- CORS


def test_media_answers_cors_for_the_front_end_origin(cdn: str, signing_key: bytes) -> None:
    master = stream(cdn, PREFIX, signing_key)
    segment = with_query(master, cdn, PREFIX + "720p/seg00000.m4s")
    response = requests.get(segment, headers={"Origin": FRONT_END, "Range": "bytes=0-9"}, timeout=5)
    assert response.status_code == 206
    assert response.headers["Access-Control-Allow-Origin"] == FRONT_END
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-length", "content-range"} <= exposed
    assert "Origin" in response.headers["Vary"]
    # A refusal says so to the page too, so hls.js sees 403 rather than a network error.
    refused = requests.get(f"{cdn}/{PREFIX}master.m3u8", headers={"Origin": FRONT_END}, timeout=5)
    assert refused.status_code == 403 and refused.headers["Access-Control-Allow-Origin"] == FRONT_END

    stranger = requests.get(segment, headers={"Origin": "https://elsewhere.example"}, timeout=5)
    assert stranger.status_code == 200 and "Access-Control-Allow-Origin" not in stranger.headers
    assert "Access-Control-Allow-Origin" not in requests.get(f"{cdn}/", headers={"Origin": FRONT_END}).headers


def test_cors_preflights_are_answered_for_signed_media_from_the_front_end(
    cdn: str, signing_key: bytes
) -> None:
    segment = with_query(stream(cdn, PREFIX, signing_key), cdn, PREFIX + "720p/seg00000.m4s")
    preflight = {
        "Origin": FRONT_END,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range",
    }
    response = requests.options(segment, headers=preflight, timeout=5)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert "Range" in response.headers["Access-Control-Allow-Headers"]
    assert set(response.headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
    }
    assert int(response.headers["Access-Control-Max-Age"]) > 0

    unsigned = f"{cdn}/{PREFIX}720p/seg00000.m4s"
    assert requests.options(unsigned, headers=preflight, timeout=5).status_code == 403
    stranger = {**preflight, "Origin": "https://elsewhere.example"}
    assert requests.options(segment, headers=stranger, timeout=5).status_code == 403
    upload = {**preflight, "Access-Control-Request-Method": "PUT"}
    assert requests.options(segment, headers=upload, timeout=5).status_code == 403
    assert requests.options(f"{cdn}/index.html", headers=preflight, timeout=5).status_code == 403


def test_any_origin_may_read_media_when_configured_with_a_wildcard(
    settings: Settings, aws: Any, signing_key: bytes
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    verifier = SignedUrlVerifier(signing_key, KEY_PAIR_ID, base)
    server = CdnServer(
        "127.0.0.1",
        port,
        s3=aws.s3,
        media_bucket=settings.media_bucket,
        verifier=verifier,
        cors_origins=("*",),
    )
    server.start()
    try:
        response = requests.get(
            stream(base, PREFIX, signing_key), headers={"Origin": "https://a.example"}, timeout=5
        )
        assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        server.stop()
