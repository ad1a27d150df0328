"""Email through SES."""

from __future__ import annotations

from typing import Any


class SesMailer:
    """Mailer on SES. The sender must be a verified identity."""

    def __init__(self, client: Any, sender: str):
        self._ses = client
        self._sender = sender

    def send(self, to: str, subject: str, text: str, html: str) -> None:
        self._ses.send_email(
            Source=self._sender,
            Destination={"ToAddresses": [to]},
            Message={
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": text, "Charset": "UTF-8"},
                    "Html": {"Data": html, "Charset": "UTF-8"},
                },
            },
        )

    def check(self) -> None:
        self._ses.get_send_quota()
