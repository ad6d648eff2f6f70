"""Segment a video frame by frame: streamed decoding, per-frame PNG masks, an overlay MP4, per-frame areas.

Frames are decoded in chunks (`medattn.io.video.iter_video_frames`), go one at a time through the stages
every case goes through (`medattn.inference.stages`: decoded on the reader thread, segmented, written at
once), so memory stays bounded by one chunk whatever the video's length. For a video `<id>.mp4` the
outputs are

- `<id>/frame_000000.png ...`: each frame's label values as a single-channel PNG (lossless, the frame's
  pixel layout; the same files `--format png` writes for still images);
- `<id>_overlay.mp4`: the video with each label's contour drawn in its colour (H.264, the input's fps);
- `<id>_frames.csv`: per frame and label, the mask's pixels and the fraction of the frame they cover.

Everything is written under temporary names and the mask folder is renamed into place last, so a kill
leaves either a finished video or nothing a re-run would mistake for one.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medattn.errors import ConfigError, GeometryError, WriteError
from medattn.inference.stages import Stages, run_stages
from medattn.io.atomic import atomic_path
from medattn.metrics.volume import label_voxel_counts

FRAME_COLUMNS = ("case", "frame", "time_s", "label", "name", "pixels", "area_fraction")
# ITU-R BT.601 luma: a grayscale model (ultrasound) sees a colour-encoded frame as the gray it shows.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def video_outputs(out: Path, case_id: str) -> dict[str, Path]:
    """Where a video case's outputs go; the mask folder is written last. A case is done when all exist."""
    return {
        "masks": out / case_id,
        "overlay": out / f"{case_id}_overlay.mp4",
        "frames": out / f"{case_id}_frames.csv",
    }


def video_done(out: Path, case_id: str) -> bool:
    """Whether every output of the video case is there (a re-run skips it only then)."""
    return all(path.exists() for path in video_outputs(out, case_id).values())


def frame_image(frame, in_channels: int, source: Path, fps: float):
    """One frame (3 or 1, W, H) as the 2D MetaTensor a 2D model reads: RGB as it is or as luma for a
    1-channel model, grey as it is or repeated into RGB for a 3-channel one."""
    import torch
    from monai.data import MetaTensor

    array = frame.as_tensor() if hasattr(frame, "as_tensor") else torch.as_tensor(frame)
    if in_channels not in (1, 3) or array.shape[0] not in (1, 3):
        raise ConfigError(
            f"the model takes {in_channels} channels, the frames have {array.shape[0]}; frames are "
            "segmented as RGB (3 channels) or grey (1)",
            source,
        )
    if in_channels == 1 and array.shape[0] == 3:
        array = torch.einsum("c...,c->...", array.float(), torch.from_numpy(_LUMA))[None]
    elif in_channels == 3 and array.shape[0] == 1:
        array = array.expand(3, *array.shape[1:])
    meta = {"filename_or_obj": str(source), "modality": "RGB", "spacing": (1.0, 1.0), "fps": fps}
    return MetaTensor(array.float(), affine=torch.eye(3, dtype=torch.float64), meta=meta)


def predict_video(
    predictor,
    case_id: str,
    path: Path,
    out: Path,
    postprocess: Callable[[np.ndarray], np.ndarray] = lambda labels: labels,
    on_frames: Callable[[int, int | None], None] | None = None,
    chunk_size: int = 16,
) -> dict:
    """Segment every frame of the video at `path` with a 2D `predictor` (see the module docstring).

    Args:
        predictor: a `medattn.inference.predictor.Predictor` of a 2D model.
        case_id: names the outputs.
        path: the video file.
        out: the output folder.
        postprocess: applied to each frame's (W, H) labels before writing (keep-largest, fill-holes...).
        on_frames: called as (frames done, frames announced or None) after each frame, for progress bars.
        chunk_size: frames decoded at a time (memory: chunk_size x W x H x 3 x 4 bytes).

    Returns:
        {"output": mask folder, "frames": count, "fps": frames segmented per second (decode, inference,
        writing included), "video_fps": the video's own frame rate}.

    Raises:
        ConfigError: the model is not 2D or takes neither 1 nor 3 channels.
        UnreadableImageError: the video cannot be decoded (a truncated file fails where it breaks).
    """
    from medattn.io.label_table import label_table
    from medattn.io.overlay import display_rgb, draw_contours
    from medattn.io.png import write_label_png
    from medattn.io.video import OverlayVideoWriter

    if predictor.plan.spatial_dims != 2:
        raise ConfigError(
            f"the model is {predictor.plan.spatial_dims}D; a video is segmented frame by frame by a 2D model",
            path,
        )
    info, chunks = clip_chunks(path, chunk_size)
    fps = float(info["fps"] or 0.0)
    if not math.isfinite(fps):
        fps = 0.0  # unknown: frames.csv leaves time_s empty
    names = predictor.config.labels
    table = label_table(predictor.config.label_table(), names)
    targets = video_outputs(out, case_id)
    partial = out / f".{case_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start, count = time.perf_counter(), 0
    frames = (chunk[..., t].as_tensor() for chunk in chunks for t in range(chunk.shape[-1]))
    try:
        with atomic_path(targets["frames"]) as csv_tmp, atomic_path(targets["overlay"]) as video_tmp:
            overlay = OverlayVideoWriter(video_tmp, fps, info["width"], info["height"])
            with closing(overlay), open(csv_tmp, "w", newline="") as handle:
                rows = csv.DictWriter(handle, fieldnames=FRAME_COLUMNS, lineterminator="\n")
                rows.writeheader()

                def write(frame: _Frame) -> None:
                    nonlocal count
                    write_label_png(frame.labels, partial / f"frame_{count:06d}.png")
                    rgb = display_rgb(frame.pixels, frame.labels.shape)
                    overlay.write(draw_contours(rgb, frame.labels, table))
                    rows.writerows(_frame_rows(case_id, count, fps, frame.labels, names))
                    count += 1
                    if on_frames is not None:
                        on_frames(count, info["n_frames"])

                stages = _frame_stages(predictor, path, fps, postprocess, write)
                run_stages(frames, stages, pipelined=False, on_result=lambda result, index: None)
        if targets["masks"].exists():
            shutil.rmtree(targets["masks"])
        partial.rename(targets["masks"])
    except OSError as error:
        raise WriteError(f"could not write the video outputs: {error}", out) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - start
    return {
        "output": str(targets["masks"]),
        "frames": count,
        "fps": round(count / seconds, 2) if seconds > 0 else None,
        "video_fps": fps,
    }


