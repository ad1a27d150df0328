"""A web mailbox for the email the apps send through (moto's) SES.

moto keeps sent mail in memory, in the process that runs it, so the mailbox
runs in that same process and reads `ses_backends[account][region]` directly
(moto's `/moto-api/data.json` is no help: it breaks once any Lambda exists).

    GET    /api/messages   JSON [{id, to, cc, bcc, from, subject, text, html, sent_at}], newest first
    DELETE /api/messages   forget every message
    GET    /               the messages as a small auto-refreshing page
    GET    /messages/{id}  one message's HTML part, sandboxed
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import getaddresses
from html.parser import HTMLParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TypedDict
from urllib.parse import unquote, urlsplit

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import (
    Message,
    RawMessage,
    SESBackend,
    TemplateMessage,
    ses_backends,
)
from moto.ses.template import parse_template

from devstack.http_server import BackgroundHTTPServer

MailMessage = TypedDict(
    "MailMessage",
    {
        "id": str,
        "to": list[str],
        "cc": list[str],
        "bcc": list[str],
        "from": str,
        "subject": str,
        "text": str | None,
        "html": str | None,
        "sent_at": str,
    },
)


class _SentAtList(list[Any]):
    """moto's list of sent mail, noting when each message was appended.

    moto records no send time, so the mailbox swaps this in for the
    backend's plain list; moto only ever appends to it.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        now = time.time()
        self.sent_at: dict[int, float] = {id(item): now for item in self}

    def append(self, item: Any) -> None:
        self.sent_at[id(item)] = time.time()
        super().append(item)

    def clear(self) -> None:
        super().clear()
        self.sent_at.clear()


def _backend(account_id: str, region: str) -> SESBackend:
    return ses_backends[account_id][region]


def _sent_list(backend: SESBackend) -> _SentAtList:
    # Installed on first use, and again if moto was reset (a new backend).
    if not isinstance(backend.sent_messages, _SentAtList):
        backend.sent_messages = _SentAtList(backend.sent_messages)
    return backend.sent_messages


def sent_messages(account_id: str = DEFAULT_ACCOUNT_ID, region: str = "us-east-1") -> list[MailMessage]:
    """Every message sent through SES in this process's moto, newest first."""
    backend = _backend(account_id, region)
    sent = _sent_list(backend)
    messages = [_describe(item, backend, sent.sent_at.get(id(item), time.time())) for item in list(sent)]
    return messages[::-1]


def clear_messages(account_id: str = DEFAULT_ACCOUNT_ID, region: str = "us-east-1") -> None:
    """Forget every sent message."""
    _sent_list(_backend(account_id, region)).clear()


def _describe(item: Any, backend: SESBackend, sent_at: float) -> MailMessage:
    when = datetime.fromtimestamp(sent_at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(item, RawMessage):
        return _describe_raw(item, when)
    if isinstance(item, Message):
        destinations: dict[str, list[str]] = item.destinations or {}
        subject = item.subject or ""
        text: str | None
        text, body_html = _split_simple_body(item.body or "")
    elif isinstance(item, TemplateMessage):
        destinations = item.destinations or {}
        subject, text, body_html = _render_template(item, backend)
    else:  # bulk templates and whatever moto adds later
        destinations = {}
        subject, text, body_html = f"({type(item).__name__} not shown)", None, None
    return {
        "id": str(getattr(item, "id", "")),
        "to": list(destinations.get("ToAddresses", [])),
        "cc": list(destinations.get("CcAddresses", [])),
        "bcc": list(destinations.get("BccAddresses", [])),
        "from": str(getattr(item, "source", None) or ""),
        "subject": subject,
        "text": text,
        "html": body_html,
        "sent_at": when,
    }


def _describe_raw(item: RawMessage, when: str) -> MailMessage:
    mime = email.message_from_string(item.raw_data, policy=email.policy.default)
    text_part = mime.get_body(preferencelist=("plain",))
    html_part = mime.get_body(preferencelist=("html",))
    body_html = html_part.get_content() if html_part is not None else None
    text = text_part.get_content() if text_part is not None else None
    if text is None and body_html is not None:
        text = html_to_text(body_html)

    def addresses(header: str) -> list[str]:
        return [address for _, address in getaddresses(mime.get_all(header, [])) if address]

    return {
        "id": item.id,
        "to": addresses("To") or [address for _, address in getaddresses(item.destinations)],
        "cc": addresses("Cc"),
        "bcc": addresses("Bcc"),
        "from": str(mime.get("From") or item.source or ""),
        "subject": str(mime.get("Subject") or ""),
        "text": text,
        "html": body_html,
        "sent_at": when,
    }


# moto's SendEmail keeps only the HTML body when a message has both parts,
# and does not say which one it kept; markup tells them apart.
_LOOKS_LIKE_HTML = re.compile(
    r"<\s*(html|body|div|p|br|a|table|h[1-6]|span|strong|em|ul|ol|img)\b", re.IGNORECASE
)


def _split_simple_body(body: str) -> tuple[str, str | None]:
    if _LOOKS_LIKE_HTML.search(body):
        return html_to_text(body), body
    return body, None


def _render_template(item: TemplateMessage, backend: SESBackend) -> tuple[str, str | None, str | None]:
    template = backend.templates.get(item.template)
    if template is None:
        return f"(template {item.template} no longer exists)", None, None
    data = json.loads(item.template_data or "{}")
    subject = parse_template(str(template.get("subject_part") or ""), data)
    text = parse_template(str(template.get("text_part") or ""), data) or None
    body_html = parse_template(str(template.get("html_part") or ""), data) or None
    if text is None and body_html is not None:
        text = html_to_text(body_html)
    return subject, text, body_html


class _TextExtractor(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self._href:
            # Keep links visible in the text, as mail clients' text views do.
            self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Readable plain text from an HTML email body."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    text = re.sub(r"[ \t]+", " ", "".join(extractor.parts))
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


_URL = re.compile(r"https?://[^\s<>\"')]+")


def _linkified(text: str) -> str:
    pieces, last = [], 0
    for match in _URL.finditer(text):
        url = match.group(0)
        pieces.append(html.escape(text[last : match.start()]))
        pieces.append(f'<a href="{html.escape(url)}">{html.escape(url)}</a>')
        last = match.end()
    pieces.append(html.escape(text[last:]))
    return "".join(pieces)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="3">
<link rel="icon" href="data:,">
<title>Vidline mailbox ({count})</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f;
       margin: 0 auto; max-width: 52rem; padding: 1.5rem; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .25rem; }}
