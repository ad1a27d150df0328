"""The HLS ladder: the plan and the command as pure functions, then real ffmpeg runs.

The real runs transcode three short sources once each (module fixtures): a
1080p landscape clip, a 720p portrait one and a phone-style clip coded
landscape with a 90° display matrix. Each rung is read back as a player would
get it: the playlists the master names, their init file and segments.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from chalicelib.media.ladder import (
    AUDIO_BITRATE_BPS,
    LadderPlan,
    avc_codec,
    ffmpeg_args,
    filter_graph,
    keyframe_args,
    master_playlist,
    plan_ladder,
    rung_size,
    var_stream_map,
    video_maxrate_bps,
)
from chalicelib.ports import MediaInfo, TranscodeResult
from tests.media_tools import decode_frame, ffmpeg, ffmpeg_exe, make_clip, probe, transcode

LADDER = (1080, 720, 480, 360)
SEGMENT_S = 1.0


def info(
    width: int, height: int, *, audio: bool = True, rotation: int = 0, frame_rate: float = 30.0
) -> MediaInfo:
    return MediaInfo(
        duration_s=10.0, width=width, height=height, video_codec="h264",
        audio_codec="aac" if audio else None, rotation=rotation, frame_rate=frame_rate,
    )  # fmt: skip


def plan(source: MediaInfo, ladder: tuple[int, ...] = LADDER, mp4_short_side: int = 720) -> LadderPlan:
    return plan_ladder(source, ladder, mp4_short_side=mp4_short_side, segment_s=2.0)


def sizes(ladder_plan: LadderPlan) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in ladder_plan.rungs]


# ------------------------------------------------------------------ the plan


def test_a_1080p_landscape_source_gets_every_rung_largest_first() -> None:
    made = plan(info(1920, 1080))

    assert sizes(made) == [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    assert made.mp4.name == "720p"
    assert made.variants == ("1080p", "720p", "480p", "360p", "audio")


def test_a_portrait_source_keeps_its_orientation() -> None:
    assert sizes(plan(info(720, 1280))) == [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)]


def test_a_rotated_phone_video_is_planned_from_its_displayed_size() -> None:
    # The probe reports a 90°-rotated 1920x1080 stream as the 1080x1920 people see.
    made = plan(info(1080, 1920, rotation=90))

    assert sizes(made)[0] == ("1080p", 1080, 1920)
    assert all(r.width < r.height for r in made.rungs)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ((1000, 700), [("480p", 686, 480), ("360p", 514, 360)]),  # between rungs: nothing above 700
        ((1921, 1081), [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 852, 480), ("360p", 640, 360)]),
        ((641, 361), [("360p", 640, 360)]),  # odd sizes become even
        ((3840, 1601), [("1080p", 2590, 1080), ("720p", 1726, 720), ("480p", 1152, 480), ("360p", 864, 360)]),
        ((320, 180), [("180p", 320, 180)]),  # below the smallest rung: one rung at its own size
        ((255, 143), [("142p", 254, 142)]),  # ... made even
        ((143, 255), [("142p", 142, 254)]),
    ],
)
def test_rungs_are_never_upscaled_and_always_even(
    source: tuple[int, int], expected: list[tuple[str, int, int]]
) -> None:
    made = plan(info(*source))

    assert sizes(made) == expected
    assert all(r.width % 2 == 0 and r.height % 2 == 0 for r in made.rungs)
    assert all(min(r.width, r.height) <= min(source) for r in made.rungs)


def test_the_mp4_is_the_largest_rung_at_or_below_its_short_side() -> None:
    assert plan(info(1920, 1080), mp4_short_side=720).mp4.name == "720p"
    assert plan(info(1920, 1080), mp4_short_side=1000).mp4.name == "720p"
    assert plan(info(1920, 1080), mp4_short_side=1080).mp4.name == "1080p"
    assert plan(info(1000, 700), mp4_short_side=720).mp4.name == "480p"  # the source allows no 720p
    assert (
        plan(info(1920, 1080), ladder=(1080,), mp4_short_side=720).mp4.name == "1080p"
    )  # none below: smallest


def test_rung_size_matches_the_old_rendition_size() -> None:
    assert rung_size(1920, 1080, 720) == (1280, 720)
    assert rung_size(1080, 1920, 720) == (720, 1280)
    assert rung_size(1000, 1000, 720) == (720, 720)


def test_bitrates_follow_the_table_and_interpolate_between() -> None:
    assert [video_maxrate_bps(side) for side in LADDER] == [5_000_000, 3_000_000, 1_400_000, 800_000]
    assert video_maxrate_bps(540) == 1_800_000  # a quarter of the way from 480p to 720p
    assert 50_000 <= video_maxrate_bps(100) < video_maxrate_bps(144)
    assert video_maxrate_bps(4320) == video_maxrate_bps(2160)


def test_bandwidth_is_the_peak_video_cap_plus_the_audio() -> None:
    with_audio, silent = plan(info(1920, 1080)), plan(info(1920, 1080, audio=False))

    assert [r.bandwidth for r in with_audio.rungs] == [
        rate + AUDIO_BITRATE_BPS for rate in (5_000_000, 3_000_000, 1_400_000, 800_000)
    ]
    assert [r.bandwidth for r in silent.rungs] == [5_000_000, 3_000_000, 1_400_000, 800_000]
    assert silent.variants == ("1080p", "720p", "480p", "360p")


@pytest.mark.parametrize(("frame_rate", "gop"), [(30.0, "60"), (25.0, "50"), (59.94, "120"), (0.0, "60")])
def test_keyframes_are_forced_at_every_segment_boundary_and_mid_first_segment(
    frame_rate: float, gop: str
) -> None:
    args = keyframe_args(plan(info(1920, 1080, frame_rate=frame_rate)))

    assert args == [
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-flags", "+cgop",
        # Every 2 s, and at 1 s too, where the first segment is cut (-hls_init_time 1).
        "-force_key_frames", "expr:if(lt(t,2),gte(t,n_forced*1),gte(t,2*(n_forced-1)))",
    ]  # fmt: skip


def test_the_graph_decodes_once_watermarks_once_and_splits_to_every_output() -> None:
    graph = filter_graph(plan(info(1920, 1080)))

    assert graph.count("[0:V:0]") == 1  # one decode
    assert graph.count("overlay=") == 1 and graph.count("[1:v]") == 1  # one watermark
    assert "split=4[r0][r1][r2][r3]" in graph
    assert (
        "[r1]scale=1280:720,setsar=1,split=3[v1][mp4][poster]" in graph
    )  # the MP4 and thumbnail: the 720p picture
    for label in ("[v0]", "[v2]", "[v3]", "[thumbnail]"):
        assert graph.count(label) == 1


def test_a_single_rung_needs_no_split_of_the_marked_picture() -> None:
    graph = filter_graph(plan(info(320, 180)))

    assert "[marked]format=yuv420p[r0]" in graph
    assert "[r0]null,split=3[v0][mp4][poster]" in graph


def test_the_command_caps_each_rung_and_writes_cmaf_event_playlists() -> None:
    made = plan(info(1920, 1080))

    args = ffmpeg_args(
        made, ffmpeg_path="ffmpeg", source_args=["-i", "file:/job/source"], watermark_url="file:/wm.png",
        hls_dir="/job/out/hls", mp4_url="file:/job/out/.mp4", thumbnail_url="file:/job/out/.jpg",
    )  # fmt: skip

    def value(option: str) -> str:
        return args[args.index(option) + 1]

    assert args.count("-i") == 2  # the source and the watermark: one process, one decode
    assert [value(f"-maxrate:v:{i}") for i in range(4)] == ["5000000", "3000000", "1400000", "800000"]
    assert [value(f"-bufsize:v:{i}") for i in range(4)] == ["10000000", "6000000", "2800000", "1600000"]
    assert (value("-f"), value("-hls_segment_type"), value("-hls_playlist_type")) == ("hls", "fmp4", "event")
    assert value("-hls_flags") == "independent_segments+temp_file"
    assert value("-var_stream_map") == (
        "v:0,agroup:aud,name:1080p v:1,agroup:aud,name:720p v:2,agroup:aud,name:480p "
        "v:3,agroup:aud,name:360p a:0,agroup:aud,name:audio,default:yes"
    )
    assert value("-hls_segment_filename") == "/job/out/hls/%v/seg%05d.m4s"
    assert "/job/out/hls/%v/index.m3u8" in args
    assert args[args.index("-movflags") + 1] == "+faststart"


def test_a_silent_source_has_no_audio_group() -> None:
    assert var_stream_map(plan(info(640, 360, audio=False))) == "v:0,name:360p"


def test_the_master_playlist_names_every_rung_with_bandwidth_resolution_and_codecs() -> None:
    made = plan(info(1280, 720))
    codecs = {"720p": "avc1.64001f", "480p": "avc1.64001e", "360p": "avc1.64001e"}

    text = master_playlist(made, codecs)

    assert text.splitlines()[:4] == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,URI="audio/index.m3u8"',
    ]
    assert text.splitlines()[4:6] == [
        '#EXT-X-STREAM-INF:BANDWIDTH=3128000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"',
        "720p/index.m3u8",
    ]
    silent = master_playlist(plan(info(1280, 720, audio=False)), codecs)
    assert "AUDIO" not in silent and "mp4a" not in silent


def test_the_avc_codec_string_comes_from_the_init_segments_avcc_box() -> None:
    assert avc_codec(b"....moov....avcC\x01\x64\x00\x28\xff") == "avc1.640028"
    assert avc_codec(b"no such box") is None


# ------------------------------------------------------------ real ffmpeg runs


@dataclass
class Ladder:
    """One transcoded source and what was seen while ffmpeg ran."""

    source: str
    result: TranscodeResult
    # (progress, master.m3u8 there, some playlist already finished) at each progress report
    seen_while_running: list[tuple[float, bool, bool]]


def run_ladder(source: Path, out_dir: Path) -> Ladder:
    seen: list[tuple[float, bool, bool]] = []
    hls = out_dir / "hls"

    def on_progress(fraction: float) -> None:
        ended = any("#EXT-X-ENDLIST" in p.read_text() for p in hls.glob("*/index.m3u8"))
        seen.append((fraction, (hls / "master.m3u8").exists(), ended))

    result = transcode(str(source), out_dir, ladder=LADDER, segment_s=SEGMENT_S, on_progress=on_progress)
    return Ladder(str(source), result, seen)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ladder-clips")


@pytest.fixture(scope="module")
def landscape(clips: Path) -> Ladder:
    return run_ladder(make_clip(clips / "landscape.mp4", seconds=3, size="1920x1080"), clips / "landscape")


@pytest.fixture(scope="module")
def portrait(clips: Path) -> Ladder:
    return run_ladder(make_clip(clips / "portrait.mp4", seconds=3, size="720x1280"), clips / "portrait")


@pytest.fixture(scope="module")
def rotated(clips: Path) -> Ladder:
    """Coded 1280x720, shown 720x1280: a phone held upright."""
    coded = make_clip(clips / "coded.mp4", seconds=3, size="1280x720")
    path = clips / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(coded), "-c", "copy", str(path))
    assert (probe(str(path)).width, probe(str(path)).height) == (720, 1280)
    return run_ladder(path, clips / "rotated")


EXPECTED = {
    "landscape": [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)],
    "portrait": [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)],
    "rotated": [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)],
}


@pytest.fixture(params=sorted(EXPECTED))
def made(request: pytest.FixtureRequest) -> tuple[str, Ladder]:
    name: str = request.param
    ladder: Ladder = request.getfixturevalue(name)
    return name, ladder


_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def read_master(hls_dir: Path) -> tuple[list[dict[str, str]], list[str], list[str]]:
    """The variants (attributes plus "URI"), the audio rendition URIs and the raw lines."""
    lines = (hls_dir / "master.m3u8").read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    variants, audio = [], []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = {k: v.strip('"') for k, v in _ATTRIBUTE.findall(line.partition(":")[2])}
            variants.append({**attributes, "URI": lines[i + 1]})
        elif line.startswith("#EXT-X-MEDIA:TYPE=AUDIO"):
            audio.append(dict(_ATTRIBUTE.findall(line.partition(":")[2]))["URI"].strip('"'))
    return variants, audio, lines


def media_files(playlist: Path) -> list[Path]:
    """The init file and the segments a media playlist names, in order; each must exist."""
    text = playlist.read_text()
    assert "#EXT-X-ENDLIST" in text and "#EXT-X-PLAYLIST-TYPE:EVENT" in text
    names = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    names += [line for line in text.splitlines() if line and not line.startswith("#")]
    files = [playlist.parent / name for name in names]
    assert all(f.is_file() for f in files), [f for f in files if not f.is_file()]
    return files


def joined(playlist: Path, target: Path) -> str:
    """init + every segment of a variant as one fMP4 file: what a player feeds its decoder."""
    target.write_bytes(b"".join(f.read_bytes() for f in media_files(playlist)))
    return str(target)


def segment_bitrates(playlist: Path) -> list[float]:
    """Each segment's bits per second of its EXTINF duration."""
    text = playlist.read_text()
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", text)]
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    return [8 * (playlist.parent / n).stat().st_size / d for n, d in zip(names, durations, strict=True)]


