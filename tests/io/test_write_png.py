"""2D PNG masks: label values in the source image's pixel layout (checked with PIL), and contour overlays."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import LoadImage
from PIL import Image

from medattn.errors import GeometryError, WriteError
from medattn.io import save_mask

ROWS, COLUMNS = 12, 17


def _source_png(tmp_path, rgb: bool = False):
    """A photo-like image whose rows and columns differ, and MONAI's view of it (C, W, H)."""
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    gray = (rows * 13 + columns * 5).astype(np.uint8)
    pixels = np.stack([gray, 255 - gray, np.full_like(gray, 40)], axis=-1) if rgb else gray
    path = tmp_path / "frame.png"
    Image.fromarray(pixels).save(path)
    image = LoadImage(image_only=True, ensure_channel_first=True, reader="PILReader")(str(path))
    return pixels, image


def test_label_png_has_the_source_pixel_layout(tmp_path):
    pixels, image = _source_png(tmp_path)
    assert tuple(image.shape) == (1, COLUMNS, ROWS)  # MONAI: spatial (W, H)
    mask = (image[0].numpy() > 120).astype(np.uint8) * 2  # a mask made on MONAI's array
    out = save_mask(mask, tmp_path / "mask.png", reference=image)
    written = Image.open(out)
    assert written.mode == "L" and written.size == (COLUMNS, ROWS)
    np.testing.assert_array_equal(np.asarray(written), (pixels > 120).astype(np.uint8) * 2)


def test_large_label_values_make_a_sixteen_bit_png(tmp_path):
    mask = np.zeros((COLUMNS, ROWS), np.int32)
    mask[3, 5] = 300
    written = Image.open(save_mask(mask, tmp_path / "mask.png"))
    assert written.mode in ("I;16", "I")
    values = np.asarray(written)
    assert values.shape == (ROWS, COLUMNS) and values[5, 3] == 300 and values.sum() == 300


def test_overlay_draws_each_contour_in_its_colour_on_the_image(tmp_path):
    pixels, image = _source_png(tmp_path, rgb=True)
    mask = np.zeros((COLUMNS, ROWS), np.uint8)
    mask[4:10, 3:8] = 1  # columns 4-9, rows 3-7
    out = save_mask(
        mask, tmp_path / "overlay.png", reference=image, labels={1: ("polyp", (255, 0, 0))}, overlay=True
    )
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (ROWS, COLUMNS, 3)
    assert tuple(drawn[3, 4]) == (255, 0, 0) and tuple(drawn[7, 9]) == (255, 0, 0)  # corners of the box
    np.testing.assert_array_equal(drawn[5, 6], pixels[5, 6])  # inside: the image shows through
    np.testing.assert_array_equal(drawn[0, 0], pixels[0, 0])  # outside: untouched
    red = np.all(drawn == (255, 0, 0), axis=-1)
    assert red.sum() == 2 * (6 + 5) - 4  # exactly the one-pixel ring of a 6 x 5 box


def test_grayscale_intensities_are_stretched_for_the_overlay(tmp_path):
    from monai.data import MetaTensor

    ct_slice = MetaTensor(np.linspace(-1000, 1000, COLUMNS * ROWS).reshape(1, COLUMNS, ROWS))
    mask = np.zeros((COLUMNS, ROWS), np.uint8)
    mask[2:5, 2:5] = 1
    drawn = np.asarray(Image.open(save_mask(mask, tmp_path / "o.png", reference=ct_slice, overlay=True)))
    assert drawn[0, 0].tolist() == [0, 0, 0] and drawn[-1, -1].tolist() == [255, 255, 255]


def test_a_volume_cannot_be_a_png(tmp_path):
    with pytest.raises(GeometryError, match="2D"):
        save_mask(np.zeros((4, 5, 6), np.uint8), tmp_path / "mask.png")


def test_overlay_needs_a_reference_and_a_png(tmp_path):
    with pytest.raises(WriteError, match="reference"):
        save_mask(np.zeros((4, 5), np.uint8), tmp_path / "mask.png", overlay=True)
    with pytest.raises(WriteError, match=".png"):
        save_mask(np.zeros((4, 5, 6), np.uint8), tmp_path / "mask.nii.gz", overlay=True)


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_a_rotated_photo_gets_masks_that_viewers_turn_alike(tmp_path, orientation):
    """A JPEG whose EXIF orientation says "turn for display" (phone-mounted dermatoscopes write it): the
    mask and overlay PNGs carry the same tag, so after the display turn (PIL's exif_transpose, as viewers
    do) the mask still covers the region it was predicted on."""
    from PIL import ImageOps

    from medattn.io import load_image

    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = np.where((rows < 5) & (columns < 7), 250, 20).astype(np.uint8)  # a bright top-left block
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "lesion.jpg", quality=100, exif=exif)
    image = load_image(tmp_path / "lesion.jpg")
    assert image.meta["exif_orientation"] == orientation
    mask = (image[0].numpy() > 128).astype(np.uint8)  # (W, H): the block, found in storage order
    out = save_mask(mask, tmp_path / "lesion.png", reference=image)
    overlay = save_mask(mask, tmp_path / "overlay.png", reference=image, overlay=True, labels={1: "lesion"})
    shown_photo = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "lesion.jpg")).convert("L"))
    shown_mask = np.asarray(ImageOps.exif_transpose(Image.open(out)))
    assert shown_mask.shape == shown_photo.shape
    np.testing.assert_array_equal(shown_mask == 1, shown_photo > 128)
    assert Image.open(overlay).getexif().get(0x0112) == orientation
