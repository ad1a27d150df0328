"""Deliver SQS messages to a Chalice `on_sqs_message` handler the way Lambda does.

`chalice local` never runs event handlers, so the local stack runs this pump
next to it. It long-polls the jobs queue and invokes the worker with one
Lambda-shaped record per invocation (batch size 1). Like Lambda's SQS
integration it deletes a message only when the handler returns and otherwise
leaves it to SQS, which redelivers it and finally moves it to the dead-letter
queue after `maxReceiveCount` receives. Unlike Lambda it extends a running
job's visibility (a heartbeat), and a failed message comes back after a short
back-off instead of the whole visibility timeout, so retries are quick to see.

A second pump, in a thread, delivers the dead-letter queue to the worker's
`fail_dead_upload` handler, as the DLQ's own Lambda trigger does on AWS.

Where the local pump differs from Lambda on purpose:

- Stopping it while a job runs (Ctrl-C, or the stack restarting it for
  changed code) raises `JobInterrupted` in the handler and gives the message
  back as a new one, so the interruption does not use up an attempt.
- On start it releases the idempotency locks and the message a killed
  predecessor held: locally it is the queue's only consumer, so whatever is
  in progress when it starts belongs to a pump that is gone.
- It exits when the stack that started it is gone.

Run on its own (the stack does this, in a child process so that the worker's
code, ffmpeg and environment stay out of the stack's process):

    python -m devstack.pump --worker-dir workers --queue-url URL [--dlq-url URL]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config as BotocoreConfig
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from chalice.app import Chalice
from chalice.config import Config
from chalice.constants import DEFAULT_LAMBDA_MEMORY_SIZE, DEFAULT_LAMBDA_TIMEOUT
from chalice.local import LambdaContext

from chalicelib.processing import JobInterrupted

logger = logging.getLogger("devstack.pump")

DEFAULT_HANDLER = "process_upload"
DEFAULT_DLQ_HANDLER = "fail_dead_upload"
WORKER_MODULE_NAME = "vidline_worker_app"
# Waiting for a stand-in that does not answer: 1, 2, 4 ... this many seconds.
MAX_OUTAGE_BACKOFF_S = 8.0
# The stand-in is gone or not answering (as opposed to refusing a request).
UNREACHABLE = (BotocoreConnectionError, HTTPClientError)
# What of a received message attribute can be sent again (SQS has no list values yet).
SENDABLE_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")

LambdaEvent = dict[str, Any]


def lambda_sqs_event(message: dict[str, Any], queue_arn: str, region: str) -> LambdaEvent:
    """The event Lambda passes for one SQS message received with boto3.

    `message` is one item of `receive_message(...)["Messages"]`, received
    with all system and message attributes.
    """
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return {"Records": [record]}


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # boto3 says StringValue/BinaryValue (bytes); Lambda says stringValue and
    # base64 text, and always lists the (unused) list fields.
    converted: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    return converted


def load_chalice_app(app_file: Path, module_name: str = WORKER_MODULE_NAME) -> Chalice:
    """Import the Chalice app in `app_file` under `module_name`.

    A distinct module name keeps the worker's `app.py` from clashing with
    the API's. Its directory goes first on `sys.path`, as `/var/task` does
    on Lambda, so its `chalicelib` is the one it imports.
    """
    project_dir = str(app_file.resolve().parent)
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    spec = importlib.util.spec_from_file_location(module_name, app_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {app_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    app = getattr(module, "app", None)
    if not isinstance(app, Chalice):
        raise TypeError(f"{app_file} defines no Chalice object named `app`")
    return app


@dataclass(frozen=True)
class LambdaSettings:
    """What Lambda would give the function: its environment, memory and timeout."""

    environment: dict[str, str]
    memory_mb: int
    timeout_s: int


def lambda_settings(project_dir: Path, stage: str, handler_name: str) -> LambdaSettings:
    """The function's settings from the project's `.chalice/config.json`, as deployed."""
    config_file = project_dir / ".chalice" / "config.json"
    from_disk = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config = Config(chalice_stage=stage, function_name=handler_name, config_from_disk=from_disk)
    return LambdaSettings(
        environment={key: str(value) for key, value in config.environment_variables.items()},
        memory_mb=int(config.lambda_memory_size or DEFAULT_LAMBDA_MEMORY_SIZE),
        timeout_s=int(config.lambda_timeout or DEFAULT_LAMBDA_TIMEOUT),
    )


def local_environment(configured: Mapping[str, str], process_env: Mapping[str, str]) -> dict[str, str]:
    """The variables a function's configured environment adds locally: those the
    process does not already set.

    On Lambda the function's `config.json` environment is all there is. Locally
    the stack sets the apps' environment deliberately (generated ids, the
    stand-in's address, the developer's `VIDLINE_*` overrides such as another
    bucket name), so that wins, and `config.json` (whose top-level defaults
    name the default resources) only fills the gaps. The API gets the same
    rule from `devstack.api`.
    """
    return {key: value for key, value in configured.items() if key not in process_env}


def release_abandoned_locks(dynamodb: BaseClient, table: str) -> int:
    """Delete the in-progress idempotency records in `table`; how many there were.

    Powertools marks a job INPROGRESS while it runs and deletes the record if
    the job raises; a SIGKILLed pump does neither, and its retries would fail
    with IdempotencyAlreadyInProgressError until the record's in-progress
    expiry. Only safe where the caller is the jobs' only consumer and no job
    runs, as for a local pump that is starting.
    """
    released = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="#status = :in_progress",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":in_progress": {"S": "INPROGRESS"}},
        ProjectionExpression="id",
    )
    for page in pages:
        for item in page.get("Items", []):
            try:
                dynamodb.delete_item(
                    TableName=table,
                    Key={"id": item["id"]},
                    ConditionExpression="#status = :in_progress",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":in_progress": {"S": "INPROGRESS"}},
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                continue  # finished meanwhile: not abandoned after all
            released += 1
    return released


def return_abandoned_message(sqs: BaseClient, queue_url: str, in_flight_file: Path) -> bool:
    """Make the message of `queue_url` a killed predecessor was working on
    visible again now, instead of when its visibility timeout runs out; True
    if there was one.

    Its receive counts as an attempt, as a crashed invocation does on Lambda,
    so a job that kills its worker every time still ends in the dead-letter
    queue. A note about another queue (another stand-in's: its URL names the
    port) is left to its own pump.
    """
    try:
        held = json.loads(in_flight_file.read_text())
        if held["queue_url"] != queue_url:
            return False
        receipt = str(held["receipt_handle"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    in_flight_file.unlink(missing_ok=True)
    try:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=0)
    except ClientError:  # already back on the queue, or deleted
        return False
    return True


class EventPump:
    """Feeds one queue's messages, one at a time, to one Chalice event handler."""

    def __init__(
        self,
        sqs: BaseClient,
        queue_url: str,
        app: Chalice,
        handler_name: str = DEFAULT_HANDLER,
        *,
        stage: str = "local",
        memory_mb: int = DEFAULT_LAMBDA_MEMORY_SIZE,
        timeout_s: int = DEFAULT_LAMBDA_TIMEOUT,
        wait_time_s: int = 1,
        retry_delay_s: int = 2,
        in_flight_file: Path | None = None,
    ) -> None:
        if handler_name not in app.handler_map:
            raise ValueError(f"app {app.app_name!r} has no handler named {handler_name!r}")
        self._sqs = sqs
        self._queue_url = queue_url
        self._in_flight_file = in_flight_file
        self._handler: Callable[[LambdaEvent, Any], Any] = app.handler_map[handler_name]
        self._function_name = f"{app.app_name}-{stage}-{handler_name}"
        self._memory_mb = memory_mb
        self._timeout_ms = timeout_s * 1000
        self._wait_time_s = wait_time_s
        self._retry_delay_s = retry_delay_s
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        self._visibility_timeout_s = int(attributes["VisibilityTimeout"])
        self._queue_arn: str = attributes["QueueArn"]
        self._region = self._queue_arn.split(":")[3]
        redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
        self._max_receives: int | None = redrive.get("maxReceiveCount")
        self.busy = False  # a handler is running

    def run(self, stop: threading.Event) -> None:
        """Deliver messages until `stop` is set (checked between long polls).

        A stand-in that stops answering is said once, then waited for with a
        growing back-off, and its return is said too.
        """
        backoff_s = 0.0
        while not stop.is_set():
            try:
                self.poll_once()
            except JobInterrupted:
                raise
            except UNREACHABLE as error:
                if not backoff_s:
                    logger.warning(
                        "the AWS stand-in does not answer (%s); waiting for it (retrying %s)",
                        error,
                        self._queue_url,
                    )
                backoff_s = min(max(backoff_s * 2, 1.0), MAX_OUTAGE_BACKOFF_S)
                stop.wait(backoff_s)
                continue
            except Exception:  # a refused or broken request: say it, keep going
                logger.exception("receiving from %s failed", self._queue_url)
                stop.wait(1)
            if backoff_s:
                logger.info("the AWS stand-in answers again")
                backoff_s = 0.0

    def poll_once(self) -> int:
        """Long-poll once and deliver what arrives; returns how many messages succeeded."""
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=self._wait_time_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return sum(self.deliver(message) for message in response.get("Messages", []))

    def deliver(self, message: dict[str, Any]) -> bool:
        """Invoke the handler with one message; True if it succeeded (and was deleted)."""
        event = lambda_sqs_event(message, self._queue_arn, self._region)
        receipt = message["ReceiptHandle"]
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        attempt = f"attempt {receives}" + (f" of {self._max_receives}" if self._max_receives else "")
        started = time.monotonic()
        try:
            self.busy = True
            self._hold(receipt)
            with self._heartbeat(receipt):
                result = self._handler(
                    event,
                    LambdaContext(self._function_name, self._memory_mb, self._timeout_ms),
                )
            if _reports_failure(result, message["MessageId"]):
                raise RuntimeError("the handler reported this message in batchItemFailures")
        except JobInterrupted:
            self._give_back(message)
            raise
        except Exception:
            logger.exception(
                "message %s failed (%s); it will be retried in %s s",
                message["MessageId"],
                attempt,
                self._retry_delay_s,
            )
            self._set_visibility(receipt, self._retry_delay_s)
            return False
        finally:
            self.busy = False
            self._release()
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)
        logger.info(
            "message %s done in %.1f s (%s)",
            message["MessageId"],
            time.monotonic() - started,
            attempt,
        )
        return True

    def _give_back(self, message: dict[str, Any]) -> None:
        """Return an interrupted job's message without using up an attempt.

        Making it visible again would count its receive; a new message with
        the same body and attributes starts counting afresh. The S3 event in
        the body still names the same upload, so idempotency sees the same job.
        """
        try:
            self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=message["Body"],
                MessageAttributes={
                    name: {key: value[key] for key in SENDABLE_ATTRIBUTE_FIELDS if key in value}
                    for name, value in message.get("MessageAttributes", {}).items()
                },
            )
            self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        except (ClientError, BotoCoreError) as error:
            # Second best: back at once, but this receive counts.
            logger.warning("could not give message %s back as a new one: %s", message["MessageId"], error)
            self._set_visibility(message["ReceiptHandle"], 0)
            return
        logger.info("message %s was interrupted; it is back on the queue", message["MessageId"])

    def _hold(self, receipt: str) -> None:
        # Tells the next pump which message to return if this one is killed.
        if self._in_flight_file is not None:
            held = {"queue_url": self._queue_url, "receipt_handle": receipt}
            with suppress(OSError):
                self._in_flight_file.write_text(json.dumps(held))

    def _release(self) -> None:
        if self._in_flight_file is not None:
            with suppress(OSError):
                self._in_flight_file.unlink(missing_ok=True)

    @contextmanager
    def _heartbeat(self, receipt: str) -> Iterator[None]:
        """Keep the message invisible while the handler runs.

        On AWS the queue's visibility timeout is set well above the function's
        timeout instead; locally it stays short so that a message a crashed
        pump held comes back soon.
        """
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._visibility_timeout_s / 3):
                self._set_visibility(receipt, self._visibility_timeout_s)

        thread = threading.Thread(target=beat, name="sqs-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _set_visibility(self, receipt: str, seconds: int) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=seconds,
            )
        except Exception:
            logger.warning("could not change the visibility of a message", exc_info=True)


