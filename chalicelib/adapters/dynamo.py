"""Videos in DynamoDB through pynamodb.

Keys: hash `owner_id`, range `video_id`. Video ids sort by creation time, so
"one user's videos, newest first" is a single Query in descending order,
and a page's cursor is the last video id it returned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.domain import (
    PROCESSABLE_STATUSES,
    InvalidRequest,
    MultipartPlan,
    Outputs,
    Page,
    Rendition,
    Rung,
    SourceInfo,
    Video,
    VideoStatus,
    is_video_id,
    utcnow,
)
from chalicelib.ports import StaleUpdate
from chalicelib.settings import Settings
from chalicelib.usage import OverQuota, UsageChange

if TYPE_CHECKING:
    from chalicelib.adapters.usage_dynamo import CountedWrite, DynamoUsageRepository


class SourceMap(MapAttribute[str, Any]):
    filename = UnicodeAttribute()
    size_bytes = NumberAttribute()
    content_type = UnicodeAttribute()
    duration_s = NumberAttribute(null=True)
    width = NumberAttribute(null=True)
    height = NumberAttribute(null=True)


class RenditionMap(MapAttribute[str, Any]):
    name = UnicodeAttribute()
    width = NumberAttribute()
    height = NumberAttribute()
    key = UnicodeAttribute()


class RungMap(MapAttribute[str, Any]):
    name = UnicodeAttribute()
    width = NumberAttribute()
    height = NumberAttribute()
    bandwidth = NumberAttribute()


class OutputsMap(MapAttribute[str, Any]):
    renditions = ListAttribute(of=RenditionMap)
    # Items written before issue 9 have neither HLS field and always a thumbnail.
    thumbnail_key = UnicodeAttribute(null=True)
    hls_master_key = UnicodeAttribute(null=True)
    rungs = ListAttribute(of=RungMap, null=True)


# The index's name; infra/stack.yaml and devstack/resources.py create it.
OPEN_VIDEOS_INDEX = "open-videos"


class OpenVideosIndex(GlobalSecondaryIndex["VideoRecord"]):
    """Sparse: only open videos (awaiting_upload, queued, processing) carry
    `open_status`, so the scheduled jobs find idle ones with one Query per
    state, oldest update first, however many finished videos the table holds."""

    class Meta:
        index_name = OPEN_VIDEOS_INDEX
        projection = AllProjection()

    open_status = UnicodeAttribute(hash_key=True)
    updated_at = UTCDateTimeAttribute(range_key=True)


def _open_status(status: VideoStatus) -> str | None:
    """What `open_status` holds for a video in `status`: the status while open, else nothing."""
    return status.value if status in PROCESSABLE_STATUSES else None


class MultipartMap(MapAttribute[str, Any]):
    upload_id = UnicodeAttribute()
    part_size = NumberAttribute()
    part_count = NumberAttribute()
    expires_at = UTCDateTimeAttribute()


class VideoRecord(Model):
    """One video. Bind it to a table with `bind_video_record`."""

    class Meta:
        table_name = "vidline-videos"

    owner_id = UnicodeAttribute(hash_key=True)
    video_id = UnicodeAttribute(range_key=True)
    owner_email = UnicodeAttribute()
    title = UnicodeAttribute()
    status = UnicodeAttribute()
    progress = NumberAttribute(default=0)
    error = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    source = SourceMap()
    outputs = OutputsMap(null=True)
    # Absent on items written before issue 9: read as False.
    playable = BooleanAttribute(null=True)
    notified_at = UTCDateTimeAttribute(null=True)
    upload_etag = UnicodeAttribute(null=True)
    requeued_at = UTCDateTimeAttribute(null=True)
    # The status while the video is open, absent once it is final: the key of
    # the sparse open-videos index. Items written before it existed lack it.
    open_status = UnicodeAttribute(null=True)
    open_videos = OpenVideosIndex()
    # Only on videos that upload in parts (issue 11).
    multipart = MultipartMap(null=True)


def bind_video_record(settings: Settings, *, timeout_s: float | None = None) -> type[VideoRecord]:
    """A VideoRecord subclass bound to the configured table and endpoint. With
    `timeout_s`, its calls give up after that long to connect or read, without
    retrying (health checks)."""
    attributes: dict[str, object] = {
        "table_name": settings.videos_table,
        "region": settings.region,
        "host": settings.aws_endpoint_url,
        "billing_mode": "PAY_PER_REQUEST",
    }
    if timeout_s is not None:
        attributes |= {
            "connect_timeout_seconds": timeout_s,
            "read_timeout_seconds": timeout_s,
            "max_retry_attempts": 0,
        }
    meta = type("Meta", (), attributes)
    return type("BoundVideoRecord", (VideoRecord,), {"Meta": meta})


def _source_map(source: SourceInfo) -> SourceMap:
    return SourceMap(
        filename=source.filename,
        size_bytes=source.size_bytes,
        content_type=source.content_type,
        duration_s=source.duration_s,
        width=source.width,
        height=source.height,
    )


def _outputs_map(outputs: Outputs) -> OutputsMap:
    return OutputsMap(
        renditions=[
            RenditionMap(name=r.name, width=r.width, height=r.height, key=r.key) for r in outputs.renditions
        ],
        thumbnail_key=outputs.thumbnail_key,
        hls_master_key=outputs.hls_master_key,
        rungs=[
            RungMap(name=r.name, width=r.width, height=r.height, bandwidth=r.bandwidth) for r in outputs.rungs
        ],
    )


def _multipart_map(plan: MultipartPlan) -> MultipartMap:
    return MultipartMap(
        upload_id=plan.upload_id,
        part_size=plan.part_size,
        part_count=plan.part_count,
        expires_at=plan.expires_at,
    )


def _to_plan(plan: MultipartMap | None) -> MultipartPlan | None:
    if plan is None:
        return None
    return MultipartPlan(
        upload_id=plan.upload_id,
        part_size=int(plan.part_size),
        part_count=int(plan.part_count),
        expires_at=plan.expires_at,
    )


def _to_video(record: VideoRecord) -> Video:
    s = record.source
    outputs = None
    if record.outputs is not None:
        outputs = Outputs(
            renditions=tuple(
                Rendition(name=r.name, width=int(r.width), height=int(r.height), key=r.key)
                for r in record.outputs.renditions
            ),
            thumbnail_key=record.outputs.thumbnail_key,
            hls_master_key=record.outputs.hls_master_key,
            rungs=tuple(
                Rung(name=r.name, width=int(r.width), height=int(r.height), bandwidth=int(r.bandwidth))
                for r in record.outputs.rungs or ()
            ),
        )
    return Video(
        id=record.video_id,
        owner_id=record.owner_id,
        owner_email=record.owner_email,
        title=record.title,
        status=VideoStatus(record.status),
        progress=int(record.progress),
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
        source=SourceInfo(
            filename=s.filename,
            size_bytes=int(s.size_bytes),
            content_type=s.content_type,
            duration_s=float(s.duration_s) if s.duration_s is not None else None,
            width=int(s.width) if s.width is not None else None,
            height=int(s.height) if s.height is not None else None,
        ),
        outputs=outputs,
        playable=bool(record.playable),
        notified_at=record.notified_at,
        upload_etag=record.upload_etag,
        requeued_at=record.requeued_at,
        multipart=_to_plan(record.multipart),
    )


def encode_cursor(video_id: str) -> str:
    return base64.urlsafe_b64encode(video_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        video_id = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        video_id = ""
    if not is_video_id(video_id):
        raise InvalidRequest(
            "The cursor is not valid: pass next_cursor from a previous page.",
            [{"field": "cursor", "problem": "not a cursor this API issued"}],
        )
    return video_id


class DynamoVideoRepository:
    """VideoRepository on a pynamodb model."""

    def __init__(self, record: type[VideoRecord], usage: DynamoUsageRepository | None = None):
        self._record = record
        # Where the `usage=` of add, update and delete is counted, in the same transaction.
        self._usage = usage

    def _counted_write(self, change: UsageChange) -> CountedWrite:
        from chalicelib.adapters.usage_dynamo import CountedWrite

        if self._usage is None:
            raise RuntimeError("this video repository was built without a usage counters table")
        write = CountedWrite(self._usage.connection)
        self._usage.stage(write, change)
        return write

    def add(self, video: Video, *, usage: UsageChange | None = None) -> None:
        record = self._record(
            video.owner_id,
            video.id,
            owner_email=video.owner_email,
            title=video.title,
            status=video.status.value,
            progress=video.progress,
            error=video.error,
            created_at=video.created_at,
            updated_at=video.updated_at,
            source=_source_map(video.source),
            outputs=_outputs_map(video.outputs) if video.outputs is not None else None,
            playable=video.playable,
            notified_at=video.notified_at,
            upload_etag=video.upload_etag,
            requeued_at=video.requeued_at,
            open_status=_open_status(video.status),
            multipart=_multipart_map(video.multipart) if video.multipart is not None else None,
        )
        if usage is not None:
            self._add_counted(record, video, usage)
            return
        try:
            record.save(condition=self._record.video_id.does_not_exist())
        except PutError as exc:
            raise RuntimeError(f"could not store video {video.id}") from exc

    def _add_counted(self, record: VideoRecord, video: Video, usage: UsageChange) -> None:
        from chalicelib.adapters.usage_dynamo import Cancelled

        assert self._usage is not None
        write = self._counted_write(usage)
        write.transaction.save(record, condition=self._record.video_id.does_not_exist())
        write.stage("put", "video")
        try:
            write.commit()
        except Cancelled as cancelled:
            if "video" in cancelled.labels:
                raise RuntimeError(f"could not store video {video.id}") from cancelled
            quota = self._usage.breached(cancelled)
            if quota is None:
                raise
            raise OverQuota(quota) from cancelled

    def get(self, owner_id: str, video_id: str) -> Video | None:
        try:
            return _to_video(self._record.get(owner_id, video_id, consistent_read=True))
        except self._record.DoesNotExist:
            return None

    def list_for_owner(self, owner_id: str, limit: int, cursor: str | None) -> Page:
        start = None
        if cursor:
            start = {"owner_id": {"S": owner_id}, "video_id": {"S": decode_cursor(cursor)}}
        # One extra item tells whether there is a next page without a second
        # round trip or an empty last page.
        records = list(
            self._record.query(
                owner_id,
                scan_index_forward=False,
                limit=limit + 1,
                page_size=limit + 1,
                last_evaluated_key=start,
            )
        )
        items = [_to_video(r) for r in records[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(records) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def update(
        self,
        video: Video,
        *,
        expected: Iterable[VideoStatus] | None = None,
        unchanged_since: datetime | None = None,
        usage: UsageChange | None = None,
        **changes: Any,
    ) -> Video:
        model = self._record
        actions: list[Any] = [model.updated_at.set(utcnow())]
        if "status" in changes:
            open_status = _open_status(VideoStatus(changes["status"]))
            actions.append(
                model.open_status.remove() if open_status is None else model.open_status.set(open_status)
            )
        for name, value in changes.items():
            attribute = getattr(model, name)
            if value is None:
                actions.append(attribute.remove())
            elif name == "status":
                actions.append(attribute.set(VideoStatus(value).value))
            elif name == "source":
                actions.append(attribute.set(_source_map(value)))
            elif name == "outputs":
                actions.append(attribute.set(_outputs_map(value)))
            elif name == "multipart":
                actions.append(attribute.set(_multipart_map(value)))
            else:
                actions.append(attribute.set(value))
        condition = model.video_id.exists()
        if expected is not None:
            states = [VideoStatus(s).value for s in expected]
            if not states:
                # No state can match, and DynamoDB refuses an empty IN ().
                raise StaleUpdate(f"video {video.id} is expected in no state")
            condition &= model.status.is_in(*states)
        if unchanged_since is not None:
            condition &= model.updated_at == unchanged_since
        record = model(video.owner_id, video.id)
        if usage is not None:
            return self._update_counted(video, record, actions, condition, usage, changes)
        try:
            record.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise StaleUpdate(f"video {video.id} is gone or no longer in {expected}") from exc
            raise
        return _to_video(record)

    def list_idle(self, status: VideoStatus, updated_before: datetime) -> Iterator[Video]:
        open_status = _open_status(status)
        if open_status is None:
            raise ValueError(f"only open videos are indexed, not {status.value} ones")
        model = self._record
        for record in model.open_videos.query(
            open_status, range_key_condition=model.updated_at < updated_before
        ):
            yield _to_video(record)

    def _update_counted(
        self,
        video: Video,
        record: VideoRecord,
        actions: list[Any],
        condition: Any,
        usage: UsageChange,
        changes: dict[str, Any],
    ) -> Video:
        from chalicelib.adapters.usage_dynamo import Cancelled

        write = self._counted_write(usage)
        write.transaction.update(record, actions, condition=condition)
        write.stage("update", "video")
        try:
            write.commit()
        except Cancelled as cancelled:
            if "video" in cancelled.labels:
                raise StaleUpdate(f"video {video.id} is gone or no longer as expected") from cancelled
            raise
        # A transaction returns no item: read what is stored now (or, if the video
        # went in between, what the update made of it).
        return self.get(video.owner_id, video.id) or video.with_changes(updated_at=utcnow(), **changes)

    def claim_notification(self, video: Video) -> bool:
        model = self._record
        condition = model.video_id.exists() & model.notified_at.does_not_exist()
        try:
            model(video.owner_id, video.id).update(
                actions=[model.notified_at.set(utcnow())], condition=condition
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_notification(self, video: Video) -> None:
        model = self._record
        # Without the condition an update creates the item: a video deleted
        # while its email was failing would come back as a keys-only record.
        try:
            model(video.owner_id, video.id).update(
                actions=[model.notified_at.remove()], condition=model.video_id.exists()
            )
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise

    def delete(
        self,
        owner_id: str,
        video_id: str,
        *,
        usage: UsageChange | None = None,
        unchanged_since: datetime | None = None,
    ) -> None:
        model = self._record
        record = model(owner_id, video_id)
        condition = None
        if unchanged_since is not None:
            condition = model.updated_at == unchanged_since
        if usage is not None:
            from chalicelib.adapters.usage_dynamo import Cancelled

            write = self._counted_write(usage)
            # Counted only if the video was there: deleting twice frees its bytes once.
            exists = model.video_id.exists()
            write.transaction.delete(record, condition=exists if condition is None else exists & condition)
            write.stage("delete", "video")
            try:
                write.commit()
            except Cancelled as cancelled:
                if "video" not in cancelled.labels:
                    raise
                if condition is not None and self.get(owner_id, video_id) is not None:
                    raise StaleUpdate(f"video {video_id} changed before it could be deleted") from cancelled
            return
        try:
            record.delete(condition=condition)
        except DeleteError as exc:
            if condition is not None and exc.cause_response_code == "ConditionalCheckFailedException":
                if self.get(owner_id, video_id) is not None:
                    raise StaleUpdate(f"video {video_id} changed before it could be deleted") from exc
                return
            raise RuntimeError(f"could not delete video {video_id}") from exc

    def check(self) -> None:
        if not self._record.exists():
            raise RuntimeError(f"table {self._record.Meta.table_name} does not exist")
