"""Usage over the API and the rollup job on moto: /stats, /stats/site, quotas at POST /videos."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.adapters.usage_dynamo import bind_usage_record
from chalicelib.bootstrap import Container
from chalicelib.settings import Settings
from chalicelib.usage import QuotaLimits, UsageDelta, created
from devstack.jobs import scheduled_event
from tests.contract.test_usage_repository import a_video
from tests.integration.test_api import Api, assert_error

DAY_FIELDS = {"date", "videos_created", "videos_ready", "videos_failed", "minutes_processed", "bytes_stored"}
QUOTAS = {"videos_per_day", "bytes_stored", "minutes_per_month"}


@pytest.fixture(scope="module")
def api(api_module: ModuleType) -> Iterator[Api]:
    with Client(api_module.app, stage_name="local") as client:
        yield Api(client)


@pytest.fixture
def configured(api_module: ModuleType, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the API on a container built from the session's settings plus `changes`."""

    def configure(**changes: Any) -> Container:
        container = Container(settings.model_copy(update=changes))
        monkeypatch.setattr(api_module, "container", container)
        return container

    return configure


def today() -> date:
    return datetime.now(UTC).date()


def test_stats_show_the_callers_days_and_quotas(api: Api) -> None:
    token, other = api.sign_up_and_log_in(), api.sign_up_and_log_in()
    for size in (1000, 2500):
        assert api.create_video(token, size_bytes=size)[0] == 201
    assert api.create_video(other, size_bytes=7)[0] == 201

    status, body = api.call("GET", "/stats", token=token)

    assert status == 200, body
    assert len(body["days"]) == 30 and all(set(day) == DAY_FIELDS for day in body["days"])
    assert body["days"][0]["date"] == (today() - timedelta(days=29)).isoformat()
    assert body["days"][-1] == {
        "date": today().isoformat(),
        "videos_created": 2,
        "videos_ready": 0,
        "videos_failed": 0,
        "minutes_processed": 0.0,
        "bytes_stored": 3500,
    }
    assert set(body["quotas"]) == QUOTAS
    assert body["quotas"]["videos_per_day"]["limit"] is None
    assert body["quotas"]["videos_per_day"]["used"] == 2
    assert body["quotas"]["bytes_stored"] == {"limit": None, "used": 3500, "resets_at": None}

    status, body = api.call("GET", f"/stats?from={today().isoformat()}&to={today().isoformat()}", token=token)
    assert status == 200 and [d["date"] for d in body["days"]] == [today().isoformat()]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("from=2026-02-30", "from"),
        ("to=2026-1-5", "to"),
        ("from=2020-01-02&to=2020-01-01", "from"),
        ("from=2019-01-01&to=2020-01-31", "from"),
        ("to=0001-01-05", "to"),  # not an OverflowError (500) in the date arithmetic
        ("from=0001-01-01&to=0001-01-01", "from"),
        (f"to={(datetime.now(UTC).date() + timedelta(days=3)).isoformat()}", "to"),
    ],
)
def test_a_bad_range_is_a_400_naming_the_field(api: Api, configured: Any, query: str, field: str) -> None:
    configured(site_stats_readers="*")
    token = api.sign_up_and_log_in()
    for path in ("/stats", "/stats/site"):
        status, body = api.call("GET", f"{path}?{query}", token=token)
        assert_error(status, body, 400, "invalid_request")
        assert body["error"]["details"][0]["field"] == field, body


def test_stats_need_a_signed_in_caller(api: Api) -> None:
    for path in ("/stats", "/stats/site"):
        status, body = api.call("GET", path)
        assert_error(status, body, 401, "unauthorized")


def test_site_stats_are_refused_to_anyone_not_listed(api: Api) -> None:
    status, body = api.call("GET", "/stats/site", token=api.sign_up_and_log_in())
    assert_error(status, body, 403, "forbidden")


