"""Video prediction streams frames: one PNG mask per frame equal to predicting that frame alone, an
overlay MP4 with the video's frame count and size, per-frame areas, skip on re-run, clear errors."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

import medattn
from medattn.io.video import read_video, video_info
from medattn.models import create
from medattn.package import PackageConfig, save_package
from medattn.pipelines.predict_video import frame_image
from medattn.plan import Plan

WIDTH, HEIGHT, FRAMES, FPS = 40, 30, 7, 12.5  # a rate that is not a whole number


def _video(path):
    """A bright disk moving over a dark, textured background (H.264, odd-free size)."""
    rng = np.random.default_rng(0)
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=Fraction(FPS))
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    for t in range(FRAMES):
        disk = (rows - 15) ** 2 + (cols - 8 - 4 * t) ** 2 < 36
        rgb = (rng.integers(0, 40, (HEIGHT, WIDTH, 3)) + 180 * disk[..., None]).astype(np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _package(folder, spatial_dims=2, in_channels=3):
    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 2, "deep_supervision": False}
    network = create("agunet", spatial_dims, in_channels, 2, **kwargs)
    plan = Plan(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=2,
        spacing=None if spatial_dims == 2 else [1.0, 1.0, 1.0],
        patch_size=[16] * spatial_dims,
        batch_size=2,
        preset="rgb" if in_channels == 3 else "mr",
        labels={0: "background", 1: "polyp"},
    )
    config = PackageConfig(model="agunet", model_kwargs=kwargs, plan=plan, label_colors={1: [0, 255, 0]})
    if spatial_dims == 2:
        _balance(network, config)
    return save_package(folder, network.state_dict(), config)


def _balance(network, config):
    """Shift the random network's foreground bias so about half of a frame's pixels are foreground."""
    from medattn.inference.predictor import Predictor

    predictor = Predictor(network, config, device="cpu")
    image = torch.rand(config.plan.in_channels, WIDTH, HEIGHT) * 255
    preprocessed = predictor.preprocess(MetaTensor(image, affine=torch.eye(3)))
    with torch.no_grad():
        logits = network.eval()(preprocessed[None, :, :32, :16].as_tensor())
        network.heads[0].bias[1] -= (logits[0, 1] - logits[0, 0]).median()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return _package(tmp_path_factory.mktemp("pkg"))


def test_every_frame_gets_the_mask_a_single_frame_prediction_gives(video, package, tmp_path):
    seen = []
    results = medattn.predict(
        video, tmp_path, model=package, device="cpu", on_frames=lambda case, done, total: seen.append(done)
    )
    assert [r.status for r in results] == ["done"]
    assert results[0].frames == FRAMES and results[0].fps > 0 and seen == list(range(1, FRAMES + 1))
    predictor = medattn.load_model(package, device="cpu")
    frames = read_video(video)  # (3, W, H, T)
    rows = list(csv.DictReader((tmp_path / "clip_frames.csv").read_text().splitlines()))
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES)) and rows[0]["name"] == "polyp"
    for t in range(FRAMES):
        written = np.asarray(Image.open(tmp_path / "clip" / f"frame_{t:06d}.png"))
        assert written.shape == (HEIGHT, WIDTH)  # the frame's own pixel layout
        expected = predictor.predict(frame_image(frames[..., t], 3, video, FPS))[0].numpy()
        np.testing.assert_array_equal(written, expected.T)
        assert int(rows[t]["pixels"]) == int(written.sum())
        assert float(rows[t]["time_s"]) == pytest.approx(t / FPS, abs=1e-3)
        assert float(rows[t]["area_fraction"]) == pytest.approx(written.sum() / written.size, abs=1e-6)
    pixels = [int(r["pixels"]) for r in rows]
    assert max(pixels) > 0 and min(pixels) < WIDTH * HEIGHT  # masks neither all empty nor all full
    overlay = video_info(tmp_path / "clip_overlay.mp4")
    assert (overlay["width"], overlay["height"], overlay["n_frames"]) == (WIDTH, HEIGHT, FRAMES)
    assert overlay["fps"] == pytest.approx(FPS)
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written is left

    again = medattn.predict(video, tmp_path, model=package, device="cpu")
    assert [r.status for r in again] == ["skipped"]
    (tmp_path / "clip_frames.csv").unlink()  # a partial earlier output is predicted again, not skipped
    assert [r.status for r in medattn.predict(video, tmp_path, model=package, device="cpu")] == ["done"]
    again_rows = list(csv.DictReader((tmp_path / "clip_frames.csv").read_text().splitlines()))
    assert [int(r["pixels"]) for r in again_rows] == pixels


def test_a_grayscale_model_sees_the_frames_luma(video, tmp_path):
    gray = _package(tmp_path / "gray", in_channels=1)
    results = medattn.predict(video, tmp_path / "out", model=gray, device="cpu")
    assert [r.status for r in results] == ["done"] and results[0].frames == FRAMES
    image = frame_image(read_video(video)[..., 0], 1, video, FPS)
    expected = read_video(video)[..., 0].numpy().transpose(1, 2, 0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(image[0].numpy(), expected, rtol=1e-5, atol=1e-3)


def test_a_3d_model_on_a_video_fails_that_case_with_a_clear_message(video, tmp_path):
    volume_model = _package(tmp_path / "3d", spatial_dims=3, in_channels=3)
    results = medattn.predict(video, tmp_path / "out", model=volume_model, device="cpu")
    assert results[0].status == "failed" and "frame by frame by a 2D model" in results[0].error
    assert not (tmp_path / "out" / "clip").exists()


def test_png_masks_with_overlay_for_still_images(package, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    photo = rng.integers(0, 255, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "in" / "frame.png")
    results = medattn.predict(
        tmp_path / "in", tmp_path / "out", model=package, device="cpu", format="png", overlay=True
    )
    assert [r.status for r in results] == ["done"]
    mask = np.asarray(Image.open(tmp_path / "out" / "frame.png"))
    overlay = np.asarray(Image.open(tmp_path / "out" / "frame_overlay.png").convert("RGB"))
    assert mask.shape == (HEIGHT, WIDTH) and overlay.shape == (HEIGHT, WIDTH, 3)
    changed = (overlay != photo).any(axis=-1)
    # Only contour pixels of the mask are painted (green), and only inside the mask.
    assert changed.any() and mask[changed].all() and (overlay[changed] == [0, 255, 0]).all()


def test_a_multipage_tiff_and_an_ultrasound_cine_are_segmented_frame_by_frame(package, tmp_path):
    """Clips that are not video files (the README's ultrasound cine, a multi-page TIFF) get the video outputs:
    one mask per frame equal to that frame's own prediction; a re-run skips them."""
    from pydicom.data import get_testdata_file

    from medattn.io import load_image

    pages = [np.full((12, 16, 3), 40 * k, dtype=np.uint8) for k in range(3)]
    pages[1][3:9, 4:12] = 250
    clips = tmp_path / "clips"
    clips.mkdir()
    Image.fromarray(pages[0]).save(
        clips / "stack.tif", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]]
    )
    cine = get_testdata_file("examples_ybr_color.dcm")  # pydicom's 30-frame ultrasound cine (YBR)
    (clips / "cine.dcm").write_bytes(Path(cine).read_bytes())
    out = tmp_path / "out"
    results = medattn.predict(clips, out, model=package, device="cpu")
    assert sorted((r.case, r.status, r.frames) for r in results) == [
        ("cine", "done", 30),
        ("stack", "done", 3),
    ]
    predictor = medattn.load_model(package, device="cpu")
    clip = load_image(clips / "stack.tif")
    for t in range(3):
        written = np.asarray(Image.open(out / "stack" / f"frame_{t:06d}.png"))
        expected = predictor.predict(frame_image(clip[..., t], 3, clips, 0.0))[0].numpy()
        np.testing.assert_array_equal(written, expected.T)
    assert len(list((out / "cine").glob("frame_*.png"))) == 30
    last = frame_image(load_image(clips / "cine.dcm")[..., 29], 3, clips, 30.0)  # the last frame, in order
    written = np.asarray(Image.open(out / "cine" / "frame_000029.png"))
    np.testing.assert_array_equal(written, predictor.predict(last)[0].numpy().T)
    again = medattn.predict(clips, out, model=package, device="cpu")
    assert [r.status for r in again] == ["skipped", "skipped"]
