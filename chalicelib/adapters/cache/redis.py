"""The cache's store on Redis (e.g. ElastiCache), through the `redis` package.

A value is the hash `<prefix>v:<key>` (value, fresh_until, stale_until) that
Redis expires once it is no longer worth serving stale; the lease is
`<prefix>l:<key>`, taken with SET NX PX so it runs out by itself if its holder
dies, and given back only by its holder (compare and delete, in one script).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.adapters.cache.core import CorruptEntry, Entry

# Deletes the lease only if it still holds this holder's token.
RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client that gives up after `timeout_s` and does not retry, so a dead
    server costs one short timeout."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisCacheStore:
    """Entries and leases in Redis, under `prefix` (e.g. "vidline:prod:cache:")."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._release = client.register_script(RELEASE)

    def read(self, key: str) -> Entry | None:
        raw = self._client.hgetall(self._prefix + "v:" + key)
        if not raw:
            return None
        try:
            fields = {_text(name): _text(value) for name, value in raw.items()}
            return Entry(fields["value"], float(fields["fresh_until"]), float(fields["stale_until"]))
        except (KeyError, ValueError) as error:
            raise CorruptEntry(f"hash lacks {error}") from error

    def write(self, key: str, entry: Entry, now: float) -> None:
        name = self._prefix + "v:" + key
        # Times are of the cache's clock, so Redis gets the span, not the instant.
        keep_ms = max(1, round((entry.stale_until - now) * 1000))
        with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.hset(
                name,
                mapping={
                    "value": entry.value,
                    "fresh_until": repr(entry.fresh_until),
                    "stale_until": repr(entry.stale_until),
                },
            )
            pipe.pexpire(name, keep_ms)
            pipe.execute()

    def delete(self, key: str) -> None:
        self._client.delete(self._prefix + "v:" + key)

    def acquire(self, key: str, holder: str, now: float, lease_s: float) -> bool:
        taken: Any = self._client.set(
            self._prefix + "l:" + key, holder, nx=True, px=max(1, round(lease_s * 1000))
        )
        return bool(taken)

    def release(self, key: str, holder: str) -> None:
        self._release(keys=[self._prefix + "l:" + key], args=[holder])

    def check(self) -> None:
        self._client.ping()


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data
