"""The worker on moto: S3 notification → SQS → handler → ffmpeg → media + email.

Uploads go into the moto uploads bucket, whose ObjectCreated notification
puts the real S3 event on the jobs queue; the test receives it and invokes
the worker's handler with the Lambda-shaped event, as Lambda (or the local
event pump) would.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import posixpath
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError
from chalice.local import LambdaContext
from chalice.test import Client

from chalicelib.adapters.idempotency import IdempotentJobs
from chalicelib.api.schemas import CreateVideoRequest
from chalicelib.bootstrap import Container
from chalicelib.domain import NewVideo, Principal, Video, VideoStatus
from chalicelib.ports import IMMUTABLE, MediaInfo, MediaProcessingError, MediaSource
from chalicelib.processing import GAVE_UP_REASON, UPLOAD_REPLACED_REASON, JobInterrupted
from chalicelib.settings import Settings
from devstack.mailbox import clear_messages, sent_messages
from devstack.pump import lambda_sqs_event
from tests.hostile_files import HOSTILE, Hostile
from tests.media_tools import make_clip, make_resolution_bomb, set_mkv_header_duration


@pytest.fixture
def worker(workers_module: ModuleType, aws: Any, settings: Settings) -> Iterator[Worker]:
    for name in (settings.jobs_queue, settings.jobs_dlq):
        drain(aws.sqs, aws.sqs.get_queue_url(QueueName=name)["QueueUrl"])
    clear_messages()
    with Client(workers_module.app, stage_name="local") as client:
        yield Worker(workers_module, client, aws, settings)


def drain(sqs: Any, queue_url: str) -> None:
    """Delete every message (PurgeQueue is allowed once a minute)."""
    while messages := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


class Worker:
    def __init__(self, module: ModuleType, client: Client, aws: Any, settings: Settings):
        self.module = module
        self.container = module.container
        self.client = client
        self.aws = aws
        self.settings = settings
        self.queue_url = aws.sqs.get_queue_url(QueueName=settings.jobs_queue)["QueueUrl"]
        self.queue_arn = self._arn(self.queue_url)
        self.dlq_url = aws.sqs.get_queue_url(QueueName=settings.jobs_dlq)["QueueUrl"]
        self.dlq_arn = self._arn(self.dlq_url)

    def _arn(self, queue_url: str) -> str:
        attributes = self.aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        arn: str = attributes["Attributes"]["QueueArn"]
        return arn

    def new_video(self, content_type: str = "video/mp4", size: int = 50_000_000) -> Video:
        owner = Principal(user_id=str(uuid.uuid4()), email=f"{uuid.uuid4().hex[:6]}@example.com")
        request = CreateVideoRequest.model_validate(
            {"title": "Test", "filename": "t.mp4", "content_type": content_type, "size_bytes": size},
            context={"settings": self.settings},
        )
        video, _ = self.container.video_service.create(owner, NewVideo(**request.model_dump()))
        return video

    def rewire(self, monkeypatch: pytest.MonkeyPatch, settings: Settings | None = None, **ports: Any) -> None:
        """Run the handlers on a Container with these settings and ports, for the test."""
        monkeypatch.setattr(self.module, "container", Container(settings or self.settings, **ports))

    def uploaded(self, clip: Path) -> tuple[Video, dict[str, Any]]:
        """A new video with `clip` uploaded, and its upload's message."""
        video = self.new_video()
        self.upload(video, clip)
        return video, self.receive()

    def upload(self, video: Video, path: Path, content_type: str | None = None) -> None:
        self.aws.s3.put_object(
            Bucket=self.settings.uploads_bucket,
            Key=video.upload_key,
            Body=path.read_bytes(),
            ContentType=content_type or video.source.content_type,
        )

    def receive(self, queue_url: str | None = None) -> dict[str, Any]:
        """The next S3 event message on the jobs queue (or the queue at `queue_url`)."""
        for _ in range(10):
            messages = self.aws.sqs.receive_message(
                QueueUrl=queue_url or self.queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                VisibilityTimeout=0,
            ).get("Messages", [])
            if messages and "Records" in json.loads(messages[0]["Body"]):
                message: dict[str, Any] = messages[0]
                return message
        raise AssertionError("no upload event arrived on the jobs queue")

    def invoke(self, message: dict[str, Any]) -> None:
        event = lambda_sqs_event(message, self.queue_arn, self.settings.region)
        self.client.lambda_.invoke("process_upload", event)

    def invoke_dead(self, message: dict[str, Any]) -> None:
        """Deliver a dead-letter queue message to its handler."""
        event = lambda_sqs_event(message, self.dlq_arn, self.settings.region)
        self.client.lambda_.invoke("fail_dead_upload", event)

    def send_dead(self, body: str) -> dict[str, Any]:
        """Put `body` on the dead-letter queue, as SQS does after the last receive; received back."""
        self.aws.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=body)
        messages = self.aws.sqs.receive_message(
            QueueUrl=self.dlq_url, AttributeNames=["All"], WaitTimeSeconds=1, VisibilityTimeout=0
        )["Messages"]
        message: dict[str, Any] = messages[0]
        self.aws.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
        return message

    def video(self, video: Video) -> Video:
        found = self.container.videos.get(video.owner_id, video.id)
        assert found is not None
        return found

    def mails_to(self, video: Video) -> list[dict[str, Any]]:
        return [m for m in sent_messages() if video.owner_email in m["to"]]

    def hls_keys(self, video: Video) -> list[str]:
        """The master playlist of the video's outputs and every key it names (its
        playlists, their init files and segments), each checked final: stored,
        immutable, and playlists ended."""
        assert video.outputs is not None and video.outputs.hls_master_key is not None
        master_key = video.outputs.hls_master_key
        keys = [master_key]
        for playlist in playlist_uris(self.media_text(master_key)):
            playlist_key = posixpath.normpath(posixpath.join(posixpath.dirname(master_key), playlist))
            text = self.media_text(playlist_key)
            assert text.rstrip().endswith("#EXT-X-ENDLIST")
            folder = posixpath.dirname(playlist_key)
            keys += [playlist_key, *(posixpath.join(folder, uri) for uri in playlist_uris(text))]
        for key in keys:
            stored = self.aws.s3.head_object(Bucket=self.settings.media_bucket, Key=key)
            assert stored["ContentLength"] > 0 and stored["CacheControl"] == IMMUTABLE, key
        return keys

    def media_text(self, key: str) -> str:
        body = self.aws.s3.get_object(Bucket=self.settings.media_bucket, Key=key)["Body"]
        text: str = body.read().decode()
        return text

    def media_keys(self, video: Video) -> list[str]:
        listing = self.aws.s3.list_objects_v2(Bucket=self.settings.media_bucket, Prefix=video.media_prefix)
        return [item["Key"] for item in listing.get("Contents", [])]