def keyframe_times(path: str) -> list[float]:
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-vf", "showinfo", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [float(m[1]) for m in re.finditer(r"pts_time:(\S+).*?iskey:1", completed.stderr)]


def test_each_rung_has_its_size_codec_and_bandwidth_and_none_is_upscaled(
    made: tuple[str, Ladder], tmp_path: Path
) -> None:
    name, ladder = made
    hls = Path(ladder.result.hls_dir)
    variants, _, _ = read_master(hls)
    source_short = min(probe(ladder.source).width, probe(ladder.source).height)

    assert [(r.name, r.width, r.height) for r in ladder.result.rungs] == EXPECTED[name]
    assert [v["URI"] for v in variants] == [f"{rung}/index.m3u8" for rung, _, _ in EXPECTED[name]]
    for rung, variant in zip(ladder.result.rungs, variants, strict=True):
        read = probe(joined(hls / variant["URI"], tmp_path / f"{rung.name}.mp4"))
        assert (read.width, read.height, read.video_codec) == (rung.width, rung.height, "h264")
        assert read.duration_s == pytest.approx(3.0, abs=0.1)
        assert min(read.width, read.height) <= source_short
        assert variant["RESOLUTION"] == f"{rung.width}x{rung.height}"
        assert (
            int(variant["BANDWIDTH"])
            == rung.bandwidth
            == video_maxrate_bps(min(rung.width, rung.height)) + 128_000
        )
        assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", variant["CODECS"])
        assert variant["AUDIO"] == "audio"
        # BANDWIDTH is honest: no segment's bitrate is over it by more than the 10 %
        # Apple's HLS authoring spec allows (testsrc2 at 1080p makes the 1080p cap bind).
        assert max(segment_bitrates(hls / variant["URI"])) <= 1.1 * (rung.bandwidth - AUDIO_BITRATE_BPS)


