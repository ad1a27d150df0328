"""Usage counters, quotas, /stats figures and the roll-up, on the fakes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain import Forbidden, InvalidRequest, NewVideo, Principal, Video, VideoStatus, utcnow
from chalicelib.processing import UploadedObject
from chalicelib.services import VideoService
from chalicelib.settings import Settings
from chalicelib.usage import (
    Quota,
    QuotaExceeded,
    QuotaLimits,
    QuotaUsage,
    UsageDelta,
    UsageService,
    breached_quota,
    deleted,
    resets_at,
    stats_range,
)
from tests.fakes import FakePorts, FakeVideoRepository

ALICE = Principal(user_id="alice", email="alice@example.com")
BOB = Principal(user_id="bob", email="bob@example.com")
MIB = 1024 * 1024


class Clock:
    """A settable clock for the services."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    fakes: FakePorts
    videos: VideoService
    usage: UsageService
    clock: Clock

    def create(self, owner: Principal = ALICE, size_bytes: int = 1000) -> Video:
        request = NewVideo(title="Trip", filename="trip.mp4", content_type="video/mp4", size_bytes=size_bytes)
        video, _ = self.videos.create(owner, request)
        return video

    def upload(self, video: Video, data: bytes) -> UploadedObject:
        self.fakes.uploads.objects[video.upload_key] = (data, "video/mp4")
        return UploadedObject(bucket="uploads", key=video.upload_key, etag=hashlib.md5(data).hexdigest())


def world(tmp_path: Path, now: datetime | None = None, **settings: object) -> World:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    fakes = FakePorts()
    values = {"work_dir": str(work), "app_url": "https://app.example", **settings}
    container = fakes.container(Settings.model_validate(values))
    clock = Clock(now or utcnow())
    container.usage_service.clock = clock
    container.video_service.clock = clock
    return World(fakes, container.video_service, container.usage_service, clock)


def test_counters_follow_a_scripted_day_and_duplicates_count_nothing(tmp_path: Path) -> None:
    w = world(tmp_path)
    processor = w.fakes.container(w.usage.settings).processor
    ready, failed, rejected, removed = (w.create(size_bytes=1000) for _ in range(4))

    # One upload becomes ready; the same S3 event delivered again does nothing more.
    event = w.upload(ready, b"x" * 600)  # smaller than declared: the difference is given back
    assert processor.process(event, final_attempt=False) == "ready"
    assert processor.process(event, final_attempt=False) == "duplicate"
    # One job fails every attempt and its dead letter is handled twice.
    dead = w.upload(failed, b"y" * 1000)
    assert processor.give_up(dead) == "failed"
    assert processor.give_up(dead) == "failed"
    # A bad file fails at once, and its redelivery does not fail it again.
    w.fakes.transcoder.reject_probe = "Not a video."
    bad = w.upload(rejected, b"z" * 1000)
    assert processor.process(bad, final_attempt=False) == "failed"
    assert processor.process(bad, final_attempt=False) == "duplicate"
    # A deleted video frees its bytes, once.
    w.videos.delete(ALICE, removed.id)
    with pytest.raises(Exception, match="No such video"):
        w.videos.delete(ALICE, removed.id)

    today = utcnow().date()
    days, level = w.fakes.usage.user_days(ALICE.user_id, today)
    seconds = w.fakes.transcoder.info.duration_s
    assert days == {
        today: UsageDelta(
            videos_created=4, videos_ready=1, videos_failed=2, seconds_processed=seconds, bytes_added=2600
        )
    }
    assert level == 600 + 1000 + 1000
    assert w.fakes.usage.site_shard_days(today, today) == days
    report = w.usage.user_stats(ALICE, today, today)
    (shown,) = report.days
    assert (shown.videos_created, shown.videos_ready, shown.videos_failed) == (4, 1, 2)
    assert shown.bytes_stored == 2600 and shown.seconds_processed == seconds


