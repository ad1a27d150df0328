"""One behaviour suite for the VideoRepository port.

Every test runs against the in-memory fake the unit tests use AND the
DynamoDB repository on moto, so the fake cannot drift from what production
does. Where they differ, the fake is what gets fixed.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.adapters.dynamo import DynamoVideoRepository, bind_video_record, encode_cursor
from chalicelib.domain import (
    InvalidRequest,
    MultipartPlan,
    Outputs,
    Rendition,
    Rung,
    SourceInfo,
    Video,
    VideoStatus,
    new_video_id,
    utcnow,
)
from chalicelib.ports import StaleUpdate, VideoRepository
from chalicelib.settings import Settings
from tests.fakes import FakeVideoRepository

ALICE = "alice"
BOB = "bob"


@pytest.fixture(params=["fake", "dynamodb"])
def videos(request: pytest.FixtureRequest) -> Iterator[VideoRepository]:
    """The repository under test, empty. DynamoDB gets a fresh table on the
    session's moto server; the fake needs no server at all."""
    if request.param == "fake":
        yield FakeVideoRepository()
        return
    yield DynamoVideoRepository(request.getfixturevalue("video_table"))


@pytest.fixture
def video_table(settings: Settings) -> Iterator[Any]:
    """A fresh, empty videos table on the session's moto server (its bound record class)."""
    record = bind_video_record(settings.model_copy(update={"videos_table": f"contract-{uuid.uuid4().hex}"}))
    record.create_table(wait=True)
    yield record
    record.delete_table()


def a_video(owner_id: str = ALICE, *, age_s: int = 0, **changes: object) -> Video:
    """A video waiting for its upload; `age_s` makes it older than the rest."""
    created = utcnow() - timedelta(seconds=age_s)
    video = Video(
        id=new_video_id(int(created.timestamp() * 1000)),
        owner_id=owner_id,
        owner_email=f"{owner_id}@example.com",
        title="Trip",
        status=VideoStatus.AWAITING_UPLOAD,
        progress=0,
        created_at=created,
        updated_at=created,
        source=SourceInfo(filename="trip.mp4", size_bytes=1000, content_type="video/mp4"),
    )
    return video.with_changes(**changes)


MP4 = Rendition("720p", 1280, 720, "media/a/v/run/720p.mp4")
RUNGS = (
    Rung("1080p", 1920, 1080, 5_128_000),
    Rung("720p", 1280, 720, 3_128_000),
    Rung("360p", 640, 360, 928_000),
)
# What a run stores once the first segments of every rung are up: HLS, no MP4 yet.
PLAYABLE_OUTPUTS = Outputs(
    renditions=(), thumbnail_key=None, hls_master_key="media/a/v/run/hls/master.m3u8", rungs=RUNGS
)
FULL_OUTPUTS = Outputs(
    renditions=(MP4,),
    thumbnail_key="media/a/v/run/thumbnail.jpg",
    hls_master_key="media/a/v/run/hls/master.m3u8",
    rungs=RUNGS,
)


def stored(videos: VideoRepository, video: Video) -> Video:
    found = videos.get(video.owner_id, video.id)
    assert found is not None
    return found


def nothing_stored_for(videos: VideoRepository, owner_id: str) -> bool:
    return videos.list_for_owner(owner_id, 10, None).items == []


