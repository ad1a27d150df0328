"""The scheduled jobs on moto, through the worker app's own handlers.

Also the JobQueue's SQS adapter, which the stuck-jobs job sends requeued
uploads through.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.adapters.sqs import SqsJobQueue
from chalicelib.processing import UploadedObject, uploaded_objects
from chalicelib.settings import Settings
from tests.integration.test_worker import drain


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

    assert uploaded_objects(message["Body"]) == [
        UploadedObject(bucket=settings.uploads_bucket, key="uploads/owner 1/video+1/source", etag="abc123")
    ]


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