def test_the_daily_quota_refuses_at_the_limit_and_allows_again_after_midnight(tmp_path: Path) -> None:
    w = world(tmp_path, now=datetime(2026, 5, 4, 23, 0, tzinfo=UTC), quota_videos_per_day=2)
    w.create()
    w.create()
    with pytest.raises(QuotaExceeded) as refused:
        w.create()

    error = refused.value
    assert error.code == "quota_exceeded"
    assert error.details == [
        {"quota": "videos_per_day", "limit": 2, "used": 2, "resets_at": "2026-05-05T00:00:00+00:00"}
    ]
    assert "2026-05-05 00:00 UTC" in error.message
    assert len(w.fakes.videos.videos) == 2
    w.create(owner=BOB)  # another user's quota is their own

    w.clock.now = datetime(2026, 5, 5, 0, 0, 1, tzinfo=UTC)
    w.create()
    assert len(w.fakes.videos.videos) == 4


def test_the_storage_quota_refuses_what_does_not_fit_until_videos_are_deleted(tmp_path: Path) -> None:
    w = world(tmp_path, quota_bytes_stored=3 * MIB)
    first = w.create(size_bytes=2 * MIB)
    with pytest.raises(QuotaExceeded) as refused:
        w.create(size_bytes=2 * MIB)
    (details,) = refused.value.details
    assert details == {"quota": "bytes_stored", "limit": 3 * MIB, "used": 2 * MIB, "resets_at": None}
    assert "Delete videos" in refused.value.message

    w.videos.delete(ALICE, first.id)
    w.create(size_bytes=2 * MIB)


def test_the_monthly_minutes_quota_resets_on_the_first_of_the_month(tmp_path: Path) -> None:
    w = world(tmp_path, quota_minutes_per_month=1)
    w.fakes.transcoder.info = replace(w.fakes.transcoder.info, duration_s=61.0)
    video = w.create()
    processor = w.fakes.container(w.usage.settings).processor
    # The processor counts on the day it finishes: today, in real time, as the services' clock.
    assert processor.process(w.upload(video, b"v" * 100), final_attempt=False) == "ready"
    with pytest.raises(QuotaExceeded) as refused:
        w.create()
    (details,) = refused.value.details
    assert details["quota"] == "minutes_per_month" and details["used"] == 1.02
    first_of_next = resets_at(Quota.MINUTES_PER_MONTH, w.clock.now)
    assert first_of_next is not None and first_of_next.day == 1
    assert details["resets_at"] == first_of_next.isoformat()
    w.clock.now = first_of_next
    w.create()