def every_id(videos: VideoRepository, owner_id: str, limit: int) -> list[list[str]]:
    """The ids of each page, following next_cursor to the end."""
    pages, cursor = [], None
    while True:
        page = videos.list_for_owner(owner_id, limit, cursor)
        pages.append([v.id for v in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


# add and get


def test_an_added_video_reads_back_as_it_was(videos: VideoRepository) -> None:
    video = a_video()
    videos.add(video)
    assert videos.get(ALICE, video.id) == video


def test_every_field_of_an_added_video_is_stored(videos: VideoRepository) -> None:
    source = SourceInfo("trip.mp4", 900, "video/mp4", duration_s=4.5, width=1920, height=1080)
    video = a_video(
        status=VideoStatus.READY,
        progress=100,
        error="a note",
        source=source,
        outputs=FULL_OUTPUTS,
        playable=True,
        notified_at=utcnow(),
        upload_etag="9e107d9d372bb6826bd81d3542a419d6",
        requeued_at=utcnow(),
    )
    videos.add(video)
    assert videos.get(ALICE, video.id) == video


def test_a_playable_video_still_processing_is_stored_with_its_hls_and_no_mp4(videos: VideoRepository) -> None:
    video = a_video(status=VideoStatus.PROCESSING, progress=12, playable=True, outputs=PLAYABLE_OUTPUTS)
    videos.add(video)
    found = stored(videos, video)
    assert found == video
    assert found.playable is True and found.outputs is not None
    assert (found.outputs.renditions, found.outputs.thumbnail_key) == ((), None)
    assert found.outputs.rungs == RUNGS


def test_a_new_video_is_not_playable(videos: VideoRepository) -> None:
    video = a_video()
    videos.add(video)
    assert stored(videos, video).playable is False


def test_adding_a_taken_id_is_refused_and_keeps_the_first(videos: VideoRepository) -> None:
    video = a_video()
    videos.add(video)
    with pytest.raises(RuntimeError):
        videos.add(video.with_changes(title="Impostor"))
    assert stored(videos, video).title == "Trip"


def test_a_missing_video_reads_as_none(videos: VideoRepository) -> None:
    videos.add(a_video())
    assert videos.get(ALICE, new_video_id()) is None
    assert videos.get("nobody", new_video_id()) is None


# list_for_owner


def test_an_owner_lists_their_videos_newest_first(videos: VideoRepository) -> None:
    ages = [30, 10, 20]
    added = [a_video(age_s=age) for age in ages]
    for video in added:
        videos.add(video)
    page = videos.list_for_owner(ALICE, 10, None)
    assert [v.id for v in page.items] == [added[1].id, added[2].id, added[0].id]
    assert page.items == [added[1], added[2], added[0]]
    assert page.next_cursor is None


@pytest.mark.parametrize("count", [5, 4])
def test_cursors_page_through_to_the_end_without_an_empty_last_page(
    videos: VideoRepository, count: int
) -> None:
    added = [a_video(age_s=age) for age in range(count)]
    for video in added:
        videos.add(video)
    ids = [v.id for v in added]
    expected = [ids[i : i + 2] for i in range(0, count, 2)]
    assert every_id(videos, ALICE, limit=2) == expected


def test_other_owners_videos_are_invisible(videos: VideoRepository) -> None:
    mine, theirs = a_video(ALICE), a_video(BOB)
    videos.add(mine)
    videos.add(theirs)
    assert [v.id for v in videos.list_for_owner(ALICE, 10, None).items] == [mine.id]
    assert [v.id for v in videos.list_for_owner(BOB, 10, None).items] == [theirs.id]
    assert videos.get(ALICE, theirs.id) is None
    assert nothing_stored_for(videos, "carol")


def test_a_cursor_naming_another_owners_video_still_lists_only_ones_own(videos: VideoRepository) -> None:
    old, new = a_video(ALICE, age_s=20), a_video(BOB, age_s=10)
    videos.add(old)
    videos.add(new)
    page = videos.list_for_owner(ALICE, 10, encode_cursor(a_video(BOB).id))
    assert [v.id for v in page.items] == [old.id]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "not a cursor",
        "01hf7g3v1e2q4k5m6n7p8r9s0t",  # an id, but not a cursor this API issued
        base64.urlsafe_b64encode(b"../../etc").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        "%%%",
    ],
)
def test_a_forged_or_garbage_cursor_is_an_invalid_request(videos: VideoRepository, cursor: str) -> None:
    videos.add(a_video())
    with pytest.raises(InvalidRequest):
        videos.list_for_owner(ALICE, 10, cursor)


# update


def test_an_update_applies_the_changes_and_returns_what_is_stored(videos: VideoRepository) -> None:
    video = a_video(error="old reason")
    videos.add(video)
    outputs = Outputs(renditions=(Rendition("720p", 1280, 720, "media/a/v/720p.mp4"),), thumbnail_key="t.jpg")
    source = SourceInfo("trip.mp4", 900, "video/mp4", duration_s=4.5, width=1920, height=1080)

    updated = videos.update(
        video,
        status=VideoStatus.READY,
        progress=100,
        outputs=outputs,
        source=source,
        error=None,
        upload_etag="e4d909c290d0fb1ca068ffaddf22cbd0",
    )

    assert updated == stored(videos, video)
    assert (updated.status, updated.progress, updated.outputs, updated.source) == (
        VideoStatus.READY,
        100,
        outputs,
        source,
    )
    assert updated.error is None and updated.upload_etag == "e4d909c290d0fb1ca068ffaddf22cbd0"
    assert updated.updated_at > video.updated_at
    assert (updated.title, updated.created_at) == (video.title, video.created_at)


