"""The README's "call the API from your own front end" example works, as written, on the CDN's origin.

`EXAMPLE` is the example exactly as the README shows it (between its
`<!-- fetch-example -->` markers); one test checks the two are the same text,
the others run it: upload a video, wait until it can be watched, play its
stream with hls.js (the app's vendored copy stands in for `npm install hls.js`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from devstack.client import ApiClient, StackProcess
from tests.browser.readme_example import EXAMPLE, readme_example, runnable_example, upload_with_example
from tests.media_tools import make_clip

pytestmark = pytest.mark.browser

PASSWORD = "Corr3ct-Horse!"


def test_the_readme_shows_the_example_these_tests_run() -> None:
    assert readme_example() == EXAMPLE


def test_the_readme_example_uploads_a_video_and_plays_its_stream(
    page: Page, stack: StackProcess, tmp_path: Path
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    clip = make_clip(tmp_path / "from-readme.mp4", seconds=6)
    media: list[str] = []
    page.on("request", lambda request: media.append(request.url) if "/media/" in request.url else None)

    video = upload_with_example(
        page,
        stack,
        user.email,
        PASSWORD,
        clip,
        then="""
          if (video.status === "failed") return video;
          const element = document.createElement("video");
          element.muted = true;
          document.body.append(element);
          window.__hls = await play(element, video);
          await element.play();""",
    )

    assert video["playable"], video
    assert video["title"] == "from-readme.mp4"
    assert video["outputs"]["hls_url"].startswith(f"{stack.cdn}/media/")
    page.wait_for_function("() => document.querySelector('body > video').currentTime > 1", timeout=30_000)
    assert page.evaluate("window.__hls !== null"), "played with hls.js"
    segments = [url for url in media if ".m4s" in url]
    assert segments and all("Policy=" in url and "Signature=" in url for url in segments), media


@pytest.mark.parametrize("expect_http_error", [{401: "/auth/login"}])
def test_the_readme_example_reports_the_apis_message(
    page: Page, stack: StackProcess, expect_http_error: dict[int, str]
) -> None:
    page.goto("/")
    example = runnable_example(page, stack)
    message = page.evaluate(
        f"""async () => {{
          {example}
          const file = new File([new Uint8Array(10)], "x.mp4", {{ type: "video/mp4" }});
          try {{ await uploadVideo("nobody@example.com", "Wrong-Passw0rd!", file); }}
          catch (error) {{ return error.message; }}
        }}"""
    )
    assert message == "Wrong email or password."
