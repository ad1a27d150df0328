"""Usage counters and quotas: what each video state change counts, the daily
figures `/stats` shows, and the per-user limits `POST /videos` enforces.

Counting. Every counted change of a video is written in the SAME DynamoDB
transaction as the video's own conditional write (`VideoRepository.add`,
`update` and `delete` take a `usage=` change), so a duplicate SQS delivery or
a retry whose condition fails adds nothing, and a crash never leaves one
without the other. The rules for what each change counts live here:

- created: `videos_created` +1 and `bytes_added` + the declared size, on the
  day the video is created (the presigned POST allows up to that size, so it
  is reserved at once);
- source measured: when the worker records the size that really landed
  (QUEUED → PROCESSING), the difference is given back;
- ready: `videos_ready` +1 and `seconds_processed` + the decoded duration;
- failed: `videos_failed` +1 (a video fails at most once: only from a
  processable state);
- deleted: `bytes_added` − the size counted for it.

Bytes stored is a level, not a flow: the bytes of source files the user's
existing videos hold at the end of a day (declared until the upload is
measured). Days record its net change (`bytes_added`); the level is kept
per user on a running total, and `/stats` derives each day's level from it.
The videos' encoded outputs are not counted: their size follows from the
source and the ladder, which the user does not choose.

Site-wide figures go to one of `usage_site_shards` items per day, picked at
random, so no single item is hot. The daily `rollup` job folds each closed
day's shards into one item with the level carried forward (`UsageService.roll_up`).

All days are UTC days; a change counts on the day it happens.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chalicelib.domain import Forbidden, InvalidRequest, Principal, RateLimited, Video, utcnow
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.ports import Cache, UsageRepository

logger = logging.getLogger(__name__)

# Days ending this long ago may still receive a change that began before midnight
# (a transaction started at 23:59:59.9); the roll-up leaves them for the next run.
ROLLUP_SETTLE = timedelta(minutes=5)


class Quota(StrEnum):
    VIDEOS_PER_DAY = "videos_per_day"
    BYTES_STORED = "bytes_stored"
    MINUTES_PER_MONTH = "minutes_per_month"


@dataclass(frozen=True)
class UsageDelta:
    """Counter increments of one change, or the sum of many."""

    videos_created: int = 0
    videos_ready: int = 0
    videos_failed: int = 0
    seconds_processed: float = 0.0
    # Net change of the bytes stored (negative when videos are deleted).
    bytes_added: int = 0

    def __add__(self, other: UsageDelta) -> UsageDelta:
        return UsageDelta(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def items(self) -> list[tuple[str, int | float]]:
        """The non-zero counters, by name."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]


COUNTERS = tuple(f.name for f in fields(UsageDelta))
NO_USAGE = UsageDelta()


@dataclass(frozen=True)
class QuotaLimits:
    """Per-user limits; 0 means unlimited."""

    videos_per_day: int = 0
    bytes_stored: int = 0
    minutes_per_month: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaLimits:
        return cls(
            videos_per_day=settings.quota_videos_per_day,
            bytes_stored=settings.quota_bytes_stored,
            minutes_per_month=settings.quota_minutes_per_month,
        )


@dataclass(frozen=True)
class QuotaUsage:
    """What counts against the quotas at one moment."""

    videos_today: int = 0
    bytes_stored: int = 0
    seconds_this_month: float = 0.0
    # How many counted writes the owner has had: a version that any change to
    # their figures bumps (not itself a figure: left out of comparisons).
    changes: int = field(default=0, compare=False)


@dataclass(frozen=True)
class UsageChange:
    """What one state change of a video counts: for its owner, on the UTC day of `at`,
    and site-wide. With `limits` (a create) the change, and the write it goes with,
    is refused with OverQuota if it would take the owner over a quota."""

    owner_id: str
    at: datetime
    delta: UsageDelta
    limits: QuotaLimits | None = None

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()

    @property
    def month(self) -> str:
        return month_of(self.day)


class OverQuota(Exception):
    """A counted write was refused: it would take the owner over `quota`."""

    def __init__(self, quota: Quota) -> None:
        super().__init__(quota.value)
        self.quota = quota


class QuotaExceeded(RateLimited):
    """Refused (429): the owner is at a quota. `details` names it, its limit, what is
    used and when it resets (null for bytes stored: deleting videos frees it)."""

    code = "quota_exceeded"


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


# --- the rules: what each change counts ---


def created(video: Video, limits: QuotaLimits) -> UsageChange:
    """A new video: counted, its declared size reserved, the quotas enforced."""
    delta = UsageDelta(videos_created=1, bytes_added=video.source.size_bytes)
    return UsageChange(video.owner_id, video.created_at, delta, limits)


