"""Black/white mask images (0/255, JPEG noise), as Kvasir-SEG and ISIC ship them, read as 0/1 labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medattn.errors import InputWarning
from medattn.io import discover
from medattn.io.mask_images import binarized, looks_like_binary_mask
from medattn.plan import fingerprint_dataset, make_plan
from medattn.transforms.presets import preprocessing

ROWS, COLUMNS = 40, 52


def _truth() -> np.ndarray:
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    return ((rows - 20) ** 2 + (columns - 30) ** 2 < 120).astype(np.uint8)  # a disc, (H, W)


def _dataset(root, suffix=".jpg", cases=3):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for n in range(cases):
        image = rng.integers(0, 255, size=(ROWS, COLUMNS, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"c{n}.png")
        Image.fromarray(_truth() * 255).save(root / "labels" / f"c{n}{suffix}", quality=70)
    return root


def test_black_and_white_masks_are_told_from_class_values(tmp_path):
    _dataset(tmp_path)
    noisy = np.asarray(Image.open(tmp_path / "labels" / "c0.jpg"))
    assert len(np.unique(noisy)) > 2  # JPEG noise: many grey levels near 0 and 255
    assert looks_like_binary_mask(noisy)
    np.testing.assert_array_equal(binarized(noisy), _truth())
    assert looks_like_binary_mask(_truth() * 255)
    assert not looks_like_binary_mask(_truth())  # already 0/1
    assert not looks_like_binary_mask(np.array([[0, 85], [170, 255]]))  # four classes as grey levels
    assert not looks_like_binary_mask(np.zeros((4, 4), np.uint8))  # nothing white: nothing to read


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_training_reads_them_as_one_foreground_class(tmp_path, suffix):
    """A 0/255 JPEG mask set plans one foreground class, not a class per noise level of the compression."""
    cases = list(discover(_dataset(tmp_path, suffix)))
    with pytest.warns(InputWarning, match="3 label image.* black/white masks"):
        fingerprint = fingerprint_dataset(cases)
    plan = make_plan(fingerprint, divisor=16)
    assert fingerprint.label_values == [1] and plan.num_classes == 2 and plan.binary_mask_labels
    from monai.transforms import Compose

    item = Compose(preprocessing(plan))({"image": str(cases[0].images[0]), "label": str(cases[0].label)})
    np.testing.assert_array_equal(np.unique(np.asarray(item["label"])), [0, 1])
    np.testing.assert_array_equal(np.asarray(item["label"])[0].T, _truth())  # MONAI's (W, H) layout


def test_evaluate_scores_a_mask_against_a_black_and_white_reference(tmp_path):
    import medattn

    _dataset(tmp_path / "ref", cases=1)
    (tmp_path / "pred").mkdir()
    Image.fromarray(_truth()).save(tmp_path / "pred" / "c0.png")  # medattn's 0/1 label PNG
    rows = medattn.evaluate(tmp_path / "pred", tmp_path / "ref" / "labels").metrics
    assert [(row.label, row.dice) for row in rows] == [(1, 1.0)]


def test_class_values_with_a_void_border_are_not_a_black_and_white_mask(tmp_path):
    """PASCAL VOC style: class 15 inside a 255 "void" border, in a lossless PNG; binarising it would erase
    the class. JPEG keeps its tolerance for compression noise."""
    mask = np.zeros((ROWS, COLUMNS), np.uint8)
    mask[10:30, 10:40] = 255
    mask[12:28, 12:38] = 15
    assert not looks_like_binary_mask(mask, lossy=False)
    assert looks_like_binary_mask(_truth() * 255, lossy=False)
