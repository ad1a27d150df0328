"""Logs, metrics and traces: what happened to one video, on AWS and locally.

Correlation id. Every log line carries `correlation_id`: the id of the video
the line is about, once there is one. It is set by the API for a route with
`{video_id}` (the middleware) and when a video is created (the service, once
the id exists); by the worker from the upload's key
(`uploads/{owner}/{video}/...`, which is how the id travels through S3 and
SQS); and by the scheduled jobs around the work on each video
(`correlated(video.id)`). It lives in a context variable rather than in
Powertools' `Logger.append_keys`, which is process-wide: `chalice local` and
the local event pump run several handlers at once in threads. A thread that
works for a video (the HLS publisher) runs in a copy of its starter's context
(`in_this_context`).

Logs. Every `logging.getLogger(__name__)` under `chalicelib` and each app's
Chalice logger write through one handler: on AWS one JSON object a line in
Powertools' format (`LambdaPowertoolsFormatter`, with `correlation_id`,
`function_request_id` and the X-Ray trace id), which CloudWatch Logs Insights
queries; locally (`VIDLINE_LOG_FORMAT=text`) a line for people: time, level,
correlation id, logger, message. With `VIDLINE_LOG_FILE` every line is also
appended as JSON to that file, which `python -m devstack logs VIDEO_ID` reads.

Metrics. CloudWatch embedded metric format through Powertools `Metrics`, in
the `Vidline` namespace with the dimension `stage` (VIDLINE_STAGE). `count` and
`seconds` add to the invocation's set, written when the handler ends (the
middleware calls `flush_metrics`); `video_failed` writes at once with a
second dimension, `reason`, one of `FailureReason`. Locally
(`VIDLINE_METRICS_OUTPUT=log`) each flush is a log line instead.

| metric | unit | where |
|---|---|---|
| UploadsCreated | Count | API: a video was created |
| EncodeSeconds | Seconds | worker: ffmpeg time of one encode |
| VideosFailed | Count | worker/jobs: a video became failed (also per `reason`) |
| EmailsSent | Count | worker/jobs: an owner was emailed |
| CacheHits, CacheMisses, CacheStaleServes, CacheErrors | Count | the cache |

Traces. With `VIDLINE_TRACING=true` (on AWS, with active tracing on the
functions) Powertools' Tracer patches botocore, so every AWS call is a
subsegment, and each handler runs in a `## handler` subsegment annotated with
the correlation id. Locally it is off, and aws-xray-sdk is never imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Any, ClassVar

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from chalicelib.settings import Settings

NAMESPACE = "Vidline"
# Our loggers: every module's under chalicelib. Each app adds its Chalice logger.
LIBRARY_LOGGER = "chalicelib"

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vidline_correlation_id", default=None
)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vidline_request_id", default=None)


class FailureReason(StrEnum):
    """Why a video failed, as a metric dimension: a small fixed set, never free text."""

    REJECTED_MEDIA = "rejected_media"  # the file is not something we process (bad, too long, too large)
    UPLOAD_REPLACED = "upload_replaced"  # the upload changed or vanished before it was read
    GAVE_UP = "gave_up"  # every attempt failed (crashes, timeouts, AWS errors)
    STUCK = "stuck"  # processing made no progress (the stuck-jobs job)
    ABANDONED = "abandoned"  # never uploaded within its window (the abandoned-uploads job)


# ------------------------------------------------------------------ correlation


def correlation_id() -> str | None:
    """The id the current log lines are about (a video id), if any."""
    return _correlation_id.get()


def set_correlation_id(value: str | None) -> None:
    """Make `value` the correlation id of what follows in this handler (the
    middleware restores the previous one when the handler ends)."""
    _correlation_id.set(value)


@contextlib.contextmanager
def correlated(value: str | None) -> Iterator[None]:
    """Log the block's lines under the correlation id `value` (e.g. one video a
    scheduled job works on), then go back to the one before."""
    token = _correlation_id.set(value)
    try:
        yield
    finally:
        _correlation_id.reset(token)


def in_this_context[T](target: Callable[[], T]) -> Callable[[], T]:
    """`target`, to run in another thread with this thread's correlation id."""
    return functools.partial(contextvars.copy_context().run, target)


class _Correlate(logging.Filter):
    """Stamps each record with the correlation id, the Lambda request id and its logger's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _correlation_id.get()
        if getattr(record, "function_request_id", None) is None:
            record.function_request_id = _request_id.get()
        record.logger = record.name  # JSON lines say which module wrote them
        return True


# ---------------------------------------------------------------------- logging


class TextFormatter(logging.Formatter):
    """A log line for people: time, level, correlation id, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        correlation = getattr(record, "correlation_id", None) or "-"
        line = f"{stamp} {record.levelname:<7} [{correlation}] {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def json_formatter(service: str) -> logging.Formatter:
    """Powertools' structured log format, with RFC 3339 timestamps (sortable)."""
    return LambdaPowertoolsFormatter(service=service, use_rfc3339=True)


class _Output:
    """How this process reports: set once by `configure`."""

    metrics_as_log = False
    stage = "local"
    handlers: ClassVar[list[logging.Handler]] = []
    tracer: Any = None


