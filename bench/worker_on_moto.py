"""The worker's ladder job on a moto server, for the benchmarks.

`moto_worker()` starts moto in its own process (as S3, DynamoDB and SES are
elsewhere on AWS: their work is not the worker's), creates every resource,
and yields the composition root the worker uses: `UploadProcessor` with the
real `FfmpegTranscoder`. `WorkerJob.run(clip)` creates a video, puts the clip
in the uploads bucket and times `processor.process` for it: claim, probe over
HTTP, transcode, publish the HLS while it encodes, store, READY, email.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.api.schemas import CreateVideoRequest  # noqa: E402
from chalicelib.bootstrap import Container  # noqa: E402
from chalicelib.domain import NewVideo, Principal, Video, VideoStatus  # noqa: E402
from chalicelib.processing import UploadedObject  # noqa: E402
from chalicelib.settings import Settings  # noqa: E402
from devstack.aws import LOCAL_CREDENTIALS  # noqa: E402
from devstack.client import free_port  # noqa: E402
from devstack.resources import ensure_resources  # noqa: E402

_PLAYABLE = re.compile(r"playable after ([\d.]+)s")


@dataclass
class JobRun:
    seconds: float  # processor.process, wall time
    playable_after_s: float | None  # from the publisher's start (as the worker logs it)
    ffmpeg_seconds: float | None
    ffmpeg_rss_kb: int | None  # ffmpeg's own -benchmark maxrss
    cpu_s: float  # CPU of the worker's process and its children (probe, ffmpeg)
    moto_cpu_s: float  # CPU the moto server spent meanwhile (S3's, DynamoDB's work: not the worker's on AWS)
    video: Video


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _LastEncodeLine(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " encoded: ffmpeg " in message:
            self.message = message


class WorkerJob:
    def __init__(self, container: Container, endpoint: str, moto_pid: int):
        self.container = container
        self.moto_pid = moto_pid  # not the worker's: leave it out of its memory
        self.settings = container.settings
        self.endpoint = endpoint
        self.owner = Principal(user_id=str(uuid.uuid4()), email="bench@example.com")
        self._log = _LastEncodeLine()
        logging.getLogger("chalicelib.processing").addHandler(self._log)
        logging.getLogger("chalicelib.processing").setLevel(logging.INFO)

    def moto_cpu_s(self) -> float:
        """User + system CPU seconds the moto server has used so far."""
        with open(f"/proc/{self.moto_pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self, clip: Path) -> JobRun:
        request = CreateVideoRequest.model_validate(
            {
                "title": "bench",
                "filename": clip.name,
                "content_type": "video/mp4",
                "size_bytes": clip.stat().st_size,
            },
            context={"settings": self.settings},
        )
        video, _ = self.container.video_service.create(self.owner, NewVideo(**request.model_dump()))
        s3 = self.container._s3  # the benchmark stands where S3 would
        s3.upload_file(
            str(clip), self.settings.uploads_bucket, video.upload_key, ExtraArgs={"ContentType": "video/mp4"}
        )
        stored = self.container.uploads.head(video.upload_key)
        assert stored is not None
        uploaded = UploadedObject(bucket=self.settings.uploads_bucket, key=video.upload_key, etag=stored.etag)
        moto_cpu, cpu = self.moto_cpu_s(), cpu_seconds()
        started = time.perf_counter()
        outcome = self.container.processor.process(uploaded, final_attempt=False)
        seconds = time.perf_counter() - started
        moto_cpu, cpu = self.moto_cpu_s() - moto_cpu, cpu_seconds() - cpu
        done = self.container.videos.get(video.owner_id, video.id)
        assert outcome == "ready" and done is not None and done.status is VideoStatus.READY, (outcome, done)
        playable = _PLAYABLE.search(self._log.message)
        ffmpeg = re.search(r"ffmpeg ([\d.]+)s", self._log.message)
        rss = re.search(r"maxrss (\d+) KiB", self._log.message)
        return JobRun(
            seconds=seconds,
            playable_after_s=float(playable[1]) if playable else None,
            ffmpeg_seconds=float(ffmpeg[1]) if ffmpeg else None,
            ffmpeg_rss_kb=int(rss[1]) if rss else None,
            cpu_s=cpu,
            moto_cpu_s=moto_cpu,
            video=done,
        )


@contextlib.contextmanager
def moto_process() -> Iterator[tuple[str, int]]:
    """A moto server in another process, so its CPU is its own: (endpoint, pid)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield endpoint, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a busy moto can outlast SIGTERM: leave nothing behind
            server.kill()
            server.wait()


@contextlib.contextmanager
def moto_worker(work_dir: Path) -> Iterator[WorkerJob]:
    """The worker's composition root on a moto server in another process."""
    saved = dict(os.environ)
    with moto_process() as (endpoint, pid):
        try:
            os.environ.update(
                {
                    **LOCAL_CREDENTIALS,
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1",
                    "VIDLINE_STAGE": "bench",
                    "VIDLINE_AUTH_MODE": "app",
                    "VIDLINE_APP_URL": "http://127.0.0.1:8080",
                    "VIDLINE_WORK_DIR": str(work_dir),
                    "VIDLINE_MAIL_SENDER": "Vidline <no-reply@vidline.test>",
                }
            )
            os.environ.update(ensure_resources(Settings(), endpoint))
            yield WorkerJob(Container(Settings()), endpoint, pid)
        finally:
            os.environ.clear()
            os.environ.update(saved)
