"""DICOM SEG writing: dciodvfy finds no errors, highdicom reads back the right pixels for each source frame.

The expected label of every source pixel is computed from that file's own ImagePositionPatient,
ImageOrientationPatient and PixelSpacing, independently of the readers' and writers' geometry code.
"""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from monai.transforms import Orientation

from medattn.errors import WriteError
from medattn.io import load_image, save_mask

# An oblique grid with exact decimal geometry (a 3-4-5 rotation), so positions carry no rounding.
DIRECTION = np.array(
    [[0.6, 0.0, -0.8], [0.8, 0.0, 0.6], [0.0, -1.0, 0.0]]
)  # columns: row dir, column dir, normal
SHAPE = (24, 32, 8)  # columns, rows, slices
LABELS = {1: ("liver", (200, 80, 60)), 2: "lesion", 4: "not present"}


def _labels_at(world_ras: np.ndarray) -> np.ndarray:
    """The ground-truth label of world points (..., 3) in RAS mm: a ball in an oblique slab."""
    labels = np.zeros(world_ras.shape[:-1], np.uint8)
    labels[world_ras @ np.array([0.31, -0.52, 0.79]) > -1.37] = 1
    labels[np.linalg.norm(world_ras - np.array([16.1, 23.3, -1.9]), axis=-1) < 6.3] = 2
    return labels


def _mask_on(image) -> np.ndarray:
    """The ground truth sampled on a loaded image's voxel grid (what a perfect model would predict)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[1:]], indexing="ij"), axis=-1)
    world = index @ image.affine.numpy()[:3, :3].T + image.affine.numpy()[:3, 3]
    return _labels_at(world)


def _expected_frame(ds: pydicom.Dataset, position=None, orientation=None, spacing=None) -> np.ndarray:
    """Ground-truth labels (rows, columns) of one source frame, from the frame's own geometry."""
    position = np.asarray(position if position is not None else ds.ImagePositionPatient, float)
    orientation = np.asarray(orientation if orientation is not None else ds.ImageOrientationPatient, float)
    spacing = np.asarray(spacing if spacing is not None else ds.PixelSpacing, float)
    rows, columns = np.mgrid[0 : int(ds.Rows), 0 : int(ds.Columns)]
    lps = (
        position
        + columns[..., None] * spacing[1] * orientation[:3]
        + rows[..., None] * spacing[0] * orientation[3:]
    )
    return _labels_at(lps * np.array([-1.0, -1.0, 1.0]))


def _label_values(seg: hd.seg.Segmentation, combined: np.ndarray) -> np.ndarray:
    """Segment numbers -> our label values, through the segment names."""
    value_of = {(v if isinstance(v, str) else v[0]): k for k, v in LABELS.items()}
    lookup = np.zeros(len(seg.SegmentSequence) + 1, np.uint8)
    for item in seg.SegmentSequence:
        lookup[item.SegmentNumber] = value_of[item.SegmentLabel]
    return lookup[combined]


def _write_ct(folder, **options):
    """The test series (SHAPE on the oblique DIRECTION grid) into `folder`; `options` go to write_series."""
    write_series(
        folder,
        np.zeros(SHAPE, np.int16),
        direction=DIRECTION,
        pixel_spacing=(0.8, 0.6),
        slice_step=2.5,
        origin=(-20.0, -30.0, 15.0),
        **options,
    )
    return folder


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    return _write_ct(tmp_path_factory.mktemp("ct"))


def _check_against_sources(seg_path, source_files):
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(f) for f in source_files]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in sources}
    painted = 0
    for ds in sources:
        combined = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True)[0]
        expected = _expected_frame(ds)
        np.testing.assert_array_equal(_label_values(seg, combined), expected)
        painted += int(expected.any())
    assert painted >= 3  # the check compared real content, not empty frames
    return seg


