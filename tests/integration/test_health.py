"""GET /health on moto with each dependency broken in turn.

Every test gets a moto server of its own (the session's must stay whole), and
the API is pointed at it by swapping its container.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib.bootstrap import Container
from chalicelib.settings import Settings
from devstack.client import free_port
from devstack.resources import ensure_resources, ensure_table
from tests.silent_server import SilentServer

# A health answer, however broken the dependencies, comes within this.
ANSWER_WITHIN_S = 5.0
# The checks' timeouts on a stand: within that answer, yet long.
PATIENT_TIMEOUT_S = 4.0
EVERY_CHECK = {
    "database",
    "uploads_bucket",
    "media_bucket",
    "jobs_queue",
    "dead_letter_queue",
    "cache",
    "identity",
    "email",
    "cdn_signing_key",
}


@dataclass
class Stand:
    """A moto server of the test's own, with every resource, and the settings on it."""

    server: Any
    endpoint: str
    settings: Settings

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.settings.region)


@pytest.fixture
def stand(settings: Settings) -> Iterator[Stand]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    ids = ensure_resources(settings, endpoint)
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=settings.region)
    ensure_table(dynamodb, settings.cache_table, hash_key="id", ttl_attribute="expires_at")
    own = settings.model_copy(
        update={
            "aws_endpoint_url": endpoint,
            # Patient: moto runs in this busy process, and a slow answer here
            # must not read as a failing check (the hung tests set their own).
            "health_check_timeout_s": PATIENT_TIMEOUT_S,
            "cache_timeout_s": PATIENT_TIMEOUT_S,
            **{name.removeprefix("VIDLINE_").lower(): value for name, value in ids.items()},
        }
    )
    stand = Stand(server, endpoint, own)
    try:
        yield stand
    finally:
        server.stop()


@pytest.fixture
def health(api_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """GET /health of the API wired to `settings`: (status, body, seconds taken)."""
    with Client(api_module.app, stage_name="local") as client:

        def get(settings: Settings, query: str = "") -> tuple[int, Any, float]:
            container = Container(settings)
            # Built as the API's first health check builds them (clients take a
            # while to make); the answer's time is the checks'.
            container.health  # noqa: B018
            monkeypatch.setattr(api_module, "container", container)
            started = time.monotonic()
            response = client.http.get(f"/health{query}")
            return response.status_code, json.loads(response.body), time.monotonic() - started

        yield get


def test_every_check_is_ok_on_a_whole_stack(stand: Stand, health: Any) -> None:
    status, body, _ = health(stand.settings)
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"] == dict.fromkeys(EVERY_CHECK, "ok")
    assert body["failing"] == [] and body["dead_letters"] == 0


def emf_metrics(output: str) -> dict[str, list[float]]:
    """The EMF metrics printed in `output`: name -> values."""
    metrics: dict[str, list[float]] = {}
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            blob = json.loads(line)
            for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                metrics.setdefault(metric["Name"], []).extend(blob[metric["Name"]])
    return metrics


def test_a_deleted_queue_is_named(stand: Stand, health: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sqs = stand.client("sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=stand.settings.jobs_queue)["QueueUrl"])
    capsys.readouterr()

    status, body, took = health(stand.settings)

    assert status == 503, body
    assert body["status"] == "failing" and body["failing"] == ["jobs_queue"]
    assert took < ANSWER_WITHIN_S
    # What the health alarm watches (infra/stack.yaml).
    assert emf_metrics(capsys.readouterr().out)["HealthChecksFailing"] == [1.0]
    status, body, _ = health(stand.settings, "?deep=false")
    assert status == 200 and body["status"] == "ok"


def test_a_deleted_dead_letter_queue_is_named(stand: Stand, health: Any) -> None:
    sqs = stand.client("sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=stand.settings.jobs_dlq)["QueueUrl"])

    status, body, _ = health(stand.settings)

    assert status == 503, body
    # The jobs queue's check reads both queues.
    assert body["failing"] == ["jobs_queue", "dead_letter_queue"]
    assert body["dead_letters"] is None


@pytest.mark.parametrize(("table", "check"), [("videos_table", "database"), ("cache_table", "cache")])
def test_a_deleted_table_is_named(stand: Stand, health: Any, table: str, check: str) -> None:
    stand.client("dynamodb").delete_table(TableName=getattr(stand.settings, table))

    status, body, took = health(stand.settings)

    assert status == 503, body
    assert body["failing"] == [check]
    assert took < ANSWER_WITHIN_S


def test_dead_letters_are_counted_but_the_api_stays_healthy(stand: Stand, health: Any) -> None:
    sqs = stand.client("sqs")
    dlq = sqs.get_queue_url(QueueName=stand.settings.jobs_dlq)["QueueUrl"]
    for n in range(2):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": n}))

    status, body, _ = health(stand.settings)

    assert status == 200, body
    assert body["dead_letters"] == 2
    assert body["checks"]["dead_letter_queue"] == "ok"
    assert "dead-letter queue" in body["warnings"][0]


def test_with_moto_stopped_every_aws_check_fails_fast_and_liveness_answers(stand: Stand, health: Any) -> None:
    stand.server.stop()

    status, body, took = health(stand.settings)

    assert status == 503, body
    # Everything on AWS is down; only the signing of CDN URLs (its key is read
    # from SSM) could still work if the key had been read before.
    assert set(body["failing"]) >= EVERY_CHECK - {"cdn_signing_key"}
    assert took < ANSWER_WITHIN_S
    status, body, took = health(stand.settings, "?deep=false")
    assert (status, body["status"], body["checks"]) == (200, "ok", {})
    assert took < 0.5


@pytest.fixture
def hung_aws() -> Iterator[SilentServer]:
    """A hung dependency: it takes connections and never answers."""
    with SilentServer() as server:
        yield server


def test_a_hung_aws_answers_503_within_the_timeout(
    settings: Settings, hung_aws: SilentServer, health: Any
) -> None:
    hung = settings.model_copy(
        update={"aws_endpoint_url": hung_aws.url, "health_check_timeout_s": 1.0, "cache_timeout_s": 1.0}
    )

    status, body, took = health(hung)

    assert status == 503, body
    assert set(body["failing"]) >= EVERY_CHECK - {"cdn_signing_key"}
    assert took < 2.5
    # Each check's client tried once: by the time a second try would have
    # come, there is still about one connection per check.
    time.sleep(2.5)
    assert hung_aws.connections() <= len(EVERY_CHECK)


def test_redis_down_fails_the_cache_check(stand: Stand, health: Any) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    redis_settings = stand.settings.model_copy(update={"cache_backend": "redis", "redis_url": nobody})

    status, body, took = health(redis_settings)

    assert status == 503, body
    assert body["failing"] == ["cache"]
    assert took < ANSWER_WITHIN_S


def test_deep_false_touches_no_dependency(settings: Settings, health: Any) -> None:
    nowhere = settings.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    status, body, took = health(nowhere, "?deep=false")
    assert (status, body) == (
        200,
        {"status": "ok", "checks": {}, "failing": [], "dead_letters": None, "warnings": []},
    )
    assert took < 0.5


def test_a_bad_deep_value_is_a_400(settings: Settings, health: Any) -> None:
    status, body, _ = health(settings, "?deep=maybe")
    assert status == 400 and body["error"]["code"] == "invalid_request"
