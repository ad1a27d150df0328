"""The front end's vendored third-party files: fetched once from npm, pinned, checked.

The web app has no build tools, so a library it needs is copied, as its
package publishes it, into `frontend/assets/vendor/` and served from our own
origin (never from a CDN at run time). `frontend/vendor/manifest.json` pins
each package's version and the npm tarball's integrity, and records the
sha256 of every copied file; a test checks the files still match it.

Re-vendor (or move to another version) with

    python -m deploy.vendor hls.js 1.7.4

which runs `npm pack` in a temporary folder (nothing is installed anywhere),
checks the tarball against the registry's integrity, copies the files below
and rewrites the manifest. Review the diff and commit it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"
MANIFEST = FRONTEND_DIR / "vendor" / "manifest.json"


@dataclass(frozen=True)
class Copy:
    """One file taken from a package's tarball into the front end."""

    source: str  # path inside the tarball, e.g. "package/dist/hls.min.mjs"
    target: str  # path under frontend/, e.g. "assets/vendor/hls.min.mjs"


# What each vendored package contributes. hls.js: the full minified ES module
# build (the light build has no alternate-audio support, and our ladder's audio
# is a separate rendition) and its licence, renamed so it is served as text.
PACKAGES: Mapping[str, tuple[Copy, ...]] = {
    "hls.js": (
        Copy("package/dist/hls.min.mjs", "assets/vendor/hls.min.mjs"),
        Copy("package/LICENSE", "assets/vendor/hls.js-LICENSE.txt"),
    ),
}


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendor(package: str, version: str, frontend_dir: Path = FRONTEND_DIR, npm: str = "npm") -> dict[str, Any]:
    """Fetch `package@version` with `npm pack`, copy its files into the front end; its manifest entry."""
    copies = PACKAGES[package]
    with tempfile.TemporaryDirectory(prefix="vidline-vendor-") as tmp:
        packed = subprocess.run(
            [npm, "pack", f"{package}@{version}", "--json", "--pack-destination", tmp],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        )
        (info,) = json.loads(packed.stdout)
        tarball = Path(tmp) / info["filename"]
        algorithm, _, expected = info["integrity"].partition("-")
        actual = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            raise RuntimeError(f"{tarball.name} does not match the registry's integrity {info['integrity']}")
        files = []
        with tarfile.open(tarball) as archive:
            for copy in copies:
                member = archive.extractfile(copy.source)
                if member is None:
                    raise RuntimeError(f"{copy.source} is not a file in {tarball.name}")
                target = frontend_dir / copy.target
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(member.read())
                files.append({"path": copy.target, "from": copy.source, "sha256": sha256_of(target)})
    return {
        "version": info["version"],
        "tarball": f"https://registry.npmjs.org/{package}/-/{info['filename']}",
        "integrity": info["integrity"],
        "files": files,
    }


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """The manifest: {package: {version, tarball, integrity, files: [{path, from, sha256}]}}."""
    if not path.exists():
        return {}
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def problems(frontend_dir: Path = FRONTEND_DIR, manifest_path: Path = MANIFEST) -> list[str]:
    """What differs between the vendored files and the manifest (empty when they match)."""
    found = []
    for package, entry in load_manifest(manifest_path).items():
        for file in entry["files"]:
            path = frontend_dir / file["path"]
            if not path.is_file():
                found.append(f"{package}: {file['path']} is missing")
            elif sha256_of(path) != file["sha256"]:
                found.append(f"{package}: {file['path']} is not the file {package} {entry['version']} ships")
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.vendor PACKAGE VERSION`: (re-)vendor a package and update the manifest."""
    parser = argparse.ArgumentParser(prog="python -m deploy.vendor", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=sorted(PACKAGES))
    parser.add_argument("version", help="an exact version, e.g. 1.7.4")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    manifest[args.package] = vendor(args.package, args.version)
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"vendored {args.package} {manifest[args.package]['version']}:", file=sys.stderr)
    for file in manifest[args.package]["files"]:
        print(f"  frontend/{file['path']}  sha256 {file['sha256']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
