"""The composition root builds adapters that suit where they run."""

from __future__ import annotations

import pytest

from chalicelib.bootstrap import Container
from chalicelib.settings import Settings
from devstack.aws import LOCAL_CREDENTIALS


@pytest.mark.parametrize(
    ("region", "host"),
    [("eu-west-1", "uploads-b.s3.eu-west-1.amazonaws.com"), ("us-east-1", "uploads-b.s3.amazonaws.com")],
)
def test_browsers_upload_to_the_buckets_own_regional_host_on_aws(
    monkeypatch: pytest.MonkeyPatch, region: str, host: str
) -> None:
    # No stand-in: presigning needs credentials, not a network.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIDLINE_REGION", region)  # region and endpoint are read by their aliases only
    monkeypatch.delenv("VIDLINE_AWS_ENDPOINT_URL", raising=False)
    container = Container(Settings(uploads_bucket="uploads-b"))

    ticket = container.uploads.presign_upload("uploads/u/v/source", "video/mp4", 10, 60)

    assert ticket.url == f"https://{host}/"


def test_a_local_stand_in_gets_path_style_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    local = "http://127.0.0.1:5000"
    monkeypatch.delenv("VIDLINE_AWS_ENDPOINT_URL", raising=False)  # it would win over AWS_ENDPOINT_URL
    monkeypatch.setenv("AWS_ENDPOINT_URL", local)
    settings = Settings(uploads_bucket="uploads-b")

    ticket = Container(settings).uploads.presign_upload("uploads/u/v/source", "video/mp4", 10, 60)

    assert ticket.url == f"{local}/uploads-b"
