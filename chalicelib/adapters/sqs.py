"""The upload jobs queue (and its dead-letter queue) on SQS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import quote_plus


def object_created_message(bucket: str, key: str, etag: str, *, region: str, now: datetime) -> str:
    """An SQS message body shaped like the S3 ObjectCreated notification S3 itself
    sends for a new object (the fields `chalicelib.processing.uploaded_objects`
    reads, plus the usual envelope), so a requeued job is handled like the original."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        # Not one of S3's own event names, but an ObjectCreated one: what matters
        # to the worker is the prefix; the suffix says who sent it.
        "eventName": "ObjectCreated:Requeued",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            # S3 URL-encodes keys with + for spaces; the worker decodes them.
            "object": {"key": quote_plus(key, safe="/"), "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


class SqsJobQueue:
    """JobQueue on the SQS jobs queue and dead-letter queue, found by name."""

    def __init__(self, client: Any, queue_name: str, dlq_name: str, region: str):
        self._sqs = client
        self._queue_name = queue_name
        self._dlq_name = dlq_name
        self._region = region

    @cached_property
    def _queue_url(self) -> str:
        return str(self._sqs.get_queue_url(QueueName=self._queue_name)["QueueUrl"])

    @cached_property
    def _dlq_url(self) -> str:
        return str(self._sqs.get_queue_url(QueueName=self._dlq_name)["QueueUrl"])

    def requeue_upload(self, bucket: str, key: str, etag: str) -> None:
        """Send the upload's job again, as S3 would have sent it."""
        body = object_created_message(bucket, key, etag, region=self._region, now=datetime.now(UTC))
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body)

    def backlog(self) -> int:
        """ApproximateNumberOfMessages of the jobs queue."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def dead_letter_depth(self) -> int:
        """ApproximateNumberOfMessages of the dead-letter queue."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def check(self) -> None:
        """Both queues answer (their URLs resolve and their attributes can be read)."""
        for url in (self._queue_url, self._dlq_url):
            self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
