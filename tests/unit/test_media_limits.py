"""Limits an upload cannot talk its way around, found by review after the hardening.

* A high frame rate cannot make the duration cap meaningless: renditions get
  at most ``MAX_FRAME_RATE`` frames a second.
* Text an upload makes ffmpeg print cannot pass for "our disk is full" (a
  retry) or throw away a good encode that exited 0.
* A huge first frame costs the probe no memory: the probe caps pixels too.
* Audio the AAC encoder cannot take as it is (16 channels) is converted, and
  an encoder that refuses a stream is the file's problem, not a retry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.media import ffmpeg as ffmpeg_module
from chalicelib.media.ffmpeg import FfmpegRun, classify_ffmpeg_run, find_ffmpeg
from chalicelib.media.ladder import MAX_FRAME_RATE
from chalicelib.ports import MediaProcessingError, MediaRejected
from tests.media_tools import ffmpeg, transcode

ROOT = Path(__file__).resolve().parents[2]
# What the reviewer's file made ffmpeg print: an MKV track whose CodecID is this text.
INJECTED = "[in#0 @ 0x55d0] Unknown/unsupported AVCodecID S_Disk quota exceeded.\n"


def run(returncode: int, stderr: str) -> FfmpegRun:
    return FfmpegRun(returncode=returncode, stderr=stderr, timed_out=False, wall_s=1.0)


def stream_line(path: Path, kind: str) -> str:
    completed = subprocess.run(
        [find_ffmpeg(""), "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    )
    return next(line for line in completed.stderr.splitlines() if f": {kind}:" in line)


def test_a_high_frame_rate_is_encoded_at_no_more_than_the_cap(tmp_path: Path) -> None:
    source = tmp_path / "fast.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=1000:duration=2"),
        *("-c:v", "libx264", "-preset", "ultrafast", str(source)),
    )
    result = transcode(str(source), tmp_path / "out")

    rate = re.search(r"(\d+(?:\.\d+)?) fps", stream_line(Path(result.mp4_path), "Video"))
    assert rate is not None and float(rate[1]) <= MAX_FRAME_RATE
    assert result.duration_s == pytest.approx(2.0, abs=0.1)


def test_a_normal_frame_rate_is_kept(tmp_path: Path) -> None:
    source = tmp_path / "normal.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", str(source))

    result = transcode(str(source), tmp_path / "out")

    assert " 25 fps" in stream_line(Path(result.mp4_path), "Video")


@pytest.mark.parametrize("returncode", [0, 1])
def test_text_from_the_file_cannot_pose_as_a_full_disk(returncode: int, tmp_path: Path) -> None:
    verdict = classify_ffmpeg_run(run(returncode, INJECTED), out_dir=str(tmp_path))

    assert not (isinstance(verdict, MediaProcessingError) and "disk" in str(verdict))
    if returncode == 0:
        assert verdict is None  # a good encode is kept, not thrown away and retried


def test_a_really_full_disk_is_ours_to_retry_even_with_exit_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 0, 0, 0, 0, 255))
    monkeypatch.setattr(ffmpeg_module.os, "statvfs", lambda path: full)
    stderr = "[out#0/mp4 @ 0x1] Error writing trailer: No space left on device\n"

    verdict = classify_ffmpeg_run(run(0, stderr), out_dir=str(tmp_path))

    assert isinstance(verdict, MediaProcessingError) and "disk" in str(verdict)


def test_the_inputs_own_lines_cannot_pose_as_running_out_of_memory() -> None:
    injected = "[matroska,webm @ 0x1] Unknown entry: Cannot allocate memory\n"

    verdict = classify_ffmpeg_run(run(183, injected + "Invalid data found when processing input\n"))

    assert isinstance(verdict, MediaRejected)


def test_an_encoder_that_refuses_the_decoded_stream_is_the_files_problem() -> None:
    stderr = "[aost#0:1/aac @ 0x1] Error while opening encoder - maybe incorrect parameters\n"

    verdict = classify_ffmpeg_run(run(234, stderr))

    assert isinstance(verdict, MediaRejected) and "cannot convert" in verdict.reason


def test_sixteen_channel_audio_is_encoded_as_stereo(tmp_path: Path) -> None:
    source = tmp_path / "surround.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1"),
        *("-f", "lavfi", "-i", "anullsrc=channel_layout=hexadecagonal:sample_rate=96000"),
        *("-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le", str(source)),
    )

    result = transcode(str(source), tmp_path / "out")

    audio = stream_line(Path(result.mp4_path), "Audio")
    assert "aac" in audio and "stereo" in audio and "48000 Hz" in audio


@pytest.fixture(scope="module")
def huge_first_frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "color=c=gray:size=8192x8192:rate=1:duration=1"),
        *("-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast", str(path)),
    )
    return path


def probe_peak_rss_kib(path: Path, max_pixels: int | None) -> int:
    """Probe in a fresh interpreter; the peak RSS of the ffmpeg it started."""
    script = (
        "import resource\n"
        "from chalicelib.media import FfmpegTranscoder, find_ffmpeg\n"
        "from chalicelib.ports import MediaRejected, MediaSource\n"
        "try:\n"
        f"    source = MediaSource({str(path)!r})\n"
        f"    FfmpegTranscoder(find_ffmpeg(''), '').probe(source, max_pixels={max_pixels!r})\n"
        "except MediaRejected as rejected:\n"
        "    print(rejected.reason)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    *said, peak = completed.stdout.strip().splitlines()
    if max_pixels is not None:
        assert said == ["This video has frames larger than the 4096×4096 pixels allowed."]
    return int(peak)


def test_a_huge_first_frame_is_refused_by_the_probe_without_decoding_it(huge_first_frame: Path) -> None:
    capped = probe_peak_rss_kib(huge_first_frame, max_pixels=4096 * 4096)
    uncapped = probe_peak_rss_kib(huge_first_frame, max_pixels=None)  # the control

    assert uncapped > capped + 64 * 1024, (capped, uncapped)
