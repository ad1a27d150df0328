"""`python -m devstack logs VIDEO_ID`: one video's whole story, from the local logs.

The local stack has every app process (`chalice local`, the event pump, the
job timers, `python -m devstack job`) append each log line as JSON to
`.vidline/logs.jsonl` (`VIDLINE_LOG_FILE`, chalicelib/telemetry.py). A line
about a video carries its id as `correlation_id`: the create request, the
requests on `/videos/{id}`, the worker's job (the id comes from the upload's
key), the HLS publisher, the scheduled jobs and the email. This prints those
lines (and any other that names the id) in time order, across processes.
The file starts empty with each start of the stack, like moto's state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_FILE = Path(".vidline") / "logs.jsonl"


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON log lines of `path`; a line that is not a JSON object (cut short
    by a killed process, say) is skipped."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


_UNKNOWN = datetime.min.replace(tzinfo=UTC)


def _when(entry: dict[str, Any]) -> datetime:
    try:
        when = datetime.fromisoformat(str(entry.get("timestamp")))
    except ValueError:
        return _UNKNOWN
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def story(entries: Iterable[dict[str, Any]], video_id: str) -> list[dict[str, Any]]:
    """The entries about `video_id` (its correlation id, or its id in the
    message), oldest first; lines of one instant keep their file order."""
    about = [
        entry
        for entry in entries
        if entry.get("correlation_id") == video_id or video_id in str(entry.get("message", ""))
    ]
    return sorted(about, key=_when)


def format_entry(entry: dict[str, Any]) -> str:
    """One line for people: time, app, level, logger, message (and any traceback)."""
    when = _when(entry)
    stamp = "?" if when == _UNKNOWN else when.astimezone().strftime("%H:%M:%S.%f")[:-3]
    app = str(entry.get("service", "?")).removeprefix("vidline-")
    line = f"{stamp} {app:<8} {entry.get('level', '?'):<7} {entry.get('logger', '?')}: {entry.get('message')}"
    if entry.get("exception"):
        line += "\n" + str(entry["exception"])
    return line


def default_log_file(project_dir: Path) -> Path:
    """VIDLINE_LOG_FILE if set (as the apps read it), else the stack's own."""
    configured = os.environ.get("VIDLINE_LOG_FILE")
    return Path(configured) if configured else project_dir / LOG_FILE


def main(argv: Sequence[str] | None = None) -> int:
    """Print one video's story; the process exit code (1: nothing found)."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack logs",
        description="Print what the local stack logged about one video, across the API, "
        "the worker, the scheduled jobs and the email, in time order.",
    )
    parser.add_argument("video_id", help="the video's id (as the API shows it)")
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"the JSON lines log (default: $VIDLINE_LOG_FILE, else {LOG_FILE} in the project)",
    )
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print the JSON lines as they were written")
    args = parser.parse_args(argv)
    path: Path = args.file or default_log_file(args.project_dir)
    if not path.is_file():
        print(f"no log at {path}: is the local stack (python -m devstack) running here?", file=sys.stderr)
        return 1
    entries = story(read_entries(path), args.video_id)
    if not entries:
        print(f"nothing about video {args.video_id} in {path}", file=sys.stderr)
        return 1
    for entry in entries:
        print(json.dumps(entry) if args.json else format_entry(entry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
