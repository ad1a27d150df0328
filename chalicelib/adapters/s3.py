"""Buckets of objects on S3."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain import UploadedPart, UploadTicket, utcnow
from chalicelib.ports import IMMUTABLE, MediaSource, NoSuchUpload, PartsRefused, StoredObject

# Larger files go through upload_file, which sends them in parts.
_SINGLE_PUT_MAX_BYTES = 8 * 1024 * 1024


class S3BlobStore:
    """BlobStore on one S3 bucket. `client` must sign with SigV4.

    `presigner`, another S3 client (SigV4 too), signs the URLs and POSTs handed
    to others (browsers, ffmpeg) when they must reach S3 at another address than
    this process does: locally, the enforcing S3 front. Default: `client`.
    """

    def __init__(self, client: Any, bucket: str, *, presigner: Any = None):
        self._s3 = client
        self._presigner = client if presigner is None else presigner
        self.bucket = bucket

    def presign_upload(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> UploadTicket:
        """A POST policy that binds the key, the content type and a size range."""
        expires_at = utcnow() + timedelta(seconds=expires_s)
        post = self._presigner.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_s,
        )
        return UploadTicket(
            url=post["url"], fields=dict(post["fields"]), expires_at=expires_at, max_bytes=max_bytes
        )

    def head(self, key: str) -> StoredObject | None:
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return StoredObject(
            key=key,
            size_bytes=int(response["ContentLength"]),
            content_type=response.get("ContentType"),
            etag=str(response.get("ETag", "")).strip('"'),
        )

    def presign_download(self, key: str, *, if_match: str | None, expires_s: int) -> MediaSource:
        """A presigned GET. With `if_match` the If-Match header is signed, so the
        URL serves only that version of the object (S3 answers 412 otherwise) and
        the reader must send the header, which the source carries."""
        params = {"Bucket": self.bucket, "Key": key}
        headers: tuple[tuple[str, str], ...] = ()
        if if_match is not None:
            params["IfMatch"] = f'"{if_match}"'
            headers = (("If-Match", params["IfMatch"]),)
        url = self._presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        return MediaSource(location=url, headers=headers)

    def upload(self, path: str, key: str, content_type: str, *, cache_control: str = IMMUTABLE) -> None:
        """Store the file at `path`; `cache_control` as ports.IMMUTABLE says, unless
        the object will be replaced (ports.NO_CACHE)."""
        if os.path.getsize(path) <= _SINGLE_PUT_MAX_BYTES:
            # HLS segments and playlists: one PUT each. upload_file's transfer
            # manager (threads, multipart checks) costs more CPU than the upload,
            # and a job stores hundreds of them while ffmpeg wants every core.
            with open(path, "rb") as body:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    CacheControl=cache_control,
                )
            return
        self._s3.upload_file(
            path,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type, "CacheControl": cache_control},
        )

    def delete_prefix(self, prefix: str) -> None:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def abort_multipart_uploads(self, prefix: str) -> int:
        aborted = 0
        paginator = self._s3.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                self._s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
        return aborted

    def start_multipart_upload(self, key: str, content_type: str) -> str:
        """CreateMultipartUpload; the object gets `content_type` when completed."""
        response = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        return str(response["UploadId"])

    def presign_part_upload(
        self, key: str, upload_id: str, part_number: int, size_bytes: int, expires_s: int
    ) -> str:
        """A presigned UploadPart (PUT), signed like the POSTs for where clients reach S3.
        Its Content-Length is signed, so S3 takes no part bigger (or smaller) than
        planned: a declared size cannot hide gigabytes of parts."""
        url: str = self._presigner.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
                "ContentLength": size_bytes,
            },
            ExpiresIn=expires_s,
        )
        return url

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """ListParts, every page of it (S3 gives at most 1,000 parts a page)."""
        parts: list[UploadedPart] = []
        marker = 0
        while True:
            try:
                page = self._s3.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "NoSuchUpload":
                    raise NoSuchUpload(upload_id) from exc
                raise
            parts += [
                UploadedPart(
                    part_number=int(part["PartNumber"]),
                    etag=str(part["ETag"]).strip('"'),
                    size_bytes=int(part["Size"]),
                )
                for part in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> str:
        """CompleteMultipartUpload; S3's refusals become NoSuchUpload or PartsRefused."""
        try:
            response = self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in parts]},
            )
        except ClientError as exc:
            error = exc.response["Error"]
            if error["Code"] == "NoSuchUpload":
                raise NoSuchUpload(upload_id) from exc
            if error["Code"] in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}:
                raise PartsRefused(str(error.get("Message") or error["Code"])) from exc
            raise
        return str(response.get("ETag", "")).strip('"')

    def check(self) -> None:
        self._s3.head_bucket(Bucket=self.bucket)
