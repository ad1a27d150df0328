"""One behaviour suite for counted writes and the UsageRepository port.

Every test runs against the in-memory fakes the unit tests use AND DynamoDB
on moto (the videos table and the counters table in one transaction), so
the fakes cannot drift from what production counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from chalicelib.adapters.dynamo import DynamoVideoRepository, bind_video_record
from chalicelib.adapters.usage_dynamo import DynamoUsageRepository, bind_usage_record
from chalicelib.domain import SourceInfo, Video, VideoStatus, new_video_id
from chalicelib.ports import StaleUpdate, UsageRepository, VideoRepository
from chalicelib.settings import Settings
from chalicelib.usage import (
    OverQuota,
    Quota,
    QuotaLimits,
    QuotaUsage,
    RolledUpDay,
    UsageChange,
    UsageDelta,
    became_failed,
    became_ready,
    created,
    deleted,
)
from tests.fakes import FakeVideoRepository

DAY = date(2026, 3, 10)
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC)
NO_LIMITS = QuotaLimits()


@dataclass
class Store:
    videos: VideoRepository
    usage: UsageRepository


@pytest.fixture(params=["fake", "dynamodb"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Store]:
    """Empty videos and counters: the fakes, or fresh tables on the session's moto server."""
    if request.param == "fake":
        fake = FakeVideoRepository()
        yield Store(fake, fake.usage)
        return
    suffix = uuid.uuid4().hex
    bound = settings.model_copy(
        update={"videos_table": f"contract-videos-{suffix}", "usage_table": f"contract-usage-{suffix}"}
    )
    video_record, usage_record = bind_video_record(bound), bind_usage_record(bound)
    video_record.create_table(wait=True)
    usage_record.create_table(wait=True)
    usage = DynamoUsageRepository(usage_record, site_shards=4)
    yield Store(DynamoVideoRepository(video_record, usage=usage), usage)
    video_record.delete_table()
    usage_record.delete_table()


def a_video(owner_id: str = "alice", size_bytes: int = 1000, at: datetime = NOON) -> Video:
    return Video(
        id=new_video_id(int(at.timestamp() * 1000)),
        owner_id=owner_id,
        owner_email=f"{owner_id}@example.com",
        title="Trip",
        status=VideoStatus.AWAITING_UPLOAD,
        progress=0,
        created_at=at,
        updated_at=at,
        source=SourceInfo(filename="trip.mp4", size_bytes=size_bytes, content_type="video/mp4"),
    )


def test_a_created_video_is_counted_for_its_owner_and_the_site(store: Store) -> None:
    video = a_video(size_bytes=1000)
    store.videos.add(video, usage=created(video, NO_LIMITS))

    assert store.videos.get("alice", video.id) is not None
    assert store.usage.quota_usage("alice", DAY) == QuotaUsage(videos_today=1, bytes_stored=1000)
    days, level = store.usage.user_days("alice", DAY)
    assert days == {DAY: UsageDelta(videos_created=1, bytes_added=1000)} and level == 1000
    assert store.usage.site_shard_days(DAY, DAY) == {DAY: UsageDelta(videos_created=1, bytes_added=1000)}
    assert store.usage.first_site_day() == DAY
    assert store.usage.quota_usage("bob", DAY) == QuotaUsage()


def test_ready_and_failed_count_with_their_update_and_a_stale_one_counts_nothing(store: Store) -> None:
    one, two = a_video(), a_video()
    for video in (one, two):
        store.videos.add(video, usage=created(video, NO_LIMITS))
    store.videos.update(one, status=VideoStatus.READY, usage=became_ready(one, 90.5, at=NOON))
    store.videos.update(
        two,
        expected={VideoStatus.AWAITING_UPLOAD},
        status=VideoStatus.FAILED,
        usage=became_failed(two, at=NOON),
    )

    # A duplicate delivery's update finds the video final: refused, and nothing is counted.
    with pytest.raises(StaleUpdate):
        store.videos.update(
            two,
            expected={VideoStatus.AWAITING_UPLOAD},
            status=VideoStatus.FAILED,
            usage=became_failed(two, at=NOON),
        )
    gone = a_video()
    with pytest.raises(StaleUpdate):
        store.videos.update(gone, status=VideoStatus.READY, usage=became_ready(gone, 10, at=NOON))

    got = store.videos.get("alice", one.id)
    assert got is not None and got.status is VideoStatus.READY
    days, _ = store.usage.user_days("alice", DAY)
    assert days[DAY] == UsageDelta(
        videos_created=2, videos_ready=1, videos_failed=1, seconds_processed=90.5, bytes_added=2000
    )
    # Each counted write, and only those, bumps the owner's version (the key of
    # their cached /stats): two creates, a ready, a failure.
    assert store.usage.quota_usage("alice", DAY).changes == 4
    assert store.usage.quota_usage("alice", DAY).seconds_this_month == 90.5
    assert store.usage.site_shard_days(DAY, DAY)[DAY] == days[DAY]


