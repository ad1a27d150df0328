"""The cache's logic, the same on every store: TTL, stale values, leases, fallback.

`StoreCache` implements the `Cache` port on any `CacheStore` (DynamoDB or
Redis, both shared by every process), with a small in-memory layer in front so
a warm Lambda does not ask the store twice. A value is fresh for its TTL, then
kept `stale_s` longer: while one caller recomputes it (holding the key's lease
in the store, so one computation runs across threads, processes and Lambdas),
the others get the stale value, or wait at most a lease for the new one. A
store that fails is skipped for `retry_after_s`; callers get computed values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How often a caller waiting for another process's computation looks again.
POLL_S = 0.05
# A DynamoDB item holds at most 400 KB: a bigger value is kept in memory only.
MAX_STORED_BYTES = 350_000
# DynamoDB keys hold at most 2048 bytes: a longer key is stored under its digest.
MAX_KEY_BYTES = 512

# The metric each counter is reported as (chalicelib.telemetry.count).
METRICS = {"hits": "CacheHits", "misses": "CacheMisses", "stale": "CacheStaleServes", "errors": "CacheErrors"}


@dataclass(frozen=True)
class Entry:
    """A value in the store: its JSON text, fresh until `fresh_until`, kept until
    `stale_until` (epoch seconds of the cache's clock)."""

    value: str
    fresh_until: float
    stale_until: float


class StoreFailed:
    """What a call to the store answers when it raised (see StoreCache._attempt)."""


class CorruptEntry(Exception):
    """The store holds something under the key that is not an entry."""


class CacheStore(Protocol):
    """Where entries and leases live, shared by every process that caches.
    Any exception but CorruptEntry means the store cannot be used right now."""

    def read(self, key: str) -> Entry | None:
        """The key's entry (possibly past `stale_until`: expiry may be lazy), or None."""
        ...

    def write(self, key: str, entry: Entry, now: float) -> None:
        """Store the entry (written at `now`), replacing any."""
        ...

    def delete(self, key: str) -> None: ...

    def acquire(self, key: str, holder: str, now: float, lease_s: float) -> bool:
        """Take the key's lease for `lease_s` seconds unless another holder has it."""
        ...

    def release(self, key: str, holder: str) -> None:
        """Give the lease back, if `holder` still has it."""
        ...

    def check(self) -> None: ...


def store_key(key: str) -> str:
    """`key` as the store holds it: itself, or its SHA-256 if it is long."""
    encoded = key.encode()
    if len(encoded) <= MAX_KEY_BYTES:
        return key
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


class LocalLayer:
    """A bounded map of JSON texts, each until its own deadline; the least
    recently used goes first when full."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> str | None:
        """The text under `key` if its deadline has not passed."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if now >= found[1]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: str, text: str, until: float) -> None:
        with self._lock:
            self._entries[key] = (text, until)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class StoreCache:
    """The Cache port on a shared store; `hits`, `misses`, `stale` and `errors`
    count what happened (and go to `count` as metrics, see METRICS)."""

    def __init__(
        self,
        store: CacheStore,
        *,
        count: Callable[[str, int], None],
        clock: Callable[[], float] = time.time,
        local_ttl_s: float = 5.0,
        local_max_entries: int = 1024,
        stale_s: float = 60.0,
        lease_s: float = 5.0,
        retry_after_s: float = 5.0,
    ) -> None:
        self.store = store
        self._count = count
        self._clock = clock
        self._local = LocalLayer(local_max_entries)
        self._local_ttl_s = local_ttl_s
        self._stale_s = stale_s
        self._lease_s = lease_s
        self._retry_after_s = retry_after_s
        # Keys this process is computing (or waiting on another process for):
        # its other threads wait on the event instead of asking the store.
        self._flights: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._store_down_until = float("-inf")
        self.hits = self.misses = self.stale = self.errors = 0

    def get_or_compute(self, key: str, ttl_s: int, compute: Callable[[], Any]) -> Any:
        """The cached value of `key` (see the `Cache` port); never raises for the
        cache's sake, only what `compute` raises."""
        deadline = time.monotonic() + self._lease_s
        flight: threading.Event | None = None  # ours, while we hold the key in this process
        try:
            while True:
                text = self._local.get(key, self._clock())
                if text is not None:
                    self._counted("hits")
                    return json.loads(text)
                if self._clock() < self._store_down_until:
                    return self._compute_and_keep(key, ttl_s, compute, store=False)
                entry = self._attempt("read", key, self._read, key)
                if isinstance(entry, StoreFailed):
                    return self._compute_and_keep(key, ttl_s, compute, store=False)
                now = self._clock()
                if entry is not None and now < entry.fresh_until:
                    self._keep_locally(key, entry, now)
                    self._counted("hits")
                    return json.loads(entry.value)
                if flight is None:
                    flight, ours = self._join_flight(key)
                    if not ours:
                        # Another thread of ours is on it: the stale value now, or its value soon.
                        if entry is not None:
                            self._counted("stale")
                            return json.loads(entry.value)
                        other, flight = flight, None
                        if not other.wait(max(0.0, deadline - time.monotonic())):
                            break
                        continue
                holder = uuid.uuid4().hex
                won = self._attempt(
                    "lease", key, self.store.acquire, store_key(key), holder, now, self._lease_s
                )
                if isinstance(won, StoreFailed):
                    return self._compute_and_keep(key, ttl_s, compute, store=False)
                if won:
                    try:
                        return self._compute_and_keep(key, ttl_s, compute, store=True)
                    finally:
                        # If this fails, the lease runs out by itself.
                        self._attempt("release", key, self.store.release, store_key(key), holder)
                # Another process computes it.
                if entry is not None:
                    self._counted("stale")
                    return json.loads(entry.value)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(POLL_S, remaining))
            # Waited a whole lease: whoever computes is stuck or gone, so compute too.
            return self._compute_and_keep(key, ttl_s, compute, store=True)
        finally:
            if flight is not None and self._flights.get(key) is flight:
                with self._lock:
                    del self._flights[key]
                flight.set()

    def invalidate(self, key: str) -> None:
        """Forget `key` here and in the store (other processes' in-memory copies
        live on for at most `local_ttl_s`)."""
        self._local.discard(key)
        self._attempt("invalidate", key, self.store.delete, store_key(key))

    def check(self) -> None:
        """Raise if the store cannot be reached."""
        self.store.check()

    def _read(self, key: str) -> Entry | None:
        try:
            entry = self.store.read(store_key(key))
            if entry is not None:
                json.loads(entry.value)
        except (CorruptEntry, ValueError) as error:
            # Bad data under the key: computed afresh, and overwritten.
            self._counted("errors")
            logger.warning("cache entry %r is unreadable (%s); computing it", key, error)
            return None
        if entry is None or self._clock() >= entry.stale_until:
            return None  # the store's own expiry (DynamoDB TTL) is lazy
        return entry

    def _join_flight(self, key: str) -> tuple[threading.Event, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = threading.Event()
            return flight, True

    def _compute_and_keep(self, key: str, ttl_s: int, compute: Callable[[], Any], *, store: bool) -> Any:
        value = compute()
        self._counted("misses")
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as error:
            self._counted("errors")
            logger.warning("cache value of %r is not JSON (%s); not cached", key, error)
            return value
        now = self._clock()
        entry = Entry(text, now + ttl_s, now + ttl_s + self._stale_s)
        if store and len(text) > MAX_STORED_BYTES:  # json.dumps writes ASCII: a char is a byte
            self._counted("errors")
            logger.warning("cache value of %r is %d bytes, too big to store; kept in memory", key, len(text))
        elif store:
            self._attempt("write", key, self.store.write, store_key(key), entry, now)
        self._keep_locally(key, entry, now)
        # What a hit would answer: JSON's types, and a copy the caller may change.
        return json.loads(text)

    def _keep_locally(self, key: str, entry: Entry, now: float) -> None:
        if self._local_ttl_s > 0:
            self._local.put(key, entry.value, min(entry.fresh_until, now + self._local_ttl_s))

    def _attempt(self, action: str, key: str, call: Callable[..., T], *args: Any) -> T | StoreFailed:
        """`call(*args)`'s answer, or StoreFailed (logged, counted, and the store
        left alone for `retry_after_s`) if it raised."""
        try:
            return call(*args)
        except Exception as error:  # noqa: BLE001 - no failure of the store may reach the caller
            self._counted("errors")
            self._store_down_until = self._clock() + self._retry_after_s
            logger.warning(
                "cache store failed to %s %r (%s: %s); computing without it for %.0f s",
                action,
                key,
                type(error).__name__,
                error,
                self._retry_after_s,
            )
            return StoreFailed()

    def _counted(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
        try:
            self._count(METRICS[counter], 1)
        except Exception:  # metrics must not break a read
            logger.debug("could not count %s", counter, exc_info=True)
