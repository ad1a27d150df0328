"""The library's usage panel: your figures against your quotas, in Chromium, against the whole local stack.

The browser stack runs with USAGE_SETTINGS (conftest.py): 20 videos a day,
5 GB stored, minutes processed unlimited, /stats cached for 10 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Locator, Page, expect

from devstack.client import ApiClient, StackProcess
from tests.browser.conftest import USAGE_SETTINGS, Throttle
from tests.browser.test_web_app import PASSWORD, PROCESSING_TIMEOUT_MS, announcer, button, cards, sign_in
from tests.media_tools import make_clip

pytestmark = pytest.mark.browser

VIDEOS_PER_DAY = int(USAGE_SETTINGS["VIDLINE_QUOTA_VIDEOS_PER_DAY"])
BYTES_STORED = int(USAGE_SETTINGS["VIDLINE_QUOTA_BYTES_STORED"])
# How long the panel may take to catch up with a change: /stats is cached for
# VIDLINE_STATS_CACHE_TTL_S, and the panel asks again 1, 3, 8 ... s after it.
CATCH_UP_MS = 30_000


@pytest.fixture(autouse=True)
def not_across_midnight() -> None:
    """The day's counts start again at midnight UTC, and "Resets in" counts
    down to it: a test that straddled it would see its figures drop."""
    left_s = 86_400 - time.time() % 86_400
    if left_s < 120:
        time.sleep(left_s + 2)


def usage_panel(page: Page) -> Locator:
    return page.get_by_role("region", name="Your usage")


def meter(page: Page, name: str) -> Locator:
    return usage_panel(page).get_by_role("meter", name=name)


def quota_item(page: Page, quota: str) -> Locator:
    return usage_panel(page).locator(f"[data-quota={quota}]")


def stats(user: ApiClient) -> dict[str, Any]:
    """The user's /stats, as the API gives them (the panel's range defaults do not matter for quotas)."""
    response = requests.get(f"{user.base_url}/stats", headers=user.headers, timeout=30)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def create_without_upload(user: ApiClient, count: int) -> None:
    """Create videos that never get their file: each counts against the daily quota."""
    for n in range(count):
        body: dict[str, Any] = {
            "title": f"Draft {n}",
            "filename": "v.mp4",
            "content_type": "video/mp4",
            "size_bytes": 1000,
        }
        response = requests.post(f"{user.base_url}/videos", json=body, headers=user.headers, timeout=10)
        response.raise_for_status()


def test_the_usage_panel_follows_an_upload_from_created_to_ready_to_deleted(
    page: Page, stack: StackProcess, tmp_path: Path, throttle_upload: Throttle
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    sign_in(page, user.email)
    expect(quota_item(page, "videos_per_day")).to_contain_text(f"0 of {VIDEOS_PER_DAY} videos")
    expect(meter(page, "Videos today")).to_have_js_property("value", 0)
    expect(meter(page, "Storage")).to_have_js_property("max", BYTES_STORED)
    expect(meter(page, "Storage")).to_have_js_property("value", 0)
    # Unlimited: said in words, with no meter that could never fill.
    minutes_item = quota_item(page, "minutes_per_month")
    expect(minutes_item).to_contain_text("0 min · no limit")
    expect(usage_panel(page).get_by_role("meter")).to_have_count(2)

    # Sent slowly (about 15 s), so the panel shows the create while the file is still on its way.
    clip = make_clip(tmp_path / "Harbour.mp4", seconds=2)
    size = clip.stat().st_size
    throttle_upload(size // 15)
    page.get_by_label("Choose video").set_input_files(clip)
    button(page, "Upload").click()
    # Created: counted, and its declared size reserved, with no reload.
    expect(meter(page, "Videos today")).to_have_js_property("value", 1, timeout=CATCH_UP_MS)
    expect(quota_item(page, "videos_per_day")).to_contain_text(f"1 of {VIDEOS_PER_DAY} videos")
    expect(meter(page, "Storage")).to_have_js_property("value", size)
    assert cards(page).count() == 0 or cards(page).first.get_attribute("data-status") != "ready"
    expect(minutes_item).to_contain_text("0 min · no limit")
    throttle_upload(None)

    # Ready: its minutes count as processed, once the panel asks again.
    expect(cards(page).first).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    quotas = stats(user)["quotas"]
    assert quotas["videos_per_day"]["used"] == 1, quotas
    assert quotas["bytes_stored"]["used"] == size, quotas
    minutes = quotas["minutes_per_month"]["used"]
    assert 0 < minutes < 0.1, quotas
    expect(minutes_item).to_contain_text(f"{minutes:.2f} min · no limit", timeout=CATCH_UP_MS)
    expect(quota_item(page, "videos_per_day")).to_contain_text("Resets in")

    # Deleted: its storage is freed; the day's count of videos created stays.
    cards(page).first.get_by_role("link").first.click()
    button(page, "Delete").click()
    button(page.get_by_role("dialog"), "Delete").click()
    expect(announcer(page)).to_contain_text("Deleted")
    expect(meter(page, "Storage")).to_have_js_property("value", 0, timeout=CATCH_UP_MS)
    expect(meter(page, "Videos today")).to_have_js_property("value", 1)


@pytest.mark.parametrize("expect_http_error", [{429: "/videos"}])
def test_at_the_daily_quota_the_next_upload_is_refused_with_the_servers_message(
    page: Page, stack: StackProcess, tmp_path: Path, expect_http_error: dict[int, str]
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    create_without_upload(user, VIDEOS_PER_DAY - 1)
    sign_in(page, user.email)
    videos_today = quota_item(page, "videos_per_day")
    expect(videos_today).to_contain_text(f"{VIDEOS_PER_DAY - 1} of {VIDEOS_PER_DAY} videos")
    expect(videos_today).to_have_attribute("data-full", "false")

    # The last one of the day goes through, and the panel fills up.
    page.get_by_label("Choose video").set_input_files(make_clip(tmp_path / "Last.mp4", seconds=1))
    button(page, "Upload").click()
    expect(cards(page).first).to_contain_text("Last")
    expect(videos_today).to_contain_text(f"{VIDEOS_PER_DAY} of {VIDEOS_PER_DAY} videos", timeout=CATCH_UP_MS)
    expect(videos_today).to_have_attribute("data-full", "true")
    expect(videos_today).to_contain_text("Limit reached. Resets")
    expect(meter(page, "Videos today")).to_have_js_property("value", VIDEOS_PER_DAY)
    # Its "is ready" announcement comes first: the one live region would
    # otherwise replace the refusal's message below with it.
    expect(cards(page).first).to_have_attribute("data-status", "ready", timeout=PROCESSING_TIMEOUT_MS)
    expect(announcer(page)).to_contain_text("“Last” is ready")

    # The next is refused by the server, and its message is what the person reads.
    page.get_by_label("Choose video").set_input_files(make_clip(tmp_path / "One more.mp4", seconds=1))
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/videos")) as answer:
        button(page, "Upload").click()
    refused = answer.value
    assert refused.status == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"][0]["quota"] == "videos_per_day", error
    expect(page.locator(".queue-item.is-failed")).to_contain_text(error["message"])
    expect(announcer(page)).to_contain_text(error["message"])
    expect(cards(page).first).to_contain_text("Last")
    expect(videos_today).to_have_attribute("data-full", "true")


def test_the_usage_panel_fits_a_phone_screen(page: Page, stack: StackProcess) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    sign_in(page, user.email)
    expect(meter(page, "Videos today")).to_be_visible()
    expect(meter(page, "Storage")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    box = usage_panel(page).bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
