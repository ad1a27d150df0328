"""Hostile uploads made at test time: files that name other files (DASH, HLS,
ffconcat, IMF, SDP, a QuickTime reference movie), each with a witness on what
it names. The witness is a FIFO (or, for SDP, a UDP port) that notices being
opened: opening a FIFO to read blocks until a writer comes, so the witness
cannot miss an open: it sees the blocked reader, opens the writing end, closes
it, and the reader gets an empty file.

Used by the media tests (tests/unit/test_hostile_media.py) and the worker's
(tests/integration/test_worker.py).
"""

from __future__ import annotations

import errno
import os
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.media_tools import make_clip, make_reference_movie


class Witness:
    """Notices whether anything opens what it stands for, while it is watching."""

    opened: bool

    def close(self) -> None:
        raise NotImplementedError


class FifoWitness(Witness):
    """A FIFO in place of a file that must not be read."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.opened = path, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                # Succeeds only while a reader has the FIFO open (or is blocked opening it).
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO, exc
                time.sleep(0.002)
                continue
            self.opened = True
            os.close(fd)  # the reader sees an empty file and goes on

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class UdpPortWitness(Witness):
    """A local UDP port that must not be bound (an SDP's RTP receiver would bind it)."""

    def __init__(self, port: int) -> None:
        self.port, self.opened = port, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _bound(self) -> bool:
        needle = f":{self.port:04X} "
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as sockets:
                if any(line.split()[1].endswith(needle.strip()) for line in list(sockets)[1:]):
                    return True
        return False

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._bound():
                self.opened = True
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -------------------------------------------------------------- hostile files


@dataclass
class Hostile:
    """A file that names another, the witness on that other, and what plain ffmpeg needs to follow it."""

    path: Path
    witness: Witness
    # ffmpeg options that make plain ffmpeg follow the reference where its
    # defaults do not (the control); empty where the defaults do.
    follow_options: tuple[str, ...] = ()


def dash_absolute(tmp: Path) -> Hostile:
    target = tmp / "elsewhere" / "private.mp4"
    target.parent.mkdir()
    return _dash(tmp, f"file://{target}", target)


def dash_relative(tmp: Path) -> Hostile:
    target = tmp / "private.mp4"
    return _dash(tmp, "../../private.mp4", target)


def _dash(tmp: Path, base_url: str, target: Path) -> Hostile:
    manifest = tmp / "uploads" / "job" / "source.mpd"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        textwrap.dedent(f"""\
            <?xml version="1.0"?>
            <MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S"
                 minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
              <Period><AdaptationSet mimeType="video/mp4">
                <Representation id="1" bandwidth="100000" codecs="avc1.42c01e" width="320" height="240">
                  <BaseURL>{base_url}</BaseURL><SegmentBase/>
                </Representation>
              </AdaptationSet></Period>
            </MPD>
            """)
    )
    return Hostile(manifest, FifoWitness(target))


def hls(tmp: Path) -> Hostile:
    playlist = tmp / "source.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nprivate.ts\n#EXT-X-ENDLIST\n"
    )
    return Hostile(playlist, FifoWitness(tmp / "private.ts"))


def ffconcat(tmp: Path) -> Hostile:
    script = tmp / "source.ffconcat"
    script.write_text("ffconcat version 1.0\nfile 'private.mp4'\n")
    return Hostile(script, FifoWitness(tmp / "private.mp4"))


def imf(tmp: Path) -> Hostile:
    """An IMF composition playlist; the ASSETMAP.xml beside it maps its track to an MXF file."""
    track_id = "urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a05"
    cpl = tmp / "CPL.xml"
    cpl.write_text(
        textwrap.dedent(f"""\
            <?xml version="1.0" encoding="UTF-8"?>
            <CompositionPlaylist xmlns="http://www.smpte-ra.org/schemas/2067-3/2016"
                                 xmlns:cc="http://www.smpte-ra.org/schemas/2067-2/2016">
              <Id>urn:uuid:8713c020-2489-45f5-a9f7-87be539e20b5</Id>
              <ContentTitle>clip</ContentTitle>
              <EditRate>30 1</EditRate>
              <SegmentList><Segment>
                <Id>urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a01</Id>
                <SequenceList><cc:MainImageSequence>
                  <Id>urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a02</Id>
                  <TrackId>urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a03</TrackId>
                  <ResourceList><Resource>
                    <Id>urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a04</Id>
                    <EditRate>30 1</EditRate>
                    <IntrinsicDuration>60</IntrinsicDuration>
                    <TrackFileId>{track_id}</TrackFileId>
                  </Resource></ResourceList>
                </cc:MainImageSequence></SequenceList>
              </Segment></SegmentList>
            </CompositionPlaylist>
            """)
    )
    (tmp / "ASSETMAP.xml").write_text(
        textwrap.dedent(f"""\
            <?xml version="1.0" encoding="UTF-8"?>
            <AssetMap xmlns="http://www.smpte-ra.org/schemas/429-9/2007/AM">
              <Id>urn:uuid:2d3c2bde-0c3f-4b8e-8a8e-2f6b1b3b1a06</Id>
              <AssetList><Asset>
                <Id>{track_id}</Id>
                <ChunkList><Chunk><Path>private.mxf</Path></Chunk></ChunkList>
              </Asset></AssetList>
            </AssetMap>
            """)
    )
    return Hostile(cpl, FifoWitness(tmp / "private.mxf"))


def sdp(tmp: Path) -> Hostile:
    """A session description: reading it means listening for RTP on a local UDP port."""
    port = free_udp_port()
    description = tmp / "source.sdp"
    description.write_bytes(
        b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=clip\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        + f"m=video {port} RTP/AVP 96\r\n".encode()
        + b"a=rtpmap:96 H264/90000\r\n"
    )
    # ffmpeg's default protocol list for SDP already refuses RTP; the control widens it.
    return Hostile(description, UdpPortWitness(port), ("-protocol_whitelist", "file,udp,rtp"))


def reference_movie(tmp: Path) -> Hostile:
    """A .mov whose track's samples live in another file (a dref alias), not in itself."""
    original = make_clip(tmp / "original.mov", seconds=1, size="160x120", audio=False)
    movie = make_reference_movie(original, tmp / "source.mov", target_name="private.mov")
    original.unlink()
    return Hostile(movie, FifoWitness(tmp / "private.mov"), ("-enable_drefs", "1"))


HOSTILE = [dash_absolute, dash_relative, hls, ffconcat, imf, sdp, reference_movie]
