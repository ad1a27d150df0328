"""Big files in the web app: sent in parts, through a failing part, and resumed after a reload.

The stack here uses a 16 MiB multipart threshold and 5 MiB parts (S3's
minimum), so a 22 MiB file, made at test time, goes up in five parts.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Page, Request, expect

from devstack.client import ROOT, ApiClient, StackProcess
from tests.browser.conftest import Throttle, wait_until
from tests.browser.readme_example import upload_with_example
from tests.browser.test_web_app import PASSWORD, button, cards, sign_in
from tests.media_tools import make_clip

pytestmark = pytest.mark.browser

MIB = 1024 * 1024
PART_BYTES = 5 * MIB
# Four whole parts and a short last one.
FILE_BYTES = 4 * PART_BYTES + 2 * MIB + 123
PROCESSING_TIMEOUT_MS = 60_000

S3_INTERNAL_ERROR = (
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"
)
S3_EXPIRED = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
S3_REQUEST_TIMEOUT = (
    b"<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from"
    b" or written to within the timeout period.</Message></Error>"
)
# Every value the upload's progress bar ever shows, in order, kept by the
# page itself so that a dip shorter than a Playwright poll is not missed.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const nodes = m.type === "attributes" ? [m.target] : [...m.addedNodes];
    for (const node of nodes) {
      if (!(node instanceof Element)) continue;
      for (const bar of [node, ...node.querySelectorAll("progress")]) {
        if (bar.tagName === "PROGRESS" && bar.hasAttribute("value")) window.__progress.push(bar.value);
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["value"]});
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    """A local stack whose uploads go in parts from 16 MiB on, in 5 MiB parts."""
    logs = ROOT / "test-artifacts"
    logs.mkdir(exist_ok=True)
    env = {
        "VIDLINE_MULTIPART_THRESHOLD_BYTES": str(16 * MIB),
        "VIDLINE_MULTIPART_PART_BYTES": str(PART_BYTES),
    }
    with StackProcess(logs / "browser-big-uploads-stack.log", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2 s clip, padded to FILE_BYTES with an MP4 `free` box, which players skip."""
    path = make_clip(tmp_path_factory.mktemp("big") / "Long hike.mp4", seconds=2, faststart=True)
    padding = FILE_BYTES - path.stat().st_size
    with path.open("ab") as file:
        file.write(struct.pack(">I4s", padding, b"free"))
        file.write(bytes(padding - 8))
    assert path.stat().st_size == FILE_BYTES
    return path


def is_part_url(url: str) -> bool:
    """A presigned UploadPart URL (PUT ...?partNumber=N&uploadId=...)."""
    return "partNumber" in parse_qs(urlsplit(url).query)


def part_number(request: Request) -> int:
    return int(parse_qs(urlsplit(request.url).query)["partNumber"][0])


def sign_up_and_in(page: Page, stack: StackProcess) -> ApiClient:
    user = ApiClient.sign_up(stack.api, PASSWORD)
    sign_in(page, user.email)
    expect(button(page, "Sign out")).to_be_visible()
    return user


def status_of(user: ApiClient, video_id: str) -> str:
    response = requests.get(f"{user.base_url}/videos/{video_id}", headers=user.headers, timeout=10)
    response.raise_for_status()
    status: str = response.json()["status"]
    return status


