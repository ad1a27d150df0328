"""The README's "call the API from your own front end" example works, as written, on the CDN's origin.

`EXAMPLE` is the example exactly as the README shows it (between its
`<!-- fetch-example -->` markers); one test checks the two are the same text,
the others run it: upload a video, wait until it can be watched, play its
stream with hls.js (the app's vendored copy stands in for `npm install hls.js`).
"""

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

EXAMPLE = """\
const API = "http://127.0.0.1:8000"; // your stage's API URL

async function call(path, { token, body, method = body ? "POST" : "GET" } = {}) {
  const response = await fetch(API + path, {
    method,
    headers: {
      ...(body && { "Content-Type": "application/json" }),
      ...(token && { Authorization: `Bearer ${token}` }),
    },
    body: body && JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  // Errors say what went wrong: {"error": {"code": "...", "message": "Wrong email or password."}}
  if (!response.ok) throw new Error(data?.error?.message ?? `HTTP ${response.status}`);
  return data;
}

// Sign in, create the video, send the file straight to storage, and wait until it can be
// watched: `playable` comes while it is still processing, `ready` once every rung and the
// MP4 are stored.
async function uploadVideo(email, password, file) {
  const { id_token: token } = await call("/auth/login", { body: { email, password } });
  const { video, upload } = await call("/videos", {
    token,
    body: { title: file.name, filename: file.name, content_type: file.type, size_bytes: file.size },
  });
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", file); // the file goes last
  const stored = await fetch(upload.url, { method: "POST", body: form });
  if (!stored.ok) throw new Error(`the upload failed (HTTP ${stored.status})`);

  let current = video;
  while (!current.playable && current.status !== "ready" && current.status !== "failed") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    current = await call(`/videos/${encodeURIComponent(video.id)}`, { token });
  }
  return current; // keep polling it for `progress` and `status` if you show them
}

// Play the adaptive stream with hls.js (npm install hls.js), the MP4 where it can't.
async function play(videoElement, video) {
  const { hls_url: stream, renditions, thumbnail_url: poster } = video.outputs;
  if (poster) videoElement.poster = poster;
  const { default: Hls } = await import("hls.js");
  if (!stream || !Hls.isSupported()) {
    if (renditions[0]) videoElement.src = renditions[0].url; // see "Native HLS" below for Safari on iOS
    return null;
  }
  // The playlists name what they list relative to themselves, without the signature: add
  // the master URL's (Policy, Signature, Key-Pair-Id) to every request under its folder.
  const signature = new URL(stream).search.slice(1);
  const folder = stream.slice(0, stream.lastIndexOf("/", stream.indexOf("?")) + 1);
  const hls = new Hls({
    startPosition: 0, // while it is processing the playlist is still growing: start at the beginning
    xhrSetup(xhr, url) {
      const sign = url.startsWith(folder) && !url.includes("Signature=");
      xhr.open("GET", sign ? `${url}${url.includes("?") ? "&" : "?"}${signature}` : url, true);
    },
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data.fatal && renditions[0]) {
      hls.destroy(); // the stream failed: play the MP4 instead
      videoElement.src = renditions[0].url;
    }
  });
  hls.loadSource(stream);
  hls.attachMedia(videoElement);
  return hls; // hls.destroy() when the player goes away
}
"""


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- fetch-example -->\n```js\n(.*?)```\n<!-- /fetch-example -->", readme, re.S)
    assert match, "the README has no fetch example between its markers"
    return match.group(1)


def runnable_example(page: Page, stack: StackProcess) -> str:
    """EXAMPLE on the local stack: its API, and the app's own copy of hls.js for the npm package."""
    assert 'const API = "http://127.0.0.1:8000";' in EXAMPLE and 'import("hls.js")' in EXAMPLE
    main = page.locator("script[type=module]").get_attribute("src") or ""
    hls_js = stack.cdn + main.replace("js/main.js", "vendor/hls.min.mjs")
    return EXAMPLE.replace("http://127.0.0.1:8000", stack.api).replace(
        'import("hls.js")', f'import("{hls_js}")'
    )


def test_the_readme_shows_the_example_these_tests_run() -> None:
    assert readme_example() == EXAMPLE


def test_the_readme_example_uploads_a_video_and_plays_its_stream(
    page: Page, stack: StackProcess, tmp_path: Path
) -> None:
    user = ApiClient.sign_up(stack.api, password=PASSWORD)
    clip = make_clip(tmp_path / "from-readme.mp4", seconds=6)
    media: list[str] = []
    page.on("request", lambda request: media.append(request.url) if "/media/" in request.url else None)

    page.goto("/")
    example = runnable_example(page, stack)
    video = page.evaluate(
        f"""async ([email, password, data]) => {{
          {example}
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const file = new File([bytes], "from-readme.mp4", {{ type: "video/mp4" }});
          const video = await uploadVideo(email, password, file);
          if (video.status === "failed") return video;
          const element = document.createElement("video");
          element.muted = true;
          document.body.append(element);
          window.__hls = await play(element, video);
          await element.play();
          return video;
        }}""",
        [user.email, PASSWORD, base64.b64encode(clip.read_bytes()).decode()],
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
