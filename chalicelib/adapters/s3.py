"""Buckets of objects on S3."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain import UploadTicket, utcnow
from chalicelib.ports import ObjectChanged, StoredObject

IMMUTABLE = "max-age=31536000, immutable"
_CHUNK_BYTES = 8 * 1024 * 1024


class S3BlobStore:
    """BlobStore on one S3 bucket. `client` must sign with SigV4."""

    def __init__(self, client: Any, bucket: str):
        self._s3 = client
        self.bucket = bucket

    def presign_upload(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> UploadTicket:
        """A POST policy that binds the key, the content type and a size range."""
        expires_at = utcnow() + timedelta(seconds=expires_s)
        post = self._s3.generate_presigned_post(
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

    def download(self, key: str, path: str, *, if_match: str | None = None) -> None:
        if if_match is None:
            self._s3.download_file(self.bucket, key, path)
            return
        # One conditional GET: S3 answers 412 if the key now holds another
        # object, so the bytes written are exactly that version's.
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key, IfMatch=f'"{if_match}"')
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
                raise ObjectChanged(f"{key} is no longer the object with ETag {if_match}") from exc
            raise
        with open(path, "wb") as file:
            for chunk in response["Body"].iter_chunks(_CHUNK_BYTES):
                file.write(chunk)

    def upload(self, path: str, key: str, content_type: str) -> None:
        # Stored objects never change under their key, and only signed URLs
        # reach them (the CDN checks those before its cache), so browsers and
        # CDN edges may keep them for good.
        self._s3.upload_file(
            path,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type, "CacheControl": IMMUTABLE},
        )

    def delete_prefix(self, prefix: str) -> None:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def check(self) -> None:
        self._s3.head_bucket(Bucket=self.bucket)