@dataclass
class _Frame:
    """One frame on its way through the stages: its pixels (for the overlay), the model's view of it."""

    pixels: np.ndarray  # (C, W, H) as decoded
    image: object  # the 2D MetaTensor the model reads (`frame_image`)
    prepared: object = None
    inferred: object = None
    labels: np.ndarray | None = None  # (W, H), postprocessed


def _frame_stages(predictor, path: Path, fps: float, postprocess: Callable, write: Callable) -> Stages:
    """The stages of a case (`medattn.inference.stages`) for the frames of a clip: the predictor's
    preprocess, infer and finish between turning a decoded frame into an image and writing its outputs."""
    in_channels = predictor.plan.in_channels

    def read(pixels) -> _Frame:
        return _Frame(pixels.numpy(), frame_image(pixels, in_channels, path, fps))

    def preprocess(frame: _Frame) -> _Frame:
        frame.prepared = predictor.preprocess(frame.image)
        return frame

    def infer(frame: _Frame) -> _Frame:
        frame.inferred = predictor.infer(frame.prepared)
        return frame

    def finish(frame: _Frame) -> _Frame:
        output = predictor.finish(frame.inferred, frame.prepared, frame.image)
        frame.labels = postprocess(np.asarray(output.mask[0]))
        frame.prepared = frame.inferred = None
        return frame

    return Stages(read, preprocess, infer, finish, write)


def clip_chunks(path: Path, chunk_size: int) -> tuple[dict, Iterator]:
    """What a clip holds (fps, n_frames, width, height) and its frames in chunks (C, W, H, t).

    A video file is decoded as it is read (`medattn.io.video`); any other 2D+t image, an ultrasound cine
    DICOM or a multi-page TIFF, is read whole by `load_image` and cut into chunks.
    """
    from medattn.io.atomic import full_suffix
    from medattn.io.formats import VIDEO_SUFFIXES
    from medattn.io.load import load_image
    from medattn.io.video import iter_video_frames, video_info

    if full_suffix(path) in VIDEO_SUFFIXES:
        return video_info(path), iter_video_frames(path, chunk_size=chunk_size)
    clip = load_image(path)
    if not clip.meta.get("time_axis") or clip.ndim != 4:
        raise GeometryError(f"expected a clip of 2D frames (2D+t), found shape {tuple(clip.shape)}", path)
    frames = clip.shape[-1]
    info = {
        "fps": clip.meta.get("fps"),
        "n_frames": frames,
        "width": clip.shape[1],
        "height": clip.shape[2],
    }
    return info, (clip[..., start : start + chunk_size] for start in range(0, frames, chunk_size))


def _frame_rows(
    case_id: str, index: int, fps: float, labels: np.ndarray, names: dict[int, str]
) -> list[dict]:
    time_s = round(index / fps, 4) if fps else ""
    return [
        {
            "case": case_id,
            "frame": index,
            "time_s": time_s,
            "label": value,
            "name": name,
            "pixels": pixels,
            "area_fraction": round(float(pixels) / labels.size, 6),
        }
        for value, name, pixels in label_voxel_counts(labels, names)
    ]