class FlakyS3(BaseHTTPRequestHandler):
    """Takes a part's bytes, as S3 would, then refuses it: part 2 with a 500
    InternalError, part 4 with S3's 400 RequestTimeout (a connection that went
    quiet), any other with 403 "Request has expired"."""

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self._cors()
        self.end_headers()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = {
            "2": (500, S3_INTERNAL_ERROR),
            "4": (400, S3_REQUEST_TIMEOUT),
        }.get(parse_qs(urlsplit(self.path).query)["partNumber"][0], (403, S3_EXPIRED))
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self._cors()
        self.end_headers()
        self.wfile.write(body)

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Methods", "PUT")
        self.send_header("Access-Control-Allow-Headers", "*")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky_s3() -> Iterator[str]:
    """The origin of a FlakyS3 on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "expect_http_error", [{500: "partNumber=2", 403: "partNumber=3", 400: "partNumber=4"}]
)
def test_a_big_file_goes_up_in_parts_through_failing_parts(
    page: Page,
    stack: StackProcess,
    big_clip: Path,
    flaky_s3: str,
    throttle_upload: Throttle,
    expect_http_error: dict[int, str],
) -> None:
    page.add_init_script(RECORD_PROGRESS)
    user = sign_up_and_in(page, stack)
    url_batches: list[list[int]] = []
    parts = PartTraffic(page)

    refuse_once = {2, 3, 4}

    def first_tries_fail(n: int, request_id: str) -> None:
        # The first PUT of parts 2, 3 and 4 goes to FlakyS3 instead: its
        # bytes are sent (the progress bar counts them), then refused. Their
        # next tries go to S3. Handlers of parts paused together interleave
        # (each CDP call yields to the next event), so the part is crossed
        # off before any call, and a retry paused under patterns not yet
        # narrowed goes on to S3 untouched.
        if n not in refuse_once:
            parts.cdp.send("Fetch.continueRequest", {"requestId": request_id})
            return
        refuse_once.discard(n)
        target = urlsplit(parts.paused_urls[request_id])
        flaky_url = f"{flaky_s3}{target.path}?{target.query}"
        parts.cdp.send("Fetch.continueRequest", {"requestId": request_id, "url": flaky_url})
        parts.intercept(set(refuse_once), first_tries_fail)

    def count_url_requests(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/upload/parts"):
            body = json.loads(request.post_data or "{}")
            url_batches.append(body["part_numbers"])

    page.on("request", count_url_requests)
    parts.intercept(set(refuse_once), first_tries_fail)
    # Slow enough for progress events to come while a part is on its way.
    throttle_upload(16 * MIB)
    page.get_by_label("Choose video").set_input_files(big_clip)
    button(page, "Upload").click()

    card = cards(page).first
    expect(card).to_have_attribute("data-status", re.compile("queued|processing|ready"), timeout=30_000)
    # Each part was sent once, and parts 2, 3 and 4 again after their refusal.
    assert parts.sent == {1: 1, 2: 2, 3: 2, 4: 2, 5: 1}, parts.sent
    # All part URLs in one request; part 3's "expired", so the page asked
    # for a fresh one, while part 2's was kept.
    assert url_batches == [[1, 2, 3, 4, 5], [3]], url_batches
    progress: list[float] = page.evaluate("window.__progress")
    assert progress, "the progress bar never showed a value"
    assert progress == sorted(progress), f"the progress went down: {progress}"
    assert progress[-1] == 100, progress
    video_id = card.get_attribute("data-video-id")
    assert video_id is not None
    expect(card).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    assert status_of(user, video_id) == "ready"
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None


class PartTraffic:
    """The page's part PUTs, counted when sent and when S3 took them. Parts
    named to `intercept` are paused in the browser (CDP Fetch) and handed to
    a handler. Only those: Playwright's page.route would carry every part's
    bytes through the test, at a few MB/s."""

    def __init__(self, page: Page) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Fetch.requestPaused", self._paused)
        self.intercepted: frozenset[int] = frozenset()
        self.paused_urls: dict[str, str] = {}  # request id → URL
        self._handler: Callable[[int, str], None] = lambda n, request_id: None
        self.sent: Counter[int] = Counter()
        self.stored: Counter[int] = Counter()
        page.on("request", self._sent)
        page.on("requestfinished", self._finished)

    def intercept(self, numbers: Collection[int], handler: Callable[[int, str], None]) -> None:
        """Pause the PUTs of these parts and call `handler(part number, request id)`
        for each (it may leave it paused); none when `numbers` is empty."""
        self.intercepted = frozenset(numbers)
        self._handler = handler
        if not numbers:
            self.cdp.send("Fetch.disable")
            return
        # "?" is a wildcard in these patterns: match on "partNumber=N&" or a final "partNumber=N".
        patterns = [f"*partNumber={n}{end}" for n in sorted(numbers) for end in ("&*", "")]
        self.cdp.send(
            "Fetch.enable", {"patterns": [{"urlPattern": p, "requestStage": "Request"} for p in patterns]}
        )

    def _paused(self, event: dict[str, Any]) -> None:
        if event["request"]["method"] != "PUT":  # the CORS preflight goes through
            self.cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})
            return
        url: str = event["request"]["url"]
        self.paused_urls[event["requestId"]] = url
        self._handler(int(parse_qs(urlsplit(url).query)["partNumber"][0]), event["requestId"])

    def _sent(self, request: Request) -> None:
        if request.method == "PUT" and is_part_url(request.url):
            self.sent[part_number(request)] += 1

    def _finished(self, request: Request) -> None:
        response = request.response()
        if request.method == "PUT" and is_part_url(request.url) and response is not None and response.ok:
            self.stored[part_number(request)] += 1


def start_and_stall(page: Page, big_clip: Path) -> PartTraffic:
    """Start uploading `big_clip`; return once parts 1 and 2 are in S3 and 3 to 5 hang."""
    parts = PartTraffic(page)
    parts.intercept({3, 4, 5}, lambda n, request_id: None)
    page.get_by_label("Choose video").set_input_files(big_clip)
    button(page, "Upload").click()
    wait_until(page, lambda: sum(parts.stored.values()) == 2 and len(parts.paused_urls) == 3)
    assert parts.stored == {1: 1, 2: 1}, parts.stored
    return parts


def reload_and_choose_again(page: Page, parts: PartTraffic, big_clip: Path) -> None:
    """Reload the page mid-upload (saying yes to "Leave site?") and choose the same file."""
    page.on("dialog", lambda dialog: dialog.accept())
    parts.sent.clear()
    page.reload()  # the paused PUTs go with the old page
    parts.intercept((), lambda n, request_id: None)
    expect(button(page, "Sign out")).to_be_visible()
    page.get_by_label("Choose video").set_input_files(big_clip)
    expect(page.get_by_text("upload was interrupted")).to_be_visible()


def test_a_reloaded_upload_resumes_with_the_parts_it_lacks(
    page: Page, stack: StackProcess, big_clip: Path
) -> None:
    user = sign_up_and_in(page, stack)
    parts = start_and_stall(page, big_clip)
    reload_and_choose_again(page, parts, big_clip)
    button(page, "Resume upload").click()

    card = cards(page).first
    expect(card).to_have_attribute("data-status", re.compile("queued|processing|ready"), timeout=30_000)
    assert parts.sent == {3: 1, 4: 1, 5: 1}, parts.sent
    wait_until(page, lambda: sum(parts.stored.values()) == 5)
    assert parts.stored == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, parts.stored
    (video,) = user.list_videos()  # the same video: resumed, not uploaded again
    assert video["id"] == card.get_attribute("data-video-id")
    assert video["status"] in {"queued", "processing", "ready"}
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None


@pytest.mark.parametrize("expect_http_error", [{404: "/videos/"}])
def test_a_resumed_upload_whose_video_was_deleted_starts_afresh(
    page: Page, stack: StackProcess, big_clip: Path, expect_http_error: dict[int, str]
) -> None:
    user = sign_up_and_in(page, stack)
    parts = start_and_stall(page, big_clip)
    (interrupted,) = user.list_videos()
    requests.delete(
        f"{stack.api}/videos/{interrupted['id']}", headers=user.headers, timeout=10
    ).raise_for_status()
    reload_and_choose_again(page, parts, big_clip)
    button(page, "Resume upload").click()

    card = cards(page).first
    expect(card).to_have_attribute("data-status", re.compile("queued|processing|ready"), timeout=30_000)
    assert parts.sent == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, parts.sent
    (video,) = user.list_videos()
    assert video["id"] != interrupted["id"]
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None


def test_cancelling_a_big_upload_stops_its_parts_and_deletes_its_video(
    page: Page, stack: StackProcess, big_clip: Path
) -> None:
    user = sign_up_and_in(page, stack)
    parts = start_and_stall(page, big_clip)
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is not None
    button(page, "Cancel").click()
    expect(page.locator("[aria-live=polite]").first).to_contain_text("Upload cancelled")

    wait_until(page, lambda: user.list_videos() == [])
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None
    # Parts 3 to 5 were on their way (held) when cancelled, and none was sent again.
    assert parts.sent == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, parts.sent


@pytest.mark.parametrize("expect_http_error", [{500: "partNumber=4"}])
def test_a_part_that_keeps_failing_stops_the_upload_and_retry_goes_on_from_there(
    page: Page, stack: StackProcess, big_clip: Path, expect_http_error: dict[int, str]
) -> None:
    user = sign_up_and_in(page, stack)
    parts = PartTraffic(page)

    origin = page.evaluate("location.origin")

    def fail(request_id: str) -> None:
        parts.cdp.send(
            "Fetch.fulfillRequest",
            {
                "requestId": request_id,
                "responseCode": 500,
                "responseHeaders": [
                    {"name": "Access-Control-Allow-Origin", "value": origin},
                    {"name": "Content-Type", "value": "application/xml"},
                ],
                "body": base64.b64encode(S3_INTERNAL_ERROR).decode(),
            },
        )

    # Part 4's first try is held until the other parts are stored: its five
    # tries then fail within seconds, and a slow S3 cannot still be storing
    # another part when the upload gives up. (The hold, at most wait_until's
    # 20 s, stays well under the page's 60 s stall limit for a silent part.)
    held: list[str] = []

    def answer_500(n: int, request_id: str) -> None:
        if held:
            fail(request_id)
        else:
            held.append(request_id)

    parts.intercept({4}, answer_500)
    page.get_by_label("Choose video").set_input_files(big_clip)
    button(page, "Upload").click()
    wait_until(page, lambda: bool(held) and parts.stored == {1: 1, 2: 1, 3: 1, 5: 1})
    fail(held[0])
    failed = page.locator(".queue-item.is-failed")
    expect(failed).to_contain_text("Retry goes on from where it stopped", timeout=30_000)
    assert parts.sent[4] == 5, parts.sent  # five tries, then it gave up
    assert parts.stored == {1: 1, 2: 1, 3: 1, 5: 1}, parts.stored
    (interrupted,) = user.list_videos()  # kept, with its parts, for the retry
    assert interrupted["status"] == "awaiting_upload"

    parts.intercept((), answer_500)  # the storage service is well again
    parts.sent.clear()
    button(failed, "Retry").click()
    card = cards(page).first
    expect(card).to_have_attribute("data-status", re.compile("queued|processing|ready"), timeout=30_000)
    assert parts.sent == {4: 1}, parts.sent
    (video,) = user.list_videos()
    assert video["id"] == interrupted["id"]
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None


# The library's card of the deleted video finds it gone when it next looks.
@pytest.mark.parametrize("expect_http_error", [{404: "/videos/"}])
def test_start_over_deletes_the_interrupted_upload_and_sends_the_whole_file(
    page: Page, stack: StackProcess, big_clip: Path, expect_http_error: dict[int, str]
) -> None:
    user = sign_up_and_in(page, stack)
    parts = start_and_stall(page, big_clip)
    (interrupted,) = user.list_videos()
    reload_and_choose_again(page, parts, big_clip)
    button(page, "Start over").click()
    expect(button(page, "Resume upload")).to_have_count(0)
    button(page, "Upload").click()

    card = cards(page).first
    expect(card).to_have_attribute("data-status", re.compile("queued|processing|ready"), timeout=30_000)
    assert parts.sent == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, parts.sent
    (video,) = user.list_videos()  # the interrupted one is gone
    assert video["id"] != interrupted["id"]
    assert page.evaluate("localStorage.getItem('vidline.uploads')") is None


def test_the_readme_example_sends_a_big_file_in_parts(
    page: Page, stack: StackProcess, big_clip: Path
) -> None:
    """The README's fetch example takes the multipart branch above the threshold."""
    user = ApiClient.sign_up(stack.api, PASSWORD)
    puts: list[int] = []
    page.on(
        "request", lambda request: puts.append(part_number(request)) if is_part_url(request.url) else None
    )
    video = upload_with_example(page, stack, user.email, PASSWORD, big_clip)

    assert video["playable"] or video["status"] == "ready", video
    assert sorted(puts) == list(range(1, -(-FILE_BYTES // PART_BYTES) + 1))
