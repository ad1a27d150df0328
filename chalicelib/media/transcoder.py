"""The Transcoder port on ffmpeg: one process makes the HLS ladder, the MP4 and the thumbnail.

ffmpeg exits 0 on some broken inputs (a front-indexed MP4 cut in half encodes
"successfully" to half its length) and on some failures of ours (a full disk
can leave an empty playlist), so :meth:`FfmpegTranscoder.transcode` trusts no
exit code alone: it writes the MP4 and thumbnail to temporary names, checks
every playlist and probes the MP4, and only then renames them into place.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence

from chalicelib.media.ffmpeg import (
    DURATION_TOLERANCE_S,
    FfmpegRun,
    ProgressReporter,
    classify_ffmpeg_run,
    file_url,
    judge_decoded_duration,
    last_lines,
    run_ffmpeg,
    source_args,
)
from chalicelib.media.ladder import (
    MASTER_NAME,
    PLAYLIST_NAME,
    LadderPlan,
    avc_codec,
    ffmpeg_args,
    master_playlist,
    plan_ladder,
)
from chalicelib.media.probe import probe
from chalicelib.ports import MediaInfo, MediaProcessingError, MediaRejected, MediaSource, TranscodeResult

MP4_NAME = "rendition.mp4"
THUMBNAIL_NAME = "thumbnail.jpg"
HLS_DIR_NAME = "hls"

_JPEG_MAGIC = b"\xff\xd8"
_EXTINF_RE = re.compile(r"^#EXTINF:(?P<seconds>\d+(?:\.\d+)?),", re.MULTILINE)


class FfmpegTranscoder:
    """:class:`~chalicelib.ports.Transcoder` with the ffmpeg binary at ``ffmpeg_path``,
    burning in the PNG at ``watermark_path``."""

    def __init__(self, ffmpeg_path: str, watermark_path: str) -> None:
        self.ffmpeg_path = ffmpeg_path
        self.watermark_path = watermark_path

    def probe(self, source: MediaSource, *, max_pixels: int | None = None) -> MediaInfo:
        """Describe the source (see :func:`chalicelib.media.probe.probe`)."""
        return probe(self.ffmpeg_path, source, max_pixels=max_pixels)

    def transcode(
        self,
        source: MediaSource,
        info: MediaInfo,
        out_dir: str,
        *,
        ladder: Sequence[int],
        mp4_short_side: int,
        segment_s: float,
        max_duration_s: float,
        max_pixels: int,
        on_progress: Callable[[float], None] | None = None,
        timeout_s: float = 780.0,
    ) -> TranscodeResult:
        """Make the HLS ladder (into ``out_dir/hls`` while ffmpeg runs), the MP4 and the thumbnail.

        ONE ffmpeg process, in the calling thread: one decode, auto-rotated,
        watermarked once, split to every rung of :func:`plan_ladder`, the MP4
        and the thumbnail. Playlists are EVENT playlists replaced atomically
        as segments finish; ``master.m3u8`` appears (atomically) once every
        variant has its first segment listed, with the plan's peak bandwidths.

        The source is opened as :func:`~chalicelib.media.ffmpeg.untrusted_input_args`
        says: decoding stops just past ``max_duration_s`` and refuses any frame
        over ``max_pixels``, whatever the header said. The result's
        ``duration_s`` is what was really decoded.

        ``on_progress`` receives fractions in 0..1, at most about once a second
        or per 5 %, and 1.0 only once every output is validated and in place.

        Raises :class:`MediaRejected` when the input turns out to be damaged,
        cut short, too long or with frames too large,
        :class:`MediaProcessingError` on a timeout, a killed ffmpeg, a full
        disk, a source read that broke or any other failure, and
        :class:`~chalicelib.ports.ObjectChanged` if the store answered that the
        source was replaced; in every case nothing is left in ``out_dir``.
        """
        plan = plan_ladder(info, ladder, mp4_short_side=mp4_short_side, segment_s=segment_s)
        hls_dir = os.path.join(out_dir, HLS_DIR_NAME)
        mp4_final, thumbnail_final = os.path.join(out_dir, MP4_NAME), os.path.join(out_dir, THUMBNAIL_NAME)
        written: list[str] = []  # every file to delete if anything goes wrong
        made_hls_dir = False  # only a folder this call made is removed on failure
        try:
            os.makedirs(hls_dir)
            made_hls_dir = True
            for variant in plan.variants:
                os.mkdir(os.path.join(hls_dir, variant))
            mp4_tmp = _temp_path(out_dir, ".rendition-", ".mp4", written)
            thumbnail_tmp = _temp_path(out_dir, ".thumbnail-", ".jpg", written)
            args = ffmpeg_args(
                plan,
                ffmpeg_path=self.ffmpeg_path,
                source_args=source_args(
                    source,
                    container=info.container,
                    max_pixels=max_pixels,
                    # Decoding a little past the limit tells "at the limit" from "over it".
                    max_duration_s=max_duration_s + DURATION_TOLERANCE_S,
                ),
                watermark_url=file_url(self.watermark_path),
                hls_dir=os.path.abspath(hls_dir),
                mp4_url=file_url(mp4_tmp),
                thumbnail_url=file_url(thumbnail_tmp),
            )
            reporter = ProgressReporter(info.duration_s, on_progress)
            master = _MasterWriter(hls_dir, plan)

            def on_line(line: str) -> None:
                # "progress=..." ends each -progress block, about twice a second.
                if line.startswith("progress="):
                    master.write_when_ready()
                reporter.feed(line)

            run = run_ffmpeg(args, timeout_s=timeout_s, on_stdout_line=on_line)
            verdict = classify_ffmpeg_run(run, max_pixels=max_pixels, out_dir=out_dir)
            if verdict is not None:
                raise verdict
            if not master.write_when_ready():
                raise MediaProcessingError(
                    f"ffmpeg exited 0 but a variant has no init file or segment: {last_lines(run.stderr)}"
                )
            decoded_s = self._validate(info, plan, hls_dir, mp4_tmp, thumbnail_tmp, run)
            too_long_or_short = judge_decoded_duration(
                decoded_s, header_s=info.duration_s, max_duration_s=max_duration_s
            )
            if too_long_or_short is not None:
                raise too_long_or_short
            for tmp, final in ((mp4_tmp, mp4_final), (thumbnail_tmp, thumbnail_final)):
                written.append(final)
                os.replace(tmp, final)
        except BaseException as exc:
            for path in written:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if made_hls_dir:
                shutil.rmtree(hls_dir, ignore_errors=True)
            if isinstance(exc, OSError):
                # Our disk or directory failed (ENOSPC, missing out_dir): retryable.
                raise MediaProcessingError(f"could not write the outputs: {exc}") from exc
            raise
        if on_progress is not None:
            on_progress(1.0)
        return TranscodeResult(
            out_dir=out_dir,
            hls_dir=hls_dir,
            rungs=tuple(rung.as_rung() for rung in plan.rungs),
            mp4_path=mp4_final,
            mp4_rung=plan.mp4.as_rung(),
            thumbnail_path=thumbnail_final,
            duration_s=decoded_s,
            ffmpeg_seconds=run.wall_s if run.bench_rtime_s is None else run.bench_rtime_s,
            ffmpeg_maxrss_kb=run.maxrss_kb,
        )

    def _validate(
        self,
        info: MediaInfo,
        plan: LadderPlan,
        hls_dir: str,
        mp4_path: str,
        thumbnail_path: str,
        run: FfmpegRun,
    ) -> float:
        """Check what ffmpeg wrote rather than trust its exit code; return the decoded duration.

        Segments are not looked for: a publisher may already have uploaded and
        removed them. The playlists say what was finished.
        """
        for path in (mp4_path, thumbnail_path):
            if os.path.getsize(path) == 0:
                raise MediaProcessingError(
                    f"ffmpeg exited 0 but wrote no {os.path.basename(path)}: {last_lines(run.stderr)}"
                )
        with open(thumbnail_path, "rb") as thumbnail:
            if thumbnail.read(2) != _JPEG_MAGIC:
                raise MediaProcessingError("the thumbnail is not a JPEG")
        try:
            mp4 = probe(self.ffmpeg_path, MediaSource(mp4_path))
        except MediaRejected as exc:
            raise MediaProcessingError(f"the MP4 does not probe cleanly: {exc.reason}") from exc
        expected = (plan.mp4.width, plan.mp4.height)
        if mp4.video_codec != "h264" or (mp4.width, mp4.height) != expected:
            raise MediaProcessingError(
                f"the MP4 is {mp4.video_codec} {mp4.width}x{mp4.height}, "
                f"expected h264 {expected[0]}x{expected[1]}"
            )
        if (mp4.audio_codec == "aac") != (info.audio_codec is not None):
            raise MediaProcessingError(
                f"the MP4's audio is {mp4.audio_codec}, the source's {info.audio_codec}"
            )
        lengths: dict[str, tuple[int, float]] = {}
        for variant in plan.variants:
            path = os.path.join(hls_dir, variant, PLAYLIST_NAME)
            try:
                with open(path, encoding="utf-8") as playlist:
                    text = playlist.read()
            except FileNotFoundError:
                raise MediaProcessingError(f"ffmpeg wrote no playlist for {variant}") from None
            durations = _segment_durations(path)
            if "#EXT-X-ENDLIST" not in text or not durations:
                raise MediaProcessingError(f"the {variant} playlist is unfinished: {last_lines(run.stderr)}")
            lengths[variant] = (len(durations), sum(durations))
        segment_counts = {lengths[rung.name][0] for rung in plan.rungs}
        if len(segment_counts) != 1:
            raise MediaProcessingError(f"the rungs have different numbers of segments: {lengths}")
        longest = max(total for _, total in lengths.values())
        if abs(longest - mp4.duration_s) > DURATION_TOLERANCE_S:
            raise MediaProcessingError(f"the playlists last {longest:.2f} s, the MP4 {mp4.duration_s:.2f} s")
        return mp4.duration_s


class _MasterWriter:
    """Writes master.m3u8 once every variant has its first segment listed, for a publisher to find.

    Each rung's CODECS comes from its init segment, read as soon as ffmpeg
    writes it (before any segment is listed, so before a publisher takes it).
    """

    def __init__(self, hls_dir: str, plan: LadderPlan) -> None:
        self._hls_dir = hls_dir
        self._plan = plan
        self._codecs: dict[str, str] = {}
        self.written = False

    def write_when_ready(self) -> bool:
        """Write the master if every variant has a segment; True once written."""
        if self.written:
            return True
        for rung in self._plan.rungs:
            if rung.name not in self._codecs:
                for init in glob.glob(os.path.join(glob.escape(self._hls_dir), rung.name, "init*.mp4")):
                    with open(init, "rb") as file:
                        codec = avc_codec(file.read())
                    if codec is not None:
                        self._codecs[rung.name] = codec
        if len(self._codecs) < len(self._plan.rungs):
            return False
        for variant in self._plan.variants:
            if not _segment_durations(os.path.join(self._hls_dir, variant, PLAYLIST_NAME)):
                return False
        fd, tmp = tempfile.mkstemp(prefix=".master-", suffix=".tmp", dir=self._hls_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(master_playlist(self._plan, self._codecs))
        os.replace(tmp, os.path.join(self._hls_dir, MASTER_NAME))  # readers see all of it or nothing
        self.written = True
        return True


def _segment_durations(playlist_path: str) -> list[float]:
    """The EXTINF durations a playlist lists so far ([] if it is not there yet)."""
    try:
        with open(playlist_path, encoding="utf-8") as playlist:
            return [float(m["seconds"]) for m in _EXTINF_RE.finditer(playlist.read())]
    except FileNotFoundError:
        return []


def _temp_path(out_dir: str, prefix: str, suffix: str, created: list[str]) -> str:
    """Reserve a unique hidden file name in ``out_dir``, recording it in ``created``."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=out_dir)
    os.close(fd)
    created.append(path)
    return path
