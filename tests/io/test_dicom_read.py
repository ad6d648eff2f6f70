"""DICOM reading: geometry against SimpleITK/GDCM, sorting by position, irregular series refused, codecs."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import rotation, write_series
from pydicom.data import get_testdata_file

from medattn.errors import MedattnError, NoCasesFoundError, UnsupportedDicomError
from medattn.io import discover, load_image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _testfile(name: str) -> str:
    """A file of pydicom's test data, read offline (pydicom-data, a dev dependency)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} missing: pip install -e '.[dev]' (pydicom-data)"
    return path


def _volume(shape=(12, 10, 7), seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-500, 1500, size=shape).astype(np.int16)


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("direction", [np.eye(3), rotation(17.0, -25.0), rotation(90.0, 0.0)[:, [0, 2, 1]]])
def test_series_world_coordinates_match_simpleitk(tmp_path, direction):
    written = write_series(tmp_path, _volume(), direction=direction, slope=0.5, intercept=-100)
    image = load_image(tmp_path)
    reference = _sitk_series(tmp_path)
    assert tuple(image.shape) == (1, *reference.GetSize())
    np.testing.assert_allclose(
        image.array[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0), atol=1e-4
    )
    np.testing.assert_allclose(image[0].numpy(), written["values"], atol=1e-4)
    for index in [(0, 0, 0), (11, 9, 6), (3, 7, 2), (11, 0, 6)]:
        lps = np.asarray(reference.TransformIndexToPhysicalPoint(index))
        ras = (np.asarray(image.affine) @ [*index, 1])[:3]
        np.testing.assert_allclose(ras, (LPS_TO_RAS[:3, :3] @ lps), atol=1e-4)
    np.testing.assert_allclose(image.affine.numpy(), LPS_TO_RAS @ written["affine_lps"], atol=1e-5)
    assert image.meta["modality"] == "CT"
    np.testing.assert_allclose(image.meta["spacing"], (0.6, 0.8, 2.5), atol=1e-6)


def test_slices_sorted_by_position_not_file_name(tmp_path):
    volume = np.zeros((8, 8, 6), np.int16)
    for k in range(6):
        volume[..., k] = 100 * k  # each slice's value says where it belongs
    write_series(tmp_path, volume, direction=rotation(0, 30), seed=7)
    image = load_image(tmp_path)
    assert [int(image[0, 0, 0, k]) for k in range(6)] == [0, 100, 200, 300, 400, 500]


def _world_ramp(lps: np.ndarray) -> np.ndarray:
    """A linear function of LPS position: linear interpolation reproduces it exactly."""
    return lps @ np.array([2.0, 3.0, 5.0])


@pytest.mark.parametrize("direction", [np.eye(3), rotation(17.0, -25.0)])
def test_a_gantry_tilted_series_is_resampled_onto_the_orthogonal_grid(tmp_path, direction):
    """CT heads are acquired with a tilted gantry: each slice steps sideways (here 0.6 mm along its column
    direction per 2.5 mm slice, 13.5 degrees). Every voxel of the image read holds the value the scanner
    measured at the world point the affine gives it (checked against a linear ramp written from each
    slice's own ImagePositionPatient), as dcm2niix's tilt correction gives it."""
    from medattn.errors import InputWarning

    shape, spacing, step, tilt = (12, 24, 7), (0.8, 0.6), 2.5, 0.6
    row_dir, col_dir = direction[:, 0], direction[:, 1]
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-20.0, -30.0, 15.0])
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    lps = (
        origin
        + (k * step)[..., None] * normal
        + (k * tilt)[..., None] * col_dir
        + (i * spacing[1])[..., None] * row_dir
        + (j * spacing[0])[..., None] * col_dir
    )
    write_series(
        tmp_path,
        np.round(_world_ramp(lps)).astype(np.int16),
        direction=direction,
        origin=origin,
        pixel_spacing=spacing,
        slice_step=step,
        tilt_mm_per_slice=tilt,
    )
    with pytest.warns(InputWarning, match=r"gantry tilt of 13\.5 degrees"):
        image = load_image(tmp_path)
    assert image.shape == (1, *shape) and image.meta["gantry_tilt_degrees"] == pytest.approx(13.5, abs=0.05)
    affine = LPS_TO_RAS @ np.asarray(image.affine)  # voxel -> LPS
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.6, 0.8, 2.5], atol=1e-5)
    world = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    # Voxels whose sheared source pixel lies inside its slice (the rest is filled with the minimum).
    inside = (j - k * tilt / spacing[0]) >= 0.01
    assert inside.mean() > 0.7
    np.testing.assert_allclose(image[0].numpy()[inside], _world_ramp(world)[inside], atol=1.0)


