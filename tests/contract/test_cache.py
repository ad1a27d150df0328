"""One behaviour suite for the Cache port.

Every behaviour test runs on the in-memory fake the unit tests use, on the
DynamoDB store (on moto) and on a real redis-server, each through more than
one cache instance where it matters: two instances on one store are two
processes (or Lambdas) sharing it. The tests after the suite cover what only
the adapters have: the in-memory layer, leases left by dead holders, unreadable
entries, long keys and big values, the pause after a failure, metrics, moto
stopped, a store that hangs, and the composition root.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.adapters.cache import StoreCache
from chalicelib.adapters.cache.core import METRICS, Entry, LocalLayer
from chalicelib.adapters.cache.dynamodb import DynamoCacheStore
from chalicelib.adapters.cache.redis import RedisCacheStore, redis_client
from chalicelib.bootstrap import Container
from chalicelib.settings import Settings
from devstack.aws import local_client
from devstack.client import free_port
from devstack.resources import ensure_table
from tests.fakes import FakeCache
from tests.redis_server import RedisServer
from tests.silent_server import SilentServer

# Generous for a loaded test machine; every broken store here fails at once (refused, or no table).
# The stores' client timeouts in this suite: generous, since it is not about
# timeouts (the hang tests set their own) and a store call on a machine busy
# with the stack tests can take seconds; a call that timed out would make the
# cache compute, as it must, and fail a test about waiting.
TIMEOUT_S = 10.0
# The timing bounds below tell "did not wait" from "waited a lease or a
# timeout", with room for a slow store on a busy machine: a lease of 30 s
# where a caller must not give up waiting, and answers within QUICK_S (less
# than one store timeout) where it must not wait.
PATIENT_LEASE_S = 30.0
QUICK_S = 8.0


class Clock:
    """Time that moves only when the test says so (epoch seconds)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Counts:
    """What the cache reported as metrics."""

    seen: dict[str, int] = field(default_factory=dict)

    def __call__(self, name: str, value: int = 1) -> None:
        self.seen[name] = self.seen.get(name, 0) + value


@dataclass
class Backend:
    """One store under test. `make()` builds a cache instance on it (every
    instance shares the store, as processes do); `break_store()` makes the store fail."""

    name: str
    make: Callable[..., Any]
    break_store: Callable[[], None]
    # Puts something that is not an entry under a key (adapters only).
    write_junk: Callable[[str], None] = lambda key: None


def dynamo_client(settings: Settings, endpoint: str | None = None) -> Any:
    """The cache's DynamoDB client as the composition root makes it, on moto (or `endpoint`)."""
    update = {"cache_timeout_s": TIMEOUT_S, "aws_endpoint_url": endpoint or settings.aws_endpoint_url}
    return Container(settings.model_copy(update=update)).cache_dynamodb_client()


@dataclass
class Held:
    """A computation that starts, then waits until the test lets it finish."""

    result: Any
    started: threading.Event = field(default_factory=threading.Event)
    finish: threading.Event = field(default_factory=threading.Event)

    def __call__(self) -> Any:
        self.started.set()
        self.finish.wait(10)
        return self.result


def store_cache(store: Any, *, clock: Callable[[], float] = time.time, **options: Any) -> StoreCache:
    """A cache on `store` with the tests' defaults: no in-memory layer unless asked."""
    options.setdefault("local_ttl_s", 0.0)
    options.setdefault("count", Counts())
    return StoreCache(store, clock=clock, **options)


@pytest.fixture(scope="module")
def dynamodb(settings: Settings) -> Any:
    """The cache's DynamoDB client on the session's moto server (one per module:
    a boto3 session takes a while to make)."""
    return dynamo_client(settings)


