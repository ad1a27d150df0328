"""Uploading a big file to the local stack three ways, against boto3's own.

    python bench/upload.py [--size-mib 1024] [--runs 3] [--parallel 4]

A server process runs moto and the enforcing S3 front together, as the local
stack does (bench/s3_front.py's `servers`). This process is the client, and
uploads one file of random bytes:

- **post**: one presigned POST (`S3BlobStore.presign_upload`'s form) through
  the front, the file streamed from disk, as a browser sends a small file;
- **multipart**: the API's multipart path: `start_multipart_upload`, part
  URLs presigned for the front (`presign_part_upload`), `--parallel` parts
  PUT at a time, then `complete_multipart_upload`; the parts are the size the
  API plans for the file (`chalicelib.uploads.part_size_for`, 8 MiB for 1 GiB),
  as the web app uploads a big file;
- **upload_file**: boto3's `upload_file` straight to moto with its default
  transfer settings (8 MiB parts, 10 threads): the anchor.

Each way runs `--runs` times, the three alternating so that the machine's
drift hits each alike, and every stored object is checked for size and then
deleted (moto keeps objects in memory). It prints each median throughput, the
CPU seconds per GiB the server process (moto, and the front) spent on it
(steadier than throughput on a busy machine), and the ratio
multipart ÷ upload_file (the target is at least 0.9). `--multipart-direct`
adds multipart with URLs signed for moto itself, to tell the front's share
from the protocol's; `--part-mib` changes the preferred part size.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import s3_front  # noqa: E402  (its server process, client and POST)

from chalicelib.adapters.s3 import S3BlobStore  # noqa: E402
from chalicelib.settings import GIB, MIB, Settings  # noqa: E402
from chalicelib.uploads import MAX_PART_URLS_PER_REQUEST, part_size_for  # noqa: E402

BUCKET = s3_front.BUCKET


def put_part(url: str, path: Path, offset: int, length: int) -> str:
    """PUT `length` bytes of the file from `offset`, as a browser PUTs a slice; the part's ETag."""
    with path.open("rb") as file:
        data = os.pread(file.fileno(), length, offset)
    target = urlsplit(url)
    assert target.hostname is not None
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=600, blocksize=MIB)
    connection.request("PUT", f"{target.path}?{target.query}", body=data)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"PUT part: {response.status} {answer[:300]!r}")
    return str(response.headers["ETag"]).strip('"')


def multipart(store: S3BlobStore, path: Path, key: str, parallel: int, preferred_part: int) -> None:
    """What a client of the multipart API does, with the store's own calls for the API's."""
    size = path.stat().st_size
    part_size = part_size_for(size, preferred_part)
    count = -(-size // part_size)
    upload_id = store.start_multipart_upload(key, "video/mp4")
    # URLs in batches, as the API hands them out.
    urls = {
        number: store.presign_part_upload(
            key, upload_id, number, min(part_size, size - (number - 1) * part_size), 3600
        )
        for first in range(1, count + 1, MAX_PART_URLS_PER_REQUEST)
        for number in range(first, min(first + MAX_PART_URLS_PER_REQUEST, count + 1))
    }

    def send(number: int) -> tuple[int, str]:
        offset = (number - 1) * part_size
        return number, put_part(urls[number], path, offset, min(part_size, size - offset))

    with ThreadPoolExecutor(parallel) as pool:
        etags = dict(pool.map(send, range(1, count + 1)))
    store.complete_multipart_upload(key, upload_id, sorted(etags.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--part-mib", type=int, default=0, help="the preferred part size (default: the API's, 8 MiB)"
    )
    parser.add_argument(
        "--multipart-direct",
        action="store_true",
        help="also run multipart with its part URLs signed for moto, skipping the front",
    )
    args = parser.parse_args()
    size = args.size_mib * MIB
    preferred_part = args.part_mib * MIB or Settings.model_construct().multipart_part_bytes
    with tempfile.TemporaryDirectory() as folder, s3_front.servers() as (moto, front, server_pid):
        direct = s3_front.s3_client(moto)
        direct.create_bucket(Bucket=BUCKET)
        store = S3BlobStore(direct, BUCKET, presigner=s3_front.s3_client(front))
        straight = S3BlobStore(direct, BUCKET)
        path = s3_front.random_file(Path(folder), size)
        ways: dict[str, Callable[[str], object]] = {
            "post": lambda key: s3_front.post(front, path, key),
            "multipart": lambda key: multipart(store, path, key, args.parallel, preferred_part),
            "upload_file": lambda key: direct.upload_file(str(path), BUCKET, key),
        }
        if args.multipart_direct:
            ways["multipart_moto"] = lambda key: multipart(straight, path, key, args.parallel, preferred_part)
        times: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(args.runs):
            for name, upload in ways.items():
                key = f"bench/{uuid.uuid4().hex}"
                cpu_before = s3_front.cpu_seconds(server_pid)
                started = time.perf_counter()
                upload(key)
                times[name].append(time.perf_counter() - started)
                cpu[name].append((s3_front.cpu_seconds(server_pid) - cpu_before) * GIB / size)
                assert direct.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
                direct.delete_object(Bucket=BUCKET, Key=key)
                print(f"run {run + 1} {name}: {size / 1e6 / times[name][-1]:.0f} MB/s", flush=True)
        rates = {name: size / 1e6 / statistics.median(runs) for name, runs in times.items()}
        part_mib = part_size_for(size, preferred_part) // MIB
        print(
            f"\n{args.size_mib} MiB, median of {args.runs}, "
            f"{args.parallel} parts of {part_mib} MiB in parallel:"
        )
        for name, rate in rates.items():
            print(f"  {name:<15}{rate:>6.0f} MB/s   server CPU {statistics.median(cpu[name]):.1f} s/GiB")
        print(f"  multipart / upload_file = {rates['multipart'] / rates['upload_file']:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
