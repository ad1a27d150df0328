"""Rules of the video domain: ids, keys, emails."""

from __future__ import annotations

from chalicelib.domain import (
    Outputs,
    Rendition,
    Rung,
    SourceInfo,
    Video,
    VideoStatus,
    is_video_id,
    new_video_id,
    parse_upload_key,
    upload_key,
    utcnow,
)


def test_video_ids_sort_by_creation_time() -> None:
    ids = [new_video_id(now_ms=ms) for ms in (1_000, 2_000, 1_700_000_000_000, 1_700_000_000_001)]
    assert ids == sorted(ids)
    assert all(is_video_id(i) and len(i) == 26 for i in ids)


def test_video_ids_are_unique_within_a_millisecond() -> None:
    assert len({new_video_id(now_ms=5) for _ in range(1000)}) == 1000


def test_non_ids_are_recognised() -> None:
    for value in ("", "x", "../etc/passwd", "01M85BM1FSJ4V29J1EE60GZVV6", "0" * 25, "u" * 26):
        assert not is_video_id(value)


def test_upload_keys_round_trip_and_others_are_not_uploads() -> None:
    key = upload_key("owner-1", "01m85bm1fsj4v29j1ee60gzvv6")
    assert key == "uploads/owner-1/01m85bm1fsj4v29j1ee60gzvv6/source"
    assert parse_upload_key(key) == ("owner-1", "01m85bm1fsj4v29j1ee60gzvv6")
    for other in ("media/a/b/720p.mp4", "uploads/a/b/c/source", "uploads/a/source", "uploads/a/b/other"):
        assert parse_upload_key(other) is None


def a_video(**changes: object) -> Video:
    now = utcnow()
    video = Video(
        id="01m85bm1fsj4v29j1ee60gzvv6",
        owner_id="alice",
        owner_email="alice@example.com",
        title="Trip",
        status=VideoStatus.PROCESSING,
        progress=0,
        created_at=now,
        updated_at=now,
        source=SourceInfo("trip.mp4", 1000, "video/mp4"),
    )
    return video.with_changes(**changes)


def test_a_video_is_not_playable_until_told_and_a_run_keeps_its_hls_under_its_own_prefix() -> None:
    video = a_video()
    assert video.playable is False and video.outputs is None
    assert video.hls_prefix("run1") == "media/alice/01m85bm1fsj4v29j1ee60gzvv6/run1/hls/"
    assert video.hls_prefix("run1").startswith(video.outputs_prefix("run1"))


def test_hls_outputs_name_their_prefix_and_count_as_the_runs_outputs() -> None:
    video = a_video()
    master = f"{video.hls_prefix('run1')}master.m3u8"
    playable = Outputs(
        renditions=(), thumbnail_key=None, hls_master_key=master, rungs=(Rung("360p", 640, 360, 9),)
    )
    assert playable.hls_prefix == video.hls_prefix("run1")
    assert playable.keys == (master,)

    # Outputs a video records are never removed from under it: a run that fails
    # after its video became playable has to take them back from the video first.
    pointed = video.with_changes(playable=True, outputs=playable)
    assert pointed.uses_outputs_under(video.outputs_prefix("run1"))
    assert not pointed.uses_outputs_under(video.outputs_prefix("run2"))


def test_outputs_from_before_adaptive_streaming_have_no_hls() -> None:
    old = Outputs(
        renditions=(Rendition("720p", 1280, 720, "media/a/v/720p.mp4"),), thumbnail_key="media/a/v/t.jpg"
    )
    assert (old.hls_master_key, old.rungs, old.hls_prefix) == (None, (), None)
    assert old.keys == ("media/a/v/720p.mp4", "media/a/v/t.jpg")