def test_an_uploaded_clip_becomes_ready_with_outputs_and_one_email(worker: Worker, clip: Path) -> None:
    video = worker.new_video()
    worker.upload(video, clip)
    worker.invoke(worker.receive())

    done = worker.video(video)
    assert done.status is VideoStatus.READY, done.error
    assert done.progress == 100 and done.error is None
    assert done.source.duration_s == pytest.approx(2.0, abs=0.1)
    assert (done.source.width, done.source.height) == (640, 360)
    assert done.outputs is not None and done.playable
    assert done.outputs.renditions[0].name == "360p"  # never upscaled
    assert [rung.name for rung in done.outputs.rungs] == ["360p"]
    named = worker.hls_keys(done)
    assert sorted(worker.media_keys(video)) == sorted(
        [done.outputs.renditions[0].key, done.outputs.thumbnail_key, *named]
    )
    mails = worker.mails_to(video)
    assert len(mails) == 1
    assert "is ready" in mails[0]["subject"]
    assert f"?video={video.id}" in mails[0]["text"]


def test_a_duplicate_delivery_encodes_once_and_emails_once(worker: Worker, clip: Path) -> None:
    video = worker.new_video()
    worker.upload(video, clip)
    message = worker.receive()
    worker.invoke(message)
    first = worker.video(video)
    assert first.status is VideoStatus.READY

    worker.invoke(message)  # the same message again, e.g. a redelivery
    worker.upload(video, clip)  # and a second S3 event for the same object
    worker.invoke(worker.receive())

    again = worker.video(video)
    assert again.updated_at == first.updated_at  # nothing was encoded or written again
    assert len(worker.mails_to(video)) == 1


