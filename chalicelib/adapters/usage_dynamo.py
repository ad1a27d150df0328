"""Usage counters in DynamoDB through pynamodb (the counters table).

Keys (`pk`, `sk`), all strings:

- `user#<owner>` / `day#YYYY-MM-DD`: the owner's counters of one UTC day (ADD);
- `user#<owner>` / `month#YYYY-MM`: the owner's processed seconds of a month (ADD);
- `user#<owner>` / `total`: the bytes the owner's videos store now (ADD);
- `site#NN` / `day#YYYY-MM-DD`: one shard of a day's site-wide counters (ADD);
- `site` / `day#YYYY-MM-DD`: a rolled-up day, with the level at its end (SET);
- `site` / `rollup`: the last day rolled up.

Counted writes are staged into the video's own transaction (`CountedWrite`),
each with its quota's condition, so the counters change exactly when the
video's conditional write is applied. Nothing here scans a table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import date
from functools import cached_property
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.domain import ServiceUnavailable
from chalicelib.settings import Settings
from chalicelib.usage import (
    COUNTERS,
    NO_USAGE,
    OverQuota,
    Quota,
    QuotaUsage,
    RolledUpDay,
    UsageChange,
    UsageDelta,
    month_of,
)

SITE = "site"
ROLLUP_SK = "rollup"
TOTAL_SK = "total"
DAY_PREFIX = "day#"


class UsageRecord(Model):
    """One counters item. Bind it to a table with `bind_usage_record`."""

    class Meta:
        table_name = "vidline-usage"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    videos_created = NumberAttribute(null=True)
    videos_ready = NumberAttribute(null=True)
    videos_failed = NumberAttribute(null=True)
    seconds_processed = NumberAttribute(null=True)
    # Net change of a day's bytes stored.
    bytes_added = NumberAttribute(null=True)
    # A level: on `total` items and rolled-up days.
    bytes_stored = NumberAttribute(null=True)
    # On `total` items: how many counted writes the user has had, a version
    # that keys their cached /stats (a new count makes the cached answer unused).
    changes = NumberAttribute(null=True)
    # On the `rollup` item: the last day rolled up.
    through = UnicodeAttribute(null=True)


def bind_usage_record(settings: Settings) -> type[UsageRecord]:
    """A UsageRecord subclass bound to the configured table and endpoint."""
    meta = type(
        "Meta",
        (),
        {
            "table_name": settings.usage_table,
            "region": settings.region,
            "host": settings.aws_endpoint_url,
            "billing_mode": "PAY_PER_REQUEST",
        },
    )
    return type("BoundUsageRecord", (UsageRecord,), {"Meta": meta})


def user_pk(owner_id: str) -> str:
    return f"user#{owner_id}"


def shard_pk(shard: int) -> str:
    return f"site#{shard:02d}"


def day_sk(day: date) -> str:
    return f"{DAY_PREFIX}{day.isoformat()}"


def _delta(record: UsageRecord) -> UsageDelta:
    def number(name: str) -> float:
        value = getattr(record, name)
        return 0 if value is None else value

    return UsageDelta(
        videos_created=int(number("videos_created")),
        videos_ready=int(number("videos_ready")),
        videos_failed=int(number("videos_failed")),
        seconds_processed=float(number("seconds_processed")),
        bytes_added=int(number("bytes_added")),
    )


def _day_of(sk: str) -> date:
    return date.fromisoformat(sk.removeprefix(DAY_PREFIX))


class CountedWrite:
    """One TransactWrite of a video's write and the usage it counts.

    pynamodb sends condition checks, deletes, puts and updates in that order,
    whatever order they were staged in; each staged item's label is kept in the
    same order, so a cancelled transaction tells which condition failed.
    """

    def __init__(self, connection: Connection) -> None:
        self.transaction = TransactWrite(connection=connection)
        self._labels: dict[str, list[str]] = {"check": [], "delete": [], "put": [], "update": []}

    def stage(self, kind: str, label: str) -> None:
        """Record that an item of `kind` ("check", "delete", "put", "update") was staged as `label`."""
        self._labels[kind].append(label)

    def commit(self) -> None:
        """Run the transaction; on a cancellation raise `Cancelled` with the labels whose condition failed.

        Counted writes of one user, and of everyone on the same site shard, touch
        the same counter items, and DynamoDB cancels a transaction that meets
        another on an item (TransactionConflict) without applying any of it. So a
        conflict alone is tried again after a short random pause; one that
        persists is ServiceUnavailable (a 503 for the API, a retry for a worker).
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self.transaction._commit()
                return
            except TransactWriteError as error:
                if error.cause_response_code != "TransactionCanceledException":
                    raise
                kinds = ("check", "delete", "put", "update")
                order = [label for kind in kinds for label in self._labels[kind]]
                codes = [reason.code if reason is not None else None for reason in error.cancellation_reasons]
                failed = [
                    label
                    for label, code in zip(order, codes, strict=False)
                    if code == "ConditionalCheckFailed"
                ]
                if failed or "TransactionConflict" not in codes:
                    raise Cancelled(failed) from error
                time.sleep(random.uniform(0, CONFLICT_PAUSE_S * 2**attempt))
        raise ServiceUnavailable("Too many changes at once; please try again in a moment.")


