"""The scheduled jobs on moto, through the worker app's own handlers.

Also the JobQueue's SQS adapter, which the stuck-jobs job sends requeued
uploads through.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chalicelib.adapters.sqs import SqsJobQueue
from chalicelib.domain import UPLOAD_EXPIRED_REASON, Video, VideoStatus
from chalicelib.housekeeping import STUCK_REASON
from chalicelib.ports import MediaInfo, MediaSource, Transcoder, TranscodeResult
from chalicelib.processing import UploadedObject, uploaded_objects
from chalicelib.settings import Settings
from devstack.client import free_port
from devstack.jobs import (
    PORT_ENV_FILE,
    JobError,
    run_job,
    run_timers,
    scheduled_event,
    scheduled_jobs,
    stack_environment,
)
from devstack.stack import write_env_file
from tests.integration import test_worker as worker_tests
from tests.integration.test_worker import Worker, drain


@pytest.fixture
def queues(aws: Any, settings: Settings) -> tuple[str, str]:
    urls = tuple(
        aws.sqs.get_queue_url(QueueName=name)["QueueUrl"] for name in (settings.jobs_queue, settings.jobs_dlq)
    )
    for url in urls:
        drain(aws.sqs, url)
    return urls[0], urls[1]


def test_a_requeued_upload_reads_as_the_s3_event_of_that_upload(
    aws: Any, settings: Settings, queues: tuple[str, str]
) -> None:
    jobs = SqsJobQueue(aws.sqs, settings.jobs_queue, settings.jobs_dlq, settings.region)
    jobs.requeue_upload(settings.uploads_bucket, "uploads/owner 1/video+1/source", "abc123")

    message = aws.sqs.receive_message(QueueUrl=queues[0], WaitTimeSeconds=1)["Messages"][0]
    # Done with it: left in flight, it would come back to a later test's worker.
    aws.sqs.delete_message(QueueUrl=queues[0], ReceiptHandle=message["ReceiptHandle"])

    assert uploaded_objects(message["Body"]) == [
        UploadedObject(bucket=settings.uploads_bucket, key="uploads/owner 1/video+1/source", etag="abc123")
    ]


def test_backlog_counts_the_jobs_waiting_for_a_worker(
    aws: Any, settings: Settings, queues: tuple[str, str]
) -> None:
    jobs = SqsJobQueue(aws.sqs, settings.jobs_queue, settings.jobs_dlq, settings.region)
    assert jobs.backlog() == 0
    for n in range(2):
        aws.sqs.send_message(QueueUrl=queues[0], MessageBody=f"job {n}")
    assert jobs.backlog() == 2
    drain(aws.sqs, queues[0])


def test_dead_letter_depth_counts_the_messages_waiting_in_the_dead_letter_queue(
    aws: Any, settings: Settings, queues: tuple[str, str]
) -> None:
    jobs = SqsJobQueue(aws.sqs, settings.jobs_queue, settings.jobs_dlq, settings.region)
    assert jobs.dead_letter_depth() == 0

    for n in range(3):
        aws.sqs.send_message(QueueUrl=queues[1], MessageBody=f"dead {n}")

    assert jobs.dead_letter_depth() == 3
    jobs.check()


@pytest.mark.parametrize("missing", ["jobs", "dlq"])
def test_check_fails_when_either_queue_is_missing(aws: Any, settings: Settings, missing: str) -> None:
    names = {"jobs": settings.jobs_queue, "dlq": settings.jobs_dlq}
    names[missing] = "vidline-no-such-queue"
    jobs = SqsJobQueue(aws.sqs, names["jobs"], names["dlq"], settings.region)

    with pytest.raises(aws.sqs.exceptions.QueueDoesNotExist):
        jobs.check()


# --- the jobs, through the worker app's handlers ---


# The worker app under chalice's test client, queues and mail emptied (test_worker.py's fixture).
worker = worker_tests.worker


@pytest.fixture
def short(settings: Settings) -> Settings:
    """The session's settings with a stuck-job timeout of a second."""
    return settings.model_copy(update={"stuck_job_after_s": STUCK_AFTER_S})


STUCK_AFTER_S = 1.0


class Killed(BaseException):
    """What a killed invocation looks like from inside: nothing after it runs,
    not even Powertools' clean-up of the in-progress idempotency record."""


