"""A person using the web app in Chromium, against the whole local stack."""

from __future__ import annotations

import base64
import re
import time
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Locator, Page, Route, expect

from devstack.aws import local_client
from devstack.client import ApiClient, StackProcess
from tests.browser.conftest import Throttle
from tests.media_tools import make_clip

pytestmark = pytest.mark.browser

PASSWORD = "Corr3ct-Horse!"
PROCESSING_TIMEOUT_MS = 90_000

# Every data-status a video card ever shows, in order, kept by the page itself
# so that a state shorter than a Playwright poll is not missed.
RECORD_STATUSES = """
window.__statuses = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const nodes = m.type === "attributes" ? [m.target] : [...m.addedNodes];
    for (const node of nodes) {
      if (!(node instanceof Element)) continue;
      for (const el of [node, ...node.querySelectorAll("[data-status]")]) {
        if (el.dataset.status) window.__statuses.push(el.dataset.status);
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
"""
# True once some progress bar shows a value strictly between 0 and 100 %.
PROGRESS_IN_BETWEEN = """() => [...document.querySelectorAll("progress, [role=progressbar]")].some((bar) => {
  const value = bar.tagName === "PROGRESS"
    ? (bar.value / bar.max) * 100
    : Number(bar.getAttribute("aria-valuenow"));
  return value > 0 && value < 100;
})"""


def button(page: Page | Locator, name: str) -> Locator:
    return page.get_by_role("button", name=name, exact=True)


def switch_to(page: Page, name: str) -> None:
    """Follow the link (or button) between the sign-in and sign-up forms."""
    page.get_by_role("link", name=name).or_(button(page, name)).click()


def sign_up(page: Page) -> str:
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/")
    switch_to(page, "Create an account")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    button(page, "Sign up").click()
    expect(button(page, "Sign out")).to_be_visible()
    return email


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    button(page, "Sign in").click()


def cards(page: Page) -> Locator:
    return page.locator("[data-video-id]")


def announcer(page: Page) -> Locator:
    return page.locator("[aria-live=polite]").first


def test_journey_sign_up_upload_watch_and_delete(
    page: Page, tmp_path: Path, throttle_upload: Throttle, screenshot_dir: Path
) -> None:
    # Long enough (about 2 s of encoding) for the library's polls to see it being processed.
    clip = make_clip(tmp_path / "Beach day.mp4", seconds=8, size="1920x1080")
    page.add_init_script(RECORD_STATUSES)
    sign_up(page)
    expect(page.get_by_text(re.compile("No videos yet", re.I))).to_be_visible()

    # Upload at 1 MB/s, so the progress bar and the speed can be seen moving.
    throttle_upload(1_000_000)
    page.get_by_label("Choose video").set_input_files(clip)
    button(page, "Upload").click()
    page.wait_for_function(PROGRESS_IN_BETWEEN, timeout=30_000)
    expect(page.get_by_text(re.compile(r"\d+(\.\d+)? ?[KM]B/s")).first).to_be_visible()
    throttle_upload(None)

    card = cards(page).first
    expect(card).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    expect(card).to_contain_text("Beach day")
    expect(card).to_contain_text("Ready")
    statuses: list[str] = page.evaluate("window.__statuses")
    assert "processing" in statuses[: statuses.index("ready")], statuses
    expect(announcer(page)).to_contain_text("ready")

    thumbnail = card.locator("img")
    expect(thumbnail).to_have_attribute("src", re.compile(r"/media/.+\.jpg\?"))
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    page.screenshot(path=screenshot_dir / "library.png")

    video_id = card.get_attribute("data-video-id")
    card.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"\?video={video_id}$"))
    player = page.locator("video")
    expect(player).to_have_attribute("poster", re.compile(r"/media/.+\.jpg\?"))
    player.evaluate("(video) => { video.muted = true; return video.play(); }")
    page.wait_for_function("(video) => video.currentTime > 0.5", arg=player.element_handle(), timeout=20_000)

    button(page, "Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Beach day")
    button(dialog, "Keep").click()
    expect(dialog).to_be_hidden()
    expect(player).to_be_visible()
    button(page, "Delete").click()
    button(dialog, "Delete").click()
    expect(announcer(page)).to_contain_text("Deleted")
    expect(cards(page)).to_have_count(0)
    page.reload()
    expect(page.get_by_text(re.compile("No videos yet", re.I))).to_be_visible()
    expect(cards(page)).to_have_count(0)


