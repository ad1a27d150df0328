"""moto's CompleteMultipartUpload without its needless copies of the object.

moto 5's `FakeMultipart.complete` joins the parts into a bytearray, copies it
into `bytes`, and, for the whole-object checksum S3 gives an upload created
without one (CRC64NVME, FULL_OBJECT), joins every part a second time into
another bytearray, copied again before the checksum is taken. For a 1 GiB
upload that is four 1 GiB buffers in the one moto process of the local
stack; completing it cost more than receiving all its parts. `install()`
puts in a `complete` that joins the parts once (its peak is about twice the
object, against four times) and takes whole-object CRCs as the parts go by.
Its answers are moto's own: the same bytes, ETag and checksum, and the same
errors (`tests/unit/test_moto_s3.py` compares them). Whole-object checksums
it cannot take as it goes (SHA, CRC32C) stay with moto's code.

The local stack installs it before it starts moto (`devstack.stack`), and so
do the benchmarks that run moto as the stack does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any

from moto.core.compat import HAS_CRT
from moto.s3 import models
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
from moto.s3.models import FakeMultipart, MultipartChecksumBuilder
from moto.utilities.utils import md5_hash

Checksum = tuple[str, str, int]  # type, value, parts
Complete = Callable[[FakeMultipart, Iterator[tuple[int, str]]], tuple[bytes, str, Checksum | None]]

# moto's own, kept on the class too, so that importing this module again
# after install() cannot take ours for it.
MOTO_COMPLETE: Complete = getattr(FakeMultipart, "_moto_complete", FakeMultipart.complete)


def _running_crc(algorithm: str) -> tuple[Callable[[bytes, int], int], int] | None:
    """A CRC taken part by part as moto's `compute_checksum` takes it whole:
    (update, digest size in bytes), or None when it cannot be."""
    if algorithm == "CRC64NVME":
        if HAS_CRT:
            from awscrt import checksums

            return checksums.crc64nvme, 8
        return binascii.crc32, 4  # moto's own fallback without awscrt
    if algorithm == "CRC32":
        return binascii.crc32, 4
    return None


def complete(self: FakeMultipart, body: Iterator[tuple[int, str]]) -> tuple[bytes, str, Checksum | None]:
    """`FakeMultipart.complete`, with one copy of the object."""
    builder = MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    composite = builder.checksum_type == "COMPOSITE"
    running = None if composite else _running_crc(builder.checksum_algorithm)
    if not composite and running is None:
        return MOTO_COMPLETE(self, body)

    values: list[bytes] = []
    md5s = bytearray()
    crc = 0
    last: Any = None
    for number, etag in body:
        part = self.parts.get(number)
        part_etag = None
        if part is not None:
            part_etag = part.etag.replace('"', "")
            etag = etag.replace('"', "")
        if part is None or part_etag != etag:
            raise InvalidPart()
        # Read when used, as moto's module global (which tests may patch).
        if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:  # type: ignore[attr-defined]
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part_etag))
        value = part.value
        values.append(value)
        if running is None:
            builder.addPart(value)  # composite: a checksum of each part, not the part
        else:
            crc = running[0](value, crc)
        last = part
    if not values:
        raise MalformedXML

    full_etag = md5_hash()
    full_etag.update(bytes(md5s))
    if running is None:
        checksum = builder.build()
    else:
        digest = base64.b64encode(crc.to_bytes(running[1], "big")).decode()
        checksum = (builder.checksum_type, digest, 1)
    return b"".join(values), f"{full_etag.hexdigest()}-{len(values)}", checksum


def install() -> None:
    """Use `complete` for every multipart upload moto completes in this process."""
    FakeMultipart._moto_complete = MOTO_COMPLETE  # type: ignore[attr-defined]
    FakeMultipart.complete = complete  # type: ignore[method-assign]
