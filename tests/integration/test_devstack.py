"""The local stack: resources on moto, the event pump, the mailbox, and `python -m devstack`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from chalice.app import Chalice, SQSEvent

from chalicelib.processing import JobInterrupted
from chalicelib.settings import Settings
from devstack.aws import local_client
from devstack.client import free_port
from devstack.leftovers import PortHolder
from devstack.mailbox import MailboxServer
from devstack.processes import process_table
from devstack.pump import EventPump, local_environment
from devstack.resources import ensure_resources, sender_address
from devstack.stack import READY_LINE, CodeWatcher, RestartBackoff, bind_error

REPO_ROOT = Path(__file__).resolve().parents[2]
# moto's state is shared by the whole test process; a region no other test
# uses and fresh names per test keep these tests and the others apart.
REGION = "eu-north-1"


@pytest.fixture
def devstack_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings in REGION whose every resource name is new."""
    for name in ("VIDLINE_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    run = uuid.uuid4().hex[:8]
    return Settings(
        stage=f"t{run}",
        uploads_bucket=f"uploads-{run}",
        media_bucket=f"media-{run}",
        videos_table=f"videos-{run}",
        idempotency_table=f"idempotency-{run}",
        jobs_queue=f"jobs-{run}",
        jobs_dlq=f"jobs-{run}-dlq",
        job_max_receives=2,
        mail_sender=f"Vidline <no-reply-{run}@vidline.example.com>",
    )


@pytest.fixture
def aws_client(moto_endpoint: str) -> Callable[[str], BaseClient]:
    """boto3 clients for REGION on the session's moto server."""

    def client(service: str) -> BaseClient:
        return local_client(service, moto_endpoint, REGION)

    return client


def jobs_queue_url(aws_client: Callable[[str], BaseClient], name: str) -> str:
    return str(aws_client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def messages_in(aws_client: Callable[[str], BaseClient], name: str) -> int:
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=jobs_queue_url(aws_client, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


# --- resources ------------------------------------------------------------------


def test_ensure_resources_creates_everything_the_apps_use(
    moto_endpoint: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> None:
    generated = ensure_resources(devstack_settings, moto_endpoint)

    s3 = aws_client("s3")
    for bucket in (devstack_settings.uploads_bucket, devstack_settings.media_bucket):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()), bucket

    dynamodb = aws_client("dynamodb")
    videos = dynamodb.describe_table(TableName=devstack_settings.videos_table)["Table"]
    assert videos["KeySchema"] == [
        {"AttributeName": "owner_id", "KeyType": "HASH"},
        {"AttributeName": "video_id", "KeyType": "RANGE"},
    ]
    assert videos["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    idempotency = dynamodb.describe_table(TableName=devstack_settings.idempotency_table)["Table"]
    assert idempotency["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = dynamodb.describe_time_to_live(TableName=devstack_settings.idempotency_table)[
        "TimeToLiveDescription"
    ]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiration"}

    sqs = aws_client("sqs")
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=jobs_queue_url(aws_client, devstack_settings.jobs_dlq), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    jobs = sqs.get_queue_attributes(
        QueueUrl=jobs_queue_url(aws_client, devstack_settings.jobs_queue), AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(jobs["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    assert int(jobs["VisibilityTimeout"]) == 30  # a killed pump's job is back within 30 s

    notifications = s3.get_bucket_notification_configuration(Bucket=devstack_settings.uploads_bucket)
    [queue_config] = notifications["QueueConfigurations"]
    assert queue_config["QueueArn"] == jobs["QueueArn"]
    assert queue_config["Events"] == ["s3:ObjectCreated:*"]
    assert messages_in(aws_client, devstack_settings.jobs_queue) == 0, (
        "the s3:TestEvent should have been removed"
    )

    identities = aws_client("ses").list_identities(IdentityType="EmailAddress")["Identities"]
    assert sender_address(devstack_settings.mail_sender) in identities

    cognito = aws_client("cognito-idp")
    pool = cognito.describe_user_pool(UserPoolId=generated["VIDLINE_USER_POOL_ID"])["UserPool"]
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["AutoVerifiedAttributes"] == ["email"]
    app_client = cognito.describe_user_pool_client(
        UserPoolId=generated["VIDLINE_USER_POOL_ID"], ClientId=generated["VIDLINE_USER_POOL_CLIENT_ID"]
    )["UserPoolClient"]
    assert sorted(app_client["ExplicitAuthFlows"]) == ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_PASSWORD_AUTH"]
    assert "ClientSecret" not in app_client


def test_ensure_resources_twice_changes_nothing(
    moto_endpoint: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> None:
    first = ensure_resources(devstack_settings, moto_endpoint)
    second = ensure_resources(devstack_settings, moto_endpoint)

    assert second == first
    pools = aws_client("cognito-idp").list_user_pools(MaxResults=60)["UserPools"]
    assert [p["Name"] for p in pools].count(f"vidline-{devstack_settings.stage}-users") == 1
    queues = aws_client("sqs").list_queues(QueueNamePrefix=devstack_settings.jobs_queue)["QueueUrls"]
    assert len(queues) == 2  # the jobs queue and its dead-letter queue
    assert messages_in(aws_client, devstack_settings.jobs_queue) == 0, (
        "setting the notification again sent a test event"
    )


def test_ensure_resources_applies_a_changed_receive_limit(
    moto_endpoint: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> None:
    ensure_resources(devstack_settings, moto_endpoint)
    ensure_resources(devstack_settings.model_copy(update={"job_max_receives": 5}), moto_endpoint)

    jobs = aws_client("sqs").get_queue_attributes(
        QueueUrl=jobs_queue_url(aws_client, devstack_settings.jobs_queue), AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert json.loads(jobs["RedrivePolicy"])["maxReceiveCount"] == 5


# --- event pump -----------------------------------------------------------------


def fake_worker(on_event: Callable[[SQSEvent], None]) -> Chalice:
    """A Chalice worker app like workers/app.py, whose handler calls `on_event`."""
    app = Chalice(app_name="fake-worker")

    @app.on_sqs_message(queue="vidline-jobs", batch_size=1)
    def process_upload(event: SQSEvent) -> None:
        on_event(event)

    return app


@pytest.fixture
def jobs_queue(
    moto_endpoint: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> str:
    """The URL of the jobs queue, with every resource in place."""
    ensure_resources(devstack_settings, moto_endpoint)
    return jobs_queue_url(aws_client, devstack_settings.jobs_queue)


def test_pump_delivers_a_lambda_shaped_event_and_deletes_the_message(
    jobs_queue: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> None:
    url, sqs = jobs_queue, aws_client("sqs")
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"hello": "worker"}',
        MessageAttributes={"trace": {"DataType": "String", "StringValue": "abc"}},
    )
    received: list[SQSEvent] = []
    pump = EventPump(sqs, url, fake_worker(received.append), "process_upload", wait_time_s=1)

    assert pump.poll_once() == 1

    [event] = received
    [record] = event.to_dict()["Records"]
    assert record["body"] == '{"hello": "worker"}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(f":{devstack_settings.jobs_queue}")
    assert record["awsRegion"] == REGION
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert int(record["attributes"]["SentTimestamp"]) > 0
    assert record["messageAttributes"]["trace"]["stringValue"] == "abc"
    assert record["messageAttributes"]["trace"]["dataType"] == "String"
    assert record["messageId"] and record["receiptHandle"] and record["md5OfBody"]
    assert [r.body for r in event] == ['{"hello": "worker"}']
    context: Any = event.context  # chalice.local.LambdaContext, typed loosely by chalice
    assert context.function_name == "fake-worker-local-process_upload"
    assert context.get_remaining_time_in_millis() > 0
    assert messages_in(aws_client, devstack_settings.jobs_queue) == 0


def test_pump_retries_a_failing_job_then_it_lands_in_the_dead_letter_queue(
    jobs_queue: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient]
) -> None:
    url, sqs = jobs_queue, aws_client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="doomed")
    attempts: list[str] = []

    def always_fails(event: SQSEvent) -> None:
        attempts.extend(record.to_dict()["attributes"]["ApproximateReceiveCount"] for record in event)
        raise RuntimeError("ffmpeg exploded")

    pump = EventPump(sqs, url, fake_worker(always_fails), "process_upload", wait_time_s=1, retry_delay_s=0)
    for _ in range(devstack_settings.job_max_receives + 1):
        assert pump.poll_once() == 0

    assert attempts == ["1", "2"]
    assert messages_in(aws_client, devstack_settings.jobs_queue) == 0
    dead = sqs.receive_message(
        QueueUrl=jobs_queue_url(aws_client, devstack_settings.jobs_dlq), WaitTimeSeconds=0
    )
    assert [m["Body"] for m in dead["Messages"]] == ["doomed"]


def test_pump_keeps_a_long_job_invisible_while_it_runs(
    jobs_queue: str, aws_client: Callable[[str], BaseClient]
) -> None:
    url, sqs = jobs_queue, aws_client("sqs")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "2"})
    sqs.send_message(QueueUrl=url, MessageBody="long encode")
    seen_by_others: list[int] = []

    def slow_job(event: SQSEvent) -> None:
        time.sleep(3)  # longer than the 2 s visibility timeout
        others = aws_client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=0, VisibilityTimeout=0)
        seen_by_others.append(len(others.get("Messages", [])))

    pump = EventPump(sqs, url, fake_worker(slow_job), "process_upload")

    assert pump.poll_once() == 1
    assert seen_by_others == [0]


def test_an_interrupted_job_goes_back_as_a_new_message_without_using_an_attempt(
    jobs_queue: str, aws_client: Callable[[str], BaseClient]
) -> None:
    url, sqs = jobs_queue, aws_client("sqs")
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"Records": ["the same upload"]}',
        MessageAttributes={"trace": {"DataType": "String", "StringValue": "abc"}},
    )
    deliveries: list[dict[str, Any]] = []

    def interrupted_once(event: SQSEvent) -> None:
        deliveries.extend(record.to_dict() for record in event)
        if len(deliveries) == 1:
            raise JobInterrupted  # what the pump's SIGTERM handler raises mid-job

    pump = EventPump(sqs, url, fake_worker(interrupted_once), "process_upload", wait_time_s=1)
    with pytest.raises(JobInterrupted):
        pump.poll_once()
    assert pump.poll_once() == 1

    first, second = deliveries
    assert second["body"] == first["body"] and second["messageId"] != first["messageId"]
    assert second["attributes"]["ApproximateReceiveCount"] == "1"  # the attempt was not used up
    assert second["messageAttributes"]["trace"]["stringValue"] == "abc"
    assert messages_in(aws_client, url.rsplit("/", 1)[1]) == 0


def test_local_environment_lets_the_stacks_variables_win_over_config_json() -> None:
    configured = {
        "VIDLINE_UPLOADS_BUCKET": "vidline-uploads",
        "VIDLINE_STAGE": "local",
        "ONLY_IN_CONFIG": "1",
    }
    process = {"VIDLINE_UPLOADS_BUCKET": "my-uploads", "VIDLINE_STAGE": "local"}

    assert local_environment(configured, process) == {"ONLY_IN_CONFIG": "1"}


STUB_WORKER = """
    import json
    import os
    from pathlib import Path

    from chalice import Chalice

    app = Chalice(app_name="stub-worker")
    seen = Path(os.environ["STUB_SEEN_DIR"])

    def note(kind, event):
        for record in event:
            fields = record.to_dict()
            name = f"{kind}-{fields['messageId']}-{fields['attributes']['ApproximateReceiveCount']}.json"
            (seen / name).write_text(json.dumps({
                "body": record.body,
                "bucket": os.environ.get("VIDLINE_UPLOADS_BUCKET"),
                "greeting": os.environ.get("STUB_GREETING"),
            }))

    @app.on_sqs_message(queue="vidline-jobs", batch_size=1)
    def process_upload(event):
        for record in event:
            if "doomed" in record.body:
                note("failed", event)
                raise RuntimeError("this upload always fails")
        note("done", event)
"""

STUB_DLQ_HANDLER = """
    @app.on_sqs_message(queue="vidline-jobs-dlq", batch_size=1)
    def fail_dead_upload(event):
        note("dead", event)
"""


def pump_command(
    worker_dir: Path, settings: Settings, queue_url: Callable[[str], str], *extra: str
) -> list[str]:
    return [
        sys.executable, "-m", "devstack.pump", "--worker-dir", str(worker_dir),
        "--queue-url", queue_url(settings.jobs_queue), "--dlq-url", queue_url(settings.jobs_dlq),
        "--idempotency-table", settings.idempotency_table, "--retry-delay-s", "0", *extra,
    ]  # fmt: skip


def pump_environment(moto_endpoint: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIDLINE_", "AWS_"))}
    env.update(
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def files_in(directory: Path, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob(f"{prefix}-*.json"))]


@pytest.mark.timeout(90)
def test_the_pump_process_recovers_from_a_killed_predecessor_and_delivers_dead_letters(
    jobs_queue: str, devstack_settings: Settings, aws_client: Callable[[str], BaseClient], tmp_path: Path
) -> None:
    worker, seen = tmp_path / "worker", tmp_path / "seen"
    seen.mkdir()
    chalice_project(
        worker,
        "stub-worker",
        STUB_WORKER + STUB_DLQ_HANDLER,
        {"STUB_GREETING": "from config", "VIDLINE_UPLOADS_BUCKET": "bucket-in-config"},
    )
    sqs, dynamodb = aws_client("sqs"), aws_client("dynamodb")
    url = functools.partial(jobs_queue_url, aws_client)
    # What a SIGKILLed pump leaves: a job's message it had received (invisible
    # for the visibility timeout), noted in the in-flight file, and its lock.
    sqs.send_message(QueueUrl=jobs_queue, MessageBody="held by a dead pump")
    [held] = sqs.receive_message(QueueUrl=jobs_queue, WaitTimeSeconds=0)["Messages"]
    in_flight = tmp_path / "in-flight.json"
    in_flight.write_text(json.dumps({"queue_url": jobs_queue, "receipt_handle": held["ReceiptHandle"]}))
    table = devstack_settings.idempotency_table
    for key, status in (("dead-pumps-job", "INPROGRESS"), ("finished-job", "COMPLETED")):
        dynamodb.put_item(TableName=table, Item={"id": {"S": key}, "status": {"S": status}})
    sqs.send_message(QueueUrl=jobs_queue, MessageBody="doomed upload")

    command = pump_command(worker, devstack_settings, url, "--in-flight-file", str(in_flight))
    env = pump_environment(aws_client("sqs").meta.endpoint_url, VIDLINE_UPLOADS_BUCKET="my-uploads")
    env["STUB_SEEN_DIR"] = str(seen)
    started = time.monotonic()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as pump:
        try:
            # The held job is back at once, not after the 30 s visibility timeout.
            [done] = wait_until(lambda: files_in(seen, "done"), timeout_s=20)
            assert time.monotonic() - started < 20
            # The doomed one fails twice, moves to the DLQ and reaches fail_dead_upload.
            [dead] = wait_until(lambda: files_in(seen, "dead"), timeout_s=30)
            assert wait_until(lambda: messages_in(aws_client, devstack_settings.jobs_dlq) == 0, 10)
        finally:
            pump.send_signal(signal.SIGTERM)
            output = pump.communicate(timeout=30)[0]
    assert pump.returncode == 0, output

    assert done == {"body": "held by a dead pump", "bucket": "my-uploads", "greeting": "from config"}
    assert dead["body"] == "doomed upload" and len(files_in(seen, "failed")) == 2
    assert "released 1 idempotency lock(s)" in output
    assert "back on the queue" in output
    remaining = dynamodb.scan(TableName=table)["Items"]
    assert [item["id"]["S"] for item in remaining] == ["finished-job"]
    assert not in_flight.exists()


@pytest.mark.timeout(60)
def test_the_pump_says_once_that_the_stand_in_is_gone_and_exits_with_its_parent(
    devstack_settings: Settings, tmp_path: Path
) -> None:
    from moto.server import ThreadedMotoServer

    worker, seen = tmp_path / "worker", tmp_path / "seen"
    seen.mkdir()
    chalice_project(worker, "stub-worker", STUB_WORKER)  # no fail_dead_upload
    port = free_port()
    stand_in = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    stand_in.start()
    endpoint = f"http://127.0.0.1:{port}"
    ensure_resources(devstack_settings, endpoint)
    sqs = local_client("sqs", endpoint, REGION)

    def url(name: str) -> str:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])

    log = tmp_path / "pump.log"
    env = pump_environment(endpoint, STUB_SEEN_DIR=str(seen))
    # A parent that starts the pump and exits, as a killed stack would.
    launcher = "import subprocess, sys; print(subprocess.Popen(sys.argv[1:]).pid, flush=True); input()"
    with log.open("w") as out:
        parent = subprocess.Popen(
            [sys.executable, "-c", launcher, *pump_command(worker, devstack_settings, url)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            start_new_session=True,
        )
    assert parent.stdout is not None
    pump_pid = int(parent.stdout.readline())
    try:
        assert wait_until(lambda: "delivering" in log.read_text(), timeout_s=30), log.read_text()
        stand_in.stop()
        time.sleep(5)
        output = log.read_text()
        assert output.count("does not answer") == 1, output
        assert "Traceback" not in output, output
        assert "no handler named fail_dead_upload" in output, output

        parent.communicate("bye\n", timeout=10)  # the parent exits
        assert wait_until(lambda: not running(pump_pid), timeout_s=5), log.read_text()
        assert "the stack is gone" in log.read_text()
    finally:
        if running(pump_pid):
            os.kill(pump_pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


# --- mailbox --------------------------------------------------------------------


@pytest.fixture
def mailbox(moto_endpoint: str) -> Iterator[MailboxServer]:
    """An empty mailbox for REGION of the session's moto (same process)."""
    server = MailboxServer("127.0.0.1", 0, region=REGION)
    server.clear()
    server.start()
    yield server
    server.stop()


def http(method: str, url: str) -> tuple[int, str]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
        return response.status, response.read().decode()


def http_error(method: str, url: str) -> tuple[int, Any]:
    """The status and JSON body of a request that is expected to fail."""
    with pytest.raises(urllib.error.HTTPError) as failed:
        http(method, url)
    assert failed.value.headers["Content-Type"] == "application/json"
    return failed.value.code, json.loads(failed.value.read())


def test_mailbox_lists_sent_email_newest_first(
    aws_client: Callable[[str], BaseClient], mailbox: MailboxServer
) -> None:
    ses = aws_client("ses")
    ses.verify_email_identity(EmailAddress="no-reply@vidline.example.com")
    for subject in ("Your video is ready", "Your video failed"):
        ses.send_email(
            Source="Vidline <no-reply@vidline.example.com>",
            Destination={"ToAddresses": ["ada@example.com"]},
            Message={"Subject": {"Data": subject}, "Body": {"Text": {"Data": f"{subject}: http://x/v/1"}}},
        )

    status, body = http("GET", f"{mailbox.url}/api/messages")

    assert status == 200
    messages = json.loads(body)
    assert [m["subject"] for m in messages] == ["Your video failed", "Your video is ready"]
    newest = messages[0]
    assert newest["to"] == ["ada@example.com"]
    assert newest["from"] == "Vidline <no-reply@vidline.example.com>"
    assert newest["text"] == "Your video failed: http://x/v/1"
    assert newest["html"] is None
    assert newest["id"] and newest["sent_at"].endswith("Z")
    assert messages[0]["sent_at"] >= messages[1]["sent_at"]


def test_mailbox_reads_raw_mime_email_with_text_and_html(
    aws_client: Callable[[str], BaseClient], mailbox: MailboxServer
) -> None:
    mime = EmailMessage()
    mime["From"] = "Vidline <no-reply@vidline.example.com>"
    mime["To"] = "Ada <ada@example.com>"
    mime["Subject"] = "Ready: café.mp4"
    mime.set_content("Watch it at http://127.0.0.1:8080/v/1")
    mime.add_alternative('<p>Watch it <a href="http://127.0.0.1:8080/v/1">here</a></p>', subtype="html")
    ses = aws_client("ses")
    ses.verify_email_identity(EmailAddress="no-reply@vidline.example.com")
    ses.send_raw_email(RawMessage={"Data": mime.as_bytes()})

    [message] = json.loads(http("GET", f"{mailbox.url}/api/messages")[1])

    assert message["to"] == ["ada@example.com"]
    assert message["subject"] == "Ready: café.mp4"
    assert message["text"].strip() == "Watch it at http://127.0.0.1:8080/v/1"
    assert '<a href="http://127.0.0.1:8080/v/1">' in message["html"]
    status, page = http("GET", f"{mailbox.url}/messages/{message['id']}")
    assert status == 200 and "here</a>" in page


def test_mailbox_page_escapes_what_it_shows_and_delete_clears_it(
    aws_client: Callable[[str], BaseClient], mailbox: MailboxServer
) -> None:
    ses = aws_client("ses")
    ses.verify_email_identity(EmailAddress="no-reply@vidline.example.com")
    ses.send_email(
        Source="no-reply@vidline.example.com",
        Destination={"ToAddresses": ["ada@example.com"]},
        Message={"Subject": {"Data": "<script>alert(1)</script>"}, "Body": {"Text": {"Data": "a < b & c"}}},
    )

    status, page = http("GET", f"{mailbox.url}/")
    assert status == 200
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp; c" in page

    assert http("DELETE", f"{mailbox.url}/api/messages")[0] == 204
    assert json.loads(http("GET", f"{mailbox.url}/api/messages")[1]) == []
    assert "No mail yet" in http("GET", f"{mailbox.url}/")[1]


# --- the whole stack ------------------------------------------------------------

FAKE_API = """
    import os
    from chalice import Chalice

    app = Chalice(app_name="fake-api")

    @app.route("/")
    def index():
        return {
            "user_pool_id": os.environ.get("VIDLINE_USER_POOL_ID"),
            "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "uploads_bucket": os.environ.get("VIDLINE_UPLOADS_BUCKET"),
        }
"""

FAKE_WORKER = """
    import json
    import os
    from urllib.parse import unquote_plus

    import boto3
    from chalice import Chalice

    app = Chalice(app_name="fake-worker")

    @app.on_sqs_message(queue="vidline-jobs", batch_size=1)
    def process_upload(event):
        for record in event:
            for s3_record in json.loads(record.body).get("Records", []):
                key = unquote_plus(s3_record["s3"]["object"]["key"])
                boto3.client("ses").send_email(
                    Source="no-reply@vidline.example.com",
                    Destination={"ToAddresses": ["dev@example.com"]},
                    Message={
                        "Subject": {"Data": f"processed {key}"},
                        "Body": {"Text": {"Data": os.environ["FAKE_WORKER_GREETING"]}},
                    },
                )
"""


def chalice_project(directory: Path, app_name: str, source: str, env: dict[str, str] | None = None) -> None:
    (directory / ".chalice").mkdir(parents=True)
    (directory / "app.py").write_text(textwrap.dedent(source))
    stage = {"environment_variables": env} if env else {}
    config = {"version": "2.0", "app_name": app_name, "stages": {"local": stage}}
    (directory / ".chalice" / "config.json").write_text(json.dumps(config))


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A project like the repository's: an API app and a worker app in workers/."""
    project = tmp_path / "project"
    # Like .chalice/config.json, both name the default bucket.
    chalice_project(project, "fake-api", FAKE_API, {"VIDLINE_UPLOADS_BUCKET": "vidline-uploads"})
    chalice_project(
        project / "workers",
        "fake-worker",
        FAKE_WORKER,
        {"FAKE_WORKER_GREETING": "hello from config", "VIDLINE_UPLOADS_BUCKET": "vidline-uploads"},
    )
    return project


def stack_ports(*names: str) -> dict[str, int]:
    """A different free port for each name."""
    ports: set[int] = set()
    while len(ports) < len(names):
        ports.add(free_port())
    return dict(zip(names, sorted(ports), strict=True))


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines())
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


class StackProcess:
    """`python -m devstack` as a subprocess, with its output collected."""

    def __init__(self, project_dir: Path, ports: dict[str, int], **extra_env: str) -> None:
        # As a developer's shell would be: none of the test session's settings.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("VIDLINE_", "AWS_"))}
        env.update({f"VIDLINE_{name.upper()}_PORT": str(port) for name, port in ports.items()})
        env.update(extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "--project-dir", str(project_dir)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new_lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new_lines.put(line.rstrip("\n"))
        self._new_lines.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, wanted: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._new_lines.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                return False
            if line == wanted:
                return True
        return False

    def wait_for_text(self, wanted: str, timeout_s: float) -> bool:
        """Whether a line containing `wanted` is (or within `timeout_s` gets) in the output."""
        deadline = time.monotonic() + timeout_s
        while wanted not in self.output:
            if time.monotonic() > deadline or self.process.poll() is not None:
                return wanted in self.output
            time.sleep(0.05)
        return True

    def stop(self) -> int:
        """SIGTERM it, as `make dev`'s Ctrl-C would (SIGKILL after 30 s); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def descendants(pid: int) -> set[int]:
    """Every process below `pid`."""
    table = process_table()
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        children = {child for child, info in table.items() if info.ppid == parent} - found
        found |= children
        pending.extend(children)
    return found


def running(pid: int) -> bool:
    info = process_table().get(pid)
    return info is not None and info.running


def wait_until(condition: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    return condition()


@pytest.mark.timeout(180)
def test_the_whole_stack_starts_answers_runs_a_job_and_stops_cleanly(project_dir: Path) -> None:
    ports = stack_ports("api", "moto", "mailbox", "cdn", "s3_front")
    api, mailbox = f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['mailbox']}"
    # A developer's override of a resource name reaches both apps, though
    # their config.json names the default bucket.
    stack = StackProcess(project_dir, ports, VIDLINE_UPLOADS_BUCKET="my-uploads")
    children: set[int] = set()
    try:
        assert stack.wait_for_line(READY_LINE, timeout_s=90), stack.output
        children = descendants(stack.process.pid)
        assert len(children) >= 2, "expected chalice local and the pump"

        # The environment file names the running stand-in and its generated ids.
        env = read_env_file(project_dir / ".vidline" / "local.env")
        endpoint = env["AWS_ENDPOINT_URL"]
        assert endpoint == f"http://127.0.0.1:{ports['moto']}"
        assert env["VIDLINE_APP_URL"] == f"http://127.0.0.1:{ports['cdn']}"
        assert env["VIDLINE_AUTH_MODE"] == "app"
        # Presigned URLs point at the enforcing S3 front, which answers.
        assert env["VIDLINE_S3_PUBLIC_ENDPOINT_URL"] == f"http://127.0.0.1:{ports['s3_front']}"
        with pytest.raises(urllib.error.HTTPError) as unsigned:
            http("GET", f"{env['VIDLINE_S3_PUBLIC_ENDPOINT_URL']}/my-uploads/x")
        assert unsigned.value.code == 403 and b"<Code>AccessDenied</Code>" in unsigned.value.read()
        assert "VIDLINE_API_PORT" not in env

        # moto answers and holds the pool the API was told about.
        [pool] = local_client("cognito-idp", endpoint, env["AWS_REGION"]).list_user_pools(MaxResults=60)[
            "UserPools"
        ]
        assert pool["Id"] == env["VIDLINE_USER_POOL_ID"]

        # chalice local answers, with the stack's environment.
        status, body = http("GET", f"{api}/")
        assert status == 200
        assert json.loads(body) == {
            "user_pool_id": pool["Id"],
            "endpoint": endpoint,
            "uploads_bucket": "my-uploads",
        }
        # chalice local's own answers, in the API's error shape.
        assert http_error("GET", f"{api}/nowhere") == (
            403,
            {"error": {"code": "invalid_request", "message": "Missing Authentication Token"}},
        )
        status, error = http_error("TRACE", f"{api}/")
        assert status == 501 and error["error"]["code"] == "method_not_allowed", error

        # The mailbox answers.
        assert http("GET", f"{mailbox}/api/messages") == (200, "[]")

        # An upload flows S3 -> SQS -> pump -> worker -> SES -> mailbox.
        s3 = local_client("s3", endpoint, env["AWS_REGION"])
        s3.put_object(Bucket="my-uploads", Key="clips/my video.mp4", Body=b"not really a video")

        def mail() -> list[dict[str, Any]]:
            messages: list[dict[str, Any]] = json.loads(http("GET", f"{mailbox}/api/messages")[1])
            return messages

        messages = wait_until(mail, timeout_s=20)
        assert [(m["subject"], m["text"]) for m in messages] == [
            ("processed clips/my video.mp4", "hello from config")
        ], stack.output

        # Editing the API's code restarts chalice local with the new code.
        with (project_dir / "app.py").open("a") as app_file:
            app_file.write('\n@app.route("/edited")\ndef edited():\n    return {"edited": True}\n')

        def edited_route_answers() -> bool:
            try:
                return http("GET", f"{api}/edited")[0] == 200
            except OSError:  # refused while restarting, or 403 until the new code is in
                return False

        assert wait_until(edited_route_answers, timeout_s=30), stack.output
        assert "API code changed; restarting chalice local" in stack.output
        children = descendants(stack.process.pid)

        assert stack.stop() == 0, stack.output
        assert not [pid for pid in children if running(pid)], stack.output
        assert "Traceback" not in stack.output, stack.output
    finally:
        stack.stop()
        for pid in children:  # whatever a failed stop left behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def child_running(stack_pid: int, module: str) -> int | None:
    """The pid of the stack's child running `python -m module`, if any."""
    for pid in descendants(stack_pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if module.encode() in argv and running(pid):
                return pid
    return None


def answers(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    return bind_error("127.0.0.1", port) is None


SQUATTER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
SQUATTER += "s.listen(); print('listening', flush=True); time.sleep(600)"


@pytest.mark.timeout(180)
def test_the_stack_frees_its_leftovers_restarts_crashed_children_and_dies_as_a_whole(
    project_dir: Path,
) -> None:
    ports = stack_ports("api", "moto", "mailbox", "cdn", "s3_front")
    # What a killed stack of this project used to leave: its API child on the port.
    gone = subprocess.Popen(["true"])
    gone.wait()
    marks = {"DEVSTACK_PROJECT_DIR": str(project_dir), "DEVSTACK_STACK_PID": str(gone.pid)}
    leftover = subprocess.Popen(
        [sys.executable, "-c", SQUATTER, str(ports["api"])],
        env={**os.environ, **marks},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leftover.stdout is not None and leftover.stdout.readline() == "listening\n"
    stack = StackProcess(project_dir, ports)
    children: set[int] = set()
    try:
        assert stack.wait_for_line(READY_LINE, timeout_s=90), stack.output
        assert f"held by pid {leftover.pid}" in stack.output and "stopping it" in stack.output
        assert leftover.wait(timeout=5) == -signal.SIGTERM

        # A crashed pump is restarted after a second, and says so.
        pump = child_running(stack.process.pid, "devstack.pump")
        assert pump is not None
        os.kill(pump, signal.SIGKILL)
        killed = time.monotonic()
        assert stack.wait_for_text("the event pump died (killed by SIGKILL); restarting it in 1 s", 10)
        assert stack.wait_for_text("restarting the event pump", 10), stack.output
        assert wait_until(lambda: child_running(stack.process.pid, "devstack.pump") not in (None, pump), 30)
        print(f"pump back {time.monotonic() - killed:.1f} s after SIGKILL")

        # So is chalice local.
        api = child_running(stack.process.pid, "devstack.api")
        assert api is not None
        os.kill(api, signal.SIGKILL)
        assert stack.wait_for_text("chalice local died (killed by SIGKILL); restarting it in 1 s", 10)
        assert wait_until(lambda: answers(f"http://127.0.0.1:{ports['api']}/"), 30), stack.output

        # SIGKILL the stack: its children go too, and every port is free.
        children = descendants(stack.process.pid)
        assert len(children) >= 2
        stack.process.kill()
        killed = time.monotonic()
        assert wait_until(lambda: not [pid for pid in children if running(pid)], timeout_s=10), stack.output
        print(f"children gone {time.monotonic() - killed:.1f} s after the stack's SIGKILL")
        assert all(port_free(port) for port in ports.values())
    finally:
        stack.stop()
        for pid in children | {leftover.pid}:  # whatever a failed test left behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_unmarked_chalice_local_of_this_project_whose_stack_is_gone_is_a_leftover(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"

    def holder(*argv: str) -> PortHolder:  # orphaned: its parent is init
        return PortHolder(pid=4242, argv=argv, ppid=1, project_dir=None, stack_pid=None)

    chalice = ("/venv/bin/python", "/venv/bin/chalice", "--project-dir")
    local = ("local", "--stage", "local", "--no-autoreload")
    assert holder(*chalice, str(project), *local).leftover_of(project)
    assert holder(
        sys.executable, "-m", "devstack.pump", "--worker-dir", str(project / "workers")
    ).leftover_of(project)
    assert not holder(*chalice, str(elsewhere), *local).leftover_of(project)
    assert not holder("python3", "-m", "http.server", "8000").leftover_of(project)
    # Run by hand from a shell (its parent lives): somebody's, not a leftover.
    by_hand = PortHolder(
        pid=4242, argv=(*chalice, str(project), *local), ppid=os.getpid(), project_dir=None, stack_pid=None
    )
    assert not by_hand.leftover_of(project)
    # A relative --project-dir is read from the holder's own working directory.
    relative = (*chalice, ".", *local)
    assert not PortHolder(4242, relative, 1, None, None, cwd=str(elsewhere)).leftover_of(project)
    assert PortHolder(4242, relative, 1, None, None, cwd=str(project)).leftover_of(project)
    assert not PortHolder(4242, relative, 1, None, None, cwd=None).leftover_of(project)
    # A marked child belongs to the project its mark names.
    marked = PortHolder(pid=4242, argv=(), ppid=1, project_dir=str(elsewhere), stack_pid=None)
    assert not marked.leftover_of(project) and marked.leftover_of(elsewhere)


@pytest.mark.timeout(60)
def test_the_stack_refuses_to_start_on_a_taken_port(project_dir: Path) -> None:
    ports = stack_ports("api", "mailbox", "cdn", "s3_front")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        stack = StackProcess(project_dir, {**ports, "moto": taken})
        try:
            exit_code = stack.process.wait(timeout=30)
        finally:
            stack.stop()
    stack.wait_for_line("never", timeout_s=2)  # drain the output

    assert exit_code == 1
    assert f"port {taken}" in stack.output and "VIDLINE_MOTO_PORT" in stack.output, stack.output
    # Not ours: named, and left alone.
    assert f"held by pid {os.getpid()}" in stack.output, stack.output
    assert READY_LINE not in stack.output


def test_restarts_back_off_from_1_to_30_s_and_start_over_after_a_minute_of_running() -> None:
    backoff = RestartBackoff()

    assert [backoff.delay_s(ran_s=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay_s(ran_s=61) == 1
    assert backoff.delay_s(ran_s=0.5) == 2


def test_the_front_end_watcher_sees_every_file_kind_but_code_watchers_only_code(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    style = tmp_path / "assets" / "app.css"
    style.write_text("body {}")
    frontend, code = CodeWatcher(tmp_path, suffixes=None), CodeWatcher(tmp_path)

    os.utime(style, (time.time() + 5, time.time() + 5))
    assert frontend.changed() and not code.changed()
    assert not frontend.changed()  # once per change
    for scratch in (".app.css.swp", "app.css~", "#app.css#", "4913"):
        (tmp_path / scratch).write_text("editor state")
    assert not frontend.changed()
    (tmp_path / "module.py").write_text("")
    assert frontend.changed() and code.changed()
