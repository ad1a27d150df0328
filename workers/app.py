"""Vidline's workers (Chalice on Lambda, triggered by SQS).

S3 puts an ObjectCreated event for each upload on the jobs queue; each
message is one invocation (batch size 1), so one failing upload never holds
back another. The handler unpacks the event and hands each uploaded object
to the service layer. A bad file fails its video at once; any other
exception leaves the message on the queue to be retried. After
`VIDLINE_JOB_MAX_RECEIVES` receives SQS moves it to the dead-letter queue,
whose handler fails the video (unless the last attempt already did) and
emails its owner once. Locally the event pump delivers both queues to these
same handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice import Chalice
from chalice.app import CloudWatchEvent, Cron, Rate, SQSEvent

from chalicelib import telemetry
from chalicelib.bootstrap import Container
from chalicelib.processing import UploadedObject, uploaded_objects
from chalicelib.settings import get_settings

settings = get_settings()
# Logs go through chalicelib.telemetry's handler (JSON on AWS, text locally).
app = Chalice(app_name="vidline-workers", configure_logs=False)
telemetry.configure(settings, "vidline-workers", app.log)
container = Container(settings)


@app.middleware("all")
def observed(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Each invocation starts with no correlation id (a job sets its video's),
    and writes its metrics when it ends."""
    return telemetry.handle(event, get_response)


def _our_uploads(body: str) -> list[UploadedObject]:
    uploads = []
    for uploaded in uploaded_objects(body):
        if uploaded.bucket != settings.uploads_bucket:
            app.log.warning("ignoring an object in bucket %s", uploaded.bucket)
        else:
            uploads.append(uploaded)
    return uploads


@app.on_sqs_message(queue=settings.jobs_queue, batch_size=1, name="process_upload")
def process_upload(event: SQSEvent) -> None:
    """Encode, watermark and thumbnail each uploaded video, then email its owner."""
    # Lambda's context (the local pump passes a stand-in); it also bounds the
    # job's in-progress lock, see chalicelib.adapters.idempotency.
    context: Any = event.context
    for record in event:
        attributes = record.to_dict().get("attributes") or {}
        receives = int(attributes.get("ApproximateReceiveCount", "1"))
        for uploaded in _our_uploads(record.body):
            # The video's id travels in the upload's key: what follows is about it.
            telemetry.set_correlation_id(uploaded.video_id)
            outcome = container.process_once(
                job=uploaded.as_job(),
                lambda_context=context,
                final_attempt=receives >= settings.job_max_receives,
                time_left_s=context.get_remaining_time_in_millis() / 1000,
            )
            app.log.info("upload %s (receive %d): %s", uploaded.key, receives, outcome)


@app.on_sqs_message(queue=settings.jobs_dlq, batch_size=1, name="fail_dead_upload")
def fail_dead_upload(event: SQSEvent) -> None:
    """Fail the video of an upload whose job failed every attempt, and tell its owner."""
    for record in event:
        for uploaded in _our_uploads(record.body):
            telemetry.set_correlation_id(uploaded.video_id)
            outcome = container.processor.give_up(uploaded)
            app.log.info("dead upload %s: %s", uploaded.key, outcome)


# Scheduled jobs (chalicelib/housekeeping.py). Locally the stack runs them
# every VIDLINE_LOCAL_JOB_INTERVAL_S, and `python -m devstack job NAME` runs one now.


@app.schedule(Rate(15, unit=Rate.MINUTES), name="abandoned-uploads")
def abandoned_uploads(event: CloudWatchEvent) -> dict[str, Any]:
    """Fail videos whose upload window passed without an upload; remove what they left."""
    report = container.housekeeping.abandon_expired_uploads()
    app.log.info("abandoned-uploads: %s", report.as_dict())
    return report.as_dict()


@app.schedule(Rate(5, unit=Rate.MINUTES), name="stuck-jobs")
def stuck_jobs(event: CloudWatchEvent) -> dict[str, Any]:
    """Requeue jobs that stopped making progress, once; fail them if they stay stuck."""
    report = container.housekeeping.rescue_stuck_jobs()
    app.log.info("stuck-jobs: %s", report.as_dict())
    return report.as_dict()


@app.schedule(Cron(15, 0, "*", "*", "?", "*"), name="rollup")
def rollup(event: CloudWatchEvent) -> dict[str, Any]:
    """Fold each closed day's site-wide usage shards into one item (00:15 UTC daily;
    idempotent, and it catches up on any days a missed run left)."""
    days = container.usage_service.roll_up()
    report = {"days_rolled_up": len(days), "through": days[-1].isoformat() if days else None}
    app.log.info("rollup: %s", report)
    return report
