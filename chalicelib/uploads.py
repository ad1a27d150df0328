"""Multipart uploads: big files sent in parts, resumable (issue 11).

At or above `Settings.multipart_threshold_bytes`, `VideoService.create` opens
an S3 multipart upload instead of presigning one POST, and records its plan
on the video (`Video.multipart`): the upload id, the part size and count, and
how long the upload may stay open. The client then

1. asks for presigned PUT URLs, a batch of part numbers at a time
   (`MultipartUploads.part_urls`), so that no URL waits long enough to expire;
2. PUTs each part and keeps the ETag S3 answers;
3. completes the upload with the part numbers and ETags
   (`MultipartUploads.complete`). S3 then emits ObjectCreated
   (CompleteMultipartUpload) and the worker processes the file as usual.

A client that lost its state asks what S3 holds (`MultipartUploads.status`,
from ListParts) and uploads only the rest.

Completing checks the parts against the plan and against what S3 holds before
asking S3 to join them, so each mistake gets its own clear error and the
upload stays open to fix it: parts missing, repeated or out of the plan's
range, an ETag that is not the stored part's, and a total size other than the
declared `size_bytes` (the worker's size check then holds by construction).
The completion is the upload's claim: it records the object's ETag on the
video (`Video.upload_etag`) and moves it to `queued`, so completing again is a
conflict and no other object at the key is ever processed for it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.domain import (
    Conflict,
    DomainError,
    InvalidRequest,
    MultipartPlan,
    NotFound,
    Principal,
    UploadedPart,
    Video,
    VideoStatus,
    utcnow,
)
from chalicelib.ports import BlobStore, NoSuchUpload, PartsRefused, StaleUpdate, VideoRepository
from chalicelib.settings import MIB, S3_MAX_PART_BYTES, S3_MAX_PARTS, Settings

# Part URLs one request may ask for: enough to keep a fast client busy for a
# while, few enough that none waits long before it is used.
MAX_PART_URLS_PER_REQUEST = 100
# A part URL handed out just before the upload's window closes still gets this long.
MIN_PART_URL_TTL_S = 60


# --- errors: each maps to one HTTP status through its base class ---


class NotMultipart(Conflict):
    code = "not_multipart"


class UploadCompleted(Conflict):
    code = "upload_completed"


class UploadGone(Conflict):
    code = "upload_gone"


class InvalidPartNumbers(InvalidRequest):
    code = "invalid_part_numbers"


class DuplicateParts(InvalidRequest):
    code = "duplicate_parts"


class MissingParts(InvalidRequest):
    code = "missing_parts"


class EtagMismatch(InvalidRequest):
    code = "etag_mismatch"


class SizeMismatch(InvalidRequest):
    code = "size_mismatch"


class PartsNotAccepted(InvalidRequest):
    code = "parts_refused"


# --- the rules ---


def part_size_for(size_bytes: int, preferred_bytes: int) -> int:
    """The part size of a `size_bytes` file: `preferred_bytes`, or more (in whole
    MiB) when the file would otherwise need more than S3's 10,000 parts."""
    needed = math.ceil(size_bytes / S3_MAX_PARTS)
    size = max(preferred_bytes, math.ceil(needed / MIB) * MIB)
    if size > S3_MAX_PART_BYTES:
        raise InvalidRequest(f"A file of {size_bytes} bytes is larger than S3 can store in parts.")
    return size


def plan_for(upload_id: str, size_bytes: int, settings: Settings, now: datetime) -> MultipartPlan:
    """How a `size_bytes` file is cut, and until when its upload stays open."""
    part_size = part_size_for(size_bytes, settings.multipart_part_bytes)
    return MultipartPlan(
        upload_id=upload_id,
        part_size=part_size,
        part_count=max(1, math.ceil(size_bytes / part_size)),
        expires_at=now + timedelta(seconds=settings.multipart_upload_ttl_s),
    )


