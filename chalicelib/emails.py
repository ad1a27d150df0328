"""The emails a video's owner receives."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from chalicelib.domain import Video


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


def _html(heading: str, paragraphs: list[str], link: tuple[str, str] | None = None) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if link:
        label, url = link
        body += (
            f'<p><a href="{escape(url, quote=True)}" style="background:#4f46e5;color:#fff;'
            f'padding:10px 16px;border-radius:6px;text-decoration:none">{escape(label)}</a></p>'
        )
    return (
        '<!doctype html><html><body style="font-family:system-ui,sans-serif;color:#111">'
        f"<h2>{escape(heading)}</h2>{body}"
        '<p style="color:#666;font-size:12px">Sent by Vidline.</p></body></html>'
    )


def ready_email(video: Video, link: str) -> Email:
    heading = f"Your video “{video.title}” is ready"
    lines = ["It has been encoded and watermarked, and can be played now."]
    text = "\n\n".join([heading, *lines, f"Watch it: {link}", "— Vidline"])
    return Email(subject=heading, text=text, html=_html(heading, lines, ("Watch your video", link)))


def failed_email(video: Video, link: str) -> Email:
    heading = f"We could not process your video “{video.title}”"
    reason = video.error or "Something went wrong while processing it."
    lines = [
        f"Reason: {reason}",
        f"File: {video.source.filename}",
        "You can upload it again once the problem is fixed.",
    ]
    text = "\n\n".join([heading, *lines, f"Your videos: {link}", "— Vidline"])
    return Email(subject=heading, text=text, html=_html(heading, lines, ("Open Vidline", link)))
