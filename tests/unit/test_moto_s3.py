"""The local stack's CompleteMultipartUpload (devstack.moto_s3) answers as moto's own does."""

from __future__ import annotations

import base64
import binascii
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3 import utils as s3_utils
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
from moto.s3.models import FakeMultipart
from moto.s3.utils import CaseInsensitiveDict

from devstack import moto_s3

MIB = 1024 * 1024
# Two whole parts of S3's smallest size and a short last one.
PART_SIZES = (5 * MIB, 5 * MIB, 123_457)


def upload(metadata: dict[str, str], sizes: tuple[int, ...] = PART_SIZES) -> tuple[FakeMultipart, list[str]]:
    """A multipart upload with parts of random bytes; it and the parts' ETags."""
    multipart = FakeMultipart("big.mp4", CaseInsensitiveDict(metadata), "123456789012", "us-east-1")
    etags = [multipart.set_part(n, os.urandom(size)).etag for n, size in enumerate(sizes, start=1)]
    return multipart, etags


def both(multipart: FakeMultipart, parts: list[tuple[int, str]]) -> tuple[Any, Any]:
    """What moto's complete and ours make of the same parts."""
    return moto_s3.MOTO_COMPLETE(multipart, iter(parts)), moto_s3.complete(multipart, iter(parts))


@pytest.mark.parametrize(
    "metadata",
    [
        {},  # S3's default: a whole-object CRC64NVME
        {"x-amz-checksum-algorithm": "CRC64NVME"},
        {"x-amz-checksum-algorithm": "CRC32"},  # composite: what boto3's upload_file asks for
        {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"},
        {"x-amz-checksum-algorithm": "SHA256"},  # composite: a checksum of each part's
        {"x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-type": "FULL_OBJECT"},  # left to moto
        {"x-amz-checksum-algorithm": "CRC32C", "x-amz-checksum-type": "FULL_OBJECT"},  # the same
    ],
)
def test_the_object_etag_and_checksum_are_motos(metadata: dict[str, str]) -> None:
    multipart, etags = upload(metadata)
    parts = list(enumerate(etags, start=1))

    theirs, ours = both(multipart, parts)

    assert ours == theirs
    body, etag, checksum = ours
    assert len(body) == sum(PART_SIZES) and etag.endswith("-3")
    assert checksum is not None


def test_a_part_may_be_left_out_as_in_moto() -> None:
    multipart, etags = upload({})
    theirs, ours = both(multipart, [(1, etags[0]), (3, etags[2])])
    assert ours == theirs


@pytest.mark.parametrize(
    ("sizes", "parts", "error"),
    [
        (PART_SIZES, [(1, '"0123"')], InvalidPart),  # a wrong ETag
        (PART_SIZES, [(9, '"0123"')], InvalidPart),  # a part never uploaded
        ((MIB, MIB), [(1, None), (2, None)], EntityTooSmall),  # a part before the last under 5 MiB
        (PART_SIZES, [], MalformedXML),  # no part at all
    ],
)
def test_mistakes_raise_motos_errors(
    sizes: tuple[int, ...], parts: list[tuple[int, str | None]], error: type[Exception]
) -> None:
    multipart, etags = upload({}, sizes)
    named = [(n, etag if etag is not None else etags[n - 1]) for n, etag in parts]
    with pytest.raises(error):
        moto_s3.MOTO_COMPLETE(multipart, iter(named))
    with pytest.raises(error):
        moto_s3.complete(multipart, iter(named))


@pytest.fixture
def installed() -> Iterator[None]:
    moto_s3.install()
    yield
    FakeMultipart.complete = moto_s3.MOTO_COMPLETE  # type: ignore[method-assign]


@mock_aws
def test_installed_it_completes_uploads_through_the_s3_api(installed: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    started = s3.create_multipart_upload(Bucket="uploads", Key="big.mp4")
    chunks = [os.urandom(size) for size in PART_SIZES]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket="uploads", Key="big.mp4", UploadId=started["UploadId"], PartNumber=n, Body=chunk
            )["ETag"],
        }
        for n, chunk in enumerate(chunks, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket="uploads", Key="big.mp4", UploadId=started["UploadId"], MultipartUpload={"Parts": parts}
    )

    assert FakeMultipart.complete is moto_s3.complete
    assert s3.get_object(Bucket="uploads", Key="big.mp4")["Body"].read() == b"".join(chunks)


@pytest.mark.parametrize("metadata", [{}, {"x-amz-checksum-algorithm": "CRC32"}])
def test_the_usual_uploads_never_reach_motos_copying_code(
    metadata: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def copying(multipart: FakeMultipart, parts: Iterator[tuple[int, str]]) -> Any:
        raise AssertionError("moto's complete was used")

    monkeypatch.setattr(moto_s3, "MOTO_COMPLETE", copying)
    multipart, etags = upload(metadata)
    body, _, _ = moto_s3.complete(multipart, iter(enumerate(etags, start=1)))
    assert len(body) == sum(PART_SIZES)


def test_with_awscrt_the_whole_object_crc64nvme_is_motos(monkeypatch: pytest.MonkeyPatch) -> None:
    """With awscrt installed, moto takes a true CRC64NVME (8 bytes); ours chains
    it part by part. A stand-in for awscrt's checksums does the same here."""
    # A 64-bit CRC that chains: crc32 in both halves (binascii.crc32 keeps the
    # low 32 bits of `previous`, which are the last CRC32).
    checksums = types.ModuleType("awscrt.checksums")
    checksums.crc64nvme = lambda data, previous=0: binascii.crc32(data, previous) * 0x1_0000_0001  # type: ignore[attr-defined]
    awscrt = types.ModuleType("awscrt")
    awscrt.checksums = checksums  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "awscrt", awscrt)
    monkeypatch.setitem(sys.modules, "awscrt.checksums", checksums)
    monkeypatch.setattr(moto_s3, "HAS_CRT", True)
    monkeypatch.setattr(s3_utils, "HAS_CRT", True)
    multipart, etags = upload({})

    theirs, ours = both(multipart, list(enumerate(etags, start=1)))

    assert ours == theirs
    assert len(base64.b64decode(ours[2][1])) == 8