@pytest.mark.parametrize("expect_http_error", [{401: "/auth/login"}])
def test_a_wrong_password_is_told_and_the_right_one_signs_in(
    page: Page, stack: StackProcess, expect_http_error: dict[int, str]
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    sign_in(page, user.email, "Wrong-Passw0rd!")
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    expect(button(page, "Sign out")).to_have_count(0)

    page.get_by_label("Password").fill(PASSWORD)
    button(page, "Sign in").click()
    expect(button(page, "Sign out")).to_be_visible()
    button(page, "Sign out").click()
    expect(button(page, "Sign in")).to_be_visible()


def test_a_file_that_is_not_a_video_is_refused_before_uploading(page: Page) -> None:
    sign_up(page)
    posted = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" and "/videos" in r.url else None)

    page.get_by_label("Choose video").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just some notes\n"}
    )
    expect(page.get_by_text(re.compile(r"notes\.txt.*not a video", re.I)).first).to_be_visible()
    upload = button(page, "Upload")
    if upload.is_visible() and upload.is_enabled():
        upload.click()  # nothing may go out: the file was refused
    expect(cards(page)).to_have_count(0)
    assert posted == []


def test_a_disguised_file_fails_on_the_server_with_its_reason_shown(page: Page, stack: StackProcess) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    sign_in(page, user.email)
    page.get_by_label("Choose video").set_input_files(
        {"name": "slides.mp4", "mimeType": "video/mp4", "buffer": b"%PDF-1.4 not a video\n" * 500}
    )
    button(page, "Upload").click()

    card = cards(page).first
    expect(card).to_have_attribute("data-status", "failed", timeout=PROCESSING_TIMEOUT_MS)
    reason = user.video(card.get_attribute("data-video-id") or "")["error"]
    assert reason
    expect(card).to_contain_text("Failed")
    expect(card).to_contain_text(reason)


@pytest.mark.parametrize("expect_http_error", [{404: "/videos/"}])
def test_a_second_user_cannot_see_the_first_users_videos(
    page: Page, stack: StackProcess, tmp_path: Path, expect_http_error: dict[int, str]
) -> None:
    first = ApiClient.sign_up(stack.api)
    their_video = first.create_and_upload(make_clip(tmp_path / "private.mp4", seconds=1), title="Private")

    sign_up(page)
    expect(page.get_by_text(re.compile("No videos yet", re.I))).to_be_visible()
    page.goto(f"/?video={their_video}")
    expect(page.get_by_text(re.compile("not found|no such video", re.I)).first).to_be_visible()
    expect(page.locator("video")).to_have_count(0)
    expect(page.get_by_text("Private")).to_have_count(0)


def test_an_expired_session_leads_back_to_sign_in_with_a_message(page: Page) -> None:
    page.clock.install()
    sign_up(page)
    # An idle tab: Cognito IdTokens live an hour, and the app's timer notices.
    page.clock.fast_forward("02:00:00")
    expect(page.get_by_text("Your session has expired. Please sign in again.")).to_be_visible()
    expect(button(page, "Sign in")).to_be_visible()


@pytest.mark.parametrize("expect_http_error", [{401: "/videos"}])
def test_a_token_the_api_refuses_also_leads_back_to_sign_in(
    page: Page, expect_http_error: dict[int, str]
) -> None:
    sign_up(page)
    page.evaluate(
        """() => {
          const session = JSON.parse(sessionStorage.getItem("vidline.session"));
          session.idToken = session.idToken.slice(0, -4) + "AAAA";  // the signature no longer matches
          sessionStorage.setItem("vidline.session", JSON.stringify(session));
        }"""
    )
    page.reload()
    expect(page.get_by_text("Your session has expired. Please sign in again.")).to_be_visible()
    expect(button(page, "Sign in")).to_be_visible()


def test_several_files_upload_one_after_another(page: Page, tmp_path: Path) -> None:
    clips = [make_clip(tmp_path / f"Part {n}.mp4", seconds=1) for n in (1, 2)]
    sign_up(page)
    page.get_by_label("Choose video").set_input_files(clips)
    button(page, "Upload").click()

    expect(cards(page)).to_have_count(2, timeout=30_000)
    for card in cards(page).all():
        expect(card).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    # Newest first: the second file was uploaded last.
    expect(cards(page).first).to_contain_text("Part 2")