def test_a_video_becomes_playable_then_ready_then_loses_its_stream(videos: VideoRepository) -> None:
    video = a_video(status=VideoStatus.PROCESSING)
    videos.add(video)

    playable = videos.update(
        video, expected=[VideoStatus.PROCESSING], playable=True, outputs=PLAYABLE_OUTPUTS
    )
    assert playable == stored(videos, video)
    assert (playable.status, playable.playable, playable.outputs) == (
        VideoStatus.PROCESSING,
        True,
        PLAYABLE_OUTPUTS,
    )

    ready = videos.update(
        video, expected=[VideoStatus.PROCESSING], status=VideoStatus.READY, outputs=FULL_OUTPUTS
    )
    assert (ready.status, ready.playable, ready.outputs) == (VideoStatus.READY, True, FULL_OUTPUTS)

    # A run whose source read broke takes its outputs back.
    taken_back = videos.update(video, playable=False, outputs=None)
    assert taken_back == stored(videos, video)
    assert (taken_back.playable, taken_back.outputs) == (False, None)


def test_an_update_with_expected_states_applies_only_in_them(videos: VideoRepository) -> None:
    video = a_video()
    videos.add(video)
    moved = videos.update(video, expected=[VideoStatus.AWAITING_UPLOAD], status=VideoStatus.QUEUED)
    assert moved.status is VideoStatus.QUEUED

    with pytest.raises(StaleUpdate):
        videos.update(video, expected=[VideoStatus.AWAITING_UPLOAD], status=VideoStatus.PROCESSING)
    with pytest.raises(StaleUpdate):
        videos.update(video, expected=[], progress=50)
    assert stored(videos, video) == moved


def test_an_update_unchanged_since_applies_only_if_nobody_updated_the_video_since(
    videos: VideoRepository,
) -> None:
    video = a_video(status=VideoStatus.PROCESSING)
    videos.add(video)
    first = videos.update(video, unchanged_since=video.updated_at, requeued_at=utcnow())
    assert first.requeued_at is not None

    # A second run that read the video before the first one's update loses.
    with pytest.raises(StaleUpdate):
        videos.update(video, unchanged_since=video.updated_at, status=VideoStatus.FAILED)
    assert stored(videos, video) == first
    assert videos.update(first, unchanged_since=first.updated_at, progress=5).progress == 5


# list_idle: the scheduled jobs' index of open videos


def test_list_idle_finds_open_videos_in_a_state_updated_before_the_cutoff_oldest_first(
    videos: VideoRepository,
) -> None:
    old = a_video(age_s=3600, status=VideoStatus.PROCESSING)
    older = a_video(BOB, age_s=7200, status=VideoStatus.PROCESSING)
    recent = a_video(age_s=10, status=VideoStatus.PROCESSING)
    queued = a_video(age_s=3600, status=VideoStatus.QUEUED)
    finished = a_video(age_s=3600, status=VideoStatus.READY)
    for video in (old, older, recent, queued, finished):
        videos.add(video)

    cutoff = utcnow() - timedelta(seconds=60)

    assert list(videos.list_idle(VideoStatus.PROCESSING, cutoff)) == [older, old]
    assert list(videos.list_idle(VideoStatus.QUEUED, cutoff)) == [queued]
    assert list(videos.list_idle(VideoStatus.AWAITING_UPLOAD, cutoff)) == []


def test_a_video_leaves_the_idle_list_once_final_or_updated(videos: VideoRepository) -> None:
    stuck = a_video(age_s=3600, status=VideoStatus.PROCESSING)
    waiting = a_video(age_s=3600)
    for video in (stuck, waiting):
        videos.add(video)
    cutoff = utcnow() - timedelta(seconds=60)
    assert [v.id for v in videos.list_idle(VideoStatus.AWAITING_UPLOAD, cutoff)] == [waiting.id]

    videos.update(stuck, status=VideoStatus.FAILED, error="stuck")
    videos.update(waiting, progress=0)  # any update counts as activity

    assert list(videos.list_idle(VideoStatus.PROCESSING, cutoff)) == []
    assert list(videos.list_idle(VideoStatus.AWAITING_UPLOAD, cutoff)) == []
    moved_on = videos.update(stuck, status=VideoStatus.QUEUED)  # e.g. a retry reopens it
    assert [v.id for v in videos.list_idle(VideoStatus.QUEUED, utcnow() + timedelta(seconds=1))] == [
        moved_on.id
    ]


def test_list_idle_refuses_final_states(videos: VideoRepository) -> None:
    with pytest.raises(ValueError):
        list(videos.list_idle(VideoStatus.READY, utcnow()))


def test_updating_a_missing_video_is_stale_and_creates_nothing(videos: VideoRepository) -> None:
    gone = a_video()
    videos.add(gone)
    videos.delete(ALICE, gone.id)
    never = a_video(BOB)

    for video in (gone, never):
        with pytest.raises(StaleUpdate):
            videos.update(video, status=VideoStatus.FAILED, error="lost")
        with pytest.raises(StaleUpdate):
            videos.update(video, expected=[VideoStatus.AWAITING_UPLOAD], progress=10)
        assert videos.get(video.owner_id, video.id) is None
        assert nothing_stored_for(videos, video.owner_id)


