"""Video through PyAV: read MP4, AVI, MOV, MKV, WebM, MPEG as 2D+t MetaTensors (C, W, H, T); write overlays.

Frames follow the 2D image convention of `medattn.io.image2d` (MONAI's PILReader: spatial (W, H), the
transpose of a frame's (H, W)) and are stacked along a last, time axis: `meta["time_axis"] = 3`,
`meta["fps"]` in frames per second, values 0-255 RGB (every pixel format is converted to 8-bit RGB).
Rotation metadata of phone videos is not applied, like EXIF orientation for photos.

A file that is not a video, holds no video stream, fails to decode, or ends well before the frame count its
header announces raises `UnreadableImageError`. Up to 1 frame or 2 % fewer frames than announced are
accepted, because edit lists and rounded durations make the announced count approximate. So does a damaged
file whose header claims more frames x frame size than the file could decode to (`medattn.io.limits`), or
whose decoding outgrows the file (more frames, or more packets, than it could hold): checked before and
while decoding, so a damaged video never fills memory or keeps FFmpeg running on garbage.

`OverlayVideoWriter` writes the overlay MP4 of `medattn predict` on a video (contours drawn by
medattn.io.overlay).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from monai.data import MetaTensor

from medattn.errors import UnreadableImageError
from medattn.io.image2d import DecodedImage, check_file, planar_meta
from medattn.io.limits import MAX_COMPRESSION_RATIO, check_claimed_size

#: Bytes of one decoded pixel (8-bit RGB).
_RGB_BYTES = 3


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[Any, Any]]:
    """The open container and its first video stream; medattn errors for what PyAV cannot open."""
    try:
        # Metadata text is not used; damaged bytes in it must not stop the frames from reading.
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as err:
        raise UnreadableImageError(f"not a video file PyAV can open ({err})", path) from err
    try:
        if not container.streams:
            raise UnreadableImageError("no streams found: not a video, or truncated before its index", path)
        if not container.streams.video:
            raise UnreadableImageError("holds no video stream (audio or data only)", path)
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise UnreadableImageError(
                "the video stream names no codec FFmpeg can decode: its header is damaged or the file is cut "
                "short before it",
                path,
            )
        yield container, stream
    finally:
        container.close()


def _frame_rate(stream: Any) -> float:
    """Frames per second from the stream header (average rate, else FFmpeg's guess), NaN when unknown."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return math.nan


def _announced_frames(container: Any, stream: Any) -> int | None:
    """The frame count the header announces: exact where the container stores one (MP4, AVI), else estimated.

    Matroska/WebM store no count, only a duration, so duration x fps estimates it; None when neither is known.
    """
    if stream.frames:
        return int(stream.frames)
    fps = _frame_rate(stream)
    if stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return None
    return round(seconds * fps) if math.isfinite(fps) else None


def _header(container: Any, stream: Any) -> dict[str, Any]:
    """fps, announced n_frames, frame width/height (pixels), codec and container format, from the header."""
    return {
        "fps": _frame_rate(stream),
        "n_frames": _announced_frames(container, stream),
        "width": int(stream.codec_context.width),
        "height": int(stream.codec_context.height),
        "codec": stream.codec_context.name,
        "format": container.format.name,
    }


def video_info(path: str | Path) -> dict[str, Any]:
    """What a video holds, read from its header without decoding frames (cheap even for long videos).

    Args:
        path: the video file.

    Returns:
        fps (frames per second), n_frames (exact for MP4/MOV/AVI; from duration x fps for MKV/WebM; None when
        the header has neither), width and height (pixels), codec (FFmpeg decoder name, e.g. 'h264') and
        format (container, e.g. 'mov,mp4,m4a,3gp,3g2,mj2').

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not a video, or no video stream.
    """
    path = check_file(path)
    with _open_video(path) as (container, stream):
        return _header(container, stream)


def _check_header_claim(path: Path, header: dict[str, Any], max_frames: int | None) -> None:
    """Refuse a header whose frame count x frame size claims more than the compressed file can decode to."""
    frames = header["n_frames"]
    if frames is None:
        return  # no count in the header: decoding is bounded frame by frame instead
    if max_frames is not None:
        frames = min(frames, max_frames)
    claimed = max(frames, 0) * header["width"] * header["height"] * _RGB_BYTES
    check_claimed_size(claimed, path, compressed=True, what="decoded frames")


def _bounded_decode(path: Path, container: Any, stream: Any, file_bytes: int) -> Iterator[Any]:
    """`container.decode(stream)`, refusing more packets than the file has bytes (a damaged index that
    sends the demuxer round in circles yields no frames for the frame bound to stop)."""
    for packets, packet in enumerate(container.demux(stream), start=1):
        if packets > file_bytes + 1:  # every packet holds a byte of the file, but the final empty one
            raise UnreadableImageError(
                f"the video index lists more packets than the file has bytes ({file_bytes}): it is damaged",
                path,
            )
        yield from packet.decode()


def _decode_frames(path: Path, container: Any, stream: Any, max_frames: int | None) -> Iterator[np.ndarray]:
    """Frames one at a time as (3, W, H) uint8 arrays; a decode error, no frame or an early end raise.

    Decoding is bounded by the file: a frame larger than the file could hold, more frames in all than it
    could decode to (a damaged stream FFmpeg keeps decoding garbage from), or more packets than it has
    bytes raises instead of running on.
    """
    stream.codec_context.thread_type = "AUTO"
    file_bytes = path.stat().st_size
    count = 0
    shape = None
    try:
        for frame in _bounded_decode(path, container, stream, file_bytes):
            frame_bytes = frame.width * frame.height * _RGB_BYTES
            check_claimed_size(frame_bytes, path, compressed=True, file_bytes=file_bytes, what="one frame")
            if (count + 1) * frame_bytes > file_bytes * MAX_COMPRESSION_RATIO:
                raise UnreadableImageError(
                    f"decoding gives more than {count} frames of {frame.width}x{frame.height} pixels, more "
                    "than the file can hold: the video stream is damaged",
                    path,
                )
            plane = frame.to_ndarray(format="rgb24").transpose(2, 1, 0)
            if shape is not None and plane.shape != shape:
                raise UnreadableImageError(
                    f"frame size changes at frame {count}: {plane.shape} vs {shape}", path
                )
            shape = plane.shape
            yield plane
            count += 1
            if max_frames is not None and count >= max_frames:
                return
    except av.error.FFmpegError as err:
        raise UnreadableImageError(
            f"video data is corrupt or truncated after frame {count} ({err})", path
        ) from err
    if count == 0:
        raise UnreadableImageError("no frame decodes (empty or truncated video)", path)
    announced = _announced_frames(container, stream)
    if announced is not None and count < announced - max(1, announced // 50):
        raise UnreadableImageError(
            f"truncated: the header announces {announced} frames but only {count} decode", path
        )


def _video_meta(path: Path, array: np.ndarray, header: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """planar_meta for a (3, W, H, T) array plus the video keys; n_frames is the array's T."""
    return planar_meta(path, array, "RGB", **{**header, "n_frames": array.shape[-1], "time_axis": 3, **extra})


def decode_video(path: str | Path, max_frames: int | None = None) -> DecodedImage:
    """Decode a video into a (3, W, H, T) uint8 array with its meta (what VideoReader.read returns).

    Args:
        path: the video file.
        max_frames: stop after this many frames (None: all), to bound memory on long videos.

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not a video, no video stream, corrupt or truncated.
    """
    path = check_file(path)
    with _open_video(path) as (container, stream):
        header = _header(container, stream)
        _check_header_claim(path, header, max_frames)
        frames = list(_decode_frames(path, container, stream, max_frames))
    array = np.stack(frames, axis=-1)
    return DecodedImage(array, _video_meta(path, array, header))


def read_video(path: str | Path, max_frames: int | None = None) -> MetaTensor:
    """Read a video as a float32 MetaTensor (3, W, H, T): RGB 0-255, frames along the last axis.

    Memory is 12 bytes per pixel per frame (uint8 decode + float32 result): use `max_frames` or
    `iter_video_frames` for long videos.

    Args:
        path: the video file (.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg).
        max_frames: read only the first this many frames (None: all).

    Returns:
        (3, W, H, T) float32 with meta: filename_or_obj, modality 'RGB', spacing (1.0, 1.0) (pixels; the time
        step is 1 / fps seconds), space 'RAS', spatial_shape (W, H, T), affine (identity), fps, time_axis 3,
        n_frames (T), width, height, codec, format.

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not a video, no video stream, corrupt or truncated.
    """
    decoded = decode_video(path, max_frames)
    return MetaTensor(torch.from_numpy(decoded.array.astype(np.float32)), meta=decoded.meta)


def iter_video_frames(path: str | Path, chunk_size: int = 16) -> Iterator[MetaTensor]:
    """Yield a video in chunks of frames, so memory stays bounded by one chunk (streaming prediction).

    Concatenated along the last axis, the chunks equal `read_video(path)`.

    Args:
        path: the video file.
        chunk_size: frames per chunk; the last chunk may be shorter.

    Yields:
        (3, W, H, t) float32 MetaTensors, t <= chunk_size, with read_video's meta where n_frames is t and
        frame_start is the index of the chunk's first frame in the video.

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not a video, or corrupt/truncated (raised when the bad part is reached, so
            earlier chunks may already have been yielded).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    path = check_file(path)
    with _open_video(path) as (container, stream):
        header = _header(container, stream)
        buffer: list[np.ndarray] = []
        start = 0
        for plane in _decode_frames(path, container, stream, None):
            buffer.append(plane)
            if len(buffer) == chunk_size:
                yield _chunk(path, buffer, header, start)
                start += len(buffer)
                buffer = []
        if buffer:
            yield _chunk(path, buffer, header, start)


def _chunk(path: Path, planes: list[np.ndarray], header: dict[str, Any], start: int) -> MetaTensor:
    array = np.stack(planes, axis=-1).astype(np.float32)
    return MetaTensor(torch.from_numpy(array), meta=_video_meta(path, array, header, frame_start=start))


class OverlayVideoWriter:
    """H.264 MP4 of frames with contours drawn; frame sizes are padded to even numbers (x264 needs it).

    Args:
        path: the .mp4 file (write it through medattn.io.atomic.atomic_path).
        fps: the source's frame rate, kept exactly (12.5, 29.97 = 30000/1001); 25 when unknown (<= 0).
        width, height: frame size in pixels.
    """

    def __init__(self, path: Path, fps: float, width: int, height: int):
        self.container = av.open(str(path), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "20", "preset": "veryfast"}

    def write(self, rgb_rows_first: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame (as `medattn.io.overlay.draw_contours` returns it)."""
        height, width = self.stream.height, self.stream.width
        if rgb_rows_first.shape[:2] != (height, width):
            padded = np.zeros((height, width, 3), dtype=np.uint8)
            padded[: rgb_rows_first.shape[0], : rgb_rows_first.shape[1]] = rgb_rows_first
            rgb_rows_first = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb_rows_first), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file (also after an error, so no handle stays open)."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
