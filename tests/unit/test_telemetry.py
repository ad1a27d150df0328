"""chalicelib.telemetry: correlation ids, log formats and metrics, in-process."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import telemetry
from chalicelib.settings import Settings


class Output:
    """What telemetry writes to stdout (pytest's capture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen = ""

    def getvalue(self) -> str:
        self._seen += self._capsys.readouterr().out
        return self._seen


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Iterator[Output]:
    """What telemetry writes to stdout; the process's own set-up afterwards."""
    library = logging.getLogger(telemetry.LIBRARY_LOGGER)
    before = list(library.handlers), library.propagate, library.level
    capsys.readouterr()
    # Earlier tests may have called services directly, outside any handler,
    # leaving their video's id as this thread's correlation id.
    with telemetry.correlated(None):
        yield Output(capsys)
    telemetry.configure(Settings(), "vidline-test")
    library.handlers, library.propagate = before[0], before[1]
    library.setLevel(before[2])


def lines(stream: Output) -> list[str]:
    return stream.getvalue().splitlines()


def emf(stream: Output) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream) if line.startswith('{"_aws"')]


def test_text_lines_show_time_level_correlation_logger_and_message(output: Output) -> None:
    telemetry.configure(Settings(log_format="text"), "vidline-test")
    log = logging.getLogger("chalicelib.example")
    log.info("before any video")
    with telemetry.correlated("v-1"):
        log.warning("about %s", "v-1")

    first, second = lines(output)
    assert first.endswith("INFO    [-] chalicelib.example: before any video")
    assert second.endswith("WARNING [v-1] chalicelib.example: about v-1")
    assert second[2] == ":" and second[5] == ":" and second[8] == "."  # 12:34:56.789


def test_json_lines_carry_the_correlation_id_service_and_logger(output: Output) -> None:
    telemetry.configure(Settings(log_format="json"), "vidline-test")
    with telemetry.correlated("v-2"):
        logging.getLogger("chalicelib.example").info("hello")

    (line,) = lines(output)
    entry = json.loads(line)
    assert entry["correlation_id"] == "v-2"
    assert entry["service"] == "vidline-test" and entry["logger"] == "chalicelib.example"
    assert entry["message"] == "hello" and entry["level"] == "INFO"


def test_a_handler_flushes_its_metrics_and_forgets_its_correlation_id_even_when_it_fails(
    output: Output,
) -> None:
    telemetry.configure(Settings(stage="prod"), "vidline-test")

    def failing(event: Any) -> None:
        telemetry.set_correlation_id("v-3")
        telemetry.count("UploadsCreated")
        telemetry.seconds("EncodeSeconds", 2.5)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        telemetry.handle(None, failing)

    assert telemetry.correlation_id() is None
    (blob,) = emf(output)
    assert blob["stage"] == "prod" and blob["UploadsCreated"] == [1.0] and blob["EncodeSeconds"] == [2.5]
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["stage"]]
    assert {m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {"Count", "Seconds"}
    telemetry.flush_metrics()
    assert len(emf(output)) == 1  # nothing left to write


def test_a_failure_is_counted_in_total_and_by_its_reason(output: Output) -> None:
    telemetry.configure(Settings(stage="prod"), "vidline-test")
    telemetry.handle(None, lambda event: telemetry.video_failed(telemetry.FailureReason.STUCK))

    by_reason, total = emf(output)
    assert by_reason["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["stage", "reason"]]
    assert (by_reason["reason"], by_reason["VideosFailed"]) == ("stuck", [1.0])
    assert total["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["stage"]]
    assert total["VideosFailed"] == [1.0]


def test_locally_metrics_are_log_lines(output: Output) -> None:
    telemetry.configure(Settings(stage="local", log_format="text", metrics_output="log"), "vidline-test")
    with telemetry.correlated("v-4"):
        telemetry.handle(None, lambda event: telemetry.count("EmailsSent"))

    assert emf(output) == []
    (line,) = lines(output)
    assert "[-] chalicelib.telemetry: metrics EmailsSent=1 {'stage': 'local'}" in line


def test_a_thread_started_in_this_context_logs_under_the_same_id() -> None:
    seen: list[str | None] = []
    with telemetry.correlated("v-5"):
        thread = threading.Thread(
            target=telemetry.in_this_context(lambda: seen.append(telemetry.correlation_id()))
        )
        thread.start()
        thread.join()
    plain = threading.Thread(target=lambda: seen.append(telemetry.correlation_id()))
    plain.start()
    plain.join()
    assert seen == ["v-5", None]
