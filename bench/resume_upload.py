"""A big upload in the web app resumes after the page is reloaded mid-way (issue 11's "done when").

    .venv/bin/python bench/resume_upload.py [--size-mib 1024] [--reload-at 0.5]

Starts its own local stack on free ports (the same `python -m devstack` that
`make dev` runs, with its enforcing S3 front and default settings: parts of
8 MiB from 64 MiB on), makes a real 2 s clip padded to `--size-mib` with an
MP4 `free` box (players skip it), signs up, and in Chromium chooses the file
and uploads it. Once `--reload-at` of the parts are stored it reloads the
page, chooses the same file again, answers "Resume upload", and waits until
the video is `ready`. Prints the timings, how many parts were sent before and
after the reload, and how many were sent twice (only those on their way when
the page went away should be).
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Request, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.client import ApiClient, StackProcess  # noqa: E402
from tests.media_tools import make_clip  # noqa: E402

MIB = 1024 * 1024
PASSWORD = "Corr3ct-Horse!"
CHROMIUM = "/usr/lib/chromium/chromium"


def padded_clip(path: Path, size: int) -> Path:
    """A real 2 s clip followed by a `free` box up to `size` bytes."""
    make_clip(path, seconds=2, faststart=True)
    padding = size - path.stat().st_size
    with path.open("ab") as file:
        file.write(struct.pack(">I4s", padding, b"free"))
        chunk = bytes(8 * MIB)
        left = padding - 8
        while left:
            file.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return path


def part_number(request: Request) -> int | None:
    numbers = parse_qs(urlsplit(request.url).query).get("partNumber")
    return int(numbers[0]) if numbers and request.method == "PUT" else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--reload-at", type=float, default=0.5, help="fraction of parts stored before the reload"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        clip = padded_clip(Path(scratch) / "Long hike.mp4", args.size_mib * MIB)
        logs = ROOT / "test-artifacts"
        logs.mkdir(exist_ok=True)
        with StackProcess(logs / "bench-resume-upload-stack.log") as stack, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(base_url=stack.cdn)
            page.set_default_timeout(120_000)
            user = ApiClient.sign_up(stack.api, PASSWORD)
            page.goto("/")
            page.get_by_label("Email").fill(user.email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()

            stored: Counter[int] = Counter()
            sent: Counter[int] = Counter()

            def on_sent(request: Request) -> None:
                if (n := part_number(request)) is not None:
                    sent[n] += 1

            def on_stored(request: Request) -> None:
                response = request.response()
                if (n := part_number(request)) is not None and response is not None and response.ok:
                    stored[n] += 1

            page.on("request", on_sent)
            page.on("requestfinished", on_stored)
            started = time.monotonic()
            page.get_by_label("Choose video").set_input_files(clip)
            page.get_by_role("button", name="Upload").click()
            # The plan tells how many parts there are; wait for the first one to be stored.
            while not stored:
                page.wait_for_timeout(200)
            part_count = -(-args.size_mib * MIB // (8 * MIB))
            while sum(stored.values()) < args.reload_at * part_count:
                page.wait_for_timeout(200)
            before = dict(stored)
            reloaded = time.monotonic()
            page.on("dialog", lambda dialog: dialog.accept())
            page.reload()
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()
            sent.clear()
            page.get_by_label("Choose video").set_input_files(clip)
            expect(page.get_by_text("upload was interrupted")).to_be_visible()
            page.get_by_role("button", name="Resume upload").click()
            card = page.locator("[data-video-id]").first
            expect(card).to_have_attribute("data-status", "ready", timeout=600_000)
            finished = time.monotonic()
            (video,) = user.list_videos()
            browser.close()

    twice = sorted(n for n in sent if n in before)
    print(f"file: {args.size_mib} MiB in {part_count} parts of 8 MiB")
    print(f"reloaded after {reloaded - started:.1f} s with {len(before)} parts stored")
    print(f"after the reload: {len(sent)} parts sent; already stored before it and sent again: {twice}")
    print(f"ready {finished - reloaded:.1f} s after the reload ({finished - started:.1f} s in all)")
    print(f"video {video['id']}: {video['status']}, source {video['source']['size_bytes']} bytes")
    ok = video["status"] == "ready" and not twice and video["source"]["size_bytes"] == args.size_mib * MIB
    print("resumed: yes" if ok else "resumed: NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