def test_quota_rules() -> None:
    limits = QuotaLimits(videos_per_day=3, bytes_stored=100, minutes_per_month=10)
    assert breached_quota(limits, QuotaUsage(videos_today=2), UsageDelta(videos_created=1)) is None
    assert (
        breached_quota(limits, QuotaUsage(videos_today=3), UsageDelta(videos_created=1))
        is Quota.VIDEOS_PER_DAY
    )
    assert (
        breached_quota(limits, QuotaUsage(bytes_stored=60), UsageDelta(bytes_added=41)) is Quota.BYTES_STORED
    )
    assert breached_quota(limits, QuotaUsage(bytes_stored=60), UsageDelta(bytes_added=40)) is None
    # Giving bytes back is never refused, nor anything when the quotas are off.
    assert breached_quota(limits, QuotaUsage(bytes_stored=500), UsageDelta(bytes_added=-40)) is None
    assert (
        breached_quota(QuotaLimits(), QuotaUsage(9, 9, 9e9), UsageDelta(videos_created=1, bytes_added=9))
        is None
    )
    assert breached_quota(limits, QuotaUsage(seconds_this_month=600), UsageDelta()) is Quota.MINUTES_PER_MONTH
    assert resets_at(Quota.MINUTES_PER_MONTH, datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert resets_at(Quota.BYTES_STORED, utcnow()) is None


def test_stats_ranges_default_and_refuse_bad_ones_naming_the_field() -> None:
    today = date(2026, 6, 30)

    def rng(first: date | None, last: date | None) -> tuple[date, date]:
        return stats_range(first, last, today, default_days=30, max_days=366)

    assert rng(None, None) == (date(2026, 6, 1), today)
    assert rng(None, date(2026, 1, 31)) == (date(2026, 1, 2), date(2026, 1, 31))
    assert rng(date(2025, 6, 30), today) == (date(2025, 6, 30), today)
    for first, last, field in (
        (date(2026, 6, 2), date(2026, 6, 1), "from"),
        (date(2025, 6, 29), today, "from"),
        (None, date(2026, 7, 1), "to"),
    ):
        with pytest.raises(InvalidRequest) as bad:
            rng(first, last)
        assert bad.value.details[0]["field"] == field
        assert bad.value.message.startswith(f"{field}:")


def test_user_stats_show_every_day_and_the_bytes_stored_at_each_end(tmp_path: Path) -> None:
    w = world(tmp_path, now=datetime(2026, 3, 1, 9, tzinfo=UTC))
    first = w.create(size_bytes=100)
    w.clock.now = datetime(2026, 3, 3, 9, tzinfo=UTC)
    w.create(size_bytes=50)
    w.clock.now = datetime(2026, 3, 4, 9, tzinfo=UTC)
    w.fakes.videos.delete(ALICE.user_id, first.id, usage=deleted(first, at=w.clock.now))

    report = w.usage.user_stats(ALICE, date(2026, 2, 28), date(2026, 3, 4))
    assert [(d.day.day, d.videos_created, d.bytes_stored) for d in report.days] == [
        (28, 0, 0),
        (1, 1, 100),
        (2, 0, 100),
        (3, 1, 150),
        (4, 0, 50),
    ]
    quotas = {q.quota: q for q in report.quotas}
    assert quotas[Quota.BYTES_STORED].used == 50 and quotas[Quota.BYTES_STORED].limit is None
    assert quotas[Quota.VIDEOS_PER_DAY].used == 0


def test_stats_are_served_through_the_cache(tmp_path: Path) -> None:
    w = world(tmp_path, stats_cache_ttl_s=60)
    w.create()
    first = w.usage.user_stats(ALICE, None, None)
    # Asked again with nothing changed, the days come from the cache.
    assert w.usage.user_stats(ALICE, None, None) == first
    assert w.fakes.cache.hits == 1 and w.fakes.cache.misses == 1
    # The owner's own change is seen at once, days and quotas alike.
    w.create()
    second = w.usage.user_stats(ALICE, None, None)
    assert second.days[-1].videos_created == 2 and w.fakes.cache.misses == 2
    assert next(q for q in second.quotas if q.quota is Quota.VIDEOS_PER_DAY).used == 2
    # Another user's change does not make ALICE's cached days unused.
    w.create(owner=BOB)
    assert w.usage.user_stats(ALICE, None, None) == second
    assert w.fakes.cache.hits == 2


def test_site_stats_are_for_the_configured_readers(tmp_path: Path) -> None:
    w = world(tmp_path, site_stats_readers="Alice@Example.com")
    w.create(owner=BOB)
    assert w.usage.site_stats(ALICE, None, None).days[-1].videos_created == 1
    with pytest.raises(Forbidden):
        w.usage.site_stats(BOB, None, None)
    everyone = world(tmp_path, site_stats_readers="*")
    everyone.usage.site_stats(BOB, None, None)
    nobody = world(tmp_path)
    with pytest.raises(Forbidden):
        nobody.usage.site_stats(ALICE, None, None)


def test_the_roll_up_folds_closed_days_once_and_carries_the_level(tmp_path: Path) -> None:
    w = world(tmp_path, now=datetime(2026, 8, 1, 10, tzinfo=UTC), site_stats_readers="*", stats_cache_ttl_s=0)
    w.create(size_bytes=300)
    w.create(owner=BOB, size_bytes=200)
    w.clock.now = datetime(2026, 8, 3, 10, tzinfo=UTC)
    w.create(size_bytes=10)
    before = w.usage.site_stats(ALICE, date(2026, 7, 31), date(2026, 8, 3))

    # Just after midnight the day is not settled yet: only the day before it is folded.
    w.clock.now = datetime(2026, 8, 4, 0, 2, tzinfo=UTC)
    assert w.usage.roll_up() == [date(2026, 8, 1), date(2026, 8, 2)]
    w.clock.now = datetime(2026, 8, 4, 0, 15, tzinfo=UTC)
    assert w.usage.roll_up() == [date(2026, 8, 3)]
    rolled = dict(w.fakes.usage.rolled)
    assert w.usage.roll_up() == [] and w.fakes.usage.rolled == rolled

    assert rolled[date(2026, 8, 2)].delta == UsageDelta() and rolled[date(2026, 8, 2)].bytes_stored == 500
    assert rolled[date(2026, 8, 3)].bytes_stored == 510
    # Folding again from scratch stores the same values (SET from the sum, not ADD).
    w.fakes.usage.through = None
    w.usage.roll_up()
    assert w.fakes.usage.rolled == rolled
    # The site's figures read the same from the rolled-up days as from the shards.
    after = w.usage.site_stats(ALICE, date(2026, 7, 31), date(2026, 8, 3))
    assert after == before
    assert [d.bytes_stored for d in after.days] == [0, 500, 500, 510] and after.quotas == []


def test_site_stats_mix_rolled_up_days_and_todays_shards(tmp_path: Path) -> None:
    w = world(tmp_path, now=datetime(2026, 8, 1, 10, tzinfo=UTC), site_stats_readers="*", stats_cache_ttl_s=0)
    w.create(size_bytes=300)
    w.clock.now = datetime(2026, 8, 3, 1, tzinfo=UTC)
    w.usage.roll_up()
    w.create(size_bytes=7)
    days = w.usage.site_stats(ALICE, date(2026, 8, 1), date(2026, 8, 3)).days
    assert [(d.videos_created, d.bytes_stored) for d in days] == [(1, 300), (0, 300), (1, 307)]
    # A range that starts after the last folded day takes its level from it.
    (today,) = w.usage.site_stats(ALICE, date(2026, 8, 3), date(2026, 8, 3)).days
    assert today.bytes_stored == 307


class ReadyAnswerLost(FakeVideoRepository):
    """Applies the READY update (and its counters) but answers with an error, as a
    worker that crashed right after DynamoDB committed would see it."""

    def update(self, video: Video, *, expected: Iterable[VideoStatus] | None = None, **changes: Any) -> Video:
        updated = super().update(video, expected=expected, **changes)
        if changes.get("status") is VideoStatus.READY:
            raise ConnectionError("the update was applied, its answer lost")
        return updated


def test_a_crash_after_the_ready_update_counts_it_once(tmp_path: Path) -> None:
    fakes = FakePorts(videos=ReadyAnswerLost())
    settings = Settings(work_dir=str(tmp_path), app_url="https://app.example")
    container = fakes.container(settings)
    video, _ = container.video_service.create(
        ALICE, NewVideo(title="Trip", filename="trip.mp4", content_type="video/mp4", size_bytes=100)
    )
    fakes.uploads.objects[video.upload_key] = (b"v" * 100, "video/mp4")
    event = UploadedObject(bucket="uploads", key=video.upload_key, etag=hashlib.md5(b"v" * 100).hexdigest())

    with pytest.raises(ConnectionError):
        container.processor.process(event, final_attempt=False)
    assert container.processor.process(event, final_attempt=False) == "duplicate"

    days, _ = fakes.usage.user_days(ALICE.user_id, utcnow().date())
    assert days[utcnow().date()].videos_ready == 1 and days[utcnow().date()].videos_failed == 0
