"""Exactly-once effects for at-least-once deliveries, with Powertools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

# Long enough to cover every redelivery SQS or S3 could make.
RECORD_LIFETIME_S = 7 * 24 * 3600


class IdempotentJobs:
    """Runs `function(job=..., **kwargs)` once per distinct `job` dict.

    A run that raises deletes its record, so a retry runs again. A duplicate
    that arrives while the first run is going raises
    IdempotencyAlreadyInProgressError, which sends its message back to the
    queue. With the Lambda context registered, a run killed by a timeout
    stops blocking retries once the invocation's time is up.
    """

    def __init__(self, function: Callable[..., str], dynamodb_client: Any, table_name: str):
        self._config = IdempotencyConfig(
            expires_after_seconds=RECORD_LIFETIME_S, raise_on_no_idempotency_key=True
        )
        persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=dynamodb_client)
        self._run: Callable[..., str] = idempotent_function(
            data_keyword_argument="job", persistence_store=persistence, config=self._config
        )(function)

    def __call__(self, job: dict[str, str], lambda_context: Any = None, **kwargs: Any) -> str:
        if lambda_context is not None:
            self._config.register_lambda_context(lambda_context)
        return self._run(job=job, **kwargs)
