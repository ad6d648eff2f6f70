"""`medattn demo` on the bundled samples and packages: the files a new user opens, and sane numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import slicerio
from PIL import Image

from medattn.pipelines.demo import find_samples, run_demo

REPO_SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"  # bundled with the repository


def test_the_demo_finds_the_bundled_samples_without_being_told(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not through ./sample_data
    assert find_samples() == REPO_SAMPLES


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), device="cpu")


def test_demo_writes_slicer_segmentations_with_names(demo):
    files = sorted((demo.out / "brain_mri" / "slicer").glob("*.seg.nrrd"))
    assert [f.name for f in files] == ["brain_004.seg.nrrd", "brain_005.seg.nrrd"]
    segmentation = slicerio.read_segmentation(str(files[0]))
    names = [segment["name"] for segment in segmentation["segments"]]
    assert names == ["grey_matter", "white_matter", "lesion"]


def test_demo_volumes_and_montage(demo):
    rows = list(csv.DictReader((demo.out / "brain_mri" / "volumes.csv").read_text().splitlines()))
    grey_matter = [r for r in rows if r["name"] == "grey_matter"]
    assert sorted(r["case"] for r in grey_matter) == ["brain_004", "brain_005"]
    for row in grey_matter:
        reference = nib.load(find_samples() / "brain_mri" / "labelsTs" / f"{row['case']}.nii.gz")
        voxel_ml = abs(np.linalg.det(reference.affine[:3, :3])) / 1000
        reference_ml = float((np.asarray(reference.dataobj) == 1).sum()) * voxel_ml
        assert abs(float(row["volume_ml"]) - reference_ml) < 0.35 * reference_ml
    montage = Image.open(demo.montage)
    assert montage.size[0] >= 512 and np.asarray(montage).std() > 10
    assert len(list((demo.out / "endoscopy").glob("polyp_*.png"))) == 6


def test_bundled_brain_model_segments_tissue(demo):
    tissue = [v for k, v in demo.brain_dice.items() if k.endswith(("grey_matter", "white_matter"))]
    assert len(tissue) == 4 and min(tissue) > 0.6
    lesion = [v for k, v in demo.brain_dice.items() if k.endswith("lesion")]
    assert len(lesion) == 2 and min(lesion) > 0.5
