"""The caching service: the `Cache` port on DynamoDB (default) or Redis.

`build_cache` is what the composition root calls; `core.StoreCache` holds the
logic both stores share, `dynamodb` and `redis` the stores themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.adapters.cache.core import CacheStore, StoreCache
from chalicelib.settings import Settings

__all__ = ["StoreCache", "build_cache"]


def build_cache(settings: Settings, dynamodb_client: Callable[[], Any]) -> StoreCache:
    """The cache on the store `settings.cache_backend` names; `dynamodb_client`
    makes the DynamoDB client (short timeouts, no retries) when that is the store."""
    from chalicelib import telemetry

    store: CacheStore
    if settings.cache_backend == "redis":
        from chalicelib.adapters.cache.redis import RedisCacheStore, redis_client

        client = redis_client(settings.redis_url, settings.cache_timeout_s)
        store = RedisCacheStore(client, prefix=f"vidline:{settings.stage}:cache:")
    else:
        from chalicelib.adapters.cache.dynamodb import DynamoCacheStore

        store = DynamoCacheStore(dynamodb_client(), settings.cache_table)
    return StoreCache(
        store,
        count=telemetry.count,
        local_ttl_s=settings.cache_local_ttl_s,
        local_max_entries=settings.cache_local_max_entries,
        stale_s=settings.cache_stale_s,
        lease_s=settings.cache_lease_s,
        retry_after_s=settings.cache_retry_after_s,
    )