def test_a_tilt_with_uneven_sideways_steps_is_a_clear_error(tmp_path):
    import pydicom

    from medattn.errors import InputWarning

    write_series(tmp_path, _volume(), tilt_mm_per_slice=0.6)
    with pytest.warns(InputWarning, match="gantry tilt"):  # even steps: a tilt the reader corrects
        assert load_image(tmp_path).shape == (1, 12, 10, 7)

    last = max(tmp_path.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    ds = pydicom.dcmread(last)
    ds.ImagePositionPatient = [
        float(v) + d for v, d in zip(ds.ImagePositionPatient, (0, 2.0, 0), strict=True)
    ]
    ds.save_as(last)  # the last slice steps 2 mm further sideways than the others
    with pytest.raises(UnsupportedDicomError, match="uneven offsets"):
        load_image(tmp_path)


def test_mixed_orientation_is_a_clear_error(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(tmp_path / "a", _volume(), series_uid=uid)
    write_series(
        tmp_path / "b", _volume(), series_uid=uid, direction=rotation(90, 0), origin=(0, 0, 80), seed=3
    )
    with pytest.raises(UnsupportedDicomError, match="mixes slice orientations"):
        load_image(tmp_path / "a" / "..")  # one series spread over two folders


def test_missing_slice_is_a_clear_error(tmp_path):
    write_series(tmp_path, _volume(), drop_slices=(3,))
    with pytest.raises(UnsupportedDicomError, match="irregular"):
        load_image(tmp_path)


def test_monochrome1_is_inverted_against_the_bit_depth_before_rescale(tmp_path):
    volume = _volume()
    write_series(tmp_path, volume, photometric="MONOCHROME1", slope=2.0, intercept=10.0)
    image = load_image(tmp_path)[0].numpy()
    # signed 16-bit stored values: the inversion is a bit flip (-v - 1), independent of the image content
    np.testing.assert_allclose(image, (-volume.astype(np.float32) - 1) * 2.0 + 10.0)


def test_damaged_slice_is_reported_not_dropped(tmp_path):
    write_series(tmp_path, _volume())
    damaged = sorted(tmp_path.iterdir())[3]
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(MedattnError, match=damaged.name):
        load_image(tmp_path)


def test_medattn_reader_reads_a_dicom_case_as_one_series(tmp_path):
    from monai.transforms import LoadImage

    from medattn.io.readers import MedattnReader

    write_series(tmp_path, _volume())
    (case,) = list(discover(tmp_path))
    loaded = LoadImage(reader=MedattnReader(), image_only=True)(case.images)
    assert tuple(loaded.shape) == (1, 12, 10, 7)


def test_folder_with_two_series_splits_by_uid(tmp_path):
    write_series(tmp_path, _volume(), series_number=3, seed=1)
    write_series(tmp_path, _volume(shape=(6, 6, 4)), series_number=4, seed=2, origin=(0, 0, 50))
    with pytest.raises(UnsupportedDicomError, match="holds 2 series"):
        load_image(tmp_path)
    dataset = discover(tmp_path)
    assert dataset.layout == "dicom"
    shapes = sorted(tuple(case.load_image().shape) for case in dataset)
    assert shapes == [(1, 6, 6, 4), (1, 12, 10, 7)]
    assert all("doe" not in case.id.lower() and "pid123" not in case.id.lower() for case in dataset)


@pytest.mark.parametrize(
    ("plain", "compressed"),
    [
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
        ("MR_small.dcm", "MR_small_bigendian.dcm"),
        ("emri_small.dcm", "emri_small_RLE.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
        ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
        ("US1_UNCR.dcm", "US1_J2KR.dcm"),
        ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
    ],
)
def test_compressed_transfer_syntaxes_decode_losslessly(plain, compressed):
    np.testing.assert_array_equal(
        load_image(_testfile(plain)).numpy(), load_image(_testfile(compressed)).numpy()
    )


def test_enhanced_ct_geometry_from_functional_groups():
    image = load_image(_testfile("eCT_Supplemental.dcm"))
    assert tuple(image.shape) == (1, 512, 512, 2)
    np.testing.assert_allclose(image.meta["spacing"], (0.388672, 0.388672, 10.0), atol=1e-5)
    assert image.min() >= -1024  # rescale intercept from the functional groups applied


def test_ultrasound_cine_reads_as_rgb_video():
    image = load_image(_testfile("examples_ybr_color.dcm"))
    assert tuple(image.shape) == (3, 320, 240, 30)
    assert image.meta["time_axis"] == 3 and image.meta["fps"] == pytest.approx(30.0, abs=0.01)


def test_palette_colour_expands_to_rgb():
    image = load_image(_testfile("OBXXXX1A.dcm"))
    assert tuple(image.shape) == (3, 800, 600)


def test_ct_rescale_gives_hounsfield_units():
    image = load_image(_testfile("CT_small.dcm"))
    assert image.min() < -800 and image.meta["modality"] == "CT"


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "liver.dcm"])
def test_unreadable_dicom_is_a_medattn_error(name):
    with pytest.raises(MedattnError, match=name):
        load_image(_testfile(name))


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NoCasesFoundError, match="no DICOM image files"):
        load_image(tmp_path)


