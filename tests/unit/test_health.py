"""Health checks on fakes: every dependency in turn broken, hanging, or fine."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest

from chalicelib.health import HealthService
from chalicelib.settings import Settings
from tests.fakes import FakePorts

CHECKS = {
    "database",
    "uploads_bucket",
    "media_bucket",
    "jobs_queue",
    "dead_letter_queue",
    "cache",
    "identity",
    "email",
    "cdn_signing_key",
}


def health_of(fakes: FakePorts, timeout_s: float = 2.0) -> HealthService:
    return HealthService(
        videos=fakes.videos,
        uploads=fakes.uploads,
        media=fakes.media,
        jobs=fakes.jobs,
        cache=fakes.cache,
        identity=fakes.identity,
        mailer=fakes.mailer,
        media_urls=fakes.media_urls,
        timeout_s=timeout_s,
    )


def break_check(fakes: FakePorts, name: str, monkeypatch: pytest.MonkeyPatch, check: object) -> None:
    """Make the port behind the check `name` run `check` instead of its own."""
    port, method = {
        "database": (fakes.videos, "check"),
        "uploads_bucket": (fakes.uploads, "check"),
        "media_bucket": (fakes.media, "check"),
        "jobs_queue": (fakes.jobs, "check"),
        "dead_letter_queue": (fakes.jobs, "dead_letter_depth"),
        "cache": (fakes.cache, "check"),
        "identity": (fakes.identity, "check"),
        "email": (fakes.mailer, "check"),
        "cdn_signing_key": (fakes.media_urls, "check"),
    }[name]
    monkeypatch.setattr(port, method, check)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test, so a hung check's thread ends."""
    event = threading.Event()
    yield event
    event.set()


def test_every_check_is_ok_when_every_dependency_answers() -> None:
    report = health_of(FakePorts()).run()
    assert report.checks == dict.fromkeys(CHECKS, "ok")
    assert report.healthy and report.failing == []
    assert report.dead_letters == 0 and report.warnings == []


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_failing_dependency_is_named_and_the_others_stay_ok(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = FakePorts()

    def fail() -> None:
        raise ConnectionError("no route to host")

    break_check(fakes, name, monkeypatch, fail)
    report = health_of(fakes).run()
    assert not report.healthy
    assert report.failing == [name]
    assert report.checks[name] == "failing"
    assert all(value == "ok" for key, value in report.checks.items() if key != name)


@pytest.mark.parametrize("name", ["database", "cache", "jobs_queue"])
def test_a_hanging_dependency_fails_its_check_when_the_time_is_up(
    name: str, monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    fakes = FakePorts()
    break_check(fakes, name, monkeypatch, lambda: release.wait(30))

    started = time.monotonic()
    report = health_of(fakes, timeout_s=0.5).run()
    elapsed = time.monotonic() - started

    assert report.failing == [name]
    assert elapsed < 1.5, elapsed


def test_checks_run_in_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakePorts()
    for name in CHECKS - {"dead_letter_queue"}:
        break_check(fakes, name, monkeypatch, lambda: time.sleep(0.3))

    started = time.monotonic()
    report = health_of(fakes, timeout_s=2.0).run()

    assert report.healthy
    assert time.monotonic() - started < 1.0  # one after another: 8 × 0.3 s


def test_dead_letters_are_reported_as_a_warning_not_a_failure() -> None:
    fakes = FakePorts()
    fakes.jobs.dead_letters = 3
    report = health_of(fakes).run()
    assert report.healthy
    assert report.dead_letters == 3
    assert report.warnings == ["3 upload job(s) in the dead-letter queue: their videos failed every attempt"]


def test_the_container_checks_the_ports_it_was_given() -> None:
    fakes = FakePorts()
    fakes.jobs.broken = ConnectionError("queue gone")
    report = fakes.container(Settings(health_check_timeout_s=1.0)).health.run()
    assert report.failing == ["jobs_queue", "dead_letter_queue"]
    assert report.dead_letters is None


def test_a_flood_of_calls_costs_the_dependencies_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakePorts()
    runs: list[float] = []

    def slow_database() -> None:
        runs.append(time.monotonic())
        time.sleep(0.2)

    break_check(fakes, "database", monkeypatch, slow_database)
    service = dataclasses.replace(health_of(fakes), reuse_s=60.0)

    callers = [threading.Thread(target=service.run) for _ in range(10)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert service.run().healthy

    assert len(runs) == 1


def test_without_reuse_every_call_runs_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakePorts()
    runs: list[int] = []
    break_check(fakes, "database", monkeypatch, lambda: runs.append(1))
    service = health_of(fakes)
    service.run()
    service.run()
    assert len(runs) == 2
