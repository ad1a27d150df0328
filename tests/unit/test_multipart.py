"""Multipart uploads' rules and use cases, with in-memory fakes."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib.domain import (
    MultipartPlan,
    NewVideo,
    NotFound,
    Principal,
    SourceInfo,
    UploadedPart,
    Video,
    VideoStatus,
    utcnow,
)
from chalicelib.settings import GIB, MIB, S3_MAX_OBJECT_BYTES, S3_MAX_PARTS, Settings
from chalicelib.uploads import (
    DuplicateParts,
    EtagMismatch,
    InvalidPartNumbers,
    MissingParts,
    MultipartUploads,
    NotMultipart,
    PartsNotAccepted,
    SizeMismatch,
    UploadCompleted,
    UploadGone,
    check_completion,
    check_part_numbers,
    part_size_for,
    plan_for,
)
from tests.fakes import FakePorts

ALICE = Principal(user_id="alice", email="alice@example.com")
BOB = Principal(user_id="bob", email="bob@example.com")
PART = 5 * MIB
SIZE = 2 * PART + 7


# --- the plan ---


@pytest.mark.parametrize(
    ("size", "part_size"),
    [
        (64 * MIB, 8 * MIB),  # the preferred size
        (8 * MIB * S3_MAX_PARTS, 8 * MIB),  # exactly 10,000 parts of it
        (8 * MIB * S3_MAX_PARTS + 1, 9 * MIB),  # one byte more: a MiB bigger
        (50 * GIB, 8 * MIB),
        (100 * GIB, 11 * MIB),
        (S3_MAX_OBJECT_BYTES, 525 * MIB),  # 5 TiB fits too
    ],
)
def test_every_allowed_size_fits_in_10000_parts_of_whole_mib(size: int, part_size: int) -> None:
    assert part_size_for(size, 8 * MIB) == part_size
    plan = plan_for("u", size, Settings(multipart_part_bytes=8 * MIB), utcnow())
    assert plan.part_size == part_size and plan.part_count <= S3_MAX_PARTS
    assert (plan.part_count - 1) * plan.part_size < size <= plan.part_count * plan.part_size


def test_the_plan_expires_after_the_multipart_window() -> None:
    now = utcnow()
    plan = plan_for("u", SIZE, Settings(multipart_part_bytes=PART, multipart_upload_ttl_s=7200), now)
    assert plan == MultipartPlan("u", PART, 3, now + timedelta(hours=2))
    assert [plan.expected_part_size(n, SIZE) for n in (1, 2, 3)] == [PART, PART, 7]


def test_settings_keep_the_threshold_under_a_posts_ceiling_and_parts_in_s3s_range() -> None:
    for bad in (
        {"multipart_threshold_bytes": 5 * 1000**3},
        {"multipart_part_bytes": 5 * MIB - 1},
        {"multipart_part_bytes": 5 * GIB + 1},
        {"max_upload_bytes": S3_MAX_OBJECT_BYTES + 1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(**bad)
    assert Settings().multipart_threshold_bytes == 64 * MIB


# --- checking a client's parts ---

PLAN = MultipartPlan("u", PART, 3, utcnow() + timedelta(days=1))
STORED = [UploadedPart(1, "a", PART), UploadedPart(2, "b", PART), UploadedPart(3, "c", 7)]
GIVEN = [(1, "a"), (2, "b"), (3, "c")]


def test_a_complete_list_is_joined_in_order_with_quotes_taken_off() -> None:
    assert check_completion(PLAN, SIZE, [(3, '"c"'), (1, "a"), (2, "b")], STORED) == GIVEN


@pytest.mark.parametrize(
    ("given", "stored", "declared", "error", "named"),
    [
        ([(1, "a"), (3, "c")], STORED, SIZE, MissingParts, "part 2"),
        (GIVEN, STORED[:1], SIZE, MissingParts, "parts 2, 3"),
        ([*GIVEN, (2, "b")], STORED, SIZE, DuplicateParts, "2"),
        ([*GIVEN, (4, "d")], STORED, SIZE, InvalidPartNumbers, "4"),
        ([(0, "z"), *GIVEN], STORED, SIZE, InvalidPartNumbers, "0"),
        ([(1, "a"), (2, "x"), (3, "c")], STORED, SIZE, EtagMismatch, "part 2"),
        (GIVEN, STORED, SIZE + 1, SizeMismatch, str(SIZE + 1)),
        (
            GIVEN,
            [UploadedPart(1, "a", PART), UploadedPart(2, "b", PART - 1), UploadedPart(3, "c", 8)],
            SIZE,
            SizeMismatch,
            "parts 2, 3",
        ),
    ],
)
def test_each_mistake_in_a_completion_is_named(
    given: list[tuple[int, str]],
    stored: list[UploadedPart],
    declared: int,
    error: type[Exception],
    named: str,
) -> None:
    with pytest.raises(error, match=named):
        check_completion(PLAN, declared, given, stored)


def test_part_numbers_are_the_plans_each_once() -> None:
    check_part_numbers(PLAN, [3, 1])
    with pytest.raises(InvalidPartNumbers, match="from 1 to 3"):
        check_part_numbers(PLAN, [1, 4])
    with pytest.raises(DuplicateParts):
        check_part_numbers(PLAN, [1, 1])


# --- expiry: the abandoned-uploads job and the API agree ---


def a_multipart_video(expires_in: timedelta, created_ago: timedelta = timedelta(hours=3)) -> Video:
    now = utcnow()
    video = Video(
        id="01" + "0" * 24,
        owner_id="alice",
        owner_email="alice@example.com",
        title="Big",
        status=VideoStatus.AWAITING_UPLOAD,
        progress=0,
        created_at=now - created_ago,
        updated_at=now - created_ago,
        source=SourceInfo("b.mp4", SIZE, "video/mp4"),
    )
    return video.with_changes(multipart=replace(PLAN, expires_at=now + expires_in))


def test_a_multipart_upload_expires_with_its_own_window_not_the_posts() -> None:
    now = utcnow()
    # Hours past a POST's 15 minutes, but its multipart window is still open.
    assert not a_multipart_video(timedelta(hours=1)).upload_expired(now, upload_ttl_s=900)
    # Its window closed (and the event's grace passed).
    assert a_multipart_video(-timedelta(minutes=3)).upload_expired(now, upload_ttl_s=900)
    # A completed one never expires.
    done = a_multipart_video(-timedelta(hours=1)).with_changes(status=VideoStatus.QUEUED)
    assert not done.upload_expired(now, upload_ttl_s=900)


# --- the use cases on fakes ---


@pytest.fixture
def fakes() -> FakePorts:
    return FakePorts()


@pytest.fixture
def settings() -> Settings:
    return Settings(multipart_threshold_bytes=6 * MIB, multipart_part_bytes=PART)


@pytest.fixture
def uploads(fakes: FakePorts, settings: Settings) -> MultipartUploads:
    return fakes.container(settings).multipart_uploads


def created(fakes: FakePorts, settings: Settings, size: int = SIZE) -> Video:
    service = fakes.container(settings).video_service
    video, _ = service.create(ALICE, NewVideo("Big", "big.mp4", "video/mp4", size))
    return video


def put_all(fakes: FakePorts, video: Video, data: bytes) -> list[tuple[int, str]]:
    assert video.multipart is not None
    plan = video.multipart
    return [
        (n, fakes.uploads.put_part(video.upload_key, plan.upload_id, n, data[(n - 1) * PART : n * PART]))
        for n in range(1, plan.part_count + 1)
    ]


def test_create_opens_a_multipart_upload_at_the_threshold_and_a_post_below(
    fakes: FakePorts, settings: Settings
) -> None:
    service = fakes.container(settings).video_service
    video, plan = service.create(ALICE, NewVideo("Big", "big.mp4", "video/webm", 6 * MIB))
    assert isinstance(plan, MultipartPlan) and video.multipart == plan
    assert (plan.part_size, plan.part_count) == (PART, 2)
    assert fakes.uploads.multipart_content_types[plan.upload_id] == "video/webm"
    assert fakes.videos.get("alice", video.id) == video
    small, ticket = service.create(ALICE, NewVideo("Small", "s.mp4", "video/mp4", 6 * MIB - 1))
    assert not isinstance(ticket, MultipartPlan) and small.multipart is None


def test_deleting_a_multipart_video_aborts_its_upload(fakes: FakePorts, settings: Settings) -> None:
    video = created(fakes, settings)
    other = created(fakes, settings)
    fakes.container(settings).video_service.delete(ALICE, video.id)
    assert [key for key, _ in fakes.uploads.multipart_uploads] == [other.upload_key]


def test_completing_stores_the_file_and_claims_the_video_for_it(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    data = bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256)
    done = uploads.complete(ALICE, video.id, put_all(fakes, video, data))
    stored = fakes.uploads.head(video.upload_key)
    assert (
        stored is not None
        and stored.etag.endswith("-3")
        and fakes.uploads.objects[video.upload_key][0] == data
    )
    assert done.status is VideoStatus.QUEUED and done.upload_etag == stored.etag
    with pytest.raises(UploadCompleted):
        uploads.complete(ALICE, video.id, [(1, "a")])


def test_the_workers_claim_first_is_the_same_completion(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    """The upload's event can reach the worker before `complete` records the video."""
    video = created(fakes, settings)
    parts = put_all(fakes, video, b"y" * SIZE)
    real_complete = fakes.uploads.complete_multipart_upload

    def complete_then_worker_claims(key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        etag = real_complete(key, upload_id, parts)
        fakes.videos.update(video, status=VideoStatus.PROCESSING, upload_etag=etag)
        return etag

    fakes.uploads.complete_multipart_upload = complete_then_worker_claims  # type: ignore[method-assign]
    done = uploads.complete(ALICE, video.id, parts)
    assert done.status is VideoStatus.PROCESSING and done.upload_etag is not None


def test_a_video_deleted_while_completing_is_not_found(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    parts = put_all(fakes, video, b"y" * SIZE)
    real_complete = fakes.uploads.complete_multipart_upload

    def complete_while_deleted(key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        fakes.videos.delete(video.owner_id, video.id)
        return real_complete(key, upload_id, parts)

    fakes.uploads.complete_multipart_upload = complete_while_deleted  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        uploads.complete(ALICE, video.id, parts)


def test_parts_s3_refuses_are_a_clear_400(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    parts = put_all(fakes, video, b"y" * SIZE)
    fakes.uploads.min_part_bytes = PART + 1  # as if S3's minimum were larger than our parts
    with pytest.raises(PartsNotAccepted, match="minimum"):
        uploads.complete(ALICE, video.id, parts)
    assert video.multipart is not None  # the upload stays open, its parts kept
    assert len(fakes.uploads.list_parts(video.upload_key, video.multipart.upload_id)) == 3


def test_other_owners_and_post_uploads_and_aborted_uploads(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    for call in (
        lambda: uploads.part_urls(BOB, video.id, [1]),
        lambda: uploads.status(BOB, video.id),
        lambda: uploads.complete(BOB, video.id, [(1, "a")]),
    ):
        with pytest.raises(NotFound):
            call()
    small = created(fakes, settings, size=1000)
    with pytest.raises(NotMultipart):
        uploads.status(ALICE, small.id)
    fakes.uploads.abort_multipart_uploads(video.upload_prefix)
    with pytest.raises(UploadGone):
        uploads.status(ALICE, video.id)


def test_part_urls_last_the_configured_time_within_the_window(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    urls = uploads.part_urls(ALICE, video.id, [2, 1])
    assert [u.part_number for u in urls] == [2, 1]
    assert [p["expires_s"] for p in fakes.uploads.presigned_parts] == [3600, 3600]
    # Each URL is signed for its part's exact size: the last one holds the rest.
    plan = video.multipart
    assert plan is not None
    last = video.source.size_bytes - plan.part_size * (plan.part_count - 1)
    sizes = {p["part_number"]: p["size_bytes"] for p in fakes.uploads.presigned_parts}
    assert sizes[1] == plan.part_size
    assert uploads.part_urls(ALICE, video.id, [plan.part_count])
    assert fakes.uploads.presigned_parts[-1]["size_bytes"] == last
    with pytest.raises(InvalidPartNumbers, match="1 to 100"):
        uploads.part_urls(ALICE, video.id, list(range(1, 102)))


def test_a_completion_s3_made_but_the_service_did_not_record_is_recorded_on_retry(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    """The answer or the update was lost after S3 joined the parts: the client retries."""
    video = created(fakes, settings)
    parts = put_all(fakes, video, b"z" * SIZE)
    assert video.multipart is not None
    fakes.uploads.complete_multipart_upload(video.upload_key, video.multipart.upload_id, parts)
    with pytest.raises(UploadCompleted):  # asking what S3 holds: nothing to resume
        uploads.status(ALICE, video.id)

    done = uploads.complete(ALICE, video.id, parts)

    stored = fakes.uploads.head(video.upload_key)
    assert stored is not None and done.upload_etag == stored.etag and done.status is VideoStatus.QUEUED


def test_a_completion_of_10000_parts_is_checked_quickly() -> None:
    plan = MultipartPlan("u", PART, S3_MAX_PARTS, utcnow() + timedelta(days=1))
    size = PART * S3_MAX_PARTS
    stored = [UploadedPart(n, f"e{n}", PART) for n in range(1, S3_MAX_PARTS + 1)]
    given = [(n, f"e{n}") for n in range(S3_MAX_PARTS, 0, -1)]
    started = time.perf_counter()
    assert len(check_completion(plan, size, given, stored)) == S3_MAX_PARTS
    with pytest.raises(DuplicateParts):
        check_completion(plan, size, [*given, (1, "e1")], stored)
    assert time.perf_counter() - started < 1.0


def test_an_upload_given_up_by_the_abandoned_uploads_job_is_gone_not_completed(
    fakes: FakePorts, settings: Settings, uploads: MultipartUploads
) -> None:
    video = created(fakes, settings)
    fakes.videos.update(video, status=VideoStatus.FAILED, error="The upload did not finish in time.")
    with pytest.raises(UploadGone, match="given up"):
        uploads.part_urls(ALICE, video.id, [1])


def test_a_create_that_cannot_be_recorded_leaves_no_multipart_upload_open(
    fakes: FakePorts, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(video: Video, **_: object) -> None:
        raise RuntimeError("the table is unreachable")

    monkeypatch.setattr(fakes.videos, "add", unavailable)
    with pytest.raises(RuntimeError):
        created(fakes, settings)
    assert fakes.uploads.multipart_uploads == {}