def test_the_daily_count_refuses_the_create_over_the_limit_and_stores_nothing(store: Store) -> None:
    limits = QuotaLimits(videos_per_day=2)
    for _ in range(2):
        video = a_video()
        store.videos.add(video, usage=created(video, limits))
    refused = a_video()
    with pytest.raises(OverQuota) as over:
        store.videos.add(refused, usage=created(refused, limits))

    assert over.value.quota is Quota.VIDEOS_PER_DAY
    assert store.videos.get("alice", refused.id) is None
    assert store.usage.quota_usage("alice", DAY) == QuotaUsage(videos_today=2, bytes_stored=2000)
    # The next day counts afresh.
    tomorrow = a_video(at=NOON + timedelta(days=1))
    store.videos.add(tomorrow, usage=created(tomorrow, limits))


def test_concurrent_creates_do_not_overshoot_the_daily_count(store: Store) -> None:
    limits = QuotaLimits(videos_per_day=3)

    def create(_: int) -> bool:
        video = a_video()
        try:
            store.videos.add(video, usage=created(video, limits))
        except OverQuota:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = sum(pool.map(create, range(8)))
    assert made == 3
    assert store.usage.quota_usage("alice", DAY).videos_today == 3


def test_stored_bytes_refuse_what_does_not_fit(store: Store) -> None:
    limits = QuotaLimits(bytes_stored=1500)
    first = a_video(size_bytes=1000)
    store.videos.add(first, usage=created(first, limits))
    for size in (600, 2000):
        refused = a_video(size_bytes=size)
        with pytest.raises(OverQuota) as over:
            store.videos.add(refused, usage=created(refused, limits))
        assert over.value.quota is Quota.BYTES_STORED
    fits = a_video(size_bytes=500)
    store.videos.add(fits, usage=created(fits, limits))
    assert store.usage.quota_usage("alice", DAY).bytes_stored == 1500


def test_processed_minutes_refuse_new_videos_for_the_rest_of_the_month(store: Store) -> None:
    limits = QuotaLimits(minutes_per_month=2)
    video = a_video()
    store.videos.add(video, usage=created(video, limits))
    store.videos.update(video, status=VideoStatus.READY, usage=became_ready(video, 120.0, at=NOON))
    refused = a_video()
    with pytest.raises(OverQuota) as over:
        store.videos.add(refused, usage=created(refused, limits))
    assert over.value.quota is Quota.MINUTES_PER_MONTH
    next_month = a_video(at=datetime(2026, 4, 1, tzinfo=UTC))
    store.videos.add(next_month, usage=created(next_month, limits))


def test_a_delete_frees_the_bytes_once(store: Store) -> None:
    video = a_video(size_bytes=700)
    store.videos.add(video, usage=created(video, NO_LIMITS))
    later = NOON + timedelta(days=1)
    store.videos.delete("alice", video.id, usage=deleted(video, at=later))
    store.videos.delete("alice", video.id, usage=deleted(video, at=later))

    assert store.videos.get("alice", video.id) is None
    days, level = store.usage.user_days("alice", DAY)
    assert level == 0 and days[later.date()] == UsageDelta(bytes_added=-700)


def test_a_delete_of_a_video_changed_since_it_was_read_is_refused(store: Store) -> None:
    video = a_video()
    store.videos.add(video, usage=created(video, NO_LIMITS))
    store.videos.update(video, progress=5)
    with pytest.raises(StaleUpdate):
        store.videos.delete("alice", video.id, usage=deleted(video), unchanged_since=video.updated_at)
    assert store.videos.get("alice", video.id) is not None
    assert store.usage.user_days("alice", DAY)[1] == 1000


def test_site_days_are_summed_over_the_shards(store: Store) -> None:
    for owner in ("alice", "bob", "carol", "dave", "erin", "frank"):
        video = a_video(owner, size_bytes=10)
        store.videos.add(video, usage=created(video, NO_LIMITS))
    other_day = UsageChange("bob", NOON + timedelta(days=2), UsageDelta(videos_failed=1))
    video = a_video("bob")
    store.videos.add(video)
    store.videos.update(video, usage=other_day)

    assert store.usage.site_shard_days(DAY, DAY + timedelta(days=5)) == {
        DAY: UsageDelta(videos_created=6, bytes_added=60),
        DAY + timedelta(days=2): UsageDelta(videos_failed=1),
    }
    assert store.usage.site_shard_days(DAY + timedelta(days=1), DAY + timedelta(days=1)) == {}


def test_rolled_up_days_are_set_not_added(store: Store) -> None:
    assert store.usage.rolled_up_through() is None and store.usage.first_site_day() is None
    days = [
        RolledUpDay(DAY, UsageDelta(videos_created=2, seconds_processed=1.5, bytes_added=30), 30),
        RolledUpDay(DAY + timedelta(days=1), UsageDelta(), 30),
    ]
    store.usage.save_rolled_up(days, DAY + timedelta(days=1))
    store.usage.save_rolled_up(days, DAY + timedelta(days=1))

    assert store.usage.rolled_up_through() == DAY + timedelta(days=1)
    assert store.usage.rolled_up_days(DAY - timedelta(days=3), DAY + timedelta(days=3)) == {
        d.day: d for d in days
    }