# claim_notification and release_notification


def test_a_notification_is_claimed_once(videos: VideoRepository) -> None:
    video = a_video(status=VideoStatus.READY)
    videos.add(video)
    assert videos.claim_notification(video) is True
    assert stored(videos, video).notified_at is not None
    assert videos.claim_notification(video) is False
    assert videos.claim_notification(stored(videos, video)) is False


def test_claiming_for_a_missing_video_is_refused_and_creates_nothing(videos: VideoRepository) -> None:
    video = a_video()
    assert videos.claim_notification(video) is False
    assert videos.get(ALICE, video.id) is None
    assert nothing_stored_for(videos, ALICE)


def test_a_released_claim_can_be_made_again(videos: VideoRepository) -> None:
    video = a_video(status=VideoStatus.FAILED, error="bad file")
    videos.add(video)
    assert videos.claim_notification(video)
    videos.release_notification(video)
    assert stored(videos, video).notified_at is None
    assert stored(videos, video).error == "bad file"
    assert videos.claim_notification(video) is True


def test_releasing_for_a_deleted_video_does_nothing_and_creates_nothing(videos: VideoRepository) -> None:
    # The owner deletes the video while its email is failing.
    video = a_video(status=VideoStatus.READY)
    videos.add(video)
    assert videos.claim_notification(video)
    videos.delete(ALICE, video.id)

    videos.release_notification(video)

    assert videos.get(ALICE, video.id) is None
    assert nothing_stored_for(videos, ALICE)


# delete and check


def test_delete_removes_only_that_video_and_a_missing_one_is_fine(videos: VideoRepository) -> None:
    kept, removed = a_video(age_s=1), a_video()
    videos.add(kept)
    videos.add(removed)
    videos.delete(ALICE, removed.id)
    assert videos.get(ALICE, removed.id) is None
    assert videos.list_for_owner(ALICE, 10, None).items == [kept]
    videos.delete(ALICE, removed.id)
    videos.delete("nobody", new_video_id())


def test_a_reachable_store_passes_its_check(videos: VideoRepository) -> None:
    videos.check()


# items written before issue 9


def test_an_item_written_before_adaptive_streaming_reads_as_not_playable_with_no_stream(
    video_table: Any, aws: Any
) -> None:
    # Exactly what the repository stored before `playable`, `hls_master_key`
    # and `rungs` existed. The fake holds Video objects, so has no such items.
    video = a_video(status=VideoStatus.READY, progress=100)
    aws.dynamodb.put_item(
        TableName=video_table.Meta.table_name,
        Item={
            "owner_id": {"S": ALICE},
            "video_id": {"S": video.id},
            "owner_email": {"S": video.owner_email},
            "title": {"S": video.title},
            "status": {"S": "ready"},
            "progress": {"N": "100"},
            "created_at": {"S": video.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")},
            "updated_at": {"S": video.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")},
            "source": {
                "M": {
                    "filename": {"S": "trip.mp4"},
                    "size_bytes": {"N": "1000"},
                    "content_type": {"S": "video/mp4"},
                }
            },
            "outputs": {
                "M": {
                    "renditions": {
                        "L": [
                            {
                                "M": {
                                    "name": {"S": "720p"},
                                    "width": {"N": "1280"},
                                    "height": {"N": "720"},
                                    "key": {"S": "media/a/v/720p.mp4"},
                                }
                            }
                        ]
                    },
                    "thumbnail_key": {"S": "media/a/v/thumbnail.jpg"},
                }
            },
        },
    )

    found = DynamoVideoRepository(video_table).get(ALICE, video.id)

    assert found is not None
    assert found.playable is False
    assert found.outputs == Outputs(
        renditions=(Rendition("720p", 1280, 720, "media/a/v/720p.mp4"),),
        thumbnail_key="media/a/v/thumbnail.jpg",
        hls_master_key=None,
        rungs=(),
    )
    assert found.created_at == video.created_at


def test_a_multipart_plan_is_stored_and_its_upload_completes(videos: VideoRepository) -> None:
    plan = MultipartPlan(
        upload_id="upload-1", part_size=8 * 1024**2, part_count=3, expires_at=utcnow() + timedelta(days=1)
    )
    video = a_video(multipart=plan, source=SourceInfo("big.mp4", 20 * 1024**2, "video/mp4"))
    videos.add(video)
    assert videos.get(ALICE, video.id) == video

    completed = videos.update(
        video, expected={VideoStatus.AWAITING_UPLOAD}, status=VideoStatus.QUEUED, upload_etag="abc-3"
    )

    assert completed.multipart == plan and completed.upload_etag == "abc-3"
    assert videos.get(ALICE, video.id) == completed