def test_rt_dose_grid_is_placed_by_its_frame_offsets_as_simpleitk_places_it():
    """pydicom's rtdose.dcm: 15 frames 5 mm apart (GridFrameOffsetVector) from ImagePositionPatient, values
    in Gy after DoseGridScaling; not on an identity grid, which would put it 762 mm away."""
    import pydicom

    path = _testfile("rtdose.dcm")
    image = load_image(path)
    reference = sitk.ReadImage(path)
    assert image.shape[1:] == reference.GetSize()
    for index in [(0, 0, 0), (1, 2, 3), (9, 9, 14)]:
        x, y, z = reference.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((np.asarray(image.affine) @ [*index, 1])[:3], (-x, -y, z), atol=1e-4)
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    np.testing.assert_allclose(
        image[0].numpy(), sitk.GetArrayFromImage(reference).transpose(2, 1, 0) * scaling, rtol=1e-6
    )


def test_a_file_copied_twice_into_a_series_is_left_out_with_a_warning(tmp_path):
    import shutil

    from medattn.errors import InputWarning

    series = tmp_path / "series"
    write_series(series, _volume())
    expected = load_image(series)
    first = sorted(series.iterdir())[3]
    shutil.copy(first, series / "copy_of_slice.dcm")
    with pytest.warns(InputWarning, match=r"1 file\(s\) repeat an image .*copy_of_slice\.dcm"):
        image = load_image(series)
    np.testing.assert_array_equal(image.numpy(), expected.numpy())
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(expected.affine))


LOCALIZER = ("ORIGINAL", "PRIMARY", "LOCALIZER")


def test_a_localizer_inside_the_series_is_left_out_with_a_warning(tmp_path):
    """Some scanners put the planning image(s) into the series they plan: same SeriesInstanceUID, another
    orientation and size, ImageType LOCALIZER. The volume reads as without them, with a warning."""
    from medattn.errors import InputWarning

    uid = "1.2.826.0.1.3680043.8.498.77"
    written = write_series(tmp_path / "axial", _volume(), series_uid=uid)
    alone = load_image(tmp_path / "axial")
    write_series(
        tmp_path / "axial",
        _volume((16, 9, 1)),
        series_uid=uid,
        direction=rotation(90, 0),
        image_type=LOCALIZER,
        name_prefix="LOC",
        origin=(0, 0, 0),
    )
    with pytest.warns(InputWarning, match=r"1 image\(s\) in another orientation .* left out: LOCS1IM0000"):
        image = load_image(tmp_path / "axial")
    assert image.shape == alone.shape
    np.testing.assert_allclose(image.affine, alone.affine)
    np.testing.assert_allclose(image[0].numpy(), written["values"])


def test_a_few_images_in_another_orientation_are_strays_many_are_an_error(tmp_path):
    from medattn.errors import InputWarning

    uid = "1.2.826.0.1.3680043.8.498.78"
    write_series(tmp_path / "s", _volume(), series_uid=uid)

    def add_sagittal_pair(prefix: str, origin: tuple) -> None:  # no LOCALIZER in ImageType: by orientation
        write_series(
            tmp_path / "s",
            _volume((12, 10, 2)),
            series_uid=uid,
            direction=rotation(90, 0),
            name_prefix=prefix,
            origin=origin,
        )

    add_sagittal_pair("X", (0, 0, 0))
    with pytest.warns(InputWarning, match=r"2 image\(s\) in another orientation"):
        assert load_image(tmp_path / "s").shape == (1, 12, 10, 7)
    add_sagittal_pair("Y", (0, 0, 40))  # now 4 of them: a second stack, not strays
    with pytest.raises(UnsupportedDicomError, match="mixes slice orientations"):
        load_image(tmp_path / "s")


