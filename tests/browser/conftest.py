"""Browser tests: the web app in Debian's Chromium, driven by Playwright, against the real local stack.

pytest-playwright provides `page` (one browser for the session, a fresh
context per test) and keeps a screenshot and a trace of every failure under
test-artifacts/browser (see pyproject.toml). Every test fails on a console
error or an uncaught exception in the page, except the HTTP errors it names
as expected with `expect_http_error`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page

from devstack.client import ROOT, StackProcess

CHROMIUM = os.environ.get("VIDLINE_CHROMIUM", "/usr/lib/chromium/chromium")
# Chromium reports every HTTP error response the page receives like this.
_HTTP_ERROR = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")
# Usage settings of the browser stack (tests/browser/test_usage.py): a daily
# video quota a test can reach (no other test creates more than 14 videos for
# one user), storage far above what any test stores, minutes processed left
# unlimited (0, the default), and /stats cached for 10 s rather than 60 s, so
# the usage panel catches up with a change within a test's patience.
USAGE_SETTINGS = {
    "VIDLINE_QUOTA_VIDEOS_PER_DAY": "20",
    "VIDLINE_QUOTA_BYTES_STORED": str(5 * 2**30),
    "VIDLINE_QUOTA_MINUTES_PER_MONTH": "0",
    "VIDLINE_STATS_CACHE_TTL_S": "10",
}


@pytest.fixture(scope="session")
def stack() -> Iterator[StackProcess]:
    logs = ROOT / "test-artifacts"
    logs.mkdir(exist_ok=True)
    with StackProcess(logs / "browser-stack.log", env=USAGE_SETTINGS) as running:
        yield running


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not at {CHROMIUM}: `apt-get install chromium`, or set VIDLINE_CHROMIUM")
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture
def browser_context_args(browser_context_args: dict[str, Any], stack: StackProcess) -> dict[str, Any]:
    return {**browser_context_args, "base_url": stack.cdn, "viewport": {"width": 1280, "height": 860}}


@pytest.fixture
def expect_http_error() -> dict[int, str]:
    """HTTP errors a test provokes on purpose, as {status: a piece of the URL}
    (a wrong password: {401: "/auth/login"}); Chromium logs each on the console."""
    return {}


@pytest.fixture(autouse=True)
def no_console_errors(request: pytest.FixtureRequest, expect_http_error: dict[int, str]) -> Iterator[None]:
    """Fail the test on any console error or warning, or uncaught exception, in the page."""
    if "page" not in request.fixturenames:
        yield
        return
    page: Page = request.getfixturevalue("page")
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type not in {"error", "warning"}:
            return
        http = _HTTP_ERROR.search(message.text)
        url = message.location.get("url", "")
        if http and expect_http_error.get(int(http.group(1)), "\0") in url:
            return
        problems.append(f"console {message.type}: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    yield
    assert not problems, "\n".join(problems)


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where the README's screenshot goes: docs/ for `make screenshot`, else a temporary folder."""
    chosen = os.environ.get("VIDLINE_SCREENSHOT_DIR")
    return (ROOT / chosen) if chosen else tmp_path


Throttle = Callable[[int | None], None]


@pytest.fixture
def throttle_upload(page: Page) -> Throttle:
    """Limit the page's upload speed (bytes/s), or lift the limit with None, through CDP."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")

    def throttle(bytes_per_s: int | None) -> None:
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": bytes_per_s if bytes_per_s else -1,
            },
        )

    return throttle


def wait_until(page: Page, condition: Callable[[], bool], timeout_s: float = 20) -> None:
    """Poll `condition`, letting Playwright deliver the page's events meanwhile."""
    for _ in range(int(timeout_s * 10)):
        if condition():
            return
        page.wait_for_timeout(100)
    assert condition()
