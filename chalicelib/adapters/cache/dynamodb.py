"""The cache's store on DynamoDB: one table keyed by `id`, TTL on `expires_at`.

A value lives in the item `v#<key>` (JSON text, fresh and kept-until times),
the lease of the one caller computing it in `l#<key>`, taken with a
conditional put that succeeds only if no lease is there or it has run out.
DynamoDB's TTL deletes old items within a day or two, not at once, so the
cache checks the times itself on every read.
"""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.cache.core import CorruptEntry, Entry

CONDITION_FAILED = "ConditionalCheckFailedException"


class DynamoCacheStore:
    """Entries and leases in a DynamoDB table (a boto3 client with short timeouts)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def read(self, key: str) -> Entry | None:
        item = self._client.get_item(
            TableName=self._table, Key={"id": {"S": f"v#{key}"}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        try:
            return Entry(item["value"]["S"], float(item["fresh_until"]["N"]), float(item["stale_until"]["N"]))
        except (KeyError, ValueError) as error:
            raise CorruptEntry(f"item lacks {error}") from error

    def write(self, key: str, entry: Entry, now: float) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={
                "id": {"S": f"v#{key}"},
                "value": {"S": entry.value},
                "fresh_until": {"N": repr(entry.fresh_until)},
                "stale_until": {"N": repr(entry.stale_until)},
                "expires_at": {"N": str(math.ceil(entry.stale_until))},
            },
        )

    def delete(self, key: str) -> None:
        self._client.delete_item(TableName=self._table, Key={"id": {"S": f"v#{key}"}})

    def acquire(self, key: str, holder: str, now: float, lease_s: float) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": f"l#{key}"},
                    "holder": {"S": holder},
                    "lease_until": {"N": repr(now + lease_s)},
                    "expires_at": {"N": str(math.ceil(now + lease_s))},
                },
                ConditionExpression="attribute_not_exists(id) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": repr(now)}},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == CONDITION_FAILED:
                return False
            raise
        return True

    def release(self, key: str, holder: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"id": {"S": f"l#{key}"}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
        except ClientError as error:
            # Gone already, or another holder took over after the lease ran out.
            if error.response.get("Error", {}).get("Code") != CONDITION_FAILED:
                raise

    def check(self) -> None:
        """A read of a key no one writes: fails if the table or the service is not there."""
        self._client.get_item(TableName=self._table, Key={"id": {"S": "check"}})
