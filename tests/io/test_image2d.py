"""2D image reading: agreement with MONAI's PILReader, Pillow and tifffile, channel rules, clean errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import tifffile
import torch
from monai.transforms import LoadImage, LoadImaged
from PIL import Image

from medattn.errors import GeometryError, InputNotFoundError, UnreadableImageError
from medattn.io.image2d import read_image2d
from medattn.io.readers import Image2DReader

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # (H, W, C): 20 rows, 30 columns
GRAY16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **kwargs)
    return path


def _monai_pil(path: Path) -> torch.Tensor:
    return LoadImage(reader="PILReader", ensure_channel_first=True)(str(path))


# Files both readers must read identically (PILReader's own formats and the modes it handles as we do).
PIL_READER_CASES = {
    "rgb.png": lambda p: _save(p, RGB),
    "gray.png": lambda p: _save(p, RGB[..., 0]),
    "gray16.png": lambda p: _save(p, GRAY16),
    "bilevel.png": lambda p: _save(p, RGB[..., 0], mode="1"),
    "rgb.jpg": lambda p: _save(p, RGB, quality=90),
    "gray.jpeg": lambda p: _save(p, RGB[..., 1]),
    "rgb.bmp": lambda p: _save(p, RGB),
}


@pytest.mark.parametrize("name", sorted(PIL_READER_CASES))
def test_matches_monai_pilreader_through_loadimage(tmp_path, name):
    path = PIL_READER_CASES[name](tmp_path / name)
    reference = _monai_pil(path)
    ours = LoadImage(reader=Image2DReader(), ensure_channel_first=True)(str(path))
    assert ours.meta["modality"]  # set by our reader, so LoadImage did not fall back to its own
    direct = read_image2d(path)
    for image in (ours, direct):
        assert image.shape == reference.shape
        assert image.dtype == torch.float32
        np.testing.assert_array_equal(image.numpy(), reference.numpy())
        np.testing.assert_array_equal(image.affine.numpy(), reference.affine.numpy())
        np.testing.assert_array_equal(image.meta["spatial_shape"], reference.meta["spatial_shape"])
        assert image.meta["filename_or_obj"] == str(path)
        assert image.meta["modality"] == ("RGB" if reference.shape[0] == 3 else "OT")
        assert image.meta["spacing"] == (1.0, 1.0)
        assert image.meta["space"] == "RAS"
    # Without ensure_channel_first our reader is channel-first already.
    plain = LoadImage(reader=Image2DReader())(str(path))
    np.testing.assert_array_equal(plain.numpy(), reference.numpy())


def test_width_is_axis_0(tmp_path):
    image = read_image2d(_save(tmp_path / "rgb.png", RGB))
    assert image.shape == (3, 30, 20)
    np.testing.assert_array_equal(image[:, 4, 2].numpy(), RGB[2, 4])  # pixel at column 4, row 2


def test_sixteen_bit_gray_keeps_values(tmp_path):
    image = read_image2d(_save(tmp_path / "gray16.png", GRAY16))
    assert image.shape == (1, 30, 20) and image.max() > 255
    np.testing.assert_array_equal(image[0].numpy(), GRAY16.T.astype(np.float32))


def test_bilevel_reads_as_zero_one(tmp_path):
    image = read_image2d(_save(tmp_path / "mask.png", (RGB[..., 0] > 128).astype(np.uint8) * 255, mode="1"))
    np.testing.assert_array_equal(image[0].numpy(), (RGB[..., 0] > 128).T.astype(np.float32))


def test_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB, RNG.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=-1)
    image = read_image2d(_save(tmp_path / "rgba.png", rgba))
    assert image.shape == (3, 30, 20) and image.meta["modality"] == "RGB"
    np.testing.assert_array_equal(image.numpy(), RGB.transpose(2, 1, 0))


def test_gray_alpha_drops_alpha(tmp_path):
    path = _save(tmp_path / "la.png", np.stack([RGB[..., 0], RGB[..., 1]], axis=-1))
    assert Image.open(path).mode == "LA"
    image = read_image2d(path)
    np.testing.assert_array_equal(image.numpy(), RGB[..., :1].transpose(2, 1, 0))


def test_palette_png_reads_as_rgb_or_indices(tmp_path):
    path = _save(tmp_path / "palette.png", RGB, mode="P")
    with Image.open(path) as pil:
        assert pil.mode == "P"
        expected_rgb = np.asarray(pil.convert("RGB")).transpose(2, 1, 0)
    image = read_image2d(path)
    assert image.shape == (3, 30, 20) and image.meta["modality"] == "RGB"
    np.testing.assert_array_equal(image.numpy(), expected_rgb)
    # With palette_indices the indices come back, as MONAI's PILReader gives them.
    indices = LoadImage(reader=Image2DReader(palette_indices=True), ensure_channel_first=True)(str(path))
    np.testing.assert_array_equal(indices.numpy(), _monai_pil(path).numpy())


def test_tiff_rgb_gray16_float_match_tifffile(tmp_path):
    cases = {
        "rgb.tif": RGB,
        "gray16.tiff": GRAY16,
        "rgb16.tif": RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16),  # Pillow alone would cut to 8 bits
        "float.tif": RNG.normal(size=(20, 30)).astype(np.float32),
    }
    for name, array in cases.items():
        tifffile.imwrite(tmp_path / name, array)
        image = read_image2d(tmp_path / name)
        expected = tifffile.imread(tmp_path / name)
        expected = expected[..., None] if expected.ndim == 2 else expected
        np.testing.assert_array_equal(
            image.numpy(), expected.transpose(2, 1, 0).astype(np.float32), err_msg=name
        )
        assert image.meta["modality"] == ("RGB" if array.ndim == 3 else "OT")


@pytest.mark.parametrize("name", ["multipage.tif", "multipage_rgb.tif"])
def test_multipage_tiff_is_a_2d_t_stack(name):
    # Shipped with scikit-image: 2 grayscale uint8 pages, and 2 planar float64 RGB pages Pillow cannot open.
    path = Path(skimage.data.data_dir) / name
    pages = tifffile.imread(path)  # (T, H, W) or (T, 3, H, W)
    pages = pages[:, None] if pages.ndim == 3 else pages
    image = read_image2d(path)
    assert image.meta["n_frames"] == 2 and image.meta["time_axis"] == 3
    expected = pages.transpose(1, 3, 2, 0).astype(np.float32)  # (C, W, H, T)
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-6)


def test_retina_sample_roundtrips_through_png(tmp_path):
    retina = skimage.data.retina()  # shipped with scikit-image, a real colour fundus photograph
    image = read_image2d(_save(tmp_path / "retina.png", retina, compress_level=1))
    assert image.shape == (3, retina.shape[1], retina.shape[0])
    np.testing.assert_array_equal(image.numpy(), retina.transpose(2, 1, 0).astype(np.float32))


def _write_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """A 16-bit RGB PNG written by the spec (IHDR bit depth 16, colour type 2), which Pillow cannot write."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def test_sixteen_bit_colour_png_warns_and_keeps_high_byte(tmp_path):
    array = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    path = _write_png16_rgb(tmp_path / "rgb16.png", array)
    with pytest.warns(UserWarning, match="8 bits"):
        image = read_image2d(path)
    np.testing.assert_array_equal(image.numpy(), (array >> 8).transpose(2, 1, 0).astype(np.float32))


