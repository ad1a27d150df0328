"""Deliver SQS messages to a Chalice `on_sqs_message` handler the way Lambda does.

`chalice local` never runs event handlers, so the local stack runs this pump
next to it. It long-polls the jobs queue and invokes the worker with one
Lambda-shaped record per invocation (batch size 1). Like Lambda's SQS
integration it deletes a message only when the handler returns and otherwise
leaves it to SQS, which redelivers it and finally moves it to the dead-letter
queue after `maxReceiveCount` receives. Unlike Lambda it extends a running
job's visibility (a heartbeat), and a failed message comes back after a short
back-off instead of the whole visibility timeout, so retries are quick to see.

Run on its own (the stack does this, in a child process so that the worker's
code, ffmpeg and environment stay out of the stack's process):

    python -m devstack.pump --worker-dir workers --queue-url URL
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from botocore.client import BaseClient
from chalice.app import Chalice
from chalice.config import Config
from chalice.constants import DEFAULT_LAMBDA_MEMORY_SIZE, DEFAULT_LAMBDA_TIMEOUT
from chalice.local import LambdaContext

logger = logging.getLogger("devstack.pump")

DEFAULT_HANDLER = "process_upload"
WORKER_MODULE_NAME = "vidline_worker_app"

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


class JobInterrupted(Exception):
    """The pump is stopping while a handler runs (Ctrl-C, or a restart for
    changed code). An Exception, not SystemExit, so that Powertools releases
    the job's idempotency record and the redelivered message runs again."""


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
    ) -> None:
        if handler_name not in app.handler_map:
            raise ValueError(f"app {app.app_name!r} has no handler named {handler_name!r}")
        self._sqs = sqs
        self._queue_url = queue_url
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
        """Deliver messages until `stop` is set (checked between long polls)."""
        while not stop.is_set():
            try:
                self.poll_once()
            except JobInterrupted:
                raise
            except Exception:  # the stand-in went away or hiccuped: keep going
                logger.exception("receiving from %s failed", self._queue_url)
                stop.wait(1)

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
            with self._heartbeat(receipt):
                result = self._handler(
                    event,
                    LambdaContext(self._function_name, self._memory_mb, self._timeout_ms),
                )
            if _reports_failure(result, message["MessageId"]):
                raise RuntimeError("the handler reported this message in batchItemFailures")
        except JobInterrupted:
            # Give the message back at once rather than after the visibility timeout.
            self._set_visibility(receipt, 0)
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
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)
        logger.info(
            "message %s done in %.1f s (%s)",
            message["MessageId"],
            time.monotonic() - started,
            attempt,
        )
        return True

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

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            return
        stop.set()
        # Between jobs the loop sees `stop` within a long poll; a running
        # handler is interrupted (its ffmpeg got the same signal).
        if pump is not None and pump.busy:
            raise JobInterrupted

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker_dir: Path = args.worker_dir.resolve()
    settings = lambda_settings(worker_dir, args.stage, args.handler)
    # As on Lambda, the function's configured environment wins.
    os.environ.update(settings.environment)
    os.chdir(worker_dir)
    try:
        app = load_chalice_app(worker_dir / "app.py")
        pump = EventPump(
            boto3.client("sqs"),
            args.queue_url,
            app,
            args.handler,
            stage=args.stage,
            memory_mb=settings.memory_mb,
            timeout_s=settings.timeout_s,
            retry_delay_s=args.retry_delay_s,
        )
    except Exception:
        logger.exception("could not load the worker from %s", worker_dir / "app.py")
        return 2
    logger.info("delivering %s to %s.%s", args.queue_url, app.app_name, args.handler)
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    with suppress(JobInterrupted):  # raised by on_signal
        pump.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