def test_keyframes_are_at_the_same_instants_in_every_rung(made: tuple[str, Ladder], tmp_path: Path) -> None:
    _, ladder = made
    hls = Path(ladder.result.hls_dir)
    variants, _, _ = read_master(hls)

    times = [keyframe_times(joined(hls / v["URI"], tmp_path / f"{i}.mp4")) for i, v in enumerate(variants)]
    segments = [re.findall(r"#EXTINF:([\d.]+)", (hls / v["URI"]).read_text()) for v in variants]

    # One per 1 s segment, none in between, and one at 0.5 s where the first
    # segment is cut short so that the stream is playable sooner.
    assert times[0] == pytest.approx([0.0, 0.5, 1.0, 2.0], abs=0.02)
    assert segments[0][:3] == ["0.500000", "0.500000", "1.000000"]
    assert all(t == times[0] for t in times)
    assert all(s == segments[0] for s in segments)


def test_the_watermark_is_in_the_pixels_of_every_rung(made: tuple[str, Ladder], tmp_path: Path) -> None:
    _, ladder = made
    hls = Path(ladder.result.hls_dir)
    variants, _, _ = read_master(hls)

    for i, rung in enumerate(ladder.result.rungs):
        size = (rung.width, rung.height)
        marked = decode_frame(joined(hls / variants[i]["URI"], tmp_path / f"{i}.mp4"), size, frame_number=30)
        # Auto-rotated and scaled through the top rung, as the ladder does, but unmarked.
        top = ladder.result.rungs[0]
        original = decode_frame(ladder.source, size, frame_number=30, via=(top.width, top.height))
        difference = np.abs(marked - original).mean(axis=2)
        short = min(size)
        corner = np.zeros_like(difference, dtype=bool)  # where the mark goes, at this rung's scale
        corner[rung.height - int(0.12 * short) :, rung.width - int(0.5 * short) :] = True
        assert difference[corner].mean() > 8, rung.name  # the mark is there...
        assert difference[~corner].mean() < 3, rung.name  # ...and only there
        # Strong differences crowd in the corner; elsewhere only sparse encoding
        # errors at testsrc2's sharp moving edges.
        strong = difference > 60
        inside, outside = strong[corner].mean(), strong[~corner].mean()
        assert inside > 0.05 and inside > 10 * outside, (rung.name, inside, outside)


