"""Vidline's workers (Chalice on Lambda, triggered by SQS).

S3 puts an ObjectCreated event for each upload on the jobs queue; each
message is one invocation (batch size 1), so one failing upload never holds
back another. The handler unpacks the event and hands each uploaded object
to the service layer. An exception leaves the message on the queue to be
retried; after `VIDLINE_JOB_MAX_RECEIVES` receives SQS moves it to the
dead-letter queue, and the last attempt marks the video failed first.
"""

from __future__ import annotations

import logging

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib.bootstrap import Container
from chalicelib.processing import uploaded_objects
from chalicelib.settings import get_settings

settings = get_settings()
app = Chalice(app_name="vidline-workers", configure_logs=True)
app.log.setLevel(logging.INFO)
logging.getLogger("chalicelib").setLevel(logging.INFO)
container = Container(settings)


@app.on_sqs_message(queue=settings.jobs_queue, batch_size=1, name="process_upload")
def process_upload(event: SQSEvent) -> None:
    """Encode, watermark and thumbnail each uploaded video, then email its owner."""
    for record in event:
        attributes = record.to_dict().get("attributes") or {}
        receives = int(attributes.get("ApproximateReceiveCount", "1"))
        final_attempt = receives >= settings.job_max_receives
        for uploaded in uploaded_objects(record.body):
            if uploaded.bucket != settings.uploads_bucket:
                app.log.warning("ignoring an object in bucket %s", uploaded.bucket)
                continue
            context = event.context
            outcome = container.process_once(
                job={"bucket": uploaded.bucket, "key": uploaded.key, "version": uploaded.version},
                lambda_context=context,
                final_attempt=final_attempt,
                time_left_s=context.get_remaining_time_in_millis() / 1000 if context else None,
            )
            app.log.info("upload %s (receive %d): %s", uploaded.key, receives, outcome)
