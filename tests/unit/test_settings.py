"""Settings read from the environment: the HLS ladder and its validation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from chalicelib.settings import Settings
from devstack.client import ROOT


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_default_ladder_is_1080_720_480_360_with_the_mp4_at_720(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDLINE_LADDER", "VIDLINE_RENDITION_SHORT_SIDE_PX", "VIDLINE_HLS_SEGMENT_S"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.ladder == (1080, 720, 480, 360)
    assert settings.rendition_short_side_px == 720
    assert settings.hls_segment_s == 2.0


@pytest.mark.parametrize(
    ("value", "ladder"),
    [
        ("1080,720,480,360", (1080, 720, 480, 360)),
        ("1080, 720", (1080, 720)),
        (" 2160 ,1440,1080 ", (2160, 1440, 1080)),
        ("360,720", (720, 360)),  # kept largest first whatever the order given
        ("720p,360p", (720, 360)),
        ("144", (144,)),
        ("4320", (4320,)),
    ],
)
def test_the_ladder_is_read_from_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, value: str, ladder: tuple[int, ...]
) -> None:
    assert settings_with(monkeypatch, VIDLINE_LADDER=value).ladder == ladder


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "names no rung"),
        (" , ", "names no rung"),
        ("1080,720,720", "repeat"),
        ("720,720p", "repeat"),
        ("142", "outside 144..4320"),
        ("8640,1080", "outside 144..4320"),
        ("0", "outside 144..4320"),
        ("-720", "outside 144..4320"),
        ("721", "odd"),
        ("1080;720", "integer"),
        ("hd", "integer"),
        ("720.5", "integer"),
    ],
)
def test_a_bad_ladder_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings_with(monkeypatch, VIDLINE_LADDER=value)
    assert "ladder" in str(refused.value) and problem in str(refused.value)


@pytest.mark.parametrize("value", ["0.2", "30", "two"])
def test_the_segment_length_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValidationError):
        settings_with(monkeypatch, VIDLINE_HLS_SEGMENT_S=value)
    assert settings_with(monkeypatch, VIDLINE_HLS_SEGMENT_S="4").hls_segment_s == 4.0


def test_a_process_with_a_bad_ladder_stops_at_start_up_saying_why() -> None:
    # Both apps call get_settings() as they are imported, before serving anything.
    env = {**os.environ, "VIDLINE_LADDER": "1080,720,100"}
    started = subprocess.run(
        [sys.executable, "-c", "from chalicelib.settings import get_settings; get_settings()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "VIDLINE_LADDER: rung 100 is outside 144..4320 pixels" in started.stderr
