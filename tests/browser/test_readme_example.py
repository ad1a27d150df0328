"""The README's fetch example works, as written, from a page on the CDN's origin."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page

from devstack.client import ROOT, ApiClient, StackProcess
from tests.media_tools import make_clip

pytestmark = pytest.mark.browser

PASSWORD = "Corr3ct-Horse!"


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- fetch-example -->\n```js\n(.*?)```\n<!-- /fetch-example -->", readme, re.S)
    assert match, "the README has no fetch example between its markers"
    return match.group(1)


def test_the_readme_fetch_example_uploads_a_video_until_ready(
    page: Page, stack: StackProcess, tmp_path: Path
) -> None:
    example = readme_example()
    assert 'const API = "http://127.0.0.1:8000";' in example
    example = example.replace("http://127.0.0.1:8000", stack.api)
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    clip = make_clip(tmp_path / "from-readme.mp4", seconds=1)

    page.goto("/")
    video = page.evaluate(
        f"""async ([email, password, data]) => {{
          {example}
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const file = new File([bytes], "from-readme.mp4", {{ type: "video/mp4" }});
          return await uploadVideo(email, password, file);
        }}""",
        [user.email, PASSWORD, base64.b64encode(clip.read_bytes()).decode()],
    )

    assert video["status"] == "ready", video["error"]
    assert video["title"] == "from-readme.mp4"
    assert video["outputs"]["renditions"][0]["url"].startswith(f"{stack.cdn}/media/")


@pytest.mark.parametrize("expect_http_error", [{401: "/auth/login"}])
def test_the_readme_fetch_example_reports_the_apis_message(
    page: Page, stack: StackProcess, expect_http_error: dict[int, str]
) -> None:
    example = readme_example().replace("http://127.0.0.1:8000", stack.api)
    page.goto("/")
    message = page.evaluate(
        f"""async () => {{
          {example}
          const file = new File([new Uint8Array(10)], "x.mp4", {{ type: "video/mp4" }});
          try {{ await uploadVideo("nobody@example.com", "Wrong-Passw0rd!", file); }}
          catch (error) {{ return error.message; }}
        }}"""
    )
    assert message == "Wrong email or password."
