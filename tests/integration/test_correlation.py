"""One video's correlation id on every log line of its journey: the create
request, its upload through S3 and SQS, the worker, the scheduled jobs and the
email; and `python -m devstack logs` telling that story from the JSON log."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from chalice.test import Client

from chalicelib import telemetry
from chalicelib.domain import NewVideo, Principal, VideoStatus, utcnow
from chalicelib.processing import uploaded_objects
from chalicelib.settings import Settings
from devstack.client import ROOT
from devstack.logs import read_entries, story
from devstack.mailbox import sent_messages
from devstack.pump import lambda_sqs_event
from tests.fakes import FakePorts

PASSWORD = "Corr3ct-Horse!"


@pytest.fixture
def log_file(
    tmp_path: Path, settings: Settings, api_module: ModuleType, workers_module: ModuleType
) -> Iterator[Path]:
    """Both apps' log lines also go, as JSON, to a file (as in the local stack),
    with metrics as log lines; as it was afterwards."""
    path = tmp_path / "logs.jsonl"
    loggers = [logging.getLogger(telemetry.LIBRARY_LOGGER), api_module.app.log, workers_module.app.log]
    before = [list(logger.handlers) for logger in loggers]
    capture = settings.model_copy(update={"log_file": str(path), "metrics_output": "log"})
    telemetry.configure(capture, "vidline-test", api_module.app.log, workers_module.app.log)
    yield path
    telemetry.configure(settings, "vidline-test")  # metrics back to EMF, the file closed
    for logger, handlers in zip(loggers, before, strict=True):
        logger.handlers = handlers


def api_call(client: Client, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    response = getattr(client.http, method.lower())(
        path, headers=headers, body=json.dumps(body) if body is not None else None
    )
    assert response.status_code < 300, response.body
    return json.loads(response.body)


def next_upload_event(aws: Any, queue_url: str, video_id: str) -> dict[str, Any]:
    """The upload event of `video_id`; any other message (another test's) is deleted."""
    for _ in range(10):
        for message in aws.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        ).get("Messages", []):
            aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if any(video_id in upload.key for upload in uploaded_objects(message["Body"])):
                return dict(message)
    raise AssertionError(f"no upload event of video {video_id} arrived on the jobs queue")


def test_one_videos_id_is_on_every_line_from_create_to_email(
    api_module: ModuleType,
    workers_module: ModuleType,
    aws: Any,
    settings: Settings,
    clip: Path,
    log_file: Path,
) -> None:
    email = f"journey-{uuid.uuid4().hex[:8]}@example.com"
    queue_url = aws.sqs.get_queue_url(QueueName=settings.jobs_queue)["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    with Client(api_module.app, stage_name="local") as api:
        api_call(api, "POST", "/auth/signup", {"email": email, "password": PASSWORD})
        token = api_call(api, "POST", "/auth/login", {"email": email, "password": PASSWORD})["id_token"]
        journey_starts = sum(1 for _ in read_entries(log_file)) if log_file.exists() else 0

        # The browser's part: create, then POST the file to S3 with the presigned form.
        body = {"title": "Trip", "filename": "trip.mp4", "content_type": "video/mp4"}
        created = api_call(api, "POST", "/videos", {**body, "size_bytes": clip.stat().st_size}, token)
        video_id = created["video"]["id"]
        upload = created["upload"]
        with clip.open("rb") as file:
            posted = requests.post(upload["url"], data=upload["fields"], files={"file": file}, timeout=30)
        assert posted.status_code in (200, 204), posted.text

        # S3's event through SQS to the worker, as Lambda would deliver it.
        message = next_upload_event(aws, queue_url, video_id)
        with Client(workers_module.app, stage_name="local") as workers:
            workers.lambda_.invoke("process_upload", lambda_sqs_event(message, queue_arn, settings.region))
        assert api_call(api, "GET", f"/videos/{video_id}", token=token)["status"] == "ready"

    assert any(email in mail["to"] for mail in sent_messages())
    journey = list(read_entries(log_file))[journey_starts:]
    assert journey
    strays = [entry for entry in journey if entry.get("correlation_id") != video_id]
    assert not strays, strays
    messages = [entry["message"] for entry in journey]
    assert any(m.startswith(f"video {video_id} created") for m in messages)  # the API
    assert any("is playable" in m for m in messages)  # the HLS publisher's thread
    assert any(m.startswith(f"video {video_id} encoded") for m in messages)  # the worker
    assert any("its owner was emailed that it is ready" in m for m in messages)  # the email
    metrics = " ".join(m for m in messages if m.startswith("metrics "))
    for name in ("UploadsCreated=1", "EncodeSeconds=", "EmailsSent=1"):
        assert name in metrics
    assert {entry["logger"] for entry in journey} >= {"chalicelib.services", "chalicelib.processing"}

    # And the logs command tells that story, in time order.
    told = subprocess.run(
        [sys.executable, "-m", "devstack", "logs", video_id, "--file", str(log_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert f"video {video_id} created" in told[0]
    assert sum("its owner was emailed" in line for line in told) == 1
    assert len(story(read_entries(log_file), video_id)) == len(
        [line for line in told if not line.startswith((" ", "Traceback"))]
    )


def test_a_scheduled_job_logs_each_video_under_its_own_id(log_file: Path, tmp_path: Path) -> None:
    fakes = FakePorts()
    container = fakes.container(Settings(work_dir=str(tmp_path)))
    owner = Principal(user_id="u1", email="owner@example.com")
    left = [
        container.video_service.create(
            owner, NewVideo(title=f"v{n}", filename="v.mp4", content_type="video/mp4", size_bytes=1000)
        )[0]
        for n in range(2)
    ]
    later = utcnow() + timedelta(days=1)
    housekeeping = dataclasses.replace(container.housekeeping, clock=lambda: later)

    report = telemetry.handle(None, lambda _: housekeeping.abandon_expired_uploads())

    assert report.failed == 2
    entries = list(read_entries(log_file))
    for video in left:
        assert fakes.videos.get(owner.user_id, video.id).status is VideoStatus.FAILED  # type: ignore[union-attr]
        lines = [entry for entry in entries if video.id in entry["message"]]
        assert lines and all(entry["correlation_id"] == video.id for entry in lines)
        assert any("its owner was emailed that it is failed" in entry["message"] for entry in lines)
    assert any("VideosFailed=1" in entry["message"] and "abandoned" in entry["message"] for entry in entries)
