"""Video reading: frames, fps and count against what PyAV wrote, chunks, LoadImage, clean errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage, LoadImaged
from PIL import Image

from medattn.errors import InputNotFoundError, UnreadableImageError
from medattn.io.image2d import read_image2d
from medattn.io.readers import VideoReader
from medattn.io.video import iter_video_frames, read_video, video_info

N_FRAMES, WIDTH, HEIGHT, FPS = 12, 64, 48, 10
SQUARE = 10  # side of the moving square, pixels


def _frames() -> list[np.ndarray]:
    """(H, W, 3) uint8 frames: a textured background and an orange square moving 4 px right per frame."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([40 + rows, 40 + cols, np.full_like(rows, 60)], axis=-1).astype(np.uint8)
    frames = []
    for t in range(N_FRAMES):
        frame = background.copy()
        frame[10 : 10 + SQUARE, 4 * t : 4 * t + SQUARE] = (230, 120, 20)
        frames.append(frame)
    return frames


def _write(path: Path, codec: str, pix_fmt: str, options: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.options = options or {}
        for frame in _frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "lossless": _write(folder / "lossless.mkv", "ffv1", "bgr0"),
        "h264": _write(folder / "clip.mp4", "libx264", "yuv420p", {"crf": "18"}),
        "png_avi": _write(folder / "clip.avi", "png", "rgb24"),
    }


def _expected() -> np.ndarray:
    return np.stack([frame.transpose(2, 1, 0) for frame in _frames()], axis=-1).astype(np.float32)


@pytest.mark.parametrize("name", ["lossless", "png_avi"])
def test_lossless_video_reads_exactly(videos, name):
    video = read_video(videos[name])
    assert video.shape == (3, WIDTH, HEIGHT, N_FRAMES) and video.dtype == torch.float32
    np.testing.assert_array_equal(video.numpy(), _expected())
    meta = video.meta
    assert meta["fps"] == FPS and meta["n_frames"] == N_FRAMES and meta["time_axis"] == 3
    assert meta["modality"] == "RGB" and meta["filename_or_obj"] == str(videos[name])
    assert meta["codec"] == {"lossless": "ffv1", "png_avi": "png"}[name]
    np.testing.assert_array_equal(meta["spatial_shape"], (WIDTH, HEIGHT, N_FRAMES))


def test_lossy_h264_is_close_and_square_is_where_it_was_drawn(videos):
    video = read_video(videos["h264"]).numpy()
    assert video.shape == (3, WIDTH, HEIGHT, N_FRAMES)
    assert np.abs(video - _expected()).mean() < 3.0
    for t in range(N_FRAMES):
        blue = video[2, :, :, t]  # the square is the only dark-blue region: 20 vs a background of 60
        columns = np.nonzero((blue < 40).any(axis=1))[0]
        assert abs(columns.min() - 4 * t) <= 1 and abs(columns.max() - (4 * t + SQUARE - 1)) <= 1


def test_frames_follow_the_2d_image_convention(videos, tmp_path):
    first = _frames()[0]
    Image.fromarray(first).save(tmp_path / "frame0.png")
    np.testing.assert_array_equal(
        read_video(videos["lossless"])[..., 0].numpy(), read_image2d(tmp_path / "frame0.png").numpy()
    )


@pytest.mark.parametrize("name", ["lossless", "h264"])
def test_video_info_reads_the_header(videos, name):
    info = video_info(videos[name])
    assert info["fps"] == FPS and info["n_frames"] == N_FRAMES
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["codec"] == {"lossless": "ffv1", "h264": "h264"}[name]


def test_chunks_concatenate_to_the_whole_video(videos):
    whole = read_video(videos["h264"])
    chunks = list(iter_video_frames(videos["h264"], chunk_size=5))
    assert [chunk.shape[-1] for chunk in chunks] == [5, 5, 2]
    assert [chunk.meta["frame_start"] for chunk in chunks] == [0, 5, 10]
    assert chunks[0].meta["fps"] == FPS
    np.testing.assert_array_equal(np.concatenate([chunk.numpy() for chunk in chunks], axis=-1), whole.numpy())


def test_max_frames(videos):
    video = read_video(videos["lossless"], max_frames=4)
    assert video.shape[-1] == 4 and video.meta["n_frames"] == 4
    np.testing.assert_array_equal(video.numpy(), _expected()[..., :4])


def test_loadimage_and_loadimaged_use_video_reader(videos):
    path = str(videos["lossless"])
    image = LoadImage(reader=VideoReader(), ensure_channel_first=True)(path)
    assert image.shape == (3, WIDTH, HEIGHT, N_FRAMES) and image.meta["fps"] == FPS
    np.testing.assert_array_equal(image.numpy(), _expected())
    data = LoadImaged(keys="video", reader=VideoReader(max_frames=3))({"video": path})
    assert data["video"].shape == (3, WIDTH, HEIGHT, 3)
    assert VideoReader().verify_suffix(["a.MP4", "b.webm", "c.mpeg"]) and not VideoReader().verify_suffix(
        "a.png"
    )


def test_bad_videos_raise_medattn_errors(videos, tmp_path):
    for name in ("lossless", "h264"):
        data = videos[name].read_bytes()
        (tmp_path / f"cut_{videos[name].name}").write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "text.mp4").write_text("not a video at all")
    audio_path = tmp_path / "audio.mp4"
    with av.open(str(audio_path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    for name in ("cut_lossless.mkv", "cut_clip.mp4", "text.mp4", "audio.mp4"):
        with pytest.raises(UnreadableImageError, match=name):
            read_video(tmp_path / name)
    with pytest.raises(UnreadableImageError, match="cut_lossless.mkv"):
        list(iter_video_frames(tmp_path / "cut_lossless.mkv"))
    with pytest.raises(UnreadableImageError, match="audio.mp4"):
        video_info(audio_path)
    with pytest.raises(UnreadableImageError, match="text.mp4"):
        LoadImage()(str(tmp_path / "text.mp4"), reader=VideoReader())
    with pytest.raises(InputNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
