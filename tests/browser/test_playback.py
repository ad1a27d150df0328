"""Playback in the watch view: the HLS ladder through hls.js (or the browser's own HLS), the MP4 otherwise.

The first tests pin down the player against a small ladder made at test time
and served by Playwright under the CDN's `/media/` path, with the API's answer
for the video rewritten, so each case (still processing, ready, a stream that
fails, a browser without Media Source Extensions) is set up exactly. The last
test runs the whole pipeline: a 1080p upload plays while it is still being
encoded.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import APIResponse, Locator, Page, Request, Route, expect
from playwright.sync_api import Error as PlaywrightError

from devstack.client import ApiClient, StackProcess
from tests.browser.conftest import wait_until
from tests.browser.test_web_app import PASSWORD, announcer, button, cards, sign_in
from tests.media_tools import ffmpeg, make_clip

pytestmark = pytest.mark.browser

# The signing query of a stream: what the player must add to every request under its prefix.
# `~`, `-` and `_` are CloudFront's URL-safe base64 and must reach the CDN as they are.
SIGNATURE = {
    "Policy": "eyJTdGF0ZW1lbnQiOltdfQ__",
    "Signature": "c2ln~bmF0-dXJl_",
    "Key-Pair-Id": "K2TESTPAIR",
}
SIGNING_QUERY = "&".join(f"{key}={value}" for key, value in SIGNATURE.items())
COOKIES = {f"CloudFront-{key}": value for key, value in SIGNATURE.items()}
PLAYING_TIMEOUT_MS = 30_000
# A change the page learns of by polling: its back-off reaches 10 s (poller.js),
# and each answer goes through a route of this test.
POLL_MS = 15_000


@pytest.fixture(scope="session")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8 s CMAF HLS ladder in the pipeline's layout (hls/master.m3u8, hls/<rung>/, hls/audio/), an MP4."""
    root = tmp_path_factory.mktemp("ladder")
    (root / "hls").mkdir()
    source = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=8"]
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=8"]
    video = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "60",
        "-sc_threshold",
        "0",
    ]
    ffmpeg(
        *source, *tone, "-map", "0:v", "-map", "0:v", "-map", "1:a", *video,
        "-s:v:0", "640x360", "-s:v:1", "426x240", "-c:a", "aac",
        "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
        "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", str(root / "hls/%v/seg%05d.m4s"),
        "-master_pl_name", "master.m3u8",
        "-var_stream_map", "v:0,agroup:aud,name:360p v:1,agroup:aud,name:240p a:0,agroup:aud,name:audio",
        str(root / "hls/%v/index.m3u8"),
    )  # fmt: skip
    # ffmpeg also lists the audio rendition as a variant of its own; the pipeline's master does not.
    master = (root / "hls/master.m3u8").read_text()
    (root / "hls/master.m3u8").write_text(
        re.sub(r'#EXT-X-STREAM-INF:[^\n]*CODECS="mp4a[^\n]*\naudio/index\.m3u8\n', "", master)
    )
    ffmpeg(*source, *tone, *video, "-c:a", "aac", "-movflags", "+faststart", str(root / "360p.mp4"))
    ffmpeg(*source, "-frames:v", "1", str(root / "thumbnail.jpg"))
    return root


