"""Health: can the API reach everything it depends on?

`GET /health` runs every check at once, each in its own thread, and waits at
most `timeout_s` for all of them: a dependency that hangs is reported as
failing when the time is up instead of holding the answer (a load balancer or
monitor gives up on a slow health check, and a hung check would tie up the
API's threads). The ports it checks are built for health checks by the
composition root, with small connect/read timeouts and no retries, so a
thread left behind by a hung dependency ends soon after.

A non-empty dead-letter queue is reported (`dead_letters`, and a warning),
but does not make the API unhealthy: the API can still take uploads and
serve videos, and taking it out of service would not empty the queue. The
dead-letter depth has its own CloudWatch alarm (infra/stack.yaml) that pages
someone instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field

from chalicelib.ports import BlobStore, Cache, Identity, JobQueue, Mailer, MediaUrls, VideoRepository

logger = logging.getLogger(__name__)

OK = "ok"
FAILING = "failing"


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one round of checks."""

    # Check name -> "ok" or "failing".
    checks: dict[str, str]
    # Messages waiting in the dead-letter queue; None if it could not be read.
    dead_letters: int | None
    # Things someone should look at that do not make the API unhealthy.
    warnings: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        """The names of the failing checks, in check order."""
        return [name for name, value in self.checks.items() if value != OK]

    @property
    def healthy(self) -> bool:
        return not self.failing


@dataclass
class HealthService:
    """Checks every dependency the API needs, in parallel, within `timeout_s`."""

    videos: VideoRepository
    uploads: BlobStore
    media: BlobStore
    jobs: JobQueue
    cache: Cache
    identity: Identity
    mailer: Mailer
    media_urls: MediaUrls
    timeout_s: float = 2.0
    # A report is reused this long, and callers meanwhile wait for the run under way.
    reuse_s: float = 0.0
    _last: tuple[float, HealthReport] | None = field(default=None, init=False, repr=False)
    _running: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def run(self) -> HealthReport:
        """Every check's outcome, at most `reuse_s` old: one run at a time, so a
        flood of calls costs the dependencies one run per `reuse_s`."""
        with self._running:
            if self._last is not None and time.monotonic() - self._last[0] < self.reuse_s:
                return self._last[1]
            report = self._run_checks()
            self._last = (time.monotonic(), report)
            return report

    def _run_checks(self) -> HealthReport:
        """Run every check; a check that raises or outlives `timeout_s` is failing."""
        depth: list[int] = []

        def dead_letter_queue() -> None:
            depth.append(self.jobs.dead_letter_depth())

        named: dict[str, Callable[[], None]] = {
            "database": self.videos.check,
            "uploads_bucket": self.uploads.check,
            "media_bucket": self.media.check,
            "jobs_queue": self.jobs.check,
            "dead_letter_queue": dead_letter_queue,
            "cache": self.cache.check,
            "identity": self.identity.check,
            "email": self.mailer.check,
            "cdn_signing_key": self.media_urls.check,
        }
        pool = ThreadPoolExecutor(max_workers=len(named), thread_name_prefix="health")
        try:
            futures: dict[str, Future[None]] = {name: pool.submit(check) for name, check in named.items()}
            wait_for(futures.values(), timeout=self.timeout_s)
        finally:
            # Never wait for a hung check: its thread ends with its client's own timeout.
            pool.shutdown(wait=False, cancel_futures=True)
        checks = {name: self._outcome(name, future) for name, future in futures.items()}
        dead_letters = depth[0] if depth and checks["dead_letter_queue"] == OK else None
        warnings = []
        if dead_letters:
            warnings.append(
                f"{dead_letters} upload job(s) in the dead-letter queue: their videos failed every attempt"
            )
        return HealthReport(checks=checks, dead_letters=dead_letters, warnings=warnings)

    def _outcome(self, name: str, future: Future[None]) -> str:
        if not future.done():
            logger.warning("health check %s did not answer within %.1f s", name, self.timeout_s)
            return FAILING
        error = future.exception()
        if error is not None:
            # The details (which may name accounts and roles) go to the log only.
            logger.warning("health check %s is failing", name, exc_info=error)
            return FAILING
        return OK
