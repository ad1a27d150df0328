"""The composition root builds adapters that suit where they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.adapters.s3 import S3BlobStore
from chalicelib.api import schemas
from chalicelib.api.parse import parse
from chalicelib.api.present import Presenter
from chalicelib.bootstrap import Container
from chalicelib.domain import NewVideo
from chalicelib.processing import UploadedObject
from chalicelib.settings import Settings
from devstack.aws import LOCAL_CREDENTIALS
from devstack.client import ROOT
from tests.fakes import FakePorts, FakeVideoRepository


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


def test_a_container_of_fakes_serves_a_whole_upload_without_aws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Anything built from settings would call a closed port and fail.
    for key, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIDLINE_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fakes = FakePorts()
    container = fakes.container(Settings(work_dir=str(tmp_path), app_url="https://app.example"))

    owner = container.accounts.authenticate(f"Bearer {fakes.identity.log_in('a@example.com', 'pw').id_token}")
    body = {"title": "Trip", "filename": "trip.mp4", "content_type": "video/mp4", "size_bytes": 11}
    request = parse(schemas.CreateVideoRequest, body, container.settings)
    video, _ = container.video_service.create(owner, NewVideo(**request.model_dump()))
    fakes.uploads.objects[video.upload_key] = (b"video bytes", "video/mp4")
    event = UploadedObject(bucket=container.settings.uploads_bucket, key=video.upload_key)

    assert container.processor.process(event, final_attempt=False) == "ready"
    shown = Presenter(container.media_urls, container.settings).video(
        container.video_service.get(owner, video.id)
    )
    assert shown.status == "ready" and shown.outputs is not None
    assert shown.outputs.thumbnail_url.startswith("https://cdn.example/media/")
    assert fakes.transcoder.encodes == 1
    assert [mail["to"] for mail in fakes.mailer.sent] == ["a@example.com"]
    assert container.health.run().healthy


def test_ports_not_passed_in_are_built_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    videos = FakeVideoRepository()
    container = Container(Settings(uploads_bucket="up-b", media_bucket="media-b"), videos=videos)

    assert container.video_service.videos is videos
    uploads, media = container.uploads, container.media
    assert isinstance(uploads, S3BlobStore) and isinstance(media, S3BlobStore)
    assert (uploads.bucket, media.bucket) == ("up-b", "media-b")


def test_the_worker_transcodes_with_ffmpeg_which_the_api_never_loads() -> None:
    # A fresh interpreter: this one has loaded chalicelib.media for other tests.
    script = (
        "import sys\n"
        "from chalicelib.bootstrap import Container\n"
        "from chalicelib.settings import Settings\n"
        "container = Container(Settings())\n"
        "container.video_service, container.health, container.accounts\n"
        "print('chalicelib.media' in sys.modules)\n"
        "import chalicelib.media\n"
        "print(isinstance(container.processor.transcoder, chalicelib.media.FfmpegTranscoder))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]
