"""The enforcing S3 front (devstack.s3front) in front of moto, and the
presigner that points the URLs and POSTs others use at it."""

from __future__ import annotations

from urllib.parse import urlsplit

from chalicelib.bootstrap import Container
from chalicelib.settings import Settings


def test_presigned_urls_point_at_the_public_endpoint_while_calls_go_to_moto(settings: Settings) -> None:
    front = "http://127.0.0.1:9"
    container = Container(settings.model_copy(update={"s3_public_endpoint_url": front}))

    ticket = container.uploads.presign_upload("u/v/source", "video/mp4", 10, 60)
    download = container.media.presign_download("some/key", if_match="abc", expires_s=60)

    assert ticket.url == f"{front}/{settings.uploads_bucket}"
    assert urlsplit(download.location).netloc == "127.0.0.1:9"
    container.uploads.check()  # still answered by moto: nothing listens on port 9


def test_without_a_public_endpoint_presigned_urls_point_where_the_calls_go(settings: Settings) -> None:
    container = Container(settings)

    ticket = container.uploads.presign_upload("u/v/source", "video/mp4", 10, 60)

    assert ticket.url == f"{settings.aws_endpoint_url}/{settings.uploads_bucket}"