def source_measured(video: Video, size_bytes: int, at: datetime | None = None) -> UsageChange | None:
    """The upload's real size replaces the declared one: the difference is given
    back (None if there is none)."""
    difference = size_bytes - video.source.size_bytes
    if not difference:
        return None
    return UsageChange(video.owner_id, at or utcnow(), UsageDelta(bytes_added=difference))


def became_ready(video: Video, duration_s: float, at: datetime | None = None) -> UsageChange:
    """The video is ready: its decoded minutes count as processed."""
    delta = UsageDelta(videos_ready=1, seconds_processed=round(max(duration_s, 0.0), 3))
    return UsageChange(video.owner_id, at or utcnow(), delta)


def became_failed(video: Video, at: datetime | None = None) -> UsageChange:
    """The video failed (from a processable state, so at most once)."""
    return UsageChange(video.owner_id, at or utcnow(), UsageDelta(videos_failed=1))


def abandoned(video: Video, at: datetime | None = None) -> UsageChange:
    """The video failed before any upload landed, and what its upload left is
    deleted: counted failed, and its declared bytes given back (the video then
    records a size of 0, so deleting it later frees nothing more)."""
    delta = UsageDelta(videos_failed=1, bytes_added=-video.source.size_bytes)
    return UsageChange(video.owner_id, at or utcnow(), delta)


def deleted(video: Video, at: datetime | None = None) -> UsageChange:
    """The video and its files are gone: the bytes counted for it are freed."""
    return UsageChange(video.owner_id, at or utcnow(), UsageDelta(bytes_added=-video.source.size_bytes))


def breached_quota(limits: QuotaLimits, used: QuotaUsage, delta: UsageDelta) -> Quota | None:
    """The quota that applying `delta` on top of `used` would break, if any.

    The DynamoDB adapter states the same rules as condition expressions, so
    concurrent creates cannot overshoot: the day's count goes up only while it
    is below the limit, the stored bytes only while they stay within it, and a
    video can be created while this month's processed minutes are below the limit
    (its own length is unknown until it is processed).
    """
    per_day, stored = limits.videos_per_day, limits.bytes_stored
    if per_day and delta.videos_created and used.videos_today + delta.videos_created > per_day:
        return Quota.VIDEOS_PER_DAY
    if stored and delta.bytes_added > 0 and used.bytes_stored + delta.bytes_added > stored:
        return Quota.BYTES_STORED
    if limits.minutes_per_month and used.seconds_this_month >= limits.minutes_per_month * 60:
        return Quota.MINUTES_PER_MONTH
    return None


def resets_at(quota: Quota, now: datetime) -> datetime | None:
    """When a quota's use goes back to zero: the next UTC midnight, the first of the
    next month, or never for bytes stored (it goes down as videos are deleted)."""
    today = now.astimezone(UTC).date()
    if quota is Quota.VIDEOS_PER_DAY:
        return datetime.combine(today + timedelta(days=1), time(), UTC)
    if quota is Quota.MINUTES_PER_MONTH:
        days = calendar.monthrange(today.year, today.month)[1]
        return datetime.combine(today.replace(day=1) + timedelta(days=days), time(), UTC)
    return None


@dataclass(frozen=True)
class QuotaStatus:
    quota: Quota
    limit: int | None  # None: unlimited
    used: int | float  # videos, bytes or minutes
    resets_at: datetime | None


def quota_statuses(limits: QuotaLimits, used: QuotaUsage, now: datetime) -> list[QuotaStatus]:
    """Each quota's limit, use and reset time, as /stats shows them."""
    values: dict[Quota, tuple[int, int | float]] = {
        Quota.VIDEOS_PER_DAY: (limits.videos_per_day, used.videos_today),
        Quota.BYTES_STORED: (limits.bytes_stored, used.bytes_stored),
        Quota.MINUTES_PER_MONTH: (limits.minutes_per_month, round(used.seconds_this_month / 60, 2)),
    }
    return [
        QuotaStatus(quota, limit or None, value, resets_at(quota, now))
        for quota, (limit, value) in values.items()
    ]