def configure(settings: Settings, service: str, *app_loggers: logging.Logger) -> None:
    """Send our loggers (chalicelib's and `app_loggers`) through one handler in
    the configured format (plus the JSON file, if set), and set up metrics and
    tracing. Called once by each app at import; calling again replaces it all."""
    correlate = _Correlate()
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(TextFormatter() if settings.log_format == "text" else json_formatter(service))
    handlers: list[logging.Handler] = [stream]
    if settings.log_file:
        file = logging.FileHandler(settings.log_file, encoding="utf-8", delay=True)
        file.setFormatter(json_formatter(service))
        handlers.append(file)
    for handler in handlers:
        handler.addFilter(correlate)
    for old in _Output.handlers:
        old.close()
    _Output.handlers = handlers
    for logger in (logging.getLogger(LIBRARY_LOGGER), *app_loggers):
        logger.handlers = list(handlers)
        logger.setLevel(settings.log_level)
        # Lambda's runtime puts its own handler on the root logger: without
        # this every line would be printed twice.
        logger.propagate = False
    discard_metrics()
    _Output.metrics_as_log = settings.metrics_output == "log"
    _Output.stage = settings.stage
    _Output.tracer = _tracer(service) if settings.tracing else None


def _tracer(service: str) -> Any:
    # Imported only when tracing is on: it loads aws-xray-sdk and patches botocore.
    from aws_lambda_powertools import Tracer

    return Tracer(service=service)


# ---------------------------------------------------------------------- metrics

# No service dimension: one stage's metrics, whichever app wrote them, are one
# metric in CloudWatch, which is what the alarms watch.
_log = logging.getLogger(f"{LIBRARY_LOGGER}.telemetry")
# What was recorded since the last flush, by (name, unit). Counts are summed as
# they come (a cache hit costs a dict update, not a Powertools call); durations
# keep each value. Handlers in one process share it (chalice local and the pump
# run them in threads): a flush writes everyone's, which is what CloudWatch sums.
_pending: dict[tuple[str, MetricUnit], list[float]] = {}
_pending_lock = threading.Lock()
# EMF takes at most 100 values per metric in one line.
MAX_VALUES = 100


def count(name: str, value: float = 1) -> None:
    """Add `value` to the Count metric `name` (written when the handler ends)."""
    with _pending_lock:
        values = _pending.setdefault((name, MetricUnit.Count), [0.0])
        values[0] += value


def seconds(name: str, value: float) -> None:
    """Record a duration in seconds under the metric `name` (written when the handler ends)."""
    with _pending_lock:
        values = _pending.setdefault((name, MetricUnit.Seconds), [])
        values.append(value)
        full = len(values) >= MAX_VALUES
    if full:
        flush_metrics()


def video_failed(reason: FailureReason) -> None:
    """Count a failed video, in total and under its `reason` (written at once)."""
    count("VideosFailed")
    by_reason = EphemeralMetrics(namespace=NAMESPACE)
    by_reason.add_dimension(name="stage", value=_Output.stage)
    by_reason.add_dimension(name="reason", value=reason.value)
    by_reason.add_metric(name="VideosFailed", unit=MetricUnit.Count, value=1)
    _write(by_reason.serialize_metric_set())


def flush_metrics() -> None:
    """Write the metrics recorded since the last flush, if any."""
    with _pending_lock:
        pending = dict(_pending)
        _pending.clear()
    if not pending:
        return
    metrics = EphemeralMetrics(namespace=NAMESPACE)
    metrics.add_dimension(name="stage", value=_Output.stage)
    for (name, unit), values in pending.items():
        for value in values:
            metrics.add_metric(name=name, unit=unit, value=value)
    _write(metrics.serialize_metric_set())


def discard_metrics() -> None:
    """Forget what was recorded and not written yet (a process starting afresh)."""
    with _pending_lock:
        _pending.clear()


def _write(blob: Mapping[str, Any]) -> None:
    if _Output.metrics_as_log:
        names = [m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        dimensions = {d: blob[d] for d in blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]}
        shown = " ".join(f"{name}={','.join(f'{v:g}' for v in blob[name])}" for name in names)
        _log.info("metrics %s %s", shown, dimensions)
    else:
        # EMF: CloudWatch turns this line of the function's log into metrics.
        print(json.dumps(blob, separators=(",", ":")), flush=True)


# -------------------------------------------------------------------- handlers


def handle[T](event: Any, get_response: Callable[[Any], T], *, video_id: str | None = None) -> T:
    """Run one handler invocation: fresh correlation id (`video_id`, if known
    from the event), the Lambda request id on every line, a trace subsegment
    when tracing, and the metrics written at the end."""
    context = getattr(event, "lambda_context", None) or getattr(event, "context", None)
    correlation = _correlation_id.set(video_id)
    request = _request_id.set(getattr(context, "aws_request_id", None))
    try:
        tracer = _Output.tracer
        if tracer is None:
            return get_response(event)
        with tracer.provider.in_subsegment("## handler") as subsegment:
            if video_id:
                subsegment.put_annotation(key="correlation_id", value=video_id)
            return get_response(event)
    finally:
        flush_metrics()
        _request_id.reset(request)
        _correlation_id.reset(correlation)