def _listed(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _parts(numbers: Sequence[int]) -> str:
    """ "part 3" or "parts 3, 4", for messages."""
    return f"part{'s' if len(numbers) > 1 else ''} {_listed(numbers)}"


def check_part_numbers(plan: MultipartPlan, numbers: Sequence[int]) -> None:
    """Part numbers a client names must be the plan's (1..part_count), each once."""
    outside = sorted({n for n in numbers if not 1 <= n <= plan.part_count})
    if outside:
        raise InvalidPartNumbers(
            f"Part numbers run from 1 to {plan.part_count} for this upload; "
            f"{_listed(outside)} {'is' if len(outside) == 1 else 'are'} not among them."
        )
    repeated = sorted(n for n, times in Counter(numbers).items() if times > 1)
    if repeated:
        raise DuplicateParts(f"Each part may be named once; {_listed(repeated)} appeared more than once.")


def check_completion(
    plan: MultipartPlan,
    declared_bytes: int,
    given: Sequence[tuple[int, str]],
    stored: Sequence[UploadedPart],
) -> list[tuple[int, str]]:
    """The parts to join, in order, once the client's list (part number, ETag)
    is checked against the plan and against what S3 holds; else the error that
    names the problem."""
    check_part_numbers(plan, [number for number, _ in given])
    named = {number: etag.strip().strip('"') for number, etag in given}
    missing = [n for n in range(1, plan.part_count + 1) if n not in named]
    if missing:
        raise MissingParts(f"The upload has {plan.part_count} parts; the list leaves out {_parts(missing)}.")
    held = {part.part_number: part for part in stored}
    not_uploaded = [n for n in sorted(named) if n not in held]
    if not_uploaded:
        raise MissingParts(f"Not uploaded yet: {_parts(not_uploaded)}.")
    wrong = [n for n in sorted(named) if held[n].etag != named[n]]
    if wrong:
        raise EtagMismatch(
            f"The ETag given for {_parts(wrong)} is not the ETag of the part stored; "
            "send the ETag each part's PUT answered (GET the upload to see them)."
        )
    total = sum(held[n].size_bytes for n in named)
    if total != declared_bytes:
        raise SizeMismatch(
            f"The parts hold {total} bytes, but the video was declared with size_bytes {declared_bytes}."
        )
    off_plan = [n for n in sorted(named) if held[n].size_bytes != plan.expected_part_size(n, declared_bytes)]
    if off_plan:
        raise SizeMismatch(
            f"Every part but the last must hold {plan.part_size} bytes, and the last the rest; "
            f"these do not: {_parts(off_plan)}."
        )
    return [(n, named[n]) for n in sorted(named)]


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str
    expires_at: datetime


@dataclass
class MultipartUploads:
    """The use cases of a multipart upload after `VideoService.create` opened it."""

    videos: VideoRepository
    uploads: BlobStore
    settings: Settings
    # The owner's video or NotFound (VideoService.get), so ids reveal nothing here either.
    find: Callable[[Principal, str], Video]

    def part_urls(self, owner: Principal, video_id: str, part_numbers: Sequence[int]) -> list[PartUrl]:
        """Presigned PUT URLs for `part_numbers` of the video's upload."""
        video, plan = self._open(owner, video_id)
        if not part_numbers or len(part_numbers) > MAX_PART_URLS_PER_REQUEST:
            raise InvalidPartNumbers(f"Ask for 1 to {MAX_PART_URLS_PER_REQUEST} part URLs at a time.")
        check_part_numbers(plan, part_numbers)
        now = utcnow()
        # No URL outlives the upload it belongs to (by more than a minute's grace).
        window_s = int((plan.expires_at - now).total_seconds())
        ttl_s = max(MIN_PART_URL_TTL_S, min(self.settings.multipart_part_url_ttl_s, window_s))
        expires_at = now + timedelta(seconds=ttl_s)
        declared = video.source.size_bytes
        return [
            PartUrl(
                n,
                self.uploads.presign_part_upload(
                    video.upload_key, plan.upload_id, n, plan.expected_part_size(n, declared), ttl_s
                ),
                expires_at,
            )
            for n in part_numbers
        ]

    def status(self, owner: Principal, video_id: str) -> tuple[MultipartPlan, list[UploadedPart]]:
        """The video's plan and the parts S3 already holds, for a client resuming."""
        video, plan = self._open(owner, video_id)
        return plan, self._stored_parts(video, plan)

    def complete(self, owner: Principal, video_id: str, parts: Sequence[tuple[int, str]]) -> Video:
        """Check `parts` (part number, ETag), join them into the upload's object
        and queue the video. On any error the upload stays open, unchanged."""
        video, plan = self._open(owner, video_id)
        try:
            stored_parts = self.uploads.list_parts(video.upload_key, plan.upload_id)
        except NoSuchUpload:
            # A retry after S3 completed the upload but this service did not
            # record it (its answer or its update was lost): record it now.
            stored = self.uploads.head(video.upload_key)
            if stored is None:
                raise self._gone(video) from None
            return self._record_completion(video, stored.etag)
        joined = check_completion(plan, video.source.size_bytes, parts, stored_parts)
        try:
            etag = self.uploads.complete_multipart_upload(video.upload_key, plan.upload_id, joined)
        except NoSuchUpload:
            raise self._gone(video) from None
        except PartsRefused as refused:
            raise PartsNotAccepted(f"S3 refused the parts: {refused.reason}") from None
        return self._record_completion(video, etag)

    def _record_completion(self, video: Video, etag: str) -> Video:
        """The video, queued for the object `etag` its upload made (the claim)."""
        try:
            return self.videos.update(
                video,
                expected={VideoStatus.AWAITING_UPLOAD},
                status=VideoStatus.QUEUED,
                progress=0,
                error=None,
                upload_etag=etag,
            )
        except StaleUpdate:
            # The upload's event reached the worker first (it claimed this very
            # object), or the video was deleted meanwhile.
            current = self.videos.get(video.owner_id, video.id)
            if current is None:
                raise NotFound("No such video.") from None
            if current.upload_etag == etag:
                return current
            raise UploadCompleted("This upload was completed already.") from None

    def _open(self, owner: Principal, video_id: str) -> tuple[Video, MultipartPlan]:
        """The owner's video and its plan, while its multipart upload may still be sent."""
        video = self.find(owner, video_id)
        plan = video.multipart
        if plan is None:
            raise NotMultipart(
                'This video uploads in one presigned POST (upload.method "post"), not in parts.'
            )
        if video.status is VideoStatus.FAILED and video.upload_etag is None:
            # Failed before anything landed (the abandoned-uploads job): not a finished upload.
            raise UploadGone(
                f"This upload was given up ({video.error}). Create a new video to upload the file."
            )
        if video.status is not VideoStatus.AWAITING_UPLOAD or video.upload_etag is not None:
            raise UploadCompleted("This upload was completed already; the video is being processed.")
        if video.upload_expired(utcnow(), self.settings.upload_url_ttl_s):
            raise UploadGone(
                "This upload stayed open too long and was given up. Create a new video to upload the file."
            )
        return video, plan

    def _stored_parts(self, video: Video, plan: MultipartPlan) -> list[UploadedPart]:
        try:
            return self.uploads.list_parts(video.upload_key, plan.upload_id)
        except NoSuchUpload:
            raise self._gone(video) from None

    def _gone(self, video: Video) -> DomainError:
        """The error for an upload S3 no longer has open: completed by a racing
        request, or aborted (abandoned, or its video being deleted)."""
        current = self.videos.get(video.owner_id, video.id)
        if current is None:
            return NotFound("No such video.")
        if current.upload_etag is not None or self.uploads.head(video.upload_key) is not None:
            return UploadCompleted("This upload was completed already; the video is being processed.")
        return UploadGone("This upload is no longer open. Create a new video to upload the file.")
