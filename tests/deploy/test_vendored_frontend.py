"""The front end's vendored hls.js: pinned, unchanged, shipped from our own origin."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from deploy import vendor
from deploy.frontend import FRONTEND_DIR, IMMUTABLE, build_site


def test_the_vendored_files_are_the_ones_the_manifest_pins() -> None:
    assert vendor.problems() == []
    entry = vendor.load_manifest()["hls.js"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), "pinned to an exact version"
    assert entry["integrity"].startswith("sha512-")
    assert [f["path"] for f in entry["files"]] == [c.target for c in vendor.PACKAGES["hls.js"]]
    # The module says which version it is: the manifest is not just relabelled.
    module = (FRONTEND_DIR / "assets/vendor/hls.min.mjs").read_text(encoding="utf-8")
    assert f'="{entry["version"]}"' in module


def test_a_changed_vendored_file_is_caught(tmp_path: Path) -> None:
    manifest = vendor.load_manifest()
    for file in manifest["hls.js"]["files"]:
        copy = tmp_path / file["path"]
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((FRONTEND_DIR / file["path"]).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert vendor.problems(tmp_path, tmp_path / "manifest.json") == []

    with (tmp_path / "assets/vendor/hls.min.mjs").open("a") as module:
        module.write("\nconsole.log('patched');\n")
    (tmp_path / "assets/vendor/hls.js-LICENSE.txt").unlink()
    assert vendor.problems(tmp_path, tmp_path / "manifest.json") == [
        "hls.js: assets/vendor/hls.min.mjs is not the file hls.js 1.7.4 ships",
        "hls.js: assets/vendor/hls.js-LICENSE.txt is missing",
    ]


def test_the_build_serves_hls_js_as_a_javascript_module_cached_for_good(tmp_path: Path) -> None:
    files = {f.key.split("/", 2)[-1]: f for f in build_site({"apiUrl": "http://api"}, tmp_path / "site")}
    module = files["vendor/hls.min.mjs"]
    assert module.key.startswith("assets/") and module.cache_control == IMMUTABLE
    assert module.content_type == "text/javascript; charset=utf-8"
    assert files["vendor/hls.js-LICENSE.txt"].content_type == "text/plain; charset=utf-8"


def fake_npm(tmp_path: Path, *, tamper: bool) -> str:
    """An `npm` that packs a small hls.js tarball and reports its integrity (wrong if `tamper`)."""
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as archive:
        for name, data in {
            "package/dist/hls.min.mjs": b'const v="9.9.9";',
            "package/LICENSE": b"Apache",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    packed = tmp_path / "packed.tgz"
    packed.write_bytes(tarball.getvalue() + (b"x" if tamper else b""))
    digest = base64.b64encode(hashlib.sha512(tarball.getvalue()).digest()).decode()
    report = json.dumps(
        [{"version": "9.9.9", "filename": "hls.js-9.9.9.tgz", "integrity": f"sha512-{digest}"}]
    )
    npm = tmp_path / "npm"
    # argv: pack hls.js@9.9.9 --json --pack-destination DIR
    npm.write_text(f"#!/bin/sh\ncp {packed} \"$5/hls.js-9.9.9.tgz\"\necho '{report}'\n")
    npm.chmod(0o755)
    return str(npm)


def test_vendoring_copies_the_files_of_a_tarball_that_matches_its_integrity(tmp_path: Path) -> None:
    entry = vendor.vendor("hls.js", "9.9.9", tmp_path / "frontend", npm=fake_npm(tmp_path, tamper=False))
    module = tmp_path / "frontend/assets/vendor/hls.min.mjs"
    assert module.read_bytes() == b'const v="9.9.9";'
    assert entry["version"] == "9.9.9"
    assert entry["tarball"] == "https://registry.npmjs.org/hls.js/-/hls.js-9.9.9.tgz"
    assert entry["files"][0] == {
        "path": "assets/vendor/hls.min.mjs",
        "from": "package/dist/hls.min.mjs",
        "sha256": hashlib.sha256(module.read_bytes()).hexdigest(),
    }


def test_vendoring_refuses_a_tarball_that_does_not_match_its_integrity(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not match the registry's integrity"):
        vendor.vendor("hls.js", "9.9.9", tmp_path / "frontend", npm=fake_npm(tmp_path, tamper=True))
    assert not (tmp_path / "frontend").exists()