def test_every_segment_the_master_names_exists_and_decodes(made: tuple[str, Ladder], tmp_path: Path) -> None:
    _, ladder = made
    hls = Path(ladder.result.hls_dir)
    variants, audio, _ = read_master(hls)

    assert audio == ["audio/index.m3u8"]
    for i, uri in enumerate([v["URI"] for v in variants] + audio):
        path = joined(hls / uri, tmp_path / f"{i}.mp4")
        # -xerror: any damaged packet in any segment fails the decode.
        ffmpeg("-xerror", "-i", path, "-f", "null", "-")


def test_the_mp4_and_thumbnail_come_from_the_same_run(made: tuple[str, Ladder]) -> None:
    _, ladder = made
    result = ladder.result
    mp4 = probe(result.mp4_path)

    assert result.mp4_rung.name == "720p"
    assert (mp4.width, mp4.height) == (result.mp4_rung.width, result.mp4_rung.height)
    assert (mp4.video_codec, mp4.audio_codec) == ("h264", "aac")
    assert Path(result.thumbnail_path).read_bytes()[:2] == b"\xff\xd8"
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    assert sorted(p.name for p in Path(result.out_dir).iterdir()) == ["hls", "rendition.mp4", "thumbnail.jpg"]


def test_the_master_appears_while_ffmpeg_still_runs(landscape: Ladder) -> None:
    # What makes a video playable before it is ready: the master and the first
    # segments exist while the EVENT playlists still grow.
    assert any(
        master and not ended and fraction < 0.99 for fraction, master, ended in landscape.seen_while_running
    )
    assert any(not master for _, master, _ in landscape.seen_while_running)  # and not from the start


def test_a_silent_source_has_no_audio_rendition(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "silent.mp4", seconds=1, size="640x360", audio=False)

    result = transcode(str(source), tmp_path / "out", ladder=LADDER, segment_s=SEGMENT_S)

    variants, audio, lines = read_master(Path(result.hls_dir))
    assert audio == [] and not any("AUDIO" in line for line in lines)
    assert [v["URI"] for v in variants] == ["360p/index.m3u8"]
    assert variants[0]["CODECS"].startswith("avc1.") and "mp4a" not in variants[0]["CODECS"]
    assert int(variants[0]["BANDWIDTH"]) == 800_000
    assert sorted(p.name for p in Path(result.hls_dir).iterdir()) == ["360p", "master.m3u8"]
