"""Benchmark: what a cache hit costs against a miss, in-process.

Starts moto (in its own process, as DynamoDB is elsewhere on AWS) and a
redis-server on free loopback ports, then times `StoreCache.get_or_compute`
call by call, COUNT times each (default 2000), and prints the median and 90th
percentile of:

* in-memory hit -- the value is in the process's own layer (a warm Lambda);
* store hit -- the in-memory layer is off: one read of the store
  (DynamoDB on moto: one GetItem over HTTP; Redis: one HGETALL);
* miss -- a new key each time, computed by a trivial function: a read, the
  lease (conditional PutItem / SET NX), the write and the lease's release;
* compute -- the trivial function called directly, for scale.

Then the ratios of each to the in-memory hit. Metrics go through
chalicelib.telemetry.count as in production (their EMF output is discarded);
`--no-metrics` counts into nothing, to show what the metric calls cost.

    .venv/bin/python bench/cache.py [--count 2000] [--no-metrics]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.worker_on_moto import moto_process  # noqa: E402
from chalicelib import telemetry  # noqa: E402
from chalicelib.adapters.cache import StoreCache  # noqa: E402
from chalicelib.adapters.cache.core import CacheStore  # noqa: E402
from chalicelib.adapters.cache.dynamodb import DynamoCacheStore  # noqa: E402
from chalicelib.adapters.cache.redis import RedisCacheStore, redis_client  # noqa: E402
from chalicelib.bootstrap import Container  # noqa: E402
from chalicelib.settings import Settings  # noqa: E402
from devstack.aws import LOCAL_CREDENTIALS, local_client  # noqa: E402
from devstack.resources import ensure_table  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

# Longer than production's 0.5 s: moto on a busy machine is slow, and a timeout would spoil a run.
TIMEOUT_S = 5.0
VALUE = {"day": "2026-12-01", "videos_created": 3, "minutes_processed": 12.5, "bytes_stored": 123456789}


def dynamo_store(endpoint: str) -> DynamoCacheStore:
    """The cache table on moto, through the client the composition root makes for the cache."""
    ensure_table(
        local_client("dynamodb", endpoint, "us-east-1"), "cache", hash_key="id", ttl_attribute="expires_at"
    )
    settings = Settings().model_copy(update={"aws_endpoint_url": endpoint, "cache_timeout_s": TIMEOUT_S})
    return DynamoCacheStore(Container(settings).cache_dynamodb_client(), "cache")


def timed(count: int, call: Callable[[int], Any]) -> list[float]:
    """Seconds each of `count` calls of `call(i)` took."""
    spans = []
    for number in range(count):
        begun = time.perf_counter()
        call(number)
        spans.append(time.perf_counter() - begun)
    return spans


def measure(store: CacheStore, count: int, metrics: Callable[[str, int], None]) -> dict[str, list[float]]:
    """Each kind of call, `count` times, on `store`."""

    def compute() -> dict[str, Any]:
        return VALUE

    warm = StoreCache(store, count=metrics, local_ttl_s=3600)
    cold = StoreCache(store, count=metrics, local_ttl_s=0)
    warm.get_or_compute("hot", 3600, compute)
    run = uuid.uuid4().hex
    results = {
        "in-memory hit": timed(count, lambda _: warm.get_or_compute("hot", 3600, compute)),
        "store hit": timed(count, lambda _: cold.get_or_compute("hot", 3600, compute)),
        "miss": timed(count, lambda number: cold.get_or_compute(f"{run}:{number}", 3600, compute)),
        "compute": timed(count, lambda _: compute()),
    }
    assert warm.errors == cold.errors == 0, "the store failed during the benchmark"
    assert warm.hits >= count and cold.hits >= count and cold.misses == count
    return results


def report(name: str, results: dict[str, list[float]]) -> None:
    base = statistics.median(results["in-memory hit"])
    print(f"\n{name}")
    print(f"  {'call':<14} {'median':>10} {'p90':>10} {'× in-memory hit':>16}")
    for kind, spans in results.items():
        median = statistics.median(spans)
        p90 = statistics.quantiles(spans, n=10)[-1]
        print(f"  {kind:<14} {median * 1e6:>8.1f}µs {p90 * 1e6:>8.1f}µs {median / base:>16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="calls of each kind (default 2000)")
    parser.add_argument("--no-metrics", action="store_true", help="count into nothing instead of telemetry")
    args = parser.parse_args()

    def no_metrics(name: str, value: int) -> None:
        pass

    metrics = no_metrics if args.no_metrics else telemetry.count
    os.environ.update(LOCAL_CREDENTIALS)
    print(f"{args.count} calls of each kind; metrics: {'off' if args.no_metrics else 'telemetry.count'}")
    # Powertools prints a metric set (EMF) every 100 values: kept out of the report.
    emf = io.StringIO()
    with moto_process() as (endpoint, _), contextlib.redirect_stdout(emf):
        dynamodb = measure(dynamo_store(endpoint), args.count, metrics)
    report("DynamoDB (moto, another process)", dynamodb)
    with RedisServer() as server, contextlib.redirect_stdout(emf):
        redis = measure(RedisCacheStore(redis_client(server.url, TIMEOUT_S), "bench:"), args.count, metrics)
    report("Redis (redis-server 127.0.0.1)", redis)


if __name__ == "__main__":
    main()