def _dciodvfy_errors(path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_seg_frames_match_each_source_slice(ct_series, tmp_path):
    image = load_image(ct_series)
    mask = _mask_on(image)
    assert {0, 1, 2} <= set(np.unique(mask).tolist())
    out = save_mask(mask, tmp_path / "seg.dcm", reference=ct_series, labels=LABELS)
    seg = _check_against_sources(out, sorted(ct_series.iterdir()))
    names = [item.SegmentLabel for item in seg.SegmentSequence]
    assert names == [
        "liver",
        "lesion",
        "not present",
    ]  # a named label absent from the mask still has a segment
    assert seg.SegmentationType == "BINARY" and seg.Manufacturer == "medattn"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"


def test_ras_reoriented_prediction_goes_to_the_right_frames(ct_series, tmp_path):
    image = load_image(ct_series)
    prediction = Orientation(axcodes="RAS")(image.clone())
    prediction.array = _mask_on(prediction)[None]
    out = save_mask(prediction, tmp_path / "seg.dcm", reference=image, labels=LABELS)
    _check_against_sources(out, sorted(ct_series.iterdir()))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_reports_no_errors(ct_series, tmp_path):
    out = save_mask(_mask_on(load_image(ct_series)), tmp_path / "seg.dcm", reference=ct_series, labels=LABELS)
    assert _dciodvfy_errors(out) == []


def test_enhanced_multiframe_source(ct_series, tmp_path):
    legacy = [pydicom.dcmread(f) for f in sorted(ct_series.iterdir())]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced_file = tmp_path / "enhanced" / "ct.dcm"
    enhanced.save_as(enhanced_file)
    out = save_mask(
        _mask_on(load_image(enhanced_file)), tmp_path / "seg.dcm", reference=enhanced_file, labels=LABELS
    )
    seg = hd.seg.segread(out)
    source = pydicom.dcmread(enhanced_file)
    orientation = source.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    frames = range(1, int(source.NumberOfFrames) + 1)
    combined = seg.get_pixels_by_source_frame(source.SOPInstanceUID, list(frames), combine_segments=True)
    for number, pixels in zip(frames, combined, strict=True):
        position = (
            source.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient
        )
        np.testing.assert_array_equal(
            _label_values(seg, pixels), _expected_frame(source, position, orientation, spacing)
        )
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(out) == []


def test_the_series_that_fits_the_mask_is_chosen_in_a_shared_folder(ct_series, tmp_path):
    shared = tmp_path / "study"
    shutil.copytree(ct_series, shared)
    write_series(shared, np.zeros((16, 16, 3), np.int16), series_number=7)
    out = save_mask(_mask_on(load_image(ct_series)), tmp_path / "seg.dcm", reference=shared, labels=LABELS)
    _check_against_sources(out, sorted(ct_series.iterdir()))


def test_dicom_seg_needs_the_source_series(ct_series, tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    with pytest.raises(WriteError, match="source DICOM series folder|source DICOM series"):
        save_mask(mask, tmp_path / "seg.dcm")
    not_dicom = tmp_path / "scan.nii.gz"
    not_dicom.write_bytes(b"not an image")
    with pytest.raises(WriteError, match="no DICOM image series|cannot read the source DICOM file"):
        save_mask(mask, tmp_path / "seg.dcm", reference=not_dicom)
    with pytest.raises(WriteError, match="at least one segment"):
        save_mask(mask, tmp_path / "seg.dcm", reference=ct_series)
    assert not (tmp_path / "seg.dcm").exists()


def test_a_stray_localizer_in_the_source_series_gets_no_frame(ct_series, tmp_path):
    """The SEG's frames are the slices the image was read from: a localizer inside the series is left out
    by the reader and by the writer alike."""
    series = tmp_path / "series"
    shutil.copytree(ct_series, series)
    uid = str(pydicom.dcmread(next(series.iterdir())).SeriesInstanceUID)
    write_series(
        series,
        np.zeros((20, 12, 1), np.int16),
        series_uid=uid,
        direction=np.eye(3),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        name_prefix="LOC",
        origin=(0, 0, 0),
    )
    with pytest.warns(match="left out"):
        image = load_image(series)
    out = save_mask(_mask_on(image), tmp_path / "seg.dcm", reference=image, labels=LABELS)
    _check_against_sources(out, sorted(ct_series.iterdir()))


def test_a_gantry_tilted_source_gets_frames_on_its_own_sheared_slices(tmp_path):
    """The reader resamples a tilted stack onto an orthogonal grid; the SEG writer shifts each mask slice
    back, so every frame shows the labels at the source slice's own pixels (checked from each file's
    ImagePositionPatient, up to the boundary pixels nearest-neighbour sampling moves)."""
    folder = _write_ct(tmp_path / "tilted", tilt_mm_per_slice=0.9)
    with pytest.warns(match="gantry tilt"):
        image = load_image(folder)
    out = save_mask(_mask_on(image), tmp_path / "seg.dcm", reference=image, labels=LABELS)
    seg = hd.seg.segread(out)
    sources = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in sources}
    agree, total, painted = 0, 0, 0
    for ds in sources:
        combined = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True)[0]
        expected = _expected_frame(ds)
        # Pixels the tilt moved outside the orthogonal grid have no prediction: compare the others.
        k = int(
            round(
                np.dot(np.asarray(ds.ImagePositionPatient, float) - (-20.0, -30.0, 15.0), DIRECTION[:, 2])
                / 2.5
            )
        )
        rows_outside = int(np.ceil(k * 0.9 / 0.8))
        got, want = (
            _label_values(seg, combined)[: SHAPE[1] - rows_outside],
            expected[: SHAPE[1] - rows_outside],
        )
        agree += int((got == want).sum())
        total += got.size
        painted += int(want.any())
    assert painted >= 3 and agree / total > 0.97


