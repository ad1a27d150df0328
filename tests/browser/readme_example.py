"""The README's "call the API from your own front end" example, as the browser tests run it.

`EXAMPLE` is the example exactly as the README shows it (between its
`<!-- fetch-example -->` markers); tests/browser/test_readme_example.py checks
the two are the same text and runs it with small files, and
tests/browser/test_big_uploads.py runs its multipart branch.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from devstack.client import ROOT, StackProcess

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
  if (upload.method === "multipart") {
    await sendInParts(token, video.id, upload, file); // big files (64 MiB and up by default)
  } else {
    const form = new FormData();
    for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
    form.append("file", file); // the file goes last
    const stored = await fetch(upload.url, { method: "POST", body: form });
    if (!stored.ok) throw new Error(`the upload failed (HTTP ${stored.status})`);
  }

  let current = video;
  while (!current.playable && current.status !== "ready" && current.status !== "failed") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    current = await call(`/videos/${encodeURIComponent(video.id)}`, { token });
  }
  return current; // keep polling it for `progress` and `status` if you show them
}

// A multipart upload: ask for part URLs (up to 100 at a time), PUT each slice of the file,
// keep each part's ETag, then complete. The web app's multipart.js also sends 4 parts at a
// time, retries each, and resumes after a reload (GET /videos/{id}/upload lists what S3 has).
async function sendInParts(token, id, upload, file) {
  const numbers = Array.from({ length: upload.part_count }, (_, i) => i + 1);
  const parts = [];
  for (let first = 0; first < numbers.length; first += 100) {
    const part_numbers = numbers.slice(first, first + 100);
    const { parts: urls } = await call(`/videos/${id}/upload/parts`, { token, body: { part_numbers } });
    for (const { part_number, url } of urls) {
      const start = (part_number - 1) * upload.part_size;
      const sent = await fetch(url, { method: "PUT", body: file.slice(start, start + upload.part_size) });
      if (!sent.ok) throw new Error(`part ${part_number} failed (HTTP ${sent.status})`);
      parts.push({ part_number, etag: sent.headers.get("ETag") });
    }
  }
  await call(`/videos/${id}/upload/complete`, { token, body: { parts } });
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


def upload_with_example(
    page: Page, stack: StackProcess, email: str, password: str, path: Path, then: str = ""
) -> Any:
    """On the app's origin, the example's `uploadVideo` of the file at `path`
    (its bytes, its name) as `email`: the video it returns. `then` is script
    run after it, with `video` in scope."""
    page.goto("/")
    example = runnable_example(page, stack)
    return page.evaluate(
        f"""async ([email, password, name, data]) => {{
          {example}
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const file = new File([bytes], name, {{ type: "video/mp4" }});
          const video = await uploadVideo(email, password, file);
          {then}
          return video;
        }}""",
        [email, password, path.name, base64.b64encode(path.read_bytes()).decode()],
    )
