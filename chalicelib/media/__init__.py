"""The ffmpeg adapter behind the :class:`~chalicelib.ports.Transcoder` port.

* :mod:`.probe` -- what an upload is (``ffmpeg -i``, parsed).
* :mod:`.ladder` -- the ladder plan, the filter graph and the command: pure functions.
* :mod:`.watermark` -- where the watermark is applied.
* :mod:`.ffmpeg` -- running and supervising ffmpeg on untrusted input: allow-lists,
  limits, progress, deadlines, dying with its worker, and the table that
  classifies how a run ended.
* :mod:`.transcoder` -- :class:`FfmpegTranscoder`, the port's implementation.

Nothing here reads settings: the composition root (``chalicelib.bootstrap``)
builds :class:`FfmpegTranscoder` with the ffmpeg binary and the watermark.
"""

from chalicelib.media.ffmpeg import (
    DURATION_TOLERANCE_S,
    classify_ffmpeg_run,
    find_ffmpeg,
    judge_decoded_duration,
)
from chalicelib.media.transcoder import FfmpegTranscoder
from chalicelib.media.watermark import default_watermark_path

__all__ = [
    "DURATION_TOLERANCE_S",
    "FfmpegTranscoder",
    "classify_ffmpeg_run",
    "default_watermark_path",
    "find_ffmpeg",
    "judge_decoded_duration",
]
