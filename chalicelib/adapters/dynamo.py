"""Videos in DynamoDB through pynamodb.

Keys: hash `owner_id`, range `video_id`. Video ids sort by creation time, so
"one user's videos, newest first" is a single Query in descending order,
and a page's cursor is the last video id it returned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.models import Model

from chalicelib.domain import (
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
    # Only on videos that upload in parts (issue 11).
    multipart = MultipartMap(null=True)


def bind_video_record(settings: Settings) -> type[VideoRecord]:
    """A VideoRecord subclass bound to the configured table and endpoint."""
    meta = type(
        "Meta",
        (),
        {
            "table_name": settings.videos_table,
            "region": settings.region,
            "host": settings.aws_endpoint_url,
            "billing_mode": "PAY_PER_REQUEST",
        },
    )
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

    def __init__(self, record: type[VideoRecord]):
        self._record = record

    def add(self, video: Video) -> None:
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
            multipart=_multipart_map(video.multipart) if video.multipart is not None else None,
        )
        try:
            record.save(condition=self._record.video_id.does_not_exist())
        except PutError as exc:
            raise RuntimeError(f"could not store video {video.id}") from exc

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
        **changes: Any,
    ) -> Video:
        model = self._record
        actions: list[Any] = [model.updated_at.set(utcnow())]
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
        record = model(video.owner_id, video.id)
        try:
            record.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise StaleUpdate(f"video {video.id} is gone or no longer in {expected}") from exc
            raise
        return _to_video(record)

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

    def delete(self, owner_id: str, video_id: str) -> None:
        try:
            self._record(owner_id, video_id).delete()
        except DeleteError as exc:
            raise RuntimeError(f"could not delete video {video_id}") from exc

    def check(self) -> None:
        if not self._record.exists():
            raise RuntimeError(f"table {self._record.Meta.table_name} does not exist")
