"""A counted write that meets another on a counter item is tried again (DynamoDB's TransactionConflict)."""

from __future__ import annotations

from typing import Any

import pytest
from pynamodb.connection import Connection
from pynamodb.exceptions import CancellationReason, TransactWriteError, VerboseClientError

from chalicelib.adapters import usage_dynamo
from chalicelib.adapters.usage_dynamo import Cancelled, CountedWrite
from chalicelib.domain import ServiceUnavailable


def cancelled(*codes: str | None) -> TransactWriteError:
    reasons = [CancellationReason(code=code) if code else None for code in codes]
    cause = VerboseClientError(
        {"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"}},
        "TransactWriteItems",
        cancellation_reasons=reasons,
    )
    return TransactWriteError("cancelled", cause=cause)


def write_failing_with(
    monkeypatch: pytest.MonkeyPatch, *errors: TransactWriteError
) -> tuple[CountedWrite, list[int]]:
    monkeypatch.setattr(usage_dynamo, "CONFLICT_PAUSE_S", 0.0)
    write = CountedWrite(Connection(region="us-east-1", host="http://127.0.0.1:9"))
    write.stage("update", "video")
    write.stage("update", "user-total")
    calls: list[int] = []
    pending = list(errors)

    def commit() -> Any:
        calls.append(1)
        if pending:
            raise pending.pop(0)
        return {}

    monkeypatch.setattr(write.transaction, "_commit", commit)
    return write, calls


def test_a_conflict_is_tried_again_until_the_write_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    write, calls = write_failing_with(
        monkeypatch, cancelled(None, "TransactionConflict"), cancelled("TransactionConflict", None)
    )
    write.commit()
    assert len(calls) == 3


def test_a_conflict_that_persists_is_service_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    conflicts = [cancelled(None, "TransactionConflict") for _ in range(usage_dynamo.CONFLICT_ATTEMPTS)]
    write, calls = write_failing_with(monkeypatch, *conflicts)
    with pytest.raises(ServiceUnavailable):
        write.commit()
    assert len(calls) == usage_dynamo.CONFLICT_ATTEMPTS


def test_a_failed_condition_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    write, calls = write_failing_with(monkeypatch, cancelled("ConditionalCheckFailed", "TransactionConflict"))
    with pytest.raises(Cancelled) as refused:
        write.commit()
    assert refused.value.labels == ["video"] and len(calls) == 1