def quota_exceeded(
    quota: Quota, limits: QuotaLimits, used: QuotaUsage, size_bytes: int, now: datetime
) -> QuotaExceeded:
    """The error a refused create answers with: which quota, its limit, the use and
    when it resets, and a sentence for people."""
    status = next(s for s in quota_statuses(limits, used, now) if s.quota is quota)
    when = status.resets_at.strftime("%Y-%m-%d %H:%M UTC") if status.resets_at else None
    if quota is Quota.VIDEOS_PER_DAY:
        message = (
            f"You have created {status.used} videos today, your daily limit of {status.limit}. "
            f"You can create more from {when}."
        )
    elif quota is Quota.BYTES_STORED:
        message = (
            f"This video ({size_bytes} bytes) does not fit in your storage quota: your videos use "
            f"{status.used} of {status.limit} bytes. Delete videos to make room."
        )
    else:
        message = (
            f"You have used your {status.limit} minutes of processing this month "
            f"({status.used} minutes). You can create videos again from {when}."
        )
    details = [
        {
            "quota": quota.value,
            "limit": status.limit,
            "used": status.used,
            "resets_at": status.resets_at.isoformat() if status.resets_at else None,
        }
    ]
    return QuotaExceeded(message, details)


# --- what /stats shows ---


@dataclass(frozen=True)
class DayUsage:
    """One UTC day's figures: what happened that day, and the bytes stored at its end."""

    day: date
    videos_created: int
    videos_ready: int
    videos_failed: int
    seconds_processed: float
    bytes_stored: int


@dataclass(frozen=True)
class UsageReport:
    days: list[DayUsage]
    quotas: list[QuotaStatus] = field(default_factory=list)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def daily_levels(
    first: date, last: date, deltas: Mapping[date, UsageDelta], level_after: Callable[[date], int]
) -> list[DayUsage]:
    """Every day from `first` to `last` with its counters (zeros where nothing
    happened) and the bytes-stored level at its end, `level_after(first - 1 day)`
    plus each day's net change."""
    level = level_after(first - timedelta(days=1))
    out = []
    for day in days_between(first, last):
        delta = deltas.get(day, NO_USAGE)
        level += delta.bytes_added
        out.append(
            DayUsage(
                day=day,
                videos_created=delta.videos_created,
                videos_ready=delta.videos_ready,
                videos_failed=delta.videos_failed,
                seconds_processed=round(delta.seconds_processed, 3),
                bytes_stored=level,
            )
        )
    return out


def stats_range(
    first: date | None, last: date | None, today: date, *, default_days: int, max_days: int
) -> tuple[date, date]:
    """The inclusive range a /stats call covers: by default the `default_days` up to
    today; InvalidRequest naming the field for a reversed, too long or future range."""
    last = last or today
    first = first or max(last - timedelta(days=default_days - 1), date.min)
    if last > today:
        raise InvalidRequest(
            f"to: must not be after today ({today.isoformat()}, UTC).",
            [{"field": "to", "problem": f"after today ({today.isoformat()}, UTC)"}],
        )
    if first > last:
        raise InvalidRequest("from: must not be after to.", [{"field": "from", "problem": "after to"}])
    if (last - first).days + 1 > max_days:
        raise InvalidRequest(
            f"from: the range may cover at most {max_days} days.",
            [{"field": "from", "problem": f"more than {max_days} days before to"}],
        )
    return first, last


# --- the service ---


@dataclass(frozen=True)
class RolledUpDay:
    """A closed day's site-wide figures folded from its shards, with the level at its end."""

    day: date
    delta: UsageDelta
    bytes_stored: int