def test_the_seg_of_one_echo_references_that_echo(tmp_path):
    """Two echoes in one series, one case each: the SEG of the second echo references its slices only,
    whether the reference is the loaded image or the case's files."""
    from medattn.io import discover

    uid = "1.2.826.0.1.3680043.8.498.91"
    folder = tmp_path / "mr"
    for echo in (1, 2):
        _write_ct(folder, series_uid=uid, attributes={"EchoNumbers": echo}, name_prefix=f"E{echo}", seed=echo)
    (case,) = [c for c in discover(folder).cases if c.id.endswith("_e2")]
    image = case.load_image()
    for reference in (image, case.images):
        out = save_mask(_mask_on(image), tmp_path / "seg.dcm", reference=reference, labels=LABELS)
        _check_against_sources(out, sorted(folder.glob("E2*")))


def test_evaluate_scores_a_dicom_seg_against_a_nifti_reference(ct_series, tmp_path):
    """`medattn predict --format dicom-seg` output is scored by `medattn evaluate`: read by highdicom onto
    its frames' grid (only the slices with a segment, as empty frames are omitted) and placed back on the
    reference's grid, where it matches the same mask written as NIfTI exactly."""
    from medattn.pipelines.evaluate import evaluate

    image = load_image(ct_series)
    mask = _mask_on(image)
    mask[..., :2] = 0  # empty first slices: the SEG omits their frames
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    save_mask(mask, tmp_path / "pred" / "ct.dcm", reference=ct_series, labels=LABELS)
    save_mask(mask, tmp_path / "ref" / "ct.nii.gz", reference=image)
    assert len(hd.seg.segread(tmp_path / "pred" / "ct.dcm").PerFrameFunctionalGroupsSequence) < 2 * SHAPE[2]
    result = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert not result.failed
    scores = {row.label: row.dice for row in result.metrics}
    assert scores == {1: 1.0, 2: 1.0}


def test_a_dicom_seg_reference_is_widened_to_the_scan_so_false_positives_outside_it_count(
    ct_series, tmp_path
):
    """Ground truth drawn in an annotation tool and saved as DICOM SEG spans only its painted slices; a
    prediction with an extra blob on an unpainted slice must lose Dice for it."""
    from medattn.pipelines.evaluate import evaluate

    image = load_image(ct_series)
    truth = _mask_on(image)
    truth[..., :2] = 0
    prediction = truth.copy()
    prediction[2:6, 2:6, 0] = 2  # a false positive on a slice the SEG has no frame for
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    save_mask(truth, tmp_path / "ref" / "ct.dcm", reference=ct_series, labels=LABELS)
    save_mask(prediction, tmp_path / "pred" / "ct.nii.gz", reference=image)
    result = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert not result.failed
    scores = {row.label: row for row in result.metrics}
    assert scores[1].dice == 1.0 and scores[2].dice < 1.0
    assert scores[2].vol_pred_ml > scores[2].vol_ref_ml
