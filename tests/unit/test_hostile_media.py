"""Hostile and lying uploads against the real ffmpeg: each file is made here, at test time.

* Files that name other files (DASH, HLS, ffconcat, IMF, SDP, a QuickTime
  reference movie) are rejected having read nothing but themselves. The file
  each one names is a witness: a FIFO (or, for SDP, a UDP port) that notices
  being opened. Opening a FIFO to read blocks until a writer comes, so the
  witness cannot miss an open: it sees the blocked reader, opens the writing
  end, closes it, and the reader gets an empty file. A control runs plain
  ffmpeg on the same file and shows the witness does see it being followed.
* Headers that lie about the duration or the picture size meet limits that
  hold while decoding.
* ffmpeg's endings are sorted into "the file is bad" and "try again".
* ffmpeg dies with the process that started it.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.media.ffmpeg import (
    DURATION_TOLERANCE_S,
    FfmpegRun,
    classify_ffmpeg_run,
    judge_decoded_duration,
    untrusted_input_args,
)
from chalicelib.ports import MediaInfo, MediaProcessingError, MediaRejected, ObjectChanged
from chalicelib.settings import DEFAULT_CONTENT_TYPES
from tests.hostile_files import HOSTILE, Hostile
from tests.media_tools import (
    ffmpeg,
    ffmpeg_children_of,
    ffmpeg_exe,
    make_clip,
    make_resolution_bomb,
    probe,
    set_mkv_header_duration,
    transcode,
)

ROOT = Path(__file__).resolve().parents[2]


def encode_as_worker(
    path: Path,
    out_dir: Path,
    *,
    info: MediaInfo | None = None,
    max_duration_s: float = 30 * 60,
    max_pixels: int = 4096 * 4096,
) -> float:
    """Encode ``path`` (probed unless ``info`` is given); return the true duration."""
    result = transcode(str(path), out_dir, info=info, max_duration_s=max_duration_s, max_pixels=max_pixels)
    return result.duration_s


def assert_reason_for_people(rejected: MediaRejected, tmp_path: Path) -> None:
    reason = rejected.reason
    assert reason.endswith(".") and len(reason.split()) >= 6
    assert str(tmp_path) not in reason and "/" not in reason
    assert not any(jargon in reason.lower() for jargon in ("ffmpeg", "demuxer", "whitelist", "dref"))


# ------------------------------------------------- files that name other files


@pytest.fixture(params=HOSTILE, ids=lambda build: build.__name__)
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hostile]:
    made: Hostile = request.param(tmp_path)
    yield made
    made.witness.close()


def test_a_file_naming_other_files_is_rejected_by_probe_having_read_only_itself(
    hostile: Hostile, tmp_path: Path
) -> None:
    started = time.monotonic()

    with pytest.raises(MediaRejected) as rejected:
        probe(str(hostile.path))

    assert time.monotonic() - started < 5  # nothing blocked on the witness
    assert not hostile.witness.opened
    assert "refers to other files" in rejected.value.reason
    assert_reason_for_people(rejected.value, tmp_path)


def test_encode_too_never_follows_what_a_file_names(hostile: Hostile, tmp_path: Path) -> None:
    # As if probe had been given another file (or skipped): encode opens the
    # source with the same allow-lists, here with the probe's demuxer forced.
    container = "mov,mp4,m4a,3gp,3g2,mj2" if hostile.path.suffix == ".mov" else ""
    info = MediaInfo(
        duration_s=2.0, width=160, height=120, video_codec="h264", audio_codec=None, rotation=0,
        container=container,
    )  # fmt: skip

    with pytest.raises(MediaRejected) as rejected:
        encode_as_worker(hostile.path, tmp_path / "out", info=info)

    assert not hostile.witness.opened
    assert_reason_for_people(rejected.value, tmp_path)
    assert os.listdir(tmp_path / "out") == []


def test_control_plain_ffmpeg_follows_what_the_file_names(hostile: Hostile) -> None:
    """Without our options ffmpeg opens the named file: the witness sees it, so the tests above can fail."""
    proc = subprocess.Popen(
        [
            ffmpeg_exe(), "-hide_banner", "-nostdin", *hostile.follow_options,
            "-i", f"file:{hostile.path}", "-f", "null", "-",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not hostile.witness.opened and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the witness may still be recording an open of the last moment
    finally:
        proc.kill()
        proc.wait()

    assert hostile.witness.opened


def test_an_input_may_open_local_files_only(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, size="64x64", audio=False)
    inline = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    ffmpeg("-i", inline, "-f", "null", "-")  # control: plain ffmpeg reads a data: URI

    refused = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", *untrusted_input_args(inline), "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert refused.returncode != 0
    assert "Protocol 'data' not on whitelist 'file'" in refused.stderr
    assert isinstance(classify_ffmpeg_run(FfmpegRun(refused.returncode, refused.stderr)), MediaRejected)


@pytest.mark.parametrize(
    ("container", "forced"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", ["-f", "mov", "-enable_drefs", "0", "-use_absolute_path", "0"]),
        ("matroska,webm", ["-f", "matroska"]),
        ("", []),  # unknown: the allow-lists alone
    ],
)
def test_encode_reads_a_source_with_the_demuxer_the_probe_found(container: str, forced: list[str]) -> None:
    args = untrusted_input_args("file:/x", container=container)

    whitelists = ["-format_whitelist", "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm", "-protocol_whitelist", "file"]
    assert args == [*whitelists, *forced, "-i", "file:/x"]


# ------------------------------------------------------------ accepted formats

CONTAINER_SAMPLES: dict[str, tuple[str, list[str]]] = {
    # content type -> (file name, codec options)
    "video/mp4": ("clip.mp4", ["-c:v", "libx264", "-c:a", "aac"]),
    "video/quicktime": ("clip.mov", ["-c:v", "libx264", "-c:a", "aac"]),
    "video/x-matroska": ("clip.mkv", ["-c:v", "libx264", "-c:a", "aac"]),
    "video/webm": (
        "clip.webm",
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"],
    ),
}


def test_every_accepted_content_type_has_a_sample() -> None:
    assert set(CONTAINER_SAMPLES) == set(DEFAULT_CONTENT_TYPES)


@pytest.mark.parametrize("content_type", sorted(CONTAINER_SAMPLES))
def test_the_containers_we_accept_still_probe_and_encode(content_type: str, tmp_path: Path) -> None:
    name, codecs = CONTAINER_SAMPLES[content_type]
    path = tmp_path / name
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
        "-f", "lavfi", "-i", "sine=duration=1", *codecs, "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip

    info = probe(str(path))

    assert (info.width, info.height) == (320, 240)
    assert encode_as_worker(path, tmp_path / "out") == pytest.approx(1.0, abs=0.1)


# ----------------------------------------------------------------- lying headers


def test_a_header_understating_a_video_within_the_limit_gets_its_true_duration(tmp_path: Path) -> None:
    path = set_mkv_header_duration(make_clip(tmp_path / "source.mkv", seconds=20, size="160x120"), 2.0)
    assert probe(str(path)).duration_s == pytest.approx(2.0)  # the header lies

    assert encode_as_worker(path, tmp_path / "out") == pytest.approx(20.0, abs=0.2)


@pytest.fixture(scope="module")
def two_hours_said_to_be_two_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    ten_s = make_clip(folder / "ten.mkv", seconds=10, size="64x64")
    path = folder / "source.mkv"
    ffmpeg("-stream_loop", "719", "-i", str(ten_s), "-c", "copy", str(path))  # 2 hours, copied in a second
    return set_mkv_header_duration(path, 2.0)


def test_a_header_understating_a_video_over_the_limit_is_stopped_at_the_limit(
    two_hours_said_to_be_two_seconds: Path, tmp_path: Path
) -> None:
    path = two_hours_said_to_be_two_seconds
    assert probe(str(path)).duration_s == pytest.approx(2.0)
    started = time.monotonic()

    with pytest.raises(MediaRejected) as rejected:
        encode_as_worker(path, tmp_path / "out", max_duration_s=5)

    # Two hours take ffmpeg about 25 s here; five seconds a fraction of one.
    assert time.monotonic() - started < 5
    assert rejected.value.reason == "This video is longer than the 5 seconds allowed."
    assert os.listdir(tmp_path / "out") == []


def test_a_video_just_within_the_duration_limit_is_accepted(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "source.mp4", seconds=3)

    assert encode_as_worker(path, tmp_path / "out", max_duration_s=3) == pytest.approx(3.0, abs=0.1)


def test_frames_over_the_pixel_cap_after_small_first_frames_are_rejected(tmp_path: Path) -> None:
    path = make_resolution_bomb(tmp_path / "source.mkv", small=64, big=8192)
    info = probe(str(path))
    assert (info.width, info.height) == (64, 64)  # all the header and the probe see

    with pytest.raises(MediaRejected) as rejected:
        encode_as_worker(path, tmp_path / "out", max_pixels=1024 * 1024)

    assert rejected.value.reason == "This video has frames larger than the 1024×1024 pixels allowed."
    assert os.listdir(tmp_path / "out") == []


def test_the_pixel_cap_is_inclusive(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "source.mp4", seconds=1, size="320x240")

    encode_as_worker(path, tmp_path / "at", max_pixels=320 * 240)
    with pytest.raises(MediaRejected, match="larger than the 76,799 pixels allowed"):
        encode_as_worker(path, tmp_path / "over", max_pixels=320 * 240 - 1)


# --------------------------------------------------------------- classification


def run(returncode: int, stderr: str = "", *, timed_out: bool = False) -> FfmpegRun:
    return FfmpegRun(returncode=returncode, stderr=stderr, timed_out=timed_out, wall_s=1.5)


PERMANENT, TRANSIENT = MediaRejected, MediaProcessingError
WHITELIST = "[in#0 @ 0x1] Format not on whitelist 'mov,mp4,m4a,3gp,3g2,mj2,matroska,webm'\n"


@pytest.mark.parametrize(
    ("outcome", "expected", "says"),
    [
        (run(-9, timed_out=True), TRANSIENT, "did not finish in time"),
        (run(-9), TRANSIENT, "killed by SIGKILL"),
        (run(-25), TRANSIENT, "killed by SIGXFSZ"),
        # Believed only when the output's disk really is full: tests/unit/test_media_limits.py.
        (run(0, "[out#0/mp4 @ 0x1] Error writing trailer: No space left on device\n"), None, None),
        (run(1, "[h264 @ 0x1] Cannot allocate memory\n"), TRANSIENT, "memory"),
        (run(1, "[in#0 @ 0x1] Skipped opening external track: stream 0, alias: path='x'\n"), PERMANENT,
         "refers to other files for its picture"),
        (run(0), None, None),
        (run(234, "[in#0 @ 0x1] Format dash probed with size=2048 and score=100\n" + WHITELIST), PERMANENT,
         "playlist or manifest that refers to other files"),
        (run(234, "[in#0 @ 0x1] Format mp3 probed with size=2048 and score=51\n" + WHITELIST), PERMANENT,
         "not a video container we accept (MP4, MOV, MKV or WebM)"),
        (run(234, WHITELIST), PERMANENT, "not a video container we accept"),
        (run(183, "[hls @ 0x1] Protocol 'http' not on whitelist 'file'!\n"), PERMANENT,
         "refers to other files"),
        (run(183, "[h264 @ 0x1] [IMGUTILS @ 0x2] Picture size 8192x8192 exceeds specified max pixel count "
                  "16777216\n"), PERMANENT, "larger than the 4096×4096 pixels allowed"),
        (run(234, "[vist#0:0 @ 0x1] Decoding requested, but no decoder found for: none\n"), PERMANENT,
         "format we cannot decode"),
        (run(183, "Error opening input files: Invalid data found when processing input\n"), PERMANENT,
         "cut short"),
        (run(1, "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\n"), PERMANENT, "cut short"),
        (run(187, "[aost#0:1 @ 0x1] Something nobody expected\n"), TRANSIENT, "exited with status 187"),
        # Reading the source over the network (a presigned GET).
        (run(0, "[http @ 0x1] Stream ends prematurely at 508131, should be 1016262\n"), TRANSIENT,
         "reading the source broke off"),
        (run(183, "[h264 @ 0x1] Invalid NAL unit size (7708 > 3115).\n"
                  "[tcp @ 0x2] Connection reset by peer\n"), TRANSIENT, "reading the source broke off"),
        (run(1, "[tls @ 0x1] Error in the pull function.\n"), TRANSIENT, "reading the source broke off"),
        (run(1, "[in#0 @ 0x1] Error opening input: Server returned 5XX Server Error reply\n"), TRANSIENT,
         "reading the source broke off"),
        (run(1, "[in#0 @ 0x1] Error opening input: Server returned 403 Forbidden (access denied)\n"),
         TRANSIENT, "reading the source broke off"),
        (run(1, "[http @ 0x1] HTTP error 412 Precondition Failed\n"), ObjectChanged, "replaced or removed"),
        (run(1, "[in#0 @ 0x1] Error opening input: Server returned 404 Not Found\n"), ObjectChanged,
         "replaced or removed"),
    ],
    ids=[
        "timeout", "sigkill", "sigxfsz", "disk-full-unconfirmed", "no-memory", "external-track", "success",
        "whitelist-manifest", "whitelist-other-format", "whitelist-unknown-format", "protocol-refused",
        "pixel-cap", "no-decoder", "invalid-data", "moov-not-found", "unknown-exit",
        "network-cut-exit-0", "network-reset-with-damage", "tls-pull", "http-5xx", "http-403",
        "http-412", "http-404",
    ],
)  # fmt: skip
def test_classify_ffmpeg_run(outcome: FfmpegRun, expected: type[Exception] | None, says: str | None) -> None:
    verdict = classify_ffmpeg_run(outcome, max_pixels=4096 * 4096)

    if expected is None:
        assert verdict is None
    else:
        assert type(verdict) is expected
        assert says is not None and says in str(verdict)


def test_an_uploaders_metadata_cannot_pose_as_an_ffmpeg_error() -> None:
    # ffmpeg dumps a file's tags indented; a title is the uploader's text.
    dump = (
        "Input #0, matroska,webm, from 'file:/tmp/source':\n"
        "  Metadata:\n"
        "    title           : No space left on device\n"
        "    comment         : HTTP error 412 Connection reset\n"
    )

    assert classify_ffmpeg_run(run(0, dump)) is None
    assert isinstance(
        classify_ffmpeg_run(run(183, dump + "Invalid data found when processing input\n")), PERMANENT
    )


def test_an_uploaders_title_does_not_make_a_good_file_fail(tmp_path: Path) -> None:
    path = tmp_path / "source.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=1", "-c:v", "libx264",
        "-metadata", "title=Format not on whitelist; No space left on device", str(path),
    )  # fmt: skip

    assert encode_as_worker(path, tmp_path / "out") == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("decoded_s", "header_s", "limit_s", "expected"),
    [
        (20.0, 2.0, 30.0, None),  # header understated, within the limit: the truth, no error
        (10.0, 10.0, 10.0, None),  # exactly at the limit
        (10.0 + DURATION_TOLERANCE_S, 2.0, 10.0, "This video is longer than the 10 seconds allowed."),
        (1800.5, 1800.0, 1800.0, "This video is longer than the 30 minutes allowed."),
        (60.5, 10.0, 60.0, "This video is longer than the 1 minute allowed."),
        (1.0, 2.0, 30.0, "cut short"),  # the header overstated: damaged or cut short
    ],
)
def test_judge_decoded_duration(
    decoded_s: float, header_s: float, limit_s: float, expected: str | None
) -> None:
    verdict = judge_decoded_duration(decoded_s, header_s=header_s, max_duration_s=limit_s)

    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None and expected in verdict.reason


# ------------------------------------------------------- ffmpeg dies with its worker

WORKER = """
import sys
from chalicelib.media.ffmpeg import find_ffmpeg, run_ffmpeg

print("starting", flush=True)
# -re paces the endless source at its frame rate: cheap, and it never ends.
# Nothing on stdout, so no broken pipe would stop it either.
run_ffmpeg(
    [find_ffmpeg(), "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5", "-f", "null", "-"],
    timeout_s=600,
)
"""


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting for whoever adopted it


def test_ffmpeg_dies_when_the_worker_that_started_it_is_killed() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    ffmpegs: list[int] = []
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"starting\n"
        deadline = time.monotonic() + 10
        while not (ffmpegs := ffmpeg_children_of(worker.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ffmpegs, "the worker never started ffmpeg"

        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 2
        while any(is_running(pid) for pid in ffmpegs) and time.monotonic() < deadline:
            time.sleep(0.02)

        assert not any(is_running(pid) for pid in ffmpegs)
    finally:
        worker.kill()
        worker.wait()
        for pid in ffmpegs:  # never leave an orphan behind, even when the test fails
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
