"""discover(): cases found in nnU-Net, paired, flat, DICOM-tree, video and nested layouts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series
from PIL import Image

from medattn.errors import InputNotFoundError, MedattnError, NoCasesFoundError
from medattn.io import discover


def _nifti(path, shape=(6, 5, 4), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), path)


def _png(path, size=(8, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def test_nnunet_layout_with_channels_labels_and_dataset_json(tmp_path):
    for case in ("brain_001", "brain_002"):
        _nifti(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        _nifti(tmp_path / "imagesTr" / f"{case}_0001.nii.gz", value=1)
        _nifti(tmp_path / "labelsTr" / f"{case}.nii.gz")
    _nifti(tmp_path / "imagesTs" / "brain_101_0000.nii.gz")
    _nifti(tmp_path / "imagesTs" / "brain_101_0001.nii.gz")
    spec = {
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "tumour": 1},
        "file_ending": ".nii.gz",
        "numTraining": 2,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    dataset = discover(tmp_path)
    assert dataset.layout == "nnunet"
    assert dataset.labels == {0: "background", 1: "tumour"}
    assert dataset.channel_names == {0: "T1", 1: "FLAIR"}
    assert [(c.id, c.subset, len(c.images), c.label is not None) for c in dataset] == [
        ("brain_001", "train", 2, True),
        ("brain_002", "train", 2, True),
        ("brain_101", "test", 2, False),
    ]
    image = dataset.by_id("brain_001").load_image()
    assert tuple(image.shape) == (2, 6, 5, 4) and float(image[1].mean()) == 1.0


def test_paired_images_and_labels_folders_match_by_name(tmp_path):
    for name in ("frame_01", "frame_02"):
        _png(tmp_path / "images" / f"{name}.png")
    _png(tmp_path / "labels" / "frame_01.png", mode="L")
    _png(tmp_path / "labels" / "frame_02_mask.png", mode="L")
    dataset = discover(tmp_path)
    assert dataset.layout == "paired"
    assert {c.id: c.label.name for c in dataset} == {
        "frame_01": "frame_01.png",
        "frame_02": "frame_02_mask.png",
    }
    assert all(c.kind == "image2d" for c in dataset)


def test_flat_folder_and_nested_datasets(tmp_path):
    _nifti(tmp_path / "mri" / "a.nii.gz")
    _nifti(tmp_path / "mri" / "b.nii.gz")
    _png(tmp_path / "photos" / "images" / "a.png")
    write_series(tmp_path / "dicom" / "patient_x" / "series1", np.zeros((4, 4, 3), np.int16))
    dataset = discover(tmp_path)
    assert dataset.layout == "mixed"
    kinds = sorted((c.kind, c.group.split("/")[0]) for c in dataset)
    assert kinds == [("dicom", "dicom"), ("image2d", "photos"), ("volume", "mri"), ("volume", "mri")]
    ids = [c.id for c in dataset]
    assert len(set(ids)) == len(ids), "ids collide across sub-folders"
    assert "dicom_patient_x_series1" in ids or "patient_x_series1" in ids


def test_dicom_case_ids_never_carry_patient_names(tmp_path):
    # the factory writes PatientName Doe^Jane, PatientID PID123; one folder per patient as PACS exports do
    write_series(tmp_path / "Doe_Jane" / "CT", np.zeros((4, 4, 3), np.int16))
    write_series(tmp_path / "PID123_followup" / "CT", np.zeros((4, 4, 3), np.int16), seed=5)
    ids = [case.id for case in discover(tmp_path)]
    assert ids == ["dicom_000", "dicom_001"]


def test_malformed_dataset_json_is_a_clear_error(tmp_path):
    _nifti(tmp_path / "imagesTr" / "a_0000.nii.gz")
    (tmp_path / "dataset.json").write_text('{"labels": ["background", "tumour"]}')
    with pytest.raises(MedattnError, match="dataset.json"):
        discover(tmp_path)


def test_single_file_is_one_case_with_its_channel_suffix_stripped(tmp_path):
    _nifti(tmp_path / "case_007_0000.nii.gz")
    (case,) = list(discover(tmp_path / "case_007_0000.nii.gz"))
    assert case.id == "case_007"


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no scans here")
    with pytest.raises(NoCasesFoundError, match="no images found"):
        discover(tmp_path / "empty")


def test_image_files_of_formats_not_read_are_named_in_one_warning(tmp_path):
    import nibabel as nib
    import numpy as np

    from medattn.errors import InputWarning

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    (tmp_path / "sub").mkdir()
    nib.save(nib.MGHImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "sub" / "brain.mgz")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(InputWarning, match=r"1 image file\(s\) in formats .* not read .*sub/brain\.mgz"):
        dataset = discover(tmp_path)
    assert [case.id for case in dataset] == ["a"]


def test_a_slicer_segmentation_beside_its_scan_is_not_part_of_the_case(tmp_path):
    """3D Slicer users save `scan.seg.nrrd` next to `scan.nrrd`: it is a label map, not a second channel
    of the scan (the two must not make one two-channel case); as a label it is still found."""
    import SimpleITK as sitk

    from medattn.io import save_mask

    volume = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(volume, str(tmp_path / "scan.nrrd"))
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    save_mask(labels, tmp_path / "scan.seg.nrrd", reference=tmp_path / "scan.nrrd")
    (case,) = discover(tmp_path).cases
    assert case.id == "scan" and [p.name for p in case.images] == ["scan.nrrd"]
    (tmp_path / "pairs" / "images").mkdir(parents=True)
    (tmp_path / "pairs" / "labels").mkdir()
    (tmp_path / "scan.nrrd").rename(tmp_path / "pairs" / "images" / "scan.nrrd")
    (tmp_path / "scan.seg.nrrd").rename(tmp_path / "pairs" / "labels" / "scan.seg.nrrd")
    (case,) = discover(tmp_path / "pairs").cases
    assert case.label is not None and case.label.name == "scan.seg.nrrd"
