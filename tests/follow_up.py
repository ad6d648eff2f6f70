"""Synthetic follow-up visits of one patient, built from the sample brain MRI, with known lesions.

The baseline is sample_data/brain_mri's brain_001 resampled to `spacing`; each later visit is the same
head moved rigidly (SimpleITK resampling) and its lesions changed by known factors: A grows, B shrinks,
C shrinks then vanishes, D splits in two, E is new at the second visit, F stays, G and H merge. Lesions
are balls defined in the baseline's RAS mm, drawn on each visit's own grid through that visit's motion.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medattn.io import load_image
from medattn.longitudinal.registration import rigid_matrix_ras, sitk_array, sitk_image

SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "sample_data"
    / "brain_mri"
    / "imagesTr"
    / "brain_001_0000.nii.gz"
)
DATES = (datetime.date(2024, 1, 10), datetime.date(2024, 4, 10), datetime.date(2024, 10, 7))
#: Per visit: rotation about x, y, z (degrees) and translation (mm) of the head, in ITK's LPS frame.
MOTIONS = (((0, 0, 0), (0, 0, 0)), ((5, -4, 6), (6, -10, 8)), ((-7, 3, -5), (-12, 6, 10)))
#: Lesion -> (centre RAS mm, radius mm) per visit; a list of balls where it is in pieces, None where absent.
LESIONS = {
    "A": [((-35, 20, 20), 8), ((-35, 20, 20), 10), ((-35, 20, 20), 12)],
    "B": [((35, 20, 20), 10), ((35, 20, 20), 7), ((35, 20, 20), 5)],
    "C": [((-35, -45, 10), 7), ((-35, -45, 10), 5), None],
    "D": [
        ((35, -45, 10), 10),
        [((35, -55, 10), 5), ((35, -35, 10), 5)],
        [((35, -55, 10), 5), ((35, -35, 10), 5)],
    ],
    "E": [None, ((0, 45, -5), 6), ((0, 45, -5), 6)],
    "F": [((0, -20, 40), 8), ((0, -20, 40), 8), ((0, -20, 40), 8)],
    "G": [((-11, 45, 35), 5), ((0, 45, 35), 13), ((0, 45, 35), 13)],
    "H": [((11, 45, 35), 5), None, None],
}


@dataclass
class FollowUp:
    """The files written: scans, masks (lesion label 1), and the truth."""

    scans: list[Path]
    masks: Path
    truth_to_visit_ras: list[np.ndarray]  # baseline RAS -> visit RAS, per visit


def motion(index: int, centre) -> sitk.Euler3DTransform:
    """The transform `sitk.Resample` uses to make visit `index` from the baseline (visit point -> baseline
    point, LPS)."""
    angles, shift = MOTIONS[index]
    return sitk.Euler3DTransform(centre, *np.radians(angles), tuple(float(v) for v in shift))


def baseline_scan(spacing: float) -> sitk.Image:
    image = load_image(SAMPLE)
    original = sitk_image(np.asarray(image[0], dtype=np.float32), np.asarray(image.affine))
    size = [
        int(round(n * s / spacing)) for n, s in zip(original.GetSize(), original.GetSpacing(), strict=True)
    ]
    return sitk.Resample(
        original, size, sitk.Transform(), sitk.sitkLinear, original.GetOrigin(), (spacing,) * 3,
        original.GetDirection(), 0.0, sitk.sitkFloat32,
    )  # fmt: skip


def affine_ras(image: sitk.Image) -> np.ndarray:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def balls(entry) -> list:
    if entry is None:
        return []
    return entry if isinstance(entry, list) else [entry]


def lesion_mask(grid: sitk.Image, to_baseline_ras: np.ndarray, visit: int, lesions=LESIONS) -> np.ndarray:
    """Boolean (i, j, k) mask of the visit's lesions on `grid`; a voxel is in a ball when its centre, carried
    to the baseline frame, is."""
    affine = affine_ras(grid)
    size = grid.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    baseline = world @ to_baseline_ras[:3, :3].T + to_baseline_ras[:3, 3]
    inside = np.zeros(len(index), dtype=bool)
    for per_visit in lesions.values():
        for centre, radius in balls(per_visit[visit]):
            inside |= np.linalg.norm(baseline - np.asarray(centre, float), axis=1) <= radius
    return inside.reshape(size)


def make_follow_up(folder: Path, spacing: float = 3.0, names=None, visit_spacing=None) -> FollowUp:
    """Write the three visits as NIfTI scans `folder/scans/<name>.nii.gz` and their lesion masks
    `folder/masks/<name>.nii.gz` (label 1), named `visit_<date>` unless `names` says otherwise.

    Args:
        visit_spacing: per visit, a voxel size for its own grid (default: the baseline's).
    """
    baseline = baseline_scan(spacing)
    centre = baseline.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in baseline.GetSize()])
    names = names or [f"visit_{d.isoformat()}" for d in DATES]
    (folder / "scans").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    scans, truths = [], []
    noise = np.random.default_rng(0)
    for index, name in enumerate(names):
        transform = motion(index, centre)
        grid = baseline
        if visit_spacing is not None and visit_spacing[index] != spacing:
            step = visit_spacing[index]
            size = [int(round(n * spacing / step)) for n in baseline.GetSize()]
            grid = sitk.Image(size, sitk.sitkFloat32)
            grid.SetOrigin(baseline.GetOrigin())
            grid.SetSpacing((step,) * 3)
            grid.SetDirection(baseline.GetDirection())
        moved = sitk.Resample(baseline, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        to_baseline = rigid_matrix_ras(transform)  # visit RAS -> baseline RAS
        array = sitk_array(moved)
        array = array + noise.normal(0, 0.02 * float(array.max()), array.shape).astype(np.float32)
        affine = affine_ras(moved)
        scan = folder / "scans" / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), scan)
        mask = lesion_mask(moved, to_baseline, index)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "masks" / f"{name}.nii.gz")
        scans.append(scan)
        truths.append(np.linalg.inv(to_baseline))
    return FollowUp(scans, folder / "masks", truths)
