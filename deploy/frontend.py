"""The front end's build: `frontend/` as the files a CDN serves, with their caching headers.

There is no bundler. The build copies `frontend/assets/` under a folder named
after a hash of its contents (`assets/<hash>/...`), points `index.html` at
it, and writes the generated `config.json` beside it. So:

- assets can be cached forever (`immutable`): a changed asset is a new hash,
  hence a new URL;
- `index.html` and `config.json` are revalidated on every load (`no-cache`),
  so a deploy or a new API URL is seen at once.

The local CDN stand-in (`devstack/cdn.py`) and the deploy command both serve
exactly what `build_site` returns.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# index.html names its assets as `"assets/...` (or `'assets/...`); these are rewritten.
_ASSET_PREFIXES = ('"assets/', "'assets/")
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",  # vendored ES modules (frontend/vendor/README.md)
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class SiteFile:
    """One object of the built site: where it is served and how it is cached."""

    key: str  # path under the site root, e.g. "assets/3f2a.../app.css"
    path: Path  # the built file on disk
    content_type: str
    cache_control: str


def frontend_config(
    api_url: str,
    stage: str,
    *,
    needs_confirmation: bool,
    max_upload_bytes: int,
    allowed_content_types: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """The settings the front end reads from `/config.json`."""
    return {
        "apiUrl": api_url.rstrip("/"),
        "stage": stage,
        "needsConfirmation": needs_confirmation,
        "maxUploadBytes": max_upload_bytes,
        "allowedContentTypes": list(allowed_content_types),
    }


def assets_hash(source_dir: Path = FRONTEND_DIR) -> str:
    """A short hash of every asset's path and bytes."""
    digest = hashlib.sha256()
    for path in _asset_files(source_dir):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_site(config: Mapping[str, Any], out_dir: Path, source_dir: Path = FRONTEND_DIR) -> list[SiteFile]:
    """Build the site from `source_dir` into `out_dir` (emptied first); its files.

    The assets come first and index.html and config.json last, so a deploy
    that uploads them in this order never serves HTML naming missing assets.
    """
    index = source_dir / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"no front end at {index}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    version = assets_hash(source_dir)
    html = index.read_text(encoding="utf-8")
    for prefix in _ASSET_PREFIXES:
        html = html.replace(prefix, f"{prefix[0]}/assets/{version}/")
    files = []
    for path in _asset_files(source_dir):
        relative = path.relative_to(source_dir / "assets").as_posix()
        files.append(_write(out_dir, f"assets/{version}/{relative}", path.read_bytes(), IMMUTABLE))
    files.append(_write(out_dir, "config.json", json.dumps(dict(config), indent=2).encode(), REVALIDATE))
    files.append(_write(out_dir, "index.html", html.encode(), REVALIDATE))
    return files


def content_type(name: str) -> str:
    """The Content-Type to serve a file named `name` with."""
    suffix = Path(name).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _asset_files(source_dir: Path) -> list[Path]:
    assets = source_dir / "assets"
    return sorted(p for p in assets.rglob("*") if p.is_file() and not p.name.startswith("."))


def _write(out_dir: Path, key: str, data: bytes, cache_control: str) -> SiteFile:
    path = out_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return SiteFile(key=key, path=path, content_type=content_type(key), cache_control=cache_control)