@dataclass
class UsageService:
    """Daily stats, quota checks and the roll-up."""

    usage: UsageRepository
    cache: Cache
    settings: Settings
    clock: Callable[[], datetime] = utcnow

    @property
    def limits(self) -> QuotaLimits:
        return QuotaLimits.from_settings(self.settings)

    def stats_range(self, first: date | None, last: date | None) -> tuple[date, date]:
        """The range a /stats call covers (defaults and limits from the settings)."""
        s = self.settings
        return stats_range(
            first, last, self.clock().date(), default_days=s.stats_default_days, max_days=s.stats_max_days
        )

    def user_stats(self, owner: Principal, first: date | None, last: date | None) -> UsageReport:
        """The owner's days through the cache, and their quotas, both as of now.

        The quota figures are three item reads, made on every call. They also
        say how many counted writes the owner has had, which is part of the
        cache key: the days are computed again after any change of the owner's
        own, and served from the cache otherwise (an owner sees their own
        upload, failure or delete at once; the TTL only bounds how long an
        unused answer is kept)."""
        first, last = self.stats_range(first, last)
        now = self.clock()
        used = self.usage.quota_usage(owner.user_id, now.astimezone(UTC).date())
        key = f"stats:user:{owner.user_id}:{used.changes}:{first.isoformat()}:{last.isoformat()}"
        raw = self.cache.get_or_compute(
            key,
            self.settings.stats_cache_ttl_s,
            lambda: _report_json(self._user_report(owner.user_id, first, last)),
        )
        return UsageReport(_report_from_json(raw).days, quota_statuses(self.limits, used, now))

    def site_stats(self, reader: Principal, first: date | None, last: date | None) -> UsageReport:
        """Site-wide days, for the readers `site_stats_readers` allows, through the cache."""
        if not self.may_read_site_stats(reader):
            raise Forbidden("Site-wide stats are for the site's operators.")
        first, last = self.stats_range(first, last)
        key = f"stats:site:{first.isoformat()}:{last.isoformat()}"
        raw = self.cache.get_or_compute(
            key, self.settings.stats_cache_ttl_s, lambda: _report_json(self._site_report(first, last))
        )
        return _report_from_json(raw)

    def may_read_site_stats(self, reader: Principal) -> bool:
        allowed = self.settings.site_stats_readers
        return "*" in allowed or reader.email.lower() in allowed

    def quota_exceeded(self, owner_id: str, quota: Quota, size_bytes: int) -> QuotaExceeded:
        """The error for a create refused at `quota`, with the owner's current use."""
        now = self.clock()
        used = self.usage.quota_usage(owner_id, now.astimezone(UTC).date())
        return quota_exceeded(quota, self.limits, used, size_bytes, now)

    def roll_up(self) -> list[date]:
        """Fold every closed, settled day not folded yet into one site-wide item per
        day (days without activity too, carrying the bytes-stored level forward).
        Idempotent: a day is stored from the sum of its shards, so folding it again
        changes nothing. Returns the days folded."""
        last = (self.clock() - ROLLUP_SETTLE).astimezone(UTC).date() - timedelta(days=1)
        through = self.usage.rolled_up_through()
        if through is not None:
            first = through + timedelta(days=1)
            level = self._rolled_up_level(through)
        else:
            first_written = self.usage.first_site_day()
            if first_written is None:
                return []
            first, level = first_written, 0
        if first > last:
            return []
        deltas = self.usage.site_shard_days(first, last)
        folded = []
        for day in days_between(first, last):
            delta = deltas.get(day, NO_USAGE)
            level += delta.bytes_added
            folded.append(RolledUpDay(day, delta, level))
        self.usage.save_rolled_up(folded, last)
        logger.info("rolled up the site-wide usage of %s to %s", first, last)
        return [d.day for d in folded]

    def _rolled_up_level(self, day: date) -> int:
        """The site's bytes stored at the end of a folded day (0 before the first one)."""
        found = self.usage.rolled_up_days(day, day).get(day)
        return found.bytes_stored if found else 0

    def _user_report(self, owner_id: str, first: date, last: date) -> UsageReport:
        deltas, level_now = self.usage.user_days(owner_id, first)
        # The level at the end of a day is today's level less every later day's change.
        later = sorted(deltas.items())

        def level_after(day: date) -> int:
            return level_now - sum(delta.bytes_added for d, delta in later if d > day)

        return UsageReport(daily_levels(first, last, deltas, level_after))

    def _site_report(self, first: date, last: date) -> UsageReport:
        through = self.usage.rolled_up_through()
        rolled = self.usage.rolled_up_days(first, min(last, through)) if through and first <= through else {}
        # Days after the roll-up come from the shards, their level from the last folded one.
        fresh_from = through + timedelta(days=1) if through else (self.usage.first_site_day() or last)
        fresh = self.usage.site_shard_days(fresh_from, last) if fresh_from <= last else {}
        base = self._rolled_up_level(through) if through else 0
        deltas = {**{d: r.delta for d, r in rolled.items()}, **fresh}

        def level_after(day: date) -> int:
            if through is not None and day <= through:
                return self._rolled_up_level(day)
            return base + sum(delta.bytes_added for d, delta in fresh.items() if d <= day)

        return UsageReport(daily_levels(first, last, deltas, level_after))


def _report_json(report: UsageReport) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, date | datetime):
            return value.isoformat()
        return value

    return {
        "days": [{k: plain(v) for k, v in asdict(d).items()} for d in report.days],
        "quotas": [{k: plain(v) for k, v in asdict(q).items()} for q in report.quotas],
    }


def _report_from_json(raw: dict[str, Any]) -> UsageReport:
    days = [DayUsage(**{**d, "day": date.fromisoformat(d["day"])}) for d in raw["days"]]
    quotas = [
        QuotaStatus(
            quota=Quota(q["quota"]),
            limit=q["limit"],
            used=q["used"],
            resets_at=datetime.fromisoformat(q["resets_at"]) if q["resets_at"] else None,
        )
        for q in raw["quotas"]
    ]
    return UsageReport(days, quotas)