# How often a counted write that met another is tried, and the first pause's upper bound.
CONFLICT_ATTEMPTS = 6
CONFLICT_PAUSE_S = 0.02


class Cancelled(Exception):
    """A counted write's transaction was cancelled by these items' conditions."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__(", ".join(labels) or "cancelled")
        self.labels = labels


QUOTA_ORDER = (Quota.VIDEOS_PER_DAY, Quota.BYTES_STORED, Quota.MINUTES_PER_MONTH)


class DynamoUsageRepository:
    """UsageRepository on the counters table, and the stager of counted writes."""

    def __init__(self, record: type[UsageRecord], site_shards: int) -> None:
        self._record = record
        self._shards = site_shards

    @cached_property
    def connection(self) -> Connection:
        """The connection counted writes' transactions use: one per process, since
        building its botocore client costs far more than a transaction."""
        # The bound Meta (bind_usage_record) names them; the videos table shares both.
        meta = self._record.Meta
        return Connection(region=getattr(meta, "region", None), host=getattr(meta, "host", None))

    # --- counted writes ---

    def stage(self, write: CountedWrite, change: UsageChange) -> None:
        """Add `change`'s counters, and its quotas' conditions, to `write`.
        OverQuota at once if no use could let it through (larger than the quota)."""
        model, delta, limits = self._record, change.delta, change.limits
        if limits and limits.bytes_stored and delta.bytes_added > limits.bytes_stored:
            raise OverQuota(Quota.BYTES_STORED)
        owner = user_pk(change.owner_id)
        day_actions = [getattr(model, name).add(value) for name, value in delta.items()]
        if day_actions:
            condition = None
            if limits and limits.videos_per_day and delta.videos_created:
                allowed = limits.videos_per_day - delta.videos_created
                condition = model.videos_created.does_not_exist() | (model.videos_created <= allowed)
            write.transaction.update(model(owner, day_sk(change.day)), day_actions, condition=condition)
            write.stage("update", Quota.VIDEOS_PER_DAY.value if condition is not None else "user-day")
            shard = shard_pk(random.randrange(self._shards))
            write.transaction.update(model(shard, day_sk(change.day)), list(day_actions))
            write.stage("update", "site-shard")
        total_actions: list[Action] = [model.changes.add(1)]
        condition = None
        if delta.bytes_added:
            if limits and limits.bytes_stored and delta.bytes_added > 0:
                allowed = limits.bytes_stored - delta.bytes_added
                condition = model.bytes_stored.does_not_exist() | (model.bytes_stored <= allowed)
            total_actions.append(model.bytes_stored.add(delta.bytes_added))
        write.transaction.update(model(owner, TOTAL_SK), total_actions, condition=condition)
        write.stage("update", Quota.BYTES_STORED.value if condition is not None else "user-total")
        month = model(owner, f"month#{change.month}")
        if delta.seconds_processed:
            write.transaction.update(month, [model.seconds_processed.add(delta.seconds_processed)])
            write.stage("update", "user-month")
        elif limits and limits.minutes_per_month:
            seconds = limits.minutes_per_month * 60
            condition = model.seconds_processed.does_not_exist() | (model.seconds_processed < seconds)
            write.transaction.condition_check(model, owner, f"month#{change.month}", condition=condition)
            write.stage("check", Quota.MINUTES_PER_MONTH.value)

    @staticmethod
    def breached(cancelled: Cancelled) -> Quota | None:
        """The first quota (in the fake's order) whose condition cancelled the write."""
        return next((quota for quota in QUOTA_ORDER if quota.value in cancelled.labels), None)

    # --- reads ---

    def quota_usage(self, owner_id: str, day: date) -> QuotaUsage:
        owner = user_pk(owner_id)
        keys = [(owner, day_sk(day)), (owner, TOTAL_SK), (owner, f"month#{month_of(day)}")]
        found = {r.sk: r for r in self._record.batch_get(keys, consistent_read=True)}
        today, total, month = (found.get(sk) for _, sk in keys)
        return QuotaUsage(
            videos_today=int(today.videos_created or 0) if today else 0,
            bytes_stored=int(total.bytes_stored or 0) if total else 0,
            seconds_this_month=float(month.seconds_processed or 0) if month else 0.0,
            changes=int(total.changes or 0) if total else 0,
        )

    def user_days(self, owner_id: str, first: date) -> tuple[dict[date, UsageDelta], int]:
        days: dict[date, UsageDelta] = {}
        level = 0
        model = self._record
        # day#first .. total: the days from `first` on, the months, and the total.
        for record in model.query(
            user_pk(owner_id), model.sk.between(day_sk(first), TOTAL_SK), consistent_read=True
        ):
            if record.sk == TOTAL_SK:
                level = int(record.bytes_stored or 0)
            elif record.sk.startswith(DAY_PREFIX):
                days[_day_of(record.sk)] = _delta(record)
        return days, level

    def site_shard_days(self, first: date, last: date) -> dict[date, UsageDelta]:
        model = self._record
        days: dict[date, UsageDelta] = {}
        for shard in range(self._shards):
            condition = model.sk.between(day_sk(first), day_sk(last))
            for record in model.query(shard_pk(shard), condition, consistent_read=True):
                day = _day_of(record.sk)
                days[day] = days.get(day, NO_USAGE) + _delta(record)
        return days

    def first_site_day(self) -> date | None:
        model = self._record
        firsts = []
        for shard in range(self._shards):
            for record in model.query(shard_pk(shard), model.sk.startswith(DAY_PREFIX), limit=1):
                firsts.append(_day_of(record.sk))
        return min(firsts, default=None)

    def rolled_up_days(self, first: date, last: date) -> dict[date, RolledUpDay]:
        model = self._record
        condition = model.sk.between(day_sk(first), day_sk(last))
        return {
            _day_of(r.sk): RolledUpDay(_day_of(r.sk), _delta(r), int(r.bytes_stored or 0))
            for r in model.query(SITE, condition, consistent_read=True)
        }

    def rolled_up_through(self) -> date | None:
        try:
            record = self._record.get(SITE, ROLLUP_SK, consistent_read=True)
        except self._record.DoesNotExist:
            return None
        return date.fromisoformat(record.through) if record.through else None

    def save_rolled_up(self, days: Iterable[RolledUpDay], through: date) -> None:
        model = self._record
        with model.batch_write() as batch:
            for day in days:
                values: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
                values.update(day.delta.items())
                batch.save(model(SITE, day_sk(day.day), bytes_stored=day.bytes_stored, **values))
        # Last, so a run that stopped half-way folds its days again (to the same values).
        model(SITE, ROLLUP_SK, through=through.isoformat()).save()

    def check(self) -> None:
        if not self._record.exists():
            raise RuntimeError(f"table {self._record.Meta.table_name} does not exist")