def test_the_idempotency_record_alone_stops_a_redelivery(worker: Worker, clip: Path) -> None:
    video = worker.new_video()
    worker.upload(video, clip)
    message = worker.receive()
    worker.invoke(message)
    assert worker.video(video).status is VideoStatus.READY
    # Take the status guard away: put the record back as if never processed.
    worker.container.videos.update(video, status=VideoStatus.AWAITING_UPLOAD, progress=0)

    worker.invoke(message)

    again = worker.video(video)
    assert again.status is VideoStatus.AWAITING_UPLOAD  # Powertools returned the stored result
    assert len(worker.mails_to(video)) == 1


def test_a_non_video_upload_fails_with_a_reason_and_an_email(worker: Worker, tmp_path: Path) -> None:
    video = worker.new_video()
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video at all\n" * 100)
    worker.upload(video, fake)
    worker.invoke(worker.receive())

    failed = worker.video(video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error and "video" in failed.error.lower()
    assert worker.media_keys(video) == []
    mails = worker.mails_to(video)
    assert len(mails) == 1 and failed.error in mails[0]["text"]


@pytest.mark.parametrize("build", HOSTILE, ids=lambda build: build.__name__)
def test_an_upload_naming_other_files_fails_at_once_with_its_reason_having_read_only_itself(
    worker: Worker, tmp_path: Path, build: Callable[[Path], Hostile]
) -> None:
    hostile = build(tmp_path)
    try:
        video = worker.new_video()
        worker.upload(video, hostile.path)
        message = worker.receive()
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"

        worker.invoke(message)  # returns: the message is done, not retried

        failed = worker.video(video)
        assert failed.status is VideoStatus.FAILED
        # A sentence for people (stored as "source", an HLS playlist is not even
        # recognised as one: it is "damaged"); never a path or ffmpeg's words.
        assert failed.error and failed.error.endswith(".") and str(tmp_path) not in failed.error
        assert not hostile.witness.opened
    finally:
        hostile.witness.close()
    assert worker.media_keys(video) == []
    mails = worker.mails_to(video)
    assert len(mails) == 1 and failed.error in mails[0]["text"]


def test_an_upload_larger_than_declared_is_rejected(worker: Worker, clip: Path) -> None:
    video = worker.new_video(size=100)
    worker.upload(video, clip)
    worker.invoke(worker.receive())
    failed = worker.video(video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error and "larger" in failed.error


def test_an_upload_of_another_type_than_declared_is_rejected(worker: Worker, clip: Path) -> None:
    video = worker.new_video(content_type="video/webm")
    worker.upload(video, clip, content_type="text/html")
    worker.invoke(worker.receive())
    failed = worker.video(video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error and "type" in failed.error


def test_s3_test_events_and_foreign_keys_are_skipped(worker: Worker, settings: Settings) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": settings.uploads_bucket}
    worker.aws.sqs.send_message(QueueUrl=worker.queue_url, MessageBody=json.dumps(test_event))
    messages = worker.aws.sqs.receive_message(QueueUrl=worker.queue_url, AttributeNames=["All"])["Messages"]
    worker.invoke(messages[0])  # does not raise
    worker.aws.s3.put_object(Bucket=settings.uploads_bucket, Key="somewhere/else.txt", Body=b"x")
    worker.invoke(worker.receive())
    assert sent_messages() == []


def test_a_job_that_keeps_failing_lands_in_the_dlq_and_the_video_is_failed(
    worker: Worker,
    clip: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    workers_module: ModuleType,
) -> None:
    video = worker.new_video()
    worker.upload(video, clip)
    # Storing the outputs fails every time, a fault that is not the input's:
    # the worker is wired to a media bucket that does not exist.
    gone = settings.model_copy(update={"media_bucket": "vidline-missing"})
    monkeypatch.setattr(workers_module, "container", Container(gone))
    for attempt in range(1, settings.job_max_receives + 1):
        message = worker.receive()
        assert message["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        with pytest.raises(ClientError, match="NoSuchBucket"):
            worker.invoke(message)
        if attempt < settings.job_max_receives:
            assert worker.video(video).status is VideoStatus.PROCESSING

    # The next receive moves the message to the dead-letter queue.
    assert (
        worker.aws.sqs.receive_message(QueueUrl=worker.queue_url, WaitTimeSeconds=1).get("Messages") is None
    )
    dead = worker.aws.sqs.receive_message(QueueUrl=worker.dlq_url, WaitTimeSeconds=1)["Messages"]
    assert video.id in dead[0]["Body"]

    failed = worker.video(video)
    assert failed.status is VideoStatus.FAILED
    assert failed.error == GAVE_UP_REASON
    assert len(worker.mails_to(video)) == 1

    worker.invoke_dead(dead[0])  # the dead-letter handler finds it final: no second email
    assert worker.video(video) == failed
    assert len(worker.mails_to(video)) == 1


def playlist_uris(playlist: str) -> list[str]:
    """The URIs a playlist names: variant playlists, init files (URI="...") and segments."""
    uris = []
    for line in playlist.splitlines():
        if line.startswith("#"):
            uris += re.findall(r'URI="([^"]+)"', line)
        elif line.strip():
            uris.append(line.strip())
    return uris


class Ffmpeg:
    """The worker's real transcoder, with something done before it probes, or at
    the first progress report while ffmpeg is encoding (as another worker, or
    the host, would meanwhile)."""

    def __init__(
        self,
        worker: Worker,
        meanwhile: Callable[[], None] | None = None,
        encode_error: Exception | None = None,
        before_probe: Callable[[], None] | None = None,
        before_transcode: Callable[[], None] | None = None,
    ):
        self.transcoder = worker.container.transcoder
        self.meanwhile = meanwhile
        self.encode_error = encode_error
        self.before_probe = before_probe
        self.before_transcode = before_transcode

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        if self.before_probe is not None:
            self.before_probe()
        return self.transcoder.probe(source, max_pixels=max_pixels)

    def transcode(self, *args: Any, on_progress: Callable[[float], None] | None = None, **kwargs: Any) -> Any:
        if self.encode_error is not None:
            raise self.encode_error
        if self.before_transcode is not None:
            self.before_transcode()
        meanwhile, self.meanwhile = self.meanwhile, None

        def report(fraction: float) -> None:
            if meanwhile is not None:
                meanwhile()
            if on_progress is not None:
                on_progress(fraction)

        return self.transcoder.transcode(*args, on_progress=report, **kwargs)


def test_a_second_upload_during_an_encode_is_refused_and_the_video_keeps_its_media(
    worker: Worker, clip: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    video, first = worker.uploaded(clip)
    # In flight, as Lambda holds it; the next receive is the second upload's.
    worker.aws.sqs.delete_message(QueueUrl=worker.queue_url, ReceiptHandle=first["ReceiptHandle"])
    other_clip = make_clip(tmp_path / "other.mp4", seconds=1, size="320x240")

    def second_upload_is_handled() -> None:
        worker.upload(video, other_clip)  # the same presigned key, used again
        worker.invoke(worker.receive())

    ffmpeg = Ffmpeg(worker, meanwhile=second_upload_is_handled)
    worker.rewire(monkeypatch, transcoder=ffmpeg)
    worker.invoke(first)

    assert ffmpeg.meanwhile is None  # the second upload arrived mid-encode
    done = worker.video(video)
    assert done.status is VideoStatus.READY, done.error
    assert done.source.duration_s == pytest.approx(2.0, abs=0.1)  # the first upload's
    assert done.outputs is not None
    for key in (done.outputs.renditions[0].key, done.outputs.thumbnail_key, *worker.hls_keys(done)):
        stored = worker.aws.s3.get_object(Bucket=settings.media_bucket, Key=key)
        assert stored["ContentLength"] > 0
    assert len(worker.mails_to(video)) == 1


def test_a_header_that_understates_the_duration_ends_ready_with_the_true_one(
    worker: Worker, tmp_path: Path
) -> None:
    liar = make_clip(tmp_path / "liar.mkv", seconds=3)
    set_mkv_header_duration(liar, 1.0)
    video = worker.new_video(content_type="video/x-matroska")
    worker.upload(video, liar)
    worker.invoke(worker.receive())

    done = worker.video(video)
    assert done.status is VideoStatus.READY, done.error
    assert done.source.duration_s == pytest.approx(3.0, abs=0.1)
    assert len(worker.mails_to(video)) == 1


def lying_long_video(tmp_path: Path) -> Path:
    """4 s that say 1 s, for a limit of 2 s."""
    return set_mkv_header_duration(make_clip(tmp_path / "long.mkv", seconds=4), 1.0)


def resolution_bomb(tmp_path: Path) -> Path:
    return make_resolution_bomb(tmp_path / "bomb.mkv")


@pytest.mark.parametrize(
    "make, reason",
    [
        (lying_long_video, "This video is longer than the 2 seconds allowed."),
        (resolution_bomb, "This video has frames larger than the 4096×4096 pixels allowed."),
    ],
)
def test_a_file_bad_beyond_its_header_fails_at_the_first_attempt_with_its_reason(
    worker: Worker,
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], Path],
    reason: str,
) -> None:
    worker.rewire(monkeypatch, settings.model_copy(update={"max_duration_s": 2}))
    video = worker.new_video(content_type="video/x-matroska")
    worker.upload(video, make(tmp_path))
    message = worker.receive()
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"

    worker.invoke(message)  # returns: the message is done, not retried

    failed = worker.video(video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, reason)
    mails = worker.mails_to(video)
    assert len(mails) == 1 and reason in mails[0]["text"]
    assert worker.media_keys(video) == []


def test_the_source_url_serves_only_the_claimed_upload(worker: Worker, clip: Path) -> None:
    video = worker.new_video()
    worker.upload(video, clip)
    uploads = worker.container.uploads
    claimed = uploads.head(video.upload_key)
    assert claimed is not None and claimed.etag
    source = uploads.presign_download(video.upload_key, if_match=claimed.etag, expires_s=60)
    assert source.headers == (("If-Match", f'"{claimed.etag}"'),)
    assert "if-match" in parse_qs(urlsplit(source.location).query)["X-Amz-SignedHeaders"][0].split(";")
    with urllib.request.urlopen(urllib.request.Request(source.location, headers=dict(source.headers))) as got:
        assert got.read() == clip.read_bytes()

    worker.aws.s3.put_object(
        Bucket=worker.settings.uploads_bucket, Key=video.upload_key, Body=b"another", ContentType="video/mp4"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(source.location, headers=dict(source.headers)))
    assert refused.value.code == 412


def test_a_claimed_upload_replaced_before_ffmpeg_read_it_fails_the_video(
    worker: Worker, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video, message = worker.uploaded(clip)

    def replaced() -> None:
        worker.aws.s3.put_object(
            Bucket=worker.settings.uploads_bucket, Key=video.upload_key, Body=b"x", ContentType="video/mp4"
        )

    worker.rewire(monkeypatch, transcoder=Ffmpeg(worker, before_probe=replaced))
    worker.invoke(message)

    failed = worker.video(video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, UPLOAD_REPLACED_REASON)
    assert len(worker.mails_to(video)) == 1


def test_the_dead_letter_handler_fails_a_video_its_worker_left_processing(
    worker: Worker, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video, message = worker.uploaded(clip)
    # The first attempt fails as a killed ffmpeg would; the worker then dies
    # and SQS moves the message on without another attempt.
    worker.rewire(
        monkeypatch, transcoder=Ffmpeg(worker, encode_error=MediaProcessingError("killed by SIGKILL"))
    )
    with pytest.raises(MediaProcessingError):
        worker.invoke(message)
    assert worker.video(video).status is VideoStatus.PROCESSING

    dead = worker.send_dead(message["Body"])
    worker.invoke_dead(dead)
    worker.invoke_dead(dead)  # redelivered

    failed = worker.video(video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, GAVE_UP_REASON)
    mails = worker.mails_to(video)
    assert len(mails) == 1 and GAVE_UP_REASON in mails[0]["text"]


def test_the_dead_letter_handler_ignores_test_events_other_keys_and_deleted_videos(
    worker: Worker, clip: Path, settings: Settings
) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": settings.uploads_bucket}
    worker.invoke_dead(worker.send_dead(json.dumps(test_event)))
    worker.aws.s3.put_object(Bucket=settings.uploads_bucket, Key="somewhere/else.txt", Body=b"x")
    worker.invoke_dead(worker.send_dead(worker.receive()["Body"]))
    video, message = worker.uploaded(clip)
    worker.container.video_service.delete(Principal(video.owner_id, video.owner_email), video.id)
    worker.invoke_dead(worker.send_dead(message["Body"]))
    assert worker.container.videos.get(video.owner_id, video.id) is None
    assert sent_messages() == []


def test_an_interrupted_last_attempt_leaves_the_video_and_its_lock_for_the_next_delivery(
    worker: Worker,
    clip: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video, message = worker.uploaded(clip)
    message["Attributes"]["ApproximateReceiveCount"] = str(settings.job_max_receives)
    worker.rewire(monkeypatch, transcoder=Ffmpeg(worker, encode_error=JobInterrupted()))
    with pytest.raises(JobInterrupted):
        worker.invoke(message)
    left = worker.video(video)
    assert left.status is VideoStatus.PROCESSING and left.error is None
    assert worker.mails_to(video) == []

    # The pump gives the message back; the next delivery runs (no lock left behind).
    worker.rewire(monkeypatch)
    worker.invoke(message)
    assert worker.video(video).status is VideoStatus.READY
    assert len(worker.mails_to(video)) == 1


def test_the_in_progress_lock_expires_when_the_invocation_must_end(
    worker: Worker, settings: Settings
) -> None:
    dynamodb = worker.aws.dynamodb
    seen: list[dict[str, Any]] = []

    def job(job: dict[str, str]) -> str:
        items = dynamodb.scan(TableName=settings.idempotency_table)["Items"]
        seen.extend(item for item in items if item["status"]["S"] == "INPROGRESS")
        return "done"

    jobs = IdempotentJobs(job, dynamodb, settings.idempotency_table)
    context = LambdaContext("vidline-workers-test-process_upload", 3008, max_runtime_ms=900_000)
    job_key = {"bucket": "b", "key": f"uploads/{uuid.uuid4()}/v/source", "etag": "e"}
    remaining_ms = context.get_remaining_time_in_millis()
    started_ms = time.time() * 1000

    assert jobs(job=job_key, lambda_context=context) == "done"

    (record,) = seen
    expiry_ms = int(record["in_progress_expiration"]["N"])
    assert expiry_ms == pytest.approx(started_ms + remaining_ms, abs=2000)
    with pytest.raises(ValueError, match="context"):
        jobs(job=job_key, lambda_context=None)


# --- HLS published while ffmpeg encodes, from a source read over HTTP ---


class VideoStates:
    """Polls the repository from a thread: every state the video was seen in, and when."""

    def __init__(self, worker: Worker, video: Video):
        self.worker, self.video = worker, video
        self.seen: list[tuple[float, Video]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> VideoStates:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.append((time.monotonic(), self.worker.video(self.video)))

    def first_playable(self) -> tuple[float, Video] | None:
        return next(((at, v) for at, v in self.seen if v.playable), None)

    def wait_playable(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.first_playable() is None:
            assert time.monotonic() < deadline, "the video never became playable"
            time.sleep(0.05)


def test_the_video_is_playable_before_ffmpeg_ends_and_ready_names_only_stored_segments(
    worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "six.mp4", seconds=6, size="1280x720")
    video, message = worker.uploaded(clip)
    transcoded_at: list[float] = []
    ffmpeg = Ffmpeg(worker)
    transcode = ffmpeg.transcode

    def timed_transcode(*args: Any, **kwargs: Any) -> Any:
        result = transcode(*args, **kwargs)
        transcoded_at.append(time.monotonic())
        return result

    monkeypatch.setattr(ffmpeg, "transcode", timed_transcode)
    worker.rewire(monkeypatch, transcoder=ffmpeg)
    with VideoStates(worker, video) as states:
        worker.invoke(message)

    first = states.first_playable()
    assert first is not None
    playable_at, playable = first
    assert playable_at < transcoded_at[0]  # while ffmpeg was still encoding
    assert playable.status is VideoStatus.PROCESSING and playable.outputs is not None
    assert playable.outputs.renditions == () and playable.outputs.hls_master_key
    assert [rung.name for rung in playable.outputs.rungs] == ["720p", "480p", "360p"]
    done = worker.video(video)
    assert done.status is VideoStatus.READY and done.playable and done.outputs is not None
    assert done.outputs.hls_master_key == playable.outputs.hls_master_key
    keys = worker.hls_keys(done)
    assert sum(key.endswith(".m4s") for key in keys) >= 4 * 3  # 3 s of 2 s segments, 3 rungs + audio
    assert len(worker.mails_to(video)) == 1


class CuttingProxy:
    """A tiny HTTP proxy on 127.0.0.1 in front of moto's S3. Once armed, the first
    response that passes byte `cut_at` of the object is cut off there, after
    `before_cut` has run: a network read that breaks mid-way."""

    def __init__(self, upstream: str, cut_at: int, before_cut: Callable[[], None]):
        self.upstream, self.cut_at, self.before_cut = upstream, cut_at, before_cut
        self.armed = False
        self.cuts = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # ffmpeg stopped reading
                    self.relay()

            def relay(self) -> None:
                headers = {name: self.headers[name] for name in ("If-Match", "Range") if name in self.headers}
                try:
                    request = urllib.request.Request(proxy.upstream + self.path, headers=headers)
                    upstream = urllib.request.urlopen(request)
                except urllib.error.HTTPError as error:
                    upstream = error
                with upstream:
                    self.send_response(upstream.status)
                    for name in ("Content-Length", "Content-Range", "Content-Type", "Accept-Ranges", "ETag"):
                        if upstream.headers[name]:
                            self.send_header(name, upstream.headers[name])
                    self.end_headers()
                    position = int(re.match(r"bytes=(\d*)", headers.get("Range", "bytes=0")).group(1) or 0)
                    while chunk := upstream.read(16384):
                        if proxy.armed and position + len(chunk) > proxy.cut_at:
                            proxy.armed = False
                            self.wfile.write(chunk[: max(0, proxy.cut_at - position)])
                            self.wfile.flush()
                            proxy.before_cut()
                            proxy.cuts += 1
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        self.wfile.write(chunk)
                        position += len(chunk)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ThroughProxy:
    """The uploads bucket, with its presigned GETs sent through the proxy."""

    def __init__(self, uploads: Any, moto_endpoint: str, proxy: CuttingProxy):
        self.uploads, self.moto_endpoint, self.proxy = uploads, moto_endpoint, proxy

    def presign_download(self, key: str, *, if_match: str | None, expires_s: int) -> MediaSource:
        source = self.uploads.presign_download(key, if_match=if_match, expires_s=expires_s)
        assert source.location.startswith(self.moto_endpoint)
        return MediaSource(self.proxy.url + source.location.removeprefix(self.moto_endpoint), source.headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.uploads, name)


def test_a_source_read_that_breaks_mid_way_is_retried_and_leaves_nothing_published(
    worker: Worker, tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "six.mp4", seconds=6, size="1280x720", faststart=True)
    video, message = worker.uploaded(clip)
    with VideoStates(worker, video) as states:
        # The stream breaks at 70 % of the file, once the video was made playable.
        proxy = CuttingProxy(moto_endpoint, int(clip.stat().st_size * 0.7), states.wait_playable)
        with proxy:
            # Armed for the first transcode only: the retry reads the whole stream.
            ffmpeg = Ffmpeg(worker, before_transcode=lambda: setattr(proxy, "armed", proxy.cuts == 0))
            uploads = ThroughProxy(worker.container.uploads, moto_endpoint, proxy)
            worker.rewire(monkeypatch, transcoder=ffmpeg, uploads=uploads)
            with pytest.raises(MediaProcessingError, match="broke off"):
                worker.invoke(message)
            assert proxy.cuts == 1

            left = worker.video(video)
            assert left.status is VideoStatus.PROCESSING  # retried by SQS: not the video's fault
            assert not left.playable and left.outputs is None
            assert worker.media_keys(video) == []  # the run's prefix is empty
            assert worker.mails_to(video) == []

            worker.invoke(message)
    assert states.first_playable() is not None
    done = worker.video(video)
    assert done.status is VideoStatus.READY and done.playable, done.error
    assert done.outputs is not None
    assert sorted(worker.media_keys(video)) == sorted(
        [done.outputs.renditions[0].key, done.outputs.thumbnail_key, *worker.hls_keys(done)]
    )
    assert len(worker.mails_to(video)) == 1