def test_the_app_fits_a_phone_screen(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    expect(button(page, "Sign in")).to_be_visible()
    sign_up(page)
    expect(page.get_by_label("Choose video")).to_be_attached()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0


def test_the_library_pages_through_the_cursor_with_load_more(page: Page, stack: StackProcess) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    titles = [f"Video {n:02}" for n in range(1, 15)]
    for title in titles:  # created, not uploaded: they wait for their upload
        body = {"title": title, "filename": "v.mp4", "content_type": "video/mp4", "size_bytes": 1000}
        requests.post(f"{stack.api}/videos", json=body, headers=user.headers, timeout=10).raise_for_status()

    sign_in(page, user.email)
    expect(cards(page)).to_have_count(12)
    expect(cards(page).first).to_contain_text("Video 14")  # newest first
    button(page, "Load more").click()
    expect(cards(page)).to_have_count(14)
    expect(cards(page).last).to_contain_text("Video 01")
    expect(button(page, "Load more")).to_be_hidden()


def test_cancel_stops_the_upload_and_leaves_no_video_behind(
    page: Page, stack: StackProcess, tmp_path: Path, throttle_upload: Throttle
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    sign_in(page, user.email)
    throttle_upload(100_000)
    page.get_by_label("Choose video").set_input_files(make_clip(tmp_path / "long.mp4", seconds=4))
    button(page, "Upload").click()
    page.wait_for_function(PROGRESS_IN_BETWEEN, timeout=30_000)

    button(page, "Cancel").click()
    expect(announcer(page)).to_contain_text("Upload cancelled")
    expect(cards(page)).to_have_count(0)
    # The app deletes the video it created; that request may still be on its way.
    deadline = time.monotonic() + 10
    while (listed := user.list_videos()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listed == []


def test_a_dropped_file_uploads_like_a_chosen_one(page: Page, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "dropped.mp4", seconds=1)
    sign_up(page)
    transfer = page.evaluate_handle(
        """([name, data]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type: "video/mp4" }));
          return transfer;
        }""",
        [clip.name, base64.b64encode(clip.read_bytes()).decode()],
    )
    page.dispatch_event(".dropzone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(".dropzone", "drop", {"dataTransfer": transfer})
    button(page, "Upload").click()

    card = cards(page).first
    expect(card).to_contain_text("dropped")
    expect(card).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    expect(page.locator(".is-dragging")).to_have_count(0)


def test_a_file_over_the_size_limit_is_refused_before_uploading(page: Page, tmp_path: Path) -> None:
    # The stage's limit comes from config.json; a small one here stands in for 2 GiB.
    def small_limit(route: Route) -> None:
        config = route.fetch().json()
        route.fulfill(json={**config, "maxUploadBytes": 1000}, headers={"Cache-Control": "no-cache"})

    page.route("**/config.json", small_limit)
    sign_up(page)
    page.get_by_label("Choose video").set_input_files(make_clip(tmp_path / "big.mp4", seconds=1))
    expect(page.get_by_text(re.compile(r"big\.mp4.*too large", re.I)).first).to_be_visible()
    expect(cards(page)).to_have_count(0)


@pytest.mark.parametrize("expect_http_error", [{403: "/auth/login"}])
def test_an_unconfirmed_account_is_asked_for_its_code_then_signed_in(
    page: Page, stack: StackProcess, expect_http_error: dict[int, str]
) -> None:
    # As on AWS: sign-up needs the emailed code (moto takes any code).
    def needs_confirmation(route: Route) -> None:
        route.fulfill(json={**route.fetch().json(), "needsConfirmation": True})

    page.route("**/config.json", needs_confirmation)
    cognito = local_client("cognito-idp", f"http://127.0.0.1:{stack.ports['MOTO']}", "us-east-1")
    (pool,) = cognito.list_user_pools(MaxResults=10)["UserPools"]
    (app_client,) = cognito.list_user_pool_clients(UserPoolId=pool["Id"])["UserPoolClients"]
    email = f"unconfirmed-{uuid.uuid4().hex[:8]}@example.com"
    cognito.sign_up(ClientId=app_client["ClientId"], Username=email, Password=PASSWORD)

    # moto has no ResendConfirmationCode; the API's answer on AWS is a 200.
    page.route("**/auth/resend", lambda route: route.fulfill(json={"sent": True}))

    sign_in(page, email)
    expect(page.get_by_label("Confirmation code")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Confirm your email")
    button(page, "Send a new code").click()
    expect(page.get_by_role("status").filter(has_text="we sent it a new code")).to_contain_text(email)
    page.get_by_label("Confirmation code").fill("123456")
    button(page, "Confirm").click()
    expect(button(page, "Sign out")).to_be_visible()
