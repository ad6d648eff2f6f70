"""Damaged 2D images and videos: each kind of damage the fuzzer found ends in one UnreadableImageError that
names the file and says what is wrong, before anything of the claimed size is allocated."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import tifffile
from PIL import Image

import medattn.io.limits
import medattn.io.video
from medattn.errors import UnreadableImageError
from medattn.io import load_image
from medattn.io.video import iter_video_frames, read_video

_IMAGE_WIDTH, _IMAGE_LENGTH, _STRIP_BYTE_COUNTS = 256, 257, 279


def _png(path: Path, width: int, height: int, idat_length: int | None = None) -> Path:
    """An 8-bit RGB PNG whose IHDR claims width x height over a few bytes of data (valid checksums)."""

    def chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
        size = len(data) if length is None else length
        return struct.pack(">I", size) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(bytes(1 + 3 * min(width, 64)))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", data, idat_length)
        + chunk(b"IEND", b"")
    )
    return path


def _tiff(path: Path, array: np.ndarray, tags: dict[int, tuple[int, int]], **kwargs) -> Path:
    """A TIFF of `array` whose first page's tags are rewritten: tag -> (count, value) as LONGs; the value
    is the offset of the values when `count` LONGs do not fit in the entry."""
    tifffile.imwrite(path, array, **kwargs)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00", "classic little-endian TIFF expected"
    ifd = int.from_bytes(data[4:8], "little")
    for index in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * index
        tag = int.from_bytes(data[entry : entry + 2], "little")
        if tag in tags:
            count, value = tags.pop(tag)
            data[entry + 2 : entry + 4] = (4).to_bytes(2, "little")  # LONG, so any 32-bit value fits
            data[entry + 4 : entry + 8] = count.to_bytes(4, "little")
            data[entry + 8 : entry + 12] = value.to_bytes(4, "little")
    assert not tags, f"tags {list(tags)} not in the first IFD"
    path.write_bytes(bytes(data))
    return path


def _video(path: Path, frames: int = 6, title: str = "medattn-title") -> Path:
    """A 6-frame 32x24 MPEG-4 video in the container `path`'s suffix names, with a title in its metadata."""
    with av.open(str(path), mode="w") as container:
        container.metadata["title"] = title
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), index * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(UnreadableImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert path.name in message
    for word in words:
        assert word in message
    return message


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_png_header_claiming_more_pixels_than_the_file_holds(tmp_path):
    """Our error, without Pillow's decompression-bomb warning first (the claim check replaces it)."""
    _refused(_png(tmp_path / "big.png", 10_000, 10_000), "header claims", "more than the")


def test_png_header_beyond_pillows_pixel_limit(tmp_path):
    _refused(_png(tmp_path / "bomb.png", 20_000, 20_000), "more pixels than Pillow decodes")


def test_png_chunk_length_beyond_the_file(tmp_path):
    """A damaged IDAT length: Pillow would allocate the claimed 2 GB to read the rest of the chunk."""
    path = _png(tmp_path / "chunk.png", 8, 8, idat_length=2**31 - 1)
    _refused(path, "PNG chunk 'IDAT'", "cut short")


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    _refused(path)


def test_tiff_header_claiming_an_enormous_image(tmp_path):
    """An 8-bit TIFF (Pillow's path) whose ImageLength claims a billion rows."""
    path = tmp_path / "tall.tif"
    _tiff(path, np.zeros((24, 32, 3), np.uint8), {_IMAGE_LENGTH: (1, 1 << 30)})
    _refused(path, "header claims")


def test_sixteen_bit_colour_tiff_header_claiming_an_enormous_image(tmp_path):
    """16-bit RGB goes to tifffile, whose page shapes are checked before any page is decoded."""
    path = tmp_path / "wide.tif"
    _tiff(path, np.zeros((24, 32, 3), np.uint16), {_IMAGE_WIDTH: (1, 1 << 28)}, photometric="rgb")
    _refused(path, "header claims")


def test_tiff_strip_byte_count_beyond_the_file(tmp_path):
    """tifffile reads a strip in one call that first allocates its claimed byte count (here 1 GB)."""
    path = tmp_path / "strip.tif"
    _tiff(path, np.zeros((24, 32, 3), np.uint16), {_STRIP_BYTE_COUNTS: (1, 1 << 30)}, photometric="rgb")
    _refused(path, "TIFF strip or tile data", "cut short")


@pytest.mark.filterwarnings("ignore:Metadata Warning")
def test_tiff_size_tag_with_several_values(tmp_path):
    """A damaged count turns ImageWidth into two values: tifffile's page shape then holds a tuple, which
    multiplied by a huge ImageLength would build a tuple of billions of items."""
    path = tmp_path / "list.tif"
    tags = {_IMAGE_WIDTH: (2, 8), _IMAGE_LENGTH: (1, 1 << 31)}
    _tiff(path, np.zeros((24, 32, 3), np.uint16), tags, photometric="rgb")
    _refused(path, "size tag", "several values")


def test_multipage_tiff_with_a_larger_later_page(tmp_path):
    """Every page is compared with the first before it is decoded (the first page's size bounds the claim)."""
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((24, 32), np.uint16))
    tifffile.imwrite(path, np.zeros((48, 32), np.uint16), append=True)
    _refused(path, "pages differ")


def test_video_cut_short_before_its_codec_is_known(tmp_path):
    """An MP4 cut inside its index: FFmpeg lists a video stream but no codec to decode it."""
    path = _video(tmp_path / "clip.mp4")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 53 // 100])
    _refused(path, "names no codec")


def test_video_with_damaged_metadata_text_still_reads(tmp_path):
    path = _video(tmp_path / "clip.avi")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"medattn-title", b"\xff\xfe\xff" + b"x" * 10))
    assert read_video(path).shape == (3, 32, 24, 6)


def test_video_header_claiming_absurd_frame_count(tmp_path):
    """The AVI stream header's frame count (strh dwLength) set to 2^31 - 1: refused before decoding."""
    path = _video(tmp_path / "clip.avi")
    data = bytearray(path.read_bytes())
    length = data.find(b"strh") + 8 + 32
    data[length : length + 4] = (2**31 - 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    _refused(path, "header claims", "decoded frames")
    assert read_video(path, max_frames=3).shape == (3, 32, 24, 3)  # a bounded read still works


def test_decoding_stops_at_what_the_file_can_hold(tmp_path, monkeypatch):
    """Streaming has no header check; the decode itself stops once the frames outgrow the file."""
    path = _video(tmp_path / "clip.avi")
    monkeypatch.setattr(medattn.io.video, "MAX_COMPRESSION_RATIO", 1)
    monkeypatch.setattr(medattn.io.limits, "MAX_COMPRESSION_RATIO", 1)
    with pytest.raises(UnreadableImageError, match="more than the file can hold") as caught:
        list(iter_video_frames(path, chunk_size=2))
    assert path.name in str(caught.value)


def test_a_demuxer_going_round_in_circles_is_stopped(tmp_path):
    """A damaged index can make the demuxer repeat packets that decode to no frame: the packet count is
    bounded by the file's size, so the read ends instead of hanging."""

    class EmptyPacket:
        def decode(self):
            return []

    class CircularContainer:
        def demux(self, stream):
            while True:
                yield EmptyPacket()

    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(100))
    frames = medattn.io.video._bounded_decode(path, CircularContainer(), None, file_bytes=100)
    with pytest.raises(UnreadableImageError, match="more packets than the file has bytes") as caught:
        list(frames)
    assert path.name in str(caught.value)