def test_site_stats_count_everyone_for_a_listed_reader(api: Api, configured: Any) -> None:
    reader = f"ops-{uuid.uuid4().hex[:6]}@example.com"
    configured(site_stats_readers=reader, stats_cache_ttl_s=0)
    token = api.sign_up_and_log_in(reader)
    _, before = api.call("GET", "/stats/site", token=token)
    for who in (token, api.sign_up_and_log_in()):
        assert api.create_video(who, size_bytes=100)[0] == 201

    status, body = api.call("GET", "/stats/site", token=token)

    assert status == 200, body
    assert body["quotas"] == {} and len(body["days"]) == 30
    grew = {k: body["days"][-1][k] - before["days"][-1][k] for k in ("videos_created", "bytes_stored")}
    assert grew == {"videos_created": 2, "bytes_stored": 200}


def test_a_create_over_the_daily_quota_is_a_429_saying_when_it_resets(api: Api, configured: Any) -> None:
    configured(quota_videos_per_day=2)
    token = api.sign_up_and_log_in()
    for _ in range(2):
        assert api.create_video(token)[0] == 201

    status, body = api.create_video(token)

    assert_error(status, body, 429, "quota_exceeded")
    tomorrow = datetime.combine(today() + timedelta(days=1), datetime.min.time(), UTC)
    assert body["error"]["details"] == [
        {"quota": "videos_per_day", "limit": 2, "used": 2, "resets_at": tomorrow.isoformat()}
    ]
    assert tomorrow.strftime("%Y-%m-%d %H:%M UTC") in body["error"]["message"]
    _, listed = api.call("GET", "/videos", token=token)
    assert len(listed["items"]) == 2


def test_a_create_that_does_not_fit_the_storage_quota_is_a_429(api: Api, configured: Any) -> None:
    configured(quota_bytes_stored=5000)
    token = api.sign_up_and_log_in()
    status, created_video = api.create_video(token, size_bytes=4000)
    assert status == 201

    status, body = api.create_video(token, size_bytes=1001)
    assert_error(status, body, 429, "quota_exceeded")
    assert body["error"]["details"][0]["quota"] == "bytes_stored"

    assert api.call("DELETE", f"/videos/{created_video['video']['id']}", token=token)[0] == 204
    assert api.create_video(token, size_bytes=1001)[0] == 201


# --- the rollup job ---


@pytest.fixture
def own_counters(
    settings: Settings, workers_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Container]:
    """The worker app on a fresh counters table (its roll-up marker is its own)."""
    fresh = settings.model_copy(update={"usage_table": f"usage-{uuid.uuid4().hex}"})
    record = bind_usage_record(fresh)
    record.create_table(wait=True)
    container = Container(fresh)
    monkeypatch.setattr(workers_module, "container", container)
    yield container
    record.delete_table()


def counted_video(container: Container, owner: str, at: datetime, size_bytes: int) -> None:
    video = a_video(owner, size_bytes=size_bytes, at=at)
    container.videos.add(video, usage=created(video, QuotaLimits()))


def test_the_rollup_job_folds_closed_days_and_a_second_run_changes_nothing(
    workers_module: ModuleType, own_counters: Container, settings: Settings
) -> None:
    first = datetime(2026, 2, 27, 10, tzinfo=UTC)
    for n in range(5):
        counted_video(own_counters, f"user-{n}", first, size_bytes=100)
    counted_video(own_counters, "user-0", first + timedelta(days=2), size_bytes=50)
    own_counters.usage_service.clock = lambda: datetime(2026, 3, 2, 0, 30, tzinfo=UTC)

    with Client(workers_module.app, stage_name="local") as client:
        report = client.lambda_.invoke("rollup", scheduled_event("rollup", settings.region)).payload
        rolled = own_counters.usage.rolled_up_days(date(2026, 2, 1), date(2026, 3, 31))
        again = client.lambda_.invoke("rollup", scheduled_event("rollup", settings.region)).payload

    assert report == {"days_rolled_up": 3, "through": "2026-03-01"}
    assert again == {"days_rolled_up": 0, "through": None}
    assert own_counters.usage.rolled_up_days(date(2026, 2, 1), date(2026, 3, 31)) == rolled
    assert {day.isoformat(): (r.delta, r.bytes_stored) for day, r in rolled.items()} == {
        "2026-02-27": (UsageDelta(videos_created=5, bytes_added=500), 500),
        "2026-02-28": (UsageDelta(), 500),
        "2026-03-01": (UsageDelta(videos_created=1, bytes_added=50), 550),
    }