@dataclass
class DyingTranscoder:
    """Probes for real, then 'dies' (as a timed-out or out-of-memory Lambda) when it should encode."""

    real: Transcoder

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        return self.real.probe(source, max_pixels=max_pixels)

    def transcode(self, *args: Any, **kwargs: Any) -> TranscodeResult:
        raise Killed


def in_progress_records(worker: Worker) -> list[dict[str, Any]]:
    """The idempotency records of jobs that started and never finished."""
    items = worker.aws.dynamodb.scan(TableName=worker.settings.idempotency_table)["Items"]
    return [item for item in items if item["status"]["S"] == "INPROGRESS"]


def requeued_message(worker: Worker, video: Video, wait_s: float = 10) -> dict[str, Any]:
    """The next message on the jobs queue for `video`'s upload, deleted from the queue
    (other tests' stuck videos may be requeued next to it)."""
    sqs = worker.aws.sqs
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        received = sqs.receive_message(QueueUrl=worker.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in received.get("Messages", []):
            sqs.delete_message(QueueUrl=worker.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if [u.key for u in uploaded_objects(message["Body"])] == [video.upload_key]:
                found: dict[str, Any] = message
                return found
    raise AssertionError(f"no job for {video.upload_key} on the jobs queue")


def run(worker: Worker, name: str) -> dict[str, Any]:
    """Invoke the scheduled handler `name` as EventBridge and Lambda would; its report."""
    response = worker.client.lambda_.invoke(name, scheduled_event(name, worker.settings.region))
    report: dict[str, Any] = response.payload
    return report


def stored(worker: Worker, video: Video) -> Video:
    """`video` written as it is, straight into the table (e.g. with old timestamps)."""
    worker.container.videos.add(video)
    return video


def long_ago(worker: Worker, status: VideoStatus, seconds: float, **changes: Any) -> Video:
    video = worker.new_video()
    worker.container.videos.delete(video.owner_id, video.id)
    at = video.created_at - timedelta(seconds=seconds)
    return stored(worker, video.with_changes(status=status, created_at=at, updated_at=at, **changes))


def test_the_worker_app_declares_the_scheduled_jobs(workers_module: ModuleType) -> None:
    assert {"abandoned-uploads", "stuck-jobs"} <= set(scheduled_jobs(workers_module.app))
    with pytest.raises(JobError, match="stuck-jobs"):
        run_job(workers_module.app, "no-such-job", region="us-east-1")


def test_abandoned_uploads_fails_the_video_deletes_its_objects_and_parts_and_emails_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, aws: Any
) -> None:
    video = long_ago(worker, VideoStatus.AWAITING_UPLOAD, worker.settings.upload_url_ttl_s + 600)
    bucket = worker.settings.uploads_bucket
    aws.s3.put_object(Bucket=bucket, Key=video.upload_key, Body=b"too late")
    multipart = aws.s3.create_multipart_upload(Bucket=bucket, Key=video.upload_key)["UploadId"]
    aws.s3.upload_part(
        Bucket=bucket, Key=video.upload_key, UploadId=multipart, PartNumber=1, Body=b"x" * 1024
    )
    waiting = worker.new_video()

    first = run(worker, "abandoned-uploads")
    # The same handler through the local runner, as `python -m devstack job` calls it.
    second = run_job(worker.module.app, "abandoned-uploads", region=worker.settings.region)

    failed = worker.video(video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, UPLOAD_EXPIRED_REASON)
    assert aws.s3.list_objects_v2(Bucket=bucket, Prefix=video.upload_prefix).get("KeyCount") == 0
    assert aws.s3.list_multipart_uploads(Bucket=bucket, Prefix=video.upload_prefix).get("Uploads", []) == []
    assert len(worker.mails_to(video)) == 1
    assert worker.video(waiting).status is VideoStatus.AWAITING_UPLOAD
    # (Other tests' videos share the table: the counts are at least this video's.)
    assert first["changed"] >= 1 and first["errors"] == 0
    assert (second["changed"], second["errors"]) == (0, 0)


def test_a_job_whose_invocation_died_is_requeued_and_the_requeued_job_really_runs(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, clip: Path, short: Settings
) -> None:
    video, message = worker.uploaded(clip)
    drain(worker.aws.sqs, worker.queue_url)  # the message is gone (e.g. expired); nothing retries it
    dying = DyingTranscoder(worker.container.transcoder)
    worker.rewire(monkeypatch, short, transcoder=dying)
    # The Lambda dies mid-encode, leaving its in-progress idempotency record
    # behind; that lock lasts as long as the invocation had left to run.
    before = [item["id"] for item in in_progress_records(worker)]
    with pytest.raises(Killed):
        worker.invoke(message)
    assert worker.video(video).status in {VideoStatus.QUEUED, VideoStatus.PROCESSING}
    (lock,) = [item for item in in_progress_records(worker) if item["id"] not in before]
    # Wait out the dead invocation (its lock) and the stuck timeout, whichever ends later.
    lock_ends_s = int(lock["in_progress_expiration"]["N"]) / 1000 - time.time()
    idle_ends_s = worker.video(video).updated_at.timestamp() + STUCK_AFTER_S - time.time()
    time.sleep(max(lock_ends_s, idle_ends_s, 0) + 0.2)

    worker.rewire(monkeypatch, short)
    report = run(worker, "stuck-jobs")

    assert report["requeued"] >= 1 and report["errors"] == 0
    requeued = requeued_message(worker, video)
    assert uploaded_objects(requeued["Body"]) == uploaded_objects(message["Body"])
    # Delivered to the worker as any job: the idempotency layer, keyed by the
    # same upload, lets it run, and the video is made.
    worker.invoke(requeued)
    done = worker.video(video)
    assert done.status is VideoStatus.READY and done.requeued_at is not None
    assert len(worker.mails_to(video)) == 1


def test_a_stuck_job_with_no_worker_is_requeued_once_then_failed_with_one_email(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, short: Settings
) -> None:
    video = long_ago(worker, VideoStatus.PROCESSING, 60, upload_etag="etag-1", progress=30)
    worker.rewire(monkeypatch, short)

    run(worker, "stuck-jobs")
    requeued = worker.video(video)
    assert requeued.status is VideoStatus.PROCESSING and requeued.requeued_at is not None
    assert uploaded_objects(requeued_message(worker, video)["Body"]) == [
        UploadedObject(worker.settings.uploads_bucket, video.upload_key, "etag-1")
    ]
    time.sleep(STUCK_AFTER_S + 0.2)
    run(worker, "stuck-jobs")
    time.sleep(STUCK_AFTER_S + 0.2)
    run(worker, "stuck-jobs")

    failed = worker.video(video)
    assert (failed.status, failed.error) == (VideoStatus.FAILED, STUCK_REASON)
    assert len(worker.mails_to(video)) == 1
    with pytest.raises(AssertionError):  # requeued once only
        requeued_message(worker, video, wait_s=1)


# --- the local runner's errors ---


def test_the_runner_says_when_no_stack_is_running(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"not running.*python -m devstack"):
        stack_environment(tmp_path, 5999)

    env_file = tmp_path / str(PORT_ENV_FILE).format(moto_port=5999)
    env_file.parent.mkdir(parents=True)
    write_env_file(
        env_file, {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "VIDLINE_STAGE": "local"}
    )
    with pytest.raises(JobError, match=r"nothing answers at http://127\.0\.0\.1"):
        stack_environment(tmp_path, 5999)


def test_the_runner_reads_the_environment_of_the_stack_on_its_port(
    tmp_path: Path, moto_endpoint: str
) -> None:
    env_file = tmp_path / str(PORT_ENV_FILE).format(moto_port=5998)
    env_file.parent.mkdir(parents=True)
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "VIDLINE_MAIL_SENDER": "Vidline <no-reply@x.test>"}
    write_env_file(env_file, env)

    assert stack_environment(tmp_path, 5998) == env


def test_the_local_timers_run_every_job_through_its_handler_until_stopped(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, short: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    video = long_ago(worker, VideoStatus.PROCESSING, 60, upload_etag="etag-1")
    worker.rewire(monkeypatch, short)
    stop = threading.Event()
    timers = threading.Thread(
        target=run_timers, args=(worker.module.app, 0.2, stop), kwargs={"region": worker.settings.region}
    )
    caplog.set_level(logging.INFO, logger="devstack.jobs")

    timers.start()
    try:
        deadline = time.monotonic() + 20
        while worker.video(video).requeued_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        timers.join(timeout=30)

    assert not timers.is_alive()
    assert worker.video(video).requeued_at is not None
    ran = {record.getMessage().split(":")[0] for record in caplog.records if record.name == "devstack.jobs"}
    assert {"scheduled job abandoned-uploads", "scheduled job stuck-jobs"} <= ran
