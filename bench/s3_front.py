"""The enforcing S3 front's overhead: uploads through it against straight to moto.

    python bench/s3_front.py [--sizes-mib 256,1024] [--runs 3]

A server process runs moto and the front together, as the local stack does
(`devstack.stack`: moto in-process, the front on a thread beside it). This
process is the client: for each size it uploads a file of random bytes with
a presigned PUT and with a presigned POST (the form `presign_upload` makes),
once signed for moto and once signed for the front, alternating so that the
machine's drift hits both alike. It streams the file from disk in 1 MiB
blocks, as a browser would, and prints each median of `--runs` and the ratio
front ÷ moto (1.0: no overhead; 0.9: the front costs 10 % of the throughput),
and the CPU seconds the server process (moto, plus the front when used)
spent per GiB uploaded, which a busy machine disturbs less than throughput.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from chalicelib.adapters.s3 import S3BlobStore  # noqa: E402
from devstack.aws import LOCAL_CREDENTIALS  # noqa: E402
from devstack.client import free_port  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
BLOCK = MIB
REGION = "us-east-1"
BUCKET = "bench-uploads"
BOUNDARY = "bench-boundary-7f3a"


def serve(moto_port: int, front_port: int) -> None:
    """moto and the front in this process, as the local stack runs them."""
    import logging
    import signal
    import threading

    from moto.server import ThreadedMotoServer

    from devstack import moto_s3
    from devstack.s3front import S3Front

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_s3.install()  # as devstack.stack does
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    front = S3Front(
        "127.0.0.1",
        front_port,
        upstream_url=f"http://127.0.0.1:{moto_port}",
        region=REGION,
        credentials=LOCAL_CREDENTIALS,
    )
    front.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Stop with the client too: its end of our stdin closes when it dies.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    stop.wait()
    front.stop()
    moto.stop()


@contextmanager
def servers() -> Iterator[tuple[str, str, int]]:
    """Start the server process; the moto and the front endpoints, and its pid."""
    moto_port, front_port = free_port(), free_port()
    command = [sys.executable, __file__, "--serve", str(moto_port), str(front_port)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{front_port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


class Chained(io.RawIOBase):
    """Several byte strings and a file read as one stream, never all in memory."""

    def __init__(self, head: bytes, file: IO[bytes], tail: bytes) -> None:
        self._parts: list[IO[bytes]] = [io.BytesIO(head), file, io.BytesIO(tail)]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            data = self._parts[0].read(size)
            if data:
                return data
            self._parts.pop(0)
        return b""


def send(method: str, url: str, body: IO[bytes], length: int, content_type: str) -> float:
    """Stream `body` to `url`; the seconds until the answer. Fails unless it is 2xx."""
    target = urlsplit(url)
    assert target.hostname is not None
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=600, blocksize=BLOCK)
    path = target.path + (f"?{target.query}" if target.query else "")
    started = time.perf_counter()
    connection.request(
        method, path, body=body, headers={"Content-Length": str(length), "Content-Type": content_type}
    )
    response = connection.getresponse()
    answer = response.read()
    seconds = time.perf_counter() - started
    connection.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {url[:80]}: {response.status} {answer[:300]!r}")
    return seconds


def put(endpoint: str, path: Path, key: str) -> float:
    url = s3_client(endpoint).generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=900
    )
    with path.open("rb") as file:
        return send("PUT", url, file, path.stat().st_size, "application/octet-stream")


def post(endpoint: str, path: Path, key: str) -> float:
    size = path.stat().st_size
    ticket = S3BlobStore(s3_client(endpoint), BUCKET).presign_upload(key, "video/mp4", size, 900)
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in ticket.fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    with path.open("rb") as file:
        return send(
            "POST",
            ticket.url,
            Chained(head, file, tail),
            len(head) + size + len(tail),
            f"multipart/form-data; boundary={BOUNDARY}",
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def random_file(folder: Path, size: int) -> Path:
    path = folder / f"{size // MIB}MiB.bin"
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(MIB))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mib", default="256,1024")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    sizes = [int(part) * MIB for part in args.sizes_mib.split(",")]
    with tempfile.TemporaryDirectory() as folder, servers() as (moto, front, server_pid):
        direct = s3_client(moto)
        direct.create_bucket(Bucket=BUCKET)
        print(
            f"{'upload':<14}{'moto MB/s':>12}{'front MB/s':>12}{'front/moto':>12}"
            f"{'CPU s/GiB moto':>16}{'with front':>12}   (medians of {args.runs})"
        )
        for size in sizes:
            path = random_file(Path(folder), size)
            for name, upload in (("PUT", put), ("POST", post)):
                times: dict[str, list[float]] = {"moto": [], "front": []}
                # The server's CPU per GiB: unlike throughput, barely moved
                # by whatever else the machine runs meanwhile.
                cpu: dict[str, list[float]] = {"moto": [], "front": []}
                for _ in range(args.runs):
                    for label, endpoint in (("moto", moto), ("front", front)):
                        key = f"bench/{uuid.uuid4().hex}"
                        cpu_before = cpu_seconds(server_pid)
                        times[label].append(upload(endpoint, path, key))
                        cpu[label].append((cpu_seconds(server_pid) - cpu_before) * GIB / size)
                        assert direct.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
                        direct.delete_object(Bucket=BUCKET, Key=key)  # moto keeps objects in memory
                rates = {label: size / 1e6 / statistics.median(runs) for label, runs in times.items()}
                row = f"{name} {size // MIB} MiB"
                ratio = rates["front"] / rates["moto"]
                cpu_moto, cpu_front = (statistics.median(cpu[label]) for label in ("moto", "front"))
                print(
                    f"{row:<14}{rates['moto']:>12.0f}{rates['front']:>12.0f}{ratio:>12.2f}"
                    f"{cpu_moto:>16.2f}{cpu_front:>12.2f}",
                    flush=True,
                )
            path.unlink()


if __name__ == "__main__":
    main()