def _reports_failure(result: object, message_id: str) -> bool:
    # A handler using partial batch responses (ReportBatchItemFailures, added
    # by the deployment's merge template) names failed messages in its result.
    if not isinstance(result, dict):
        return False
    failures = result.get("batchItemFailures") or []
    return any(isinstance(item, dict) and item.get("itemIdentifier") == message_id for item in failures)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pump for a worker project until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m devstack.pump", description=main.__doc__)
    parser.add_argument("--worker-dir", type=Path, required=True, help="the worker's Chalice project")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--handler", default=DEFAULT_HANDLER, help="name of the on_sqs_message handler")
    parser.add_argument("--dlq-url", help="the dead-letter queue, delivered to --dlq-handler")
    parser.add_argument(
        "--dlq-handler", default=DEFAULT_DLQ_HANDLER, help="name of the dead-letter queue's handler"
    )
    parser.add_argument("--idempotency-table", help="release the in-progress locks in this table on start")
    parser.add_argument(
        "--in-flight-file",
        type=Path,
        help="where to note the running job's message, for the next pump if this one is killed",
    )
    parser.add_argument(
        "--stage",
        default="local",
        help="Chalice stage whose config.json settings apply",
    )
    parser.add_argument(
        "--retry-delay-s", type=int, default=2, help="back-off before a failed job is retried"
    )
    parser.add_argument("--ready-fd", type=int, help="write a line here once the worker app is loaded")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Not "Found credentials in environment variables" for every client.
    logging.getLogger("botocore").setLevel(logging.WARNING)

    stop = threading.Event()
    pump: EventPump | None = None
    parent = os.getppid()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != parent:  # the stack's parent-death signal: nobody to hand back to
            _exit_with_group("the stack is gone")
        if stop.is_set():
            return
        stop.set()
        # Between jobs the loop sees `stop` within a long poll; a running
        # handler is interrupted (its ffmpeg got the same signal).
        if pump is not None and pump.busy:
            raise JobInterrupted

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="parent-watchdog", daemon=True).start()

    worker_dir: Path = args.worker_dir.resolve()
    settings = lambda_settings(worker_dir, args.stage, args.handler)
    os.environ.update(local_environment(settings.environment, os.environ))
    os.chdir(worker_dir)
    sqs = boto3.client("sqs", config=BotocoreConfig(retries={"max_attempts": 2, "mode": "standard"}))
    try:
        app = load_chalice_app(worker_dir / "app.py")
        pump = _pump(app, sqs, args, settings, args.queue_url, args.handler, args.in_flight_file)
        dead_letters = _dead_letter_pump(app, sqs, args, settings)
    except Exception:
        logger.exception("could not load the worker from %s", worker_dir / "app.py")
        return 2
    try:
        _recover_from_a_killed_pump(sqs, args)
    except (ClientError, BotoCoreError) as error:
        logger.warning("could not look for what a stopped pump left behind: %s", error)
    logger.info("delivering %s to %s.%s", args.queue_url, app.app_name, args.handler)
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    dlq_thread = None
    if dead_letters is not None:
        dlq_thread = threading.Thread(target=dead_letters.run, args=(stop,), name="dlq-pump", daemon=True)
        dlq_thread.start()
    with suppress(JobInterrupted):  # raised by on_signal
        pump.run(stop)
    stop.set()
    if dlq_thread is not None:  # its handler is quick: let it finish its message
        dlq_thread.join(timeout=30)
    return 0