@pytest.fixture
def cache_table(dynamodb: Any) -> Iterator[tuple[Any, str]]:
    """A fresh cache table (TTL on expires_at) on the session's moto server, and the client."""
    table = f"cache-{uuid.uuid4().hex}"
    ensure_table(dynamodb, table, hash_key="id", ttl_attribute="expires_at")
    yield dynamodb, table
    with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):  # a test deleted it
        dynamodb.delete_table(TableName=table)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["fake", "dynamodb", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each store in turn: the suite below runs on all three."""
    return make_backend(request, str(request.param))


@pytest.fixture(params=["dynamodb", "redis"])
def adapter(request: pytest.FixtureRequest) -> Backend:
    """The adapters' stores, for what the fake does not have."""
    return make_backend(request, str(request.param))


def make_backend(request: pytest.FixtureRequest, name: str) -> Backend:
    if name == "fake":
        return fake_backend()
    if name == "dynamodb":
        client, table = request.getfixturevalue("cache_table")

        def junk_item(key: str) -> None:
            client.put_item(TableName=table, Item={"id": {"S": f"v#{key}"}, "value": {"S": "{}"}})

        return Backend(
            name,
            lambda **options: store_cache(DynamoCacheStore(client, table), **options),
            lambda: client.delete_table(TableName=table),
            junk_item,
        )
    server: RedisServer = request.getfixturevalue("redis_server")

    def junk_hash(key: str) -> None:
        redis_client(server.url, TIMEOUT_S).hset(f"test:v:{key}", mapping={"value": "{}"})

    return Backend(
        name,
        lambda **options: store_cache(
            RedisCacheStore(redis_client(server.url, TIMEOUT_S), "test:"), **options
        ),
        server.stop,
        junk_hash,
    )


def fake_backend() -> Backend:
    made: list[FakeCache] = []

    def make(
        *,
        clock: Callable[[], float] = time.time,
        stale_s: float = 60.0,
        lease_s: float = 5.0,
        **_: Any,
    ) -> FakeCache:
        cache = FakeCache(clock=clock, stale_s=stale_s, wait_s=lease_s)
        if made:  # one store: the first fake's
            cache.entries, cache.computing, cache.lock = made[0].entries, made[0].computing, made[0].lock
        made.append(cache)
        return cache

    def break_store() -> None:
        for cache in made:
            cache.broken = ConnectionError("cache store unreachable")

    return Backend("fake", make, break_store)


def never() -> Any:
    raise AssertionError("computed although a value was cached")


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """Start `work` in a thread; the function returned joins it and gives its result."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 - re-raised by result()
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(10)
        if failure:
            raise failure[0]
        assert outcome, "still running after 10 s"
        return outcome[0]

    return result


# ----------------------------------------------------------------- the suite


def test_a_value_is_computed_once_and_served_until_its_ttl(backend: Backend) -> None:
    clock = Clock()
    cache = backend.make(clock=clock)
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"videos": len(calls)}

    assert cache.get_or_compute("stats:alice", 10, compute) == {"videos": 1}
    clock.advance(9.9)
    assert cache.get_or_compute("stats:alice", 10, compute) == {"videos": 1}
    clock.advance(0.2)
    assert cache.get_or_compute("stats:alice", 10, compute) == {"videos": 2}
    assert (cache.hits, cache.misses) == (1, 2)


def test_every_instance_sees_the_value_and_its_expiry(backend: Backend) -> None:
    clock = Clock()
    writer, reader = backend.make(clock=clock), backend.make(clock=clock)
    writer.get_or_compute("k", 10, lambda: "first")
    assert reader.get_or_compute("k", 10, never) == "first"
    # Past its TTL and its stale time the store may still hold it (DynamoDB's TTL
    # deletes lazily, moto never): the cache's own check must not serve it.
    clock.advance(10 + 60 + 1)
    assert reader.get_or_compute("k", 10, lambda: "second") == "second"
    assert writer.get_or_compute("k", 10, never) == "second"


def test_values_come_back_as_json_and_as_copies(backend: Backend) -> None:
    cache = backend.make()
    first = cache.get_or_compute("k", 60, lambda: {"days": [("2026-12-01", 3)], "total": 3.5})
    assert first == {"days": [["2026-12-01", 3]], "total": 3.5}
    first["days"].clear()
    assert cache.get_or_compute("k", 60, never) == {"days": [["2026-12-01", 3]], "total": 3.5}


def test_a_value_that_is_not_json_is_returned_but_not_cached(backend: Backend) -> None:
    cache = backend.make()
    marker = object()
    assert cache.get_or_compute("k", 60, lambda: marker) is marker
    assert cache.get_or_compute("k", 60, lambda: "json") == "json"
    assert cache.errors == 1


def test_invalidate_makes_every_instance_compute_afresh(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    first.get_or_compute("k", 60, lambda: "old")
    first.invalidate("k")
    assert second.get_or_compute("k", 60, lambda: "new") == "new"
    assert first.get_or_compute("k", 60, never) == "new"
    first.invalidate("never-cached")


@pytest.mark.parametrize("instances", [1, 2])
def test_concurrent_callers_share_one_computation(backend: Backend, instances: int) -> None:
    caches = [backend.make() for _ in range(instances)]
    callers = 8
    calls: list[int] = []
    ready = threading.Barrier(callers)

    def compute() -> str:
        calls.append(1)
        time.sleep(0.3)
        return "value"

    def read(number: int) -> Any:
        ready.wait()
        return caches[number % instances].get_or_compute("k", 60, compute)

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(read, range(callers)))
    assert results == ["value"] * callers
    assert len(calls) == 1
    assert sum(cache.misses for cache in caches) == 1


@pytest.mark.parametrize("other", ["same instance", "other instance"])
def test_the_stale_value_is_served_while_one_caller_recomputes(backend: Backend, other: str) -> None:
    clock = Clock()
    first = backend.make(clock=clock, lease_s=PATIENT_LEASE_S)
    second = first if other == "same instance" else backend.make(clock=clock, lease_s=PATIENT_LEASE_S)
    first.get_or_compute("k", 10, lambda: "old")
    clock.advance(11)
    recompute = Held("new")
    recomputed = in_thread(lambda: first.get_or_compute("k", 10, recompute))
    assert recompute.started.wait(5)
    begun = time.monotonic()
    assert second.get_or_compute("k", 10, never) == "old"
    assert time.monotonic() - begun < QUICK_S  # waited neither for the recomputation nor the lease
    assert second.stale == 1
    recompute.finish.set()
    assert recomputed() == "new"
    assert second.get_or_compute("k", 10, never) == "new"


def test_without_a_stale_value_callers_wait_for_the_computation(backend: Backend) -> None:
    clock = Clock()
    # A lease long enough that a slow store on a busy machine is still waited for.
    first = backend.make(clock=clock, lease_s=PATIENT_LEASE_S)
    second = backend.make(clock=clock, lease_s=PATIENT_LEASE_S)
    first.get_or_compute("k", 10, lambda: "too old")
    clock.advance(10 + 60 + 1)
    recompute = Held("new")
    recomputed = in_thread(lambda: first.get_or_compute("k", 10, recompute))
    assert recompute.started.wait(5)
    threading.Timer(0.3, recompute.finish.set).start()
    assert second.get_or_compute("k", 10, never) == "new"
    assert recomputed() == "new"


def test_a_stuck_computation_holds_the_key_no_longer_than_the_lease(backend: Backend) -> None:
    stuck, other = backend.make(lease_s=0.5), backend.make(lease_s=0.5)
    hang = Held("late")
    hung = in_thread(lambda: stuck.get_or_compute("k", 60, hang))
    assert hang.started.wait(5)
    begun = time.monotonic()
    assert other.get_or_compute("k", 60, lambda: "mine") == "mine"
    assert 0.4 < time.monotonic() - begun < QUICK_S
    hang.finish.set()
    assert hung() == "late"


def test_a_failed_computation_raises_and_frees_the_key(backend: Backend) -> None:
    first, second = backend.make(lease_s=PATIENT_LEASE_S), backend.make(lease_s=PATIENT_LEASE_S)

    def fail() -> Any:
        raise ValueError("the database said no")

    with pytest.raises(ValueError, match="said no"):
        first.get_or_compute("k", 60, fail)
    begun = time.monotonic()
    assert second.get_or_compute("k", 60, lambda: "second try") == "second try"
    assert first.get_or_compute("k", 60, never) == "second try"
    assert time.monotonic() - begun < QUICK_S  # not the lease


def test_a_broken_store_degrades_to_computing(backend: Backend) -> None:
    cache = backend.make()
    cache.check()
    cache.get_or_compute("k", 60, lambda: "cached")
    backend.break_store()
    begun = time.monotonic()
    assert cache.get_or_compute("other", 60, lambda: "computed") == "computed"
    cache.invalidate("k")
    assert time.monotonic() - begun < QUICK_S  # less than one of the store client's timeouts
    assert cache.errors >= 1
    with pytest.raises(Exception):  # noqa: B017 - whatever the store's client raises
        cache.check()


# ------------------------------------------------------------ adapters only


def test_a_process_keeps_a_value_in_memory_for_at_most_its_local_ttl(adapter: Backend) -> None:
    clock = Clock()
    warm, other = adapter.make(clock=clock, local_ttl_s=5), adapter.make(clock=clock)
    warm.get_or_compute("k", 60, lambda: "old")
    other.invalidate("k")
    other.get_or_compute("k", 60, lambda: "new")
    clock.advance(4.9)
    assert warm.get_or_compute("k", 60, never) == "old"  # from memory: the store is not asked
    clock.advance(0.2)
    assert warm.get_or_compute("k", 60, never) == "new"


def test_the_in_memory_copy_never_outlives_the_values_ttl(adapter: Backend) -> None:
    clock = Clock()
    cache = adapter.make(clock=clock, local_ttl_s=5)
    cache.get_or_compute("k", 2, lambda: "old")
    clock.advance(1.9)
    assert cache.get_or_compute("k", 2, never) == "old"
    clock.advance(0.2)
    assert cache.get_or_compute("k", 2, lambda: "new") == "new"


def test_the_in_memory_layer_drops_the_least_recently_used() -> None:
    layer = LocalLayer(max_entries=2)
    layer.put("a", "1", until=100)
    layer.put("b", "2", until=100)
    assert layer.get("a", now=0) == "1"
    layer.put("c", "3", until=100)
    assert (layer.get("a", 0), layer.get("b", 0), layer.get("c", 0)) == ("1", None, "3")
    assert layer.get("a", now=100) is None
    assert len(layer) == 1


def test_a_dead_holders_lease_runs_out(adapter: Backend) -> None:
    cache = adapter.make(lease_s=0.5)
    assert cache.store.acquire("k", "a holder that died", time.time(), 0.5)
    begun = time.monotonic()
    assert cache.get_or_compute("k", 60, lambda: "value") == "value"
    assert 0.4 < time.monotonic() - begun < QUICK_S
    # The cache gave its own lease back.
    assert cache.store.acquire("k", "next", time.time(), 5)


def test_only_the_holder_gives_a_lease_back(adapter: Backend) -> None:
    store = adapter.make().store
    assert store.acquire("k", "first", time.time(), 5)
    store.release("k", "second")
    assert not store.acquire("k", "second", time.time(), 5)
    store.release("k", "first")
    assert store.acquire("k", "second", time.time(), 5)


def test_an_unreadable_entry_is_computed_afresh_and_replaced(adapter: Backend) -> None:
    cache = adapter.make()
    adapter.write_junk("fields missing")
    assert cache.get_or_compute("fields missing", 60, lambda: "fixed") == "fixed"
    now = time.time()
    cache.store.write("not json", Entry("{half", now + 60, now + 120), now)
    assert cache.get_or_compute("not json", 60, lambda: "fixed too") == "fixed too"
    assert cache.errors == 2
    assert cache.get_or_compute("fields missing", 60, never) == "fixed"
    assert cache.get_or_compute("not json", 60, never) == "fixed too"


def test_long_keys_and_big_values_do_not_upset_the_store(adapter: Backend) -> None:
    first, second = adapter.make(), adapter.make()
    long_key = "stats:" + "x" * 5000  # DynamoDB keys hold 2048 bytes
    assert first.get_or_compute(long_key, 60, lambda: 1) == 1
    assert second.get_or_compute(long_key, 60, never) == 1
    big = "v" * 400_000  # DynamoDB items hold 400 KB
    assert first.get_or_compute("big", 60, lambda: big) == big
    assert first.errors == 1
    assert second.get_or_compute("big", 60, lambda: "not stored") == "not stored"
    # Neither was taken for a failure of the store: it is used as before.
    first.get_or_compute("small", 60, lambda: 2)
    assert second.get_or_compute("small", 60, never) == 2


def test_after_a_failure_the_store_is_left_alone_for_a_while(adapter: Backend) -> None:
    clock = Clock()
    cache = adapter.make(clock=clock, retry_after_s=5)
    adapter.break_store()
    assert cache.get_or_compute("a", 60, lambda: 1) == 1
    assert cache.get_or_compute("b", 60, lambda: 2) == 2
    assert cache.errors == 1  # the second read did not try the store
    clock.advance(5.1)
    assert cache.get_or_compute("c", 60, lambda: 3) == 3
    assert cache.errors == 2


def test_what_happens_is_counted_as_metrics(adapter: Backend) -> None:
    clock, counts = Clock(), Counts()
    cache, other = adapter.make(clock=clock, count=counts), adapter.make(clock=clock)
    cache.get_or_compute("k", 10, lambda: "old")
    cache.get_or_compute("k", 10, never)
    clock.advance(11)
    recompute = Held("new")
    recomputed = in_thread(lambda: other.get_or_compute("k", 10, recompute))
    assert recompute.started.wait(5)
    assert cache.get_or_compute("k", 10, never) == "old"
    recompute.finish.set()
    assert recomputed() == "new"
    adapter.break_store()
    cache.get_or_compute("other", 10, lambda: "computed")
    assert counts.seen == {
        METRICS["hits"]: 1,
        METRICS["misses"]: 2,
        METRICS["stale"]: 1,
        METRICS["errors"]: 1,
    }
    assert (cache.hits, cache.misses, cache.stale, cache.errors) == (1, 2, 1, 1)


def test_with_moto_stopped_reads_are_computed_quickly(settings: Settings) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        ensure_table(local_client("dynamodb", endpoint, "us-east-1"), "cache", hash_key="id")
        cache = store_cache(DynamoCacheStore(dynamo_client(settings, endpoint), "cache"))
        assert cache.get_or_compute("k", 60, lambda: "cached") == "cached"
    finally:
        server.stop()
    begun = time.monotonic()
    assert cache.get_or_compute("k", 60, lambda: "computed") == "computed"
    assert time.monotonic() - begun < 2  # refused at once, and not tried again after a back-off
    assert cache.errors == 1
    with pytest.raises(Exception):  # noqa: B017 - botocore's connection error
        cache.check()


def test_the_composition_root_builds_the_dynamodb_cache(settings: Settings) -> None:
    cache = Container(settings).cache
    assert isinstance(cache, StoreCache) and isinstance(cache.store, DynamoCacheStore)
    cache.check()
    key = f"root-{uuid.uuid4().hex}"
    assert cache.get_or_compute(key, 60, lambda: {"n": 1}) == {"n": 1}
    assert cache.store.read(key) is not None


def test_the_composition_root_builds_the_redis_cache(settings: Settings, redis_server: RedisServer) -> None:
    chosen = settings.model_copy(update={"cache_backend": "redis", "redis_url": redis_server.url})
    cache = Container(chosen).cache
    assert isinstance(cache, StoreCache) and isinstance(cache.store, RedisCacheStore)
    cache.check()
    assert cache.get_or_compute("k", 60, lambda: {"n": 1}) == {"n": 1}
    stored = redis_client(redis_server.url, TIMEOUT_S).hgetall(f"vidline:{settings.stage}:cache:v:k")
    assert stored[b"value"] == b'{"n": 1}'


@pytest.fixture
def silent_store() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.mark.parametrize("backend_name", ["dynamodb", "redis"])
def test_a_store_that_hangs_costs_one_short_timeout(
    settings: Settings, silent_store: SilentServer, backend_name: str
) -> None:
    hanging = settings.model_copy(
        update={
            "cache_backend": backend_name,
            "aws_endpoint_url": f"http://127.0.0.1:{silent_store.port}",
            "redis_url": f"redis://127.0.0.1:{silent_store.port}/0",
            "cache_timeout_s": 0.3,
        }
    )
    cache = Container(hanging).cache
    begun = time.monotonic()
    assert cache.get_or_compute("k", 60, lambda: "computed") == "computed"
    # One attempt (one connection) of 0.3 s: no retries, no back-off, and
    # far from the client's default timeouts.
    assert silent_store.connections() == 1
    assert time.monotonic() - begun < 3
    assert isinstance(cache, StoreCache) and cache.errors == 1