def test_a_localizer_series_beside_the_scan_is_not_a_case(tmp_path):
    """A study exported whole: the scout series beside the axial one. discover() and load_image(folder)
    take the scan and say that the localizer series was left out."""
    from medattn.errors import InputWarning

    write_series(tmp_path / "study", _volume(), series_number=2)
    write_series(
        tmp_path / "study",
        _volume((16, 9, 1)),
        series_number=1,
        direction=rotation(90, 0),
        image_type=LOCALIZER,
        origin=(0, 0, 0),
    )
    with pytest.warns(InputWarning, match="1 localizer series left out"):
        dataset = discover(tmp_path)
    assert len(dataset.cases) == 1 and len(dataset.cases[0].images) == 7
    with pytest.warns(InputWarning, match="localizer series left out"):
        assert load_image(tmp_path / "study").shape == (1, 12, 10, 7)


def _two_echoes(folder, attributes=({"EchoNumbers": 1}, {"EchoNumbers": 2})):
    uid = "1.2.826.0.1.3680043.8.498.90"
    volumes = [_volume(seed=1), _volume(seed=2)]
    for n, (volume, extra) in enumerate(zip(volumes, attributes, strict=True)):
        write_series(folder, volume, series_uid=uid, attributes=extra, name_prefix=f"E{n}", seed=n)
    return volumes


def test_a_series_holding_two_echoes_is_two_cases(tmp_path):
    """MR exports put several volumes at the same slice positions into one series (echoes, dynamic
    phases, b-values): each becomes a case of its own, named as dcm2niix names its files (_e1, _e2)."""
    volumes = _two_echoes(tmp_path / "mr")
    dataset = discover(tmp_path)
    assert sorted(case.id for case in dataset.cases) == ["mr_e1", "mr_e2"]
    for case in sorted(dataset.cases, key=lambda c: c.id):
        expected = volumes[int(case.id[-1]) - 1]
        np.testing.assert_array_equal(case.load_image()[0].numpy(), expected)
    with pytest.raises(UnsupportedDicomError, match=r"holds 2 series \(#1 e1 .*#1 e2"):
        load_image(tmp_path / "mr")
    with pytest.raises(UnsupportedDicomError, match="holds 2 series"):
        load_image(tmp_path / "mr", series_uid="1.2.826.0.1.3680043.8.498.90")


def test_volumes_are_told_apart_by_the_first_tag_that_parts_them(tmp_path):
    attributes = (
        {"EchoNumbers": 1, "TemporalPositionIdentifier": 3},
        {"EchoNumbers": 1, "TemporalPositionIdentifier": 12},
    )
    _two_echoes(tmp_path / "dce", attributes)
    assert sorted(case.id for case in discover(tmp_path).cases) == ["dce_t12", "dce_t3"]


def test_volumes_nothing_tells_apart_stay_a_clear_error(tmp_path):
    _two_echoes(tmp_path / "mr", ({"EchoNumbers": 1}, {"EchoNumbers": 1}))
    with pytest.raises(UnsupportedDicomError, match="several slices share one position"):
        load_image(tmp_path / "mr")


def test_a_tag_that_differs_on_every_image_does_not_split_a_series_into_slices(tmp_path):
    """Magnitude and phase at the same positions, with a TriggerTime per image: split by ImageType into two
    whole volumes, not into one-slice "volumes" by TriggerTime."""
    uid = "1.2.826.0.1.3680043.8.498.92"
    for n, kind in enumerate(("M", "P")):
        write_series(
            tmp_path / "mr",
            _volume(seed=n),
            series_uid=uid,
            image_type=("ORIGINAL", "PRIMARY", kind),
            name_prefix=kind,
            seed=n,
        )
    import pydicom

    for k, path in enumerate(sorted((tmp_path / "mr").iterdir())):
        ds = pydicom.dcmread(path)
        ds.TriggerTime = 10 * k
        ds.save_as(path)
    assert sorted(case.id for case in discover(tmp_path).cases) == ["mr_type1", "mr_type2"]


def test_orientations_a_hair_apart_are_one_stack_not_strays(tmp_path):
    """0.0050001 and 0.0049999 round apart at 2 decimals; within the reader's tolerance they are one
    orientation, so no slice is left out."""
    import pydicom

    write_series(tmp_path, _volume(), direction=rotation(0.2865, 0))  # cos/sin terms near 0.005
    files = sorted(tmp_path.iterdir())
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        values = [float(v) for v in ds.ImageOrientationPatient]
        values[5] = 0.0050001 if n < 5 else 0.0049999
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in values]
        ds.save_as(path)
    assert load_image(tmp_path).shape == (1, 12, 10, 7)