.hint {{ color: #666; margin: 0 0 1.5rem; }}
article {{ border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.25rem; margin-bottom: 1rem; }}
h2 {{ font-size: 1.05rem; margin: 0 0 .25rem; }}
.meta {{ color: #555; font-size: .9rem; margin: 0 0 .75rem; }}
pre {{ white-space: pre-wrap; word-break: break-word; font: inherit; margin: 0; }}
.empty {{ color: #666; font-style: italic; }}
</style>
</head>
<body>
<h1>Vidline mailbox</h1>
<p class="hint">Email sent through the local SES; refreshes every 3 s.
{count} message(s) &middot; <a href="/api/messages">JSON</a></p>
{articles}
</body>
</html>
"""

_ARTICLE = """<article>
<h2>{subject}</h2>
<p class="meta">To {to} &middot; from {sender} &middot;
<time datetime="{sent_at}">{sent_at}</time>{html_link}</p>
<pre>{text}</pre>
</article>"""


def render_page(messages: list[MailMessage]) -> str:
    """The mailbox as one HTML page; every value from a message is escaped."""
    articles = [
        _ARTICLE.format(
            subject=html.escape(message["subject"] or "(no subject)"),
            to=html.escape(", ".join(message["to"]) or "(nobody)"),
            sender=html.escape(message["from"]),
            sent_at=html.escape(message["sent_at"]),
            html_link=(
                f' &middot; <a href="/messages/{html.escape(message["id"])}">HTML version</a>'
                if message["html"]
                else ""
            ),
            text=_linkified(message["text"] or ""),
        )
        for message in messages
    ]
    return _PAGE.format(
        count=len(messages),
        articles="\n".join(articles) or '<p class="empty">No mail yet.</p>',
    )


class MailboxServer(BackgroundHTTPServer):
    """The mailbox's HTTP server, in a background thread of the moto process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8025,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = "us-east-1",
    ) -> None:
        self._account_id = account_id
        self._region = region
        _sent_list(_backend(account_id, region))  # send times are noted from now on
        super().__init__(host, port, self._handler_class(), "mailbox")

    def messages(self) -> list[MailMessage]:
        """The messages the mailbox shows, newest first."""
        return sent_messages(self._account_id, self._region)

    def clear(self) -> None:
        """Forget every message."""
        clear_messages(self._account_id, self._region)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        mailbox = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "VidlineMailbox/1"

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/api/messages":
                    self._send(
                        HTTPStatus.OK,
                        "application/json",
                        json.dumps(mailbox.messages()),
                    )
                elif path == "/":
                    self._send(
                        HTTPStatus.OK,
                        "text/html; charset=utf-8",
                        render_page(mailbox.messages()),
                    )
                elif path.startswith("/messages/"):
                    wanted = unquote(path.removeprefix("/messages/"))
                    found = [m for m in mailbox.messages() if m["id"] == wanted and m["html"]]
                    if found:
                        # The body is someone's markup: no scripts, no same-origin access.
                        self._send(
                            HTTPStatus.OK,
                            "text/html; charset=utf-8",
                            found[0]["html"] or "",
                            {"Content-Security-Policy": "sandbox"},
                        )
                    else:
                        self._send(HTTPStatus.NOT_FOUND, "text/plain", "no such message\n")
                else:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")

            def do_DELETE(self) -> None:
                if urlsplit(self.path).path == "/api/messages":
                    mailbox.clear()
                    self.send_response(HTTPStatus.NO_CONTENT)
                    self.end_headers()
                else:
                    self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")

            def _send(
                self,
                status: HTTPStatus,
                content_type: str,
                body: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the page refreshes every few seconds; its log would drown the rest

        return Handler