@dataclass
class FakeCdn:
    """The CDN's media path for one video, served by Playwright: files of `root`, for signed requests only.

    A request is signed by the signing query or by the three CloudFront cookies,
    as CloudFront accepts either. While `live`, media playlists are EVENT
    playlists without their end, as while the video is encoded.
    """

    root: Path
    prefix: str  # the URL path of the video's outputs, ".../"
    live: bool = True
    refuse: re.Pattern[str] | None = None  # paths answered 403 whatever their signature
    requests: list[tuple[str, str]] = field(
        default_factory=list
    )  # (path under the prefix, how it was signed)

    def handle(self, route: Route) -> None:
        request = route.request
        url = urlsplit(request.url)
        name = url.path.removeprefix(self.prefix)
        by = self._signed_by(request, url.query)
        self.requests.append((name, by))
        path = self.root / name
        if not by or not path.is_file() or (self.refuse and self.refuse.search(name)):
            route.fulfill(status=403, body="Forbidden")  # as CloudFront answers for a missing object too
            return
        body = path.read_bytes()
        headers = {"Cache-Control": "no-cache"}
        if name.endswith(".m3u8"):
            headers["Content-Type"] = "application/vnd.apple.mpegurl"
            if self.live:
                text = body.decode().replace("#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-PLAYLIST-TYPE:EVENT")
                body = text.replace("#EXT-X-ENDLIST\n", "").encode()
        else:
            headers["Content-Type"] = "image/jpeg" if name.endswith(".jpg") else "video/mp4"
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if ranged:
            start, end = int(ranged[1]), int(ranged[2] or len(body) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            route.fulfill(status=206, body=body[start : end + 1], headers=headers)
        else:
            route.fulfill(status=200, body=body, headers=headers)

    @staticmethod
    def _signed_by(request: Request, query: str) -> str:
        params = {key: values[0] for key, values in parse_qs(query).items()}
        if all(params.get(key) == value for key, value in SIGNATURE.items()):
            return "query"
        cookie_header = request.all_headers().get("cookie", "")
        cookies = dict(pair.strip().split("=", 1) for pair in cookie_header.split(";") if "=" in pair)
        if all(cookies.get(name) == value for name, value in COOKIES.items()):
            return "cookies"
        return ""

    def signed_by(self, suffix: str) -> list[str]:
        """How each request for a path ending with `suffix` was signed."""
        return [by for name, by in self.requests if name.endswith(suffix)]


@dataclass
class Scene:
    """A signed-in page and one video whose API answer the test controls (`state`)."""

    page: Page
    video_id: str
    cdn: FakeCdn
    state: dict[str, Any]
    base: str  # the CDN origin

    def processing(self, progress: int) -> None:
        self.state.update(
            status="processing",
            progress=progress,
            playable=True,
            outputs={"renditions": [], "hls_url": self.hls_url, "rungs": RUNGS, "thumbnail_url": None},
        )

    def ready(self) -> None:
        self.cdn.live = False
        mp4 = {"name": "360p", "width": 640, "height": 360, "url": f"{self.media}360p.mp4?{SIGNING_QUERY}"}
        self.state.update(
            status="ready",
            progress=100,
            playable=True,
            outputs={
                "renditions": [mp4],
                "hls_url": self.hls_url,
                "rungs": RUNGS,
                "thumbnail_url": self.thumbnail,
            },
        )

    def new_run(self) -> None:
        """The video's stream moves to another run's prefix, as when a failed attempt is retried."""
        self.cdn = FakeCdn(
            self.cdn.root, prefix=f"/media/outputs/test/{uuid.uuid4().hex}/", live=self.cdn.live
        )
        self.page.route(re.compile(re.escape(self.cdn.prefix)), self.cdn.handle)

    @property
    def media(self) -> str:
        return f"{self.base}{self.cdn.prefix}"

    @property
    def thumbnail(self) -> str:
        return f"{self.media}thumbnail.jpg?{SIGNING_QUERY}"

    @property
    def hls_url(self) -> str:
        return f"{self.media}hls/master.m3u8?{SIGNING_QUERY}"

    def watch(self) -> None:
        self.page.goto(f"/?video={self.video_id}")


RUNGS = [
    {"name": "360p", "width": 640, "height": 360, "bandwidth": 2_100_000},
    {"name": "240p", "width": 426, "height": 240, "bandwidth": 1_100_000},
]


def fetch_through_restarts(route: Route, patience_s: float = 20) -> APIResponse:
    """The API's own answer to the request; a local stack restarts its API when the code changes."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return route.fetch()
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def scene(page: Page, stack: StackProcess, ladder: Path, tmp_path: Path) -> Iterator[Scene]:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    # A real video (so the API's CORS and auth are real), never uploaded: its answer is rewritten below.
    created = user.create_video(make_clip(tmp_path / "stand-in.mp4", seconds=1), title="Streamed")
    video_id = created["video"]["id"]
    cdn = FakeCdn(ladder, prefix=f"/media/outputs/test/{uuid.uuid4().hex}/")
    state: dict[str, Any] = {}
    source = {
        "filename": "streamed.mp4",
        "size_bytes": 1_000_000,
        "duration_s": 8.0,
        "width": 640,
        "height": 360,
    }

    def answer(route: Route) -> None:
        response = fetch_through_restarts(route)
        if route.request.method != "GET" or not response.ok:
            route.fulfill(response=response)
            return
        route.fulfill(response=response, json={**response.json(), "source": source, **state})

    page.route(re.compile(re.escape(f"{stack.api}/videos/{video_id}") + "$"), answer)
    page.route(re.compile(re.escape(cdn.prefix)), cdn.handle)
    sign_in(page, user.email)
    expect(button(page, "Sign out")).to_be_visible()
    yield Scene(page, video_id, cdn, state, stack.cdn)
    # The page keeps polling, and hls.js reloads a live playlist, to the end.
    # Leave the page first: a request made once the routes are gone would
    # reach the real CDN, whose 403 for this made-up prefix fails the test.
    # An answer still on its way must not fail the next test's set-up (its
    # response is disposed), hence ignoreErrors.
    page.goto("about:blank")
    page.unroute_all(behavior="ignoreErrors")


def player_of(page: Page) -> Locator:
    return page.locator("video")


def start_playing(page: Page) -> None:
    page.locator("video").evaluate("(video) => { video.muted = true; return video.play(); }")


def wait_until_played(page: Page, seconds: float) -> None:
    page.wait_for_function(
        "([video, s]) => video.currentTime > s",
        arg=[player_of(page).element_handle(), seconds],
        timeout=PLAYING_TIMEOUT_MS,
    )


def play_with_hls_js(page: Page) -> Locator:
    """The page's player once it streams with hls.js, playing, and remembered as window.__player."""
    player = player_of(page)
    expect(player).to_have_attribute("data-playback", "hls.js")
    player.evaluate("(video) => { window.__player = video; }")
    start_playing(page)
    return player


def assert_still_the_same_stream_playing(player: Locator) -> None:
    """Nothing was torn down: the same element, still streaming with hls.js, not paused."""
    assert player.evaluate("(video) => video === window.__player && !video.paused")
    expect(player).to_have_attribute("data-playback", "hls.js")


def test_a_stream_still_processing_plays_with_hls_js_and_keeps_playing_once_ready(scene: Scene) -> None:
    page = scene.page
    scene.processing(40)
    scene.watch()

    player = play_with_hls_js(page)
    expect(player).to_have_accessible_name("Streamed")
    expect(page.get_by_text("Still processing — 40%")).to_be_visible()
    expect(page.get_by_role("progressbar", name="Progress of “Streamed”")).to_be_visible()
    wait_until_played(page, 1.0)

    # From the start of the EVENT playlist, not its live edge; every request under the prefix signed.
    assert scene.cdn.requests[0] == ("hls/master.m3u8", "query")
    first_segment = next(
        name for name, _ in scene.cdn.requests if name.endswith(".m4s") and "audio" not in name
    )
    assert first_segment.endswith("seg00000.m4s")
    assert scene.cdn.signed_by(".m4s") and set(scene.cdn.signed_by("")) == {"query"}, scene.cdn.requests
    assert any(name.endswith("init.mp4") or "/init" in name for name, _ in scene.cdn.requests)

    scene.processing(70)
    expect(page.get_by_text("Still processing — 70%")).to_be_visible(timeout=POLL_MS)
    scene.ready()
    expect(page.locator("[data-status=ready]")).to_be_visible(timeout=POLL_MS)
    expect(page.get_by_text(re.compile("Still processing"))).to_be_hidden()
    assert_still_the_same_stream_playing(player)
    expect(player).to_have_attribute("poster", scene.thumbnail)  # the thumbnail came with ready
    now = player.evaluate("(video) => video.currentTime")
    wait_until_played(page, now + 0.5)


def test_a_stream_moved_to_a_retried_run_plays_on_in_the_same_player_from_where_it_was(scene: Scene) -> None:
    page = scene.page
    scene.processing(30)
    scene.watch()
    player = play_with_hls_js(page)
    wait_until_played(page, 2.5)

    first_run = scene.cdn
    scene.new_run()
    scene.processing(35)
    expect(page.get_by_text("Still processing — 35%")).to_be_visible(timeout=POLL_MS)
    wait_until_played(page, 4.0)
    assert_still_the_same_stream_playing(player)
    assert scene.cdn.signed_by(".m4s"), "the new run's segments were fetched"
    # It went on from where it was: nothing of the new run's first 2 s was fetched.
    assert not any(name.endswith("seg00000.m4s") for name, _ in scene.cdn.requests), scene.cdn.requests
    assert first_run.signed_by(".m4s")


@pytest.mark.parametrize(
    ("answer", "expect_http_error"), [(204, {}), (500, {500: "/videos/"})], ids=["deleted", "refused"]
)
def test_deleting_stops_the_player_before_the_video_goes(
    scene: Scene, answer: int, expect_http_error: dict[int, str]
) -> None:
    page = scene.page
    scene.processing(40)
    scene.watch()
    player = play_with_hls_js(page)
    wait_until_played(page, 1.0)
    # The DELETE is held here, unanswered, while the page waits for it.
    held: list[Route] = []
    page.route(
        re.compile(f"/videos/{scene.video_id}$"),
        lambda route: held.append(route) if route.request.method == "DELETE" else route.fallback(),
    )

    button(page, "Delete").click()
    button(page.get_by_role("dialog"), "Delete").click()
    wait_until(page, lambda: bool(held), timeout_s=10)  # the page sent its DELETE
    fetched = len(scene.cdn.requests)
    # Meanwhile a poll brings news (progress) that re-renders the details,
    # with the new title: Delete stays disabled.
    scene.state.update(progress=45, title="Streamed, renamed")
    expect(page.get_by_role("heading", name="Streamed, renamed")).to_be_visible(timeout=POLL_MS)
    expect(button(page, "Delete")).to_be_disabled()
    # Longer than hls.js waits between two loads of a live playlist (one segment, 2 s):
    # the player stopped, nothing more is asked of files about to be deleted.
    page.wait_for_timeout(4_000)
    assert scene.cdn.requests[fetched:] == []

    if answer == 204:
        held[0].fulfill(status=204)
        expect(announcer(page)).to_contain_text("Deleted")
        expect(page).to_have_url(re.compile(r"/$"))
        return
    held[0].fulfill(status=answer, json={"error": {"code": "internal", "message": "Try again later."}})
    expect(announcer(page)).to_contain_text("Couldn’t delete")
    expect(button(page, "Delete")).to_be_enabled()
    # The player is back, and plays.
    expect(player).to_have_attribute("data-playback", "hls.js")
    start_playing(page)
    wait_until_played(page, 0.5)


@pytest.mark.parametrize("expect_http_error", [{403: "master.m3u8"}])
def test_a_stream_that_fails_falls_back_to_the_mp4_once_there_is_one(
    scene: Scene, expect_http_error: dict[int, str]
) -> None:
    page = scene.page
    scene.cdn.refuse = re.compile(r"\.m3u8$")
    scene.processing(50)
    scene.watch()

    player = player_of(page)
    # Still processing: no MP4 yet, so the page says it will play once there is one.
    expect(player).to_have_attribute("data-playback", "none", timeout=PLAYING_TIMEOUT_MS)
    expect(page.get_by_text(re.compile("will play here once it has finished processing"))).to_be_visible()

    scene.ready()
    expect(player).to_have_attribute("data-playback", "mp4", timeout=POLL_MS)
    expect(page.get_by_text(re.compile("finished processing"))).to_be_hidden()
    start_playing(page)
    wait_until_played(page, 1.0)
    assert scene.cdn.signed_by("360p.mp4")


@pytest.mark.parametrize("expect_http_error", [{403: "master.m3u8"}])
def test_a_ready_video_whose_stream_fails_plays_its_mp4(
    scene: Scene, expect_http_error: dict[int, str]
) -> None:
    page = scene.page
    scene.cdn.refuse = re.compile(r"\.m3u8$")
    scene.ready()
    scene.watch()

    player = player_of(page)
    expect(player).to_have_attribute("data-playback", "mp4", timeout=PLAYING_TIMEOUT_MS)
    start_playing(page)
    wait_until_played(page, 1.0)
    assert ("hls/master.m3u8", "query") in scene.cdn.requests


# A browser without Media Source Extensions (iOS Safari before 17.1) but with HLS of its own:
# Chromium plays HLS natively too, so hiding MSE leaves exactly that.
WITHOUT_MSE = "delete window.MediaSource; delete window.ManagedMediaSource; delete window.WebKitMediaSource;"


def test_without_media_source_the_browser_plays_hls_itself_with_signed_cookies(scene: Scene) -> None:
    page = scene.page
    page.add_init_script(WITHOUT_MSE)
    scene.ready()
    scene.watch()

    player = player_of(page)
    expect(player).to_have_attribute("data-playback", "native")
    start_playing(page)
    wait_until_played(page, 1.0)
    # The master came signed by its query; what it names had only the cookies to show.
    assert ("hls/master.m3u8", "query") in scene.cdn.requests
    beyond = [
        (name, by) for name, by in scene.cdn.requests if name.startswith("hls/") and "master" not in name
    ]
    assert beyond and all(by == "cookies" for _, by in beyond), scene.cdn.requests
    cookies = {c["name"]: c for c in page.context.cookies()}
    for name, value in COOKIES.items():
        assert cookies[name]["value"] == value
        assert cookies[name]["path"] == f"{scene.cdn.prefix}hls/"  # they open this stream only
        assert cookies[name]["secure"] is False  # plain http on the local stack; Secure on https


def test_without_media_source_or_native_hls_the_mp4_plays(scene: Scene) -> None:
    page = scene.page
    page.add_init_script(
        WITHOUT_MSE
        + """
        const canPlayType = HTMLMediaElement.prototype.canPlayType;
        HTMLMediaElement.prototype.canPlayType = function (type) {
          return /mpegurl/i.test(type) ? "" : canPlayType.call(this, type);
        };"""
    )
    scene.ready()
    scene.watch()

    expect(player_of(page)).to_have_attribute("data-playback", "mp4")
    start_playing(page)
    wait_until_played(page, 1.0)
    assert not any(name.endswith(".m3u8") for name, _ in scene.cdn.requests)


# The whole pipeline: long enough at 1080p that, on a small machine, the ladder is
# still being encoded when its first segments are stored and playback starts.
LONG_CLIP_S = 24
READY_TIMEOUT_MS = 240_000
STARTED = """(video) => video.currentTime > 1 && {
  stream: document.querySelector(".watch-stage").dataset.stream,
  status: document.querySelector(".details").dataset.status,
  badge: document.querySelector(".details .badge").textContent,
}"""


@pytest.mark.parametrize("expect_http_error", [{403: ".m3u8"}])
def test_a_1080p_upload_plays_through_hls_js_while_it_is_still_processing(
    page: Page, stack: StackProcess, tmp_path: Path, expect_http_error: dict[int, str]
) -> None:
    clip = make_clip(tmp_path / "Long drive.mp4", seconds=LONG_CLIP_S, size="1920x1080")
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    media: list[str] = []
    page.on("request", lambda request: media.append(request.url) if "/media/" in request.url else None)
    sign_in(page, user.email)
    page.get_by_label("Choose video").set_input_files(clip)
    button(page, "Upload").click()

    # The library offers it while it is still processing, with its progress.
    card = cards(page).first
    expect(card).to_have_attribute("data-playable", "true", timeout=PLAYING_TIMEOUT_MS * 3)
    expect(card).to_have_attribute("data-status", "processing")
    expect(card).to_contain_text(re.compile(r"Processing \d+%"))
    card.get_by_role("link", name="Watch now: Long drive").click()

    player = play_with_hls_js(page)
    started = page.wait_for_function(STARTED, arg=player.element_handle(), timeout=PLAYING_TIMEOUT_MS)
    at_start = started.json_value()  # the page at the moment playback passed 1 s
    assert at_start["stream"] == at_start["status"] == "processing", at_start
    assert at_start["badge"].startswith("Processing"), at_start
    segments = [url for url in media if ".m4s" in url]
    assert segments and all("Policy=" in url and "Key-Pair-Id=" in url for url in segments), media

    # Ready: every rung complete; the same player carries on, no reload, to the end of the whole clip
    # (it may have caught up with the encoder and be waiting there).
    expect(page.locator(".watch-stage")).to_have_attribute("data-stream", "ready", timeout=READY_TIMEOUT_MS)
    expect(page.get_by_text(re.compile("Still processing"))).to_be_hidden()
    assert player.evaluate("(video) => video === window.__player && video.dataset.playback === 'hls.js'")
    page.wait_for_function(
        f"(video) => video.ended && Math.abs(video.duration - {LONG_CLIP_S}) < 0.5",
        arg=player.element_handle(),
        timeout=PLAYING_TIMEOUT_MS + LONG_CLIP_S * 1000,
    )

    # A browser without MSE plays it itself, the CDN stand-in taking the signature as cookies.
    page.add_init_script(WITHOUT_MSE)
    before_reload = len(media)
    page.reload()
    expect(player_of(page)).to_have_attribute("data-playback", "native")
    start_playing(page)
    wait_until_played(page, 1.0)
    segments = [url for url in media[before_reload:] if ".m4s" in url]
    assert segments and not any("Policy=" in url for url in segments), "native requests carry no query"

    # A stream the CDN refuses: the same video plays from its MP4.
    page.route(re.compile(r"\.m3u8(\?|$)"), lambda route: route.fulfill(status=403, body="Forbidden"))
    page.reload()
    expect(player_of(page)).to_have_attribute("data-playback", "mp4", timeout=PLAYING_TIMEOUT_MS)
    start_playing(page)
    wait_until_played(page, 1.0)
