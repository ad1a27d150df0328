"""Shaping domain objects into the API's response schemas."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.api import schemas
from chalicelib.domain import MultipartPlan, Outputs, UploadedPart, UploadTicket, Video, VideoStatus
from chalicelib.ports import MediaUrls
from chalicelib.settings import Settings
from chalicelib.uploads import PartUrl
from chalicelib.usage import UsageReport


@dataclass
class Presenter:
    """The public views of domain objects, with signed URLs to stored media."""

    media_urls: MediaUrls
    settings: Settings

    def video(self, video: Video) -> schemas.VideoOut:
        """The public view of a video, with URLs to its outputs."""
        outputs = None
        if video.outputs is not None and (video.status is VideoStatus.READY or video.playable):
            outputs = self._outputs(video.outputs)
        source = video.source
        # A video whose upload can no longer arrive is failed for real by the
        # abandoned-uploads job (chalicelib/housekeeping.py): shown as stored.
        return schemas.VideoOut(
            id=video.id,
            title=video.title,
            status=video.status.value,
            progress=video.progress,
            error=video.error,
            created_at=video.created_at,
            updated_at=video.updated_at,
            source=schemas.SourceOut(
                filename=source.filename,
                size_bytes=source.size_bytes,
                duration_s=source.duration_s,
                width=source.width,
                height=source.height,
            ),
            playable=video.playable,
            outputs=outputs,
        )

    def stats(self, report: UsageReport) -> schemas.StatsOut:
        """Daily usage (minutes, not seconds) and each quota by name."""
        return schemas.StatsOut(
            days=[
                schemas.DayOut(
                    date=d.day,
                    videos_created=d.videos_created,
                    videos_ready=d.videos_ready,
                    videos_failed=d.videos_failed,
                    minutes_processed=round(d.seconds_processed / 60, 2),
                    bytes_stored=d.bytes_stored,
                )
                for d in report.days
            ],
            quotas={
                q.quota.value: schemas.QuotaOut(limit=q.limit, used=q.used, resets_at=q.resets_at)
                for q in report.quotas
            },
        )

    def upload(self, ticket: UploadTicket | MultipartPlan) -> schemas.UploadOut | schemas.MultipartUploadOut:
        """How a client sends the file: the presigned POST, or the multipart upload's plan."""
        if isinstance(ticket, MultipartPlan):
            return self.multipart_plan(ticket)
        return schemas.UploadOut(
            url=ticket.url, fields=ticket.fields, expires_at=ticket.expires_at, max_bytes=ticket.max_bytes
        )

    def multipart_plan(self, plan: MultipartPlan) -> schemas.MultipartUploadOut:
        """A multipart upload's plan."""
        return schemas.MultipartUploadOut(
            upload_id=plan.upload_id,
            part_size=plan.part_size,
            part_count=plan.part_count,
            expires_at=plan.expires_at,
        )

    def multipart_status(self, plan: MultipartPlan, parts: list[UploadedPart]) -> schemas.MultipartStatusOut:
        """A multipart upload's plan and the parts S3 holds."""
        return schemas.MultipartStatusOut(
            upload_id=plan.upload_id,
            part_size=plan.part_size,
            part_count=plan.part_count,
            expires_at=plan.expires_at,
            parts=[
                schemas.StoredPartOut(part_number=p.part_number, etag=p.etag, size=p.size_bytes)
                for p in parts
            ],
        )

    def part_urls(self, urls: list[PartUrl]) -> schemas.PartUrlsOut:
        """Presigned part PUTs."""
        return schemas.PartUrlsOut(
            parts=[
                schemas.PartUrlOut(part_number=u.part_number, url=u.url, expires_at=u.expires_at)
                for u in urls
            ]
        )

    def _outputs(self, outputs: Outputs) -> schemas.OutputsOut:
        """Signed URLs for what a run stored: the MP4 and thumbnail one by one, the
        HLS stream with one signature for every object under its prefix."""
        urls = self.media_urls
        hls_url = None
        if outputs.hls_master_key is not None and outputs.hls_prefix is not None:
            hls_url = urls.stream_url_for(outputs.hls_master_key, outputs.hls_prefix)
        return schemas.OutputsOut(
            renditions=[
                schemas.RenditionOut(name=r.name, width=r.width, height=r.height, url=urls.url_for(r.key))
                for r in outputs.renditions
            ],
            hls_url=hls_url,
            rungs=[
                schemas.RungOut(name=r.name, width=r.width, height=r.height, bandwidth=r.bandwidth)
                for r in outputs.rungs
            ],
            thumbnail_url=urls.url_for(outputs.thumbnail_key) if outputs.thumbnail_key else None,
        )
