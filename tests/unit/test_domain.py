"""Rules of the video domain: ids, keys, emails."""

from __future__ import annotations

from chalicelib.domain import is_video_id, new_video_id, parse_upload_key, upload_key


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