def _dead_letter_pump(
    app: Chalice, sqs: BaseClient, args: argparse.Namespace, settings: LambdaSettings
) -> EventPump | None:
    if not args.dlq_url:
        return None
    if args.dlq_handler not in app.handler_map:
        logger.warning(
            "%s has no handler named %s: the dead-letter queue is not delivered",
            app.app_name,
            args.dlq_handler,
        )
        return None
    logger.info("delivering %s to %s.%s", args.dlq_url, app.app_name, args.dlq_handler)
    return _pump(app, sqs, args, settings, args.dlq_url, args.dlq_handler)


def _pump(
    app: Chalice,
    sqs: BaseClient,
    args: argparse.Namespace,
    settings: LambdaSettings,
    queue_url: str,
    handler: str,
    in_flight_file: Path | None = None,
) -> EventPump:
    return EventPump(
        sqs,
        queue_url,
        app,
        handler,
        stage=args.stage,
        memory_mb=settings.memory_mb,
        timeout_s=settings.timeout_s,
        retry_delay_s=args.retry_delay_s,
        in_flight_file=in_flight_file,
    )


def _recover_from_a_killed_pump(sqs: BaseClient, args: argparse.Namespace) -> None:
    if args.idempotency_table:
        dynamodb = boto3.client("dynamodb")
        released = release_abandoned_locks(dynamodb, args.idempotency_table)
        if released:
            logger.info(
                "released %d idempotency lock(s) a stopped pump left in progress in %s",
                released,
                args.idempotency_table,
            )
    if args.in_flight_file is not None and return_abandoned_message(sqs, args.queue_url, args.in_flight_file):
        logger.info("the job a stopped pump was running is back on the queue (that attempt counts)")


def _exit_when_orphaned(parent: int) -> None:
    # The stack also asks the kernel for a parent-death signal; this covers
    # platforms without one and a handler that could not run.
    while os.getppid() == parent:
        time.sleep(1)
    _exit_with_group("the stack is gone")


def _exit_with_group(reason: str) -> None:
    logger.warning("%s; exiting", reason)
    logging.shutdown()
    if os.getpgid(0) == os.getpid():  # started as a group leader: its ffmpeg goes too
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


if __name__ == "__main__":
    raise SystemExit(main())