def test_loadimaged_pipeline_and_channel_stacking(tmp_path):
    first = _save(tmp_path / "a.png", RGB[..., 0])
    second = _save(tmp_path / "b.png", RGB[..., 1])
    data = LoadImaged(keys="image", reader=Image2DReader())({"image": [str(first), str(second)]})
    assert data["image"].shape == (2, 30, 20)
    np.testing.assert_array_equal(data["image"].numpy(), RGB[..., :2].transpose(2, 1, 0))
    small = _save(tmp_path / "small.png", RGB[:10, :10, 0])
    with pytest.raises(GeometryError, match="small.png"):
        LoadImage(reader=Image2DReader())([str(first), str(small)])


def test_verify_suffix():
    reader = Image2DReader()
    assert reader.verify_suffix("a.PNG") and reader.verify_suffix(["a.tiff", "b.jpeg", "c.bmp"])
    assert not reader.verify_suffix("a.nii.gz") and not reader.verify_suffix(["a.png", "b.mp4"])


def test_corrupt_files_raise_medattn_errors(tmp_path):
    noise = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in ("cut.png", "cut.jpg", "cut.tif"):
        full = _save(tmp_path / f"full_{name}", noise).read_bytes()
        (tmp_path / name).write_bytes(full[: len(full) // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.tif").write_bytes(b"")
    for name in ("cut.png", "cut.jpg", "cut.tif", "text.png", "empty.tif"):
        with pytest.raises(UnreadableImageError, match=name):
            read_image2d(tmp_path / name)
    # A reader passed at call time is used alone (LoadImage(reader=...) would fall back to MONAI's readers).
    with pytest.raises(UnreadableImageError, match="cut.png"):
        LoadImage()(str(tmp_path / "cut.png"), reader=Image2DReader())
    with pytest.raises(InputNotFoundError, match="missing.png"):
        read_image2d(tmp_path / "missing.png")
    with pytest.raises(UnreadableImageError, match="folder"):
        read_image2d(tmp_path)
