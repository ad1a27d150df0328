"""Exactly-once effects for at-least-once deliveries, with Powertools.

The in-progress lock and redeliveries. While a job runs, its record is
INPROGRESS and a duplicate delivery is turned away (it raises, so its message
comes back later). Powertools lets the lock expire at the time the running
invocation must end: now + the Lambda context's remaining time. So the
context is registered on every call, and a job killed mid-run (a timeout, an
out-of-memory kill, a crashed local pump) stops blocking its retries at the
latest when its invocation's time is up. That holds only if no retry can
arrive before then, hence the invariant

    queue visibility timeout  >=  function timeout  >=  lock lifetime

- lock lifetime: the remaining time at the start of the invocation, at most
  the function timeout;
- function timeout: the worker's `lambda_timeout`, 900 s
  (`workers/.chalice/config.json`); the local pump passes the same value in
  its context;
- visibility timeout: on AWS the jobs queue's `VisibilityTimeout`, 6 × 900 s
  (`infra/stack.yaml`, JobVisibilityTimeoutSeconds, at least 5400). The local
  pump keeps the visibility short and extends it while a job runs
  (a heartbeat), so a message comes back soon after a pump dies; a lock that
  dead pump left behind is released by the pump when it starts again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

# How long a finished job's record is kept: long enough to cover every
# redelivery SQS or S3 could make.
RECORD_LIFETIME_S = 7 * 24 * 3600


class IdempotentJobs:
    """Runs `function(job=..., **kwargs)` once per distinct `job` dict.

    A run that raises deletes its record, so a retry runs again. A duplicate
    that arrives while the first run is going raises
    IdempotencyAlreadyInProgressError, which sends its message back to the
    queue. The caller's Lambda context is required: it bounds the in-progress
    lock (see the module docstring).
    """

    def __init__(self, function: Callable[..., str], dynamodb_client: Any, table_name: str):
        self._config = IdempotencyConfig(
            expires_after_seconds=RECORD_LIFETIME_S, raise_on_no_idempotency_key=True
        )
        persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=dynamodb_client)
        self._run: Callable[..., str] = idempotent_function(
            data_keyword_argument="job", persistence_store=persistence, config=self._config
        )(function)

    def __call__(self, job: dict[str, str], lambda_context: Any, **kwargs: Any) -> str:
        """Run the job unless a run of the same `job` finished or is going.

        `lambda_context` (Lambda's, or the local pump's stand-in) must answer
        `get_remaining_time_in_millis()`: without it the in-progress lock
        would last as long as a finished job's record, a week.
        """
        if lambda_context is None or not hasattr(lambda_context, "get_remaining_time_in_millis"):
            raise ValueError("a Lambda context is required: it bounds the in-progress lock")
        self._config.register_lambda_context(lambda_context)
        return self._run(job=job, **kwargs)
