"""Brain MRI sample cases: the MNI ICBM152 2009a T1 template resampled, degraded and given planted lesions.

Each case is the same real anatomy seen through a different acquisition: its own voxel spacing, stored
array orientation (RAS, LPS, LAS, LIA, and oblique grids rotated 10-15 degrees), bias field, Rician noise
and intensity scale. The template is resampled onto every grid by world position (RAS+ mm), so the
anatomy stays where it is in the world whatever the orientation of the stored array. Labels come from
the template's grey/white-matter probability maps resampled the same way; contrast-enhancing lesions
(solid, or an enhancing rim around a necrotic core) are ellipsoids defined in world millimetres and
voxelised on each grid, with volumes chosen to cover the < 1, 1-3, 3-10 and > 10 mL size classes.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3}
# World directions (RAS+) of the orientation letters: the letter names where an array axis points to.
_LETTER_TO_RAS = {
    "R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1),
}  # fmt: skip
_MARGIN_MM = 4.0
# Grey-matter T1 intensity of the template (its median over grey matter is about 169 of 255).
_GM_LEVEL = 170.0


@dataclass(frozen=True)
class BrainCase:
    """How one sample case is acquired: grid, orientation, degradations and its lesions.

    Attributes:
        case_id: file stem, e.g. 'brain_000'.
        subset: 'Tr' (imagesTr/labelsTr) or 'Ts' (imagesTs/labelsTs).
        spacing: voxel size along the stored array axes, mm.
        orientation: where the array axes point before any oblique rotation, e.g. 'LPS'.
        rotation_deg: rotation of the grid about the world R, A, S axes (degrees), for oblique grids.
        lesion_ml: target volume of each planted lesion, mL.
        intensity_scale: factor from template units (0-255) to stored values.
        noise_fraction: Rician noise sigma as a fraction of the grey-matter intensity.
        bias_strength: standard deviation of the log bias field over the brain.
        seed: seed of this case's random generator.
    """

    case_id: str
    subset: str
    spacing: tuple[float, float, float]
    orientation: str
    rotation_deg: tuple[float, float, float]
    lesion_ml: tuple[float, ...]
    intensity_scale: float
    noise_fraction: float
    bias_strength: float
    seed: int


CASES = (
    BrainCase("brain_000", "Tr", (2.5, 2.5, 2.5), "LPS", (12, 0, 6), (0.6, 2.2, 14.0), 4.0, 0.03, 0.10, 1000),
    BrainCase("brain_001", "Tr", (2.0, 2.0, 2.0), "RAS", (0, 0, 0), (0.8, 5.5), 2.5, 0.025, 0.12, 1001),
    BrainCase("brain_002", "Tr", (1.5, 1.5, 3.0), "LAS", (0, 0, 0), (1.4, 8.0, 19.0), 6.0, 0.035, 0.15, 1002),
    BrainCase("brain_003", "Tr", (2.5, 2.5, 2.5), "LIA", (0, 0, 0), (0.62, 2.8, 11.0), 3.2, 0.04, 0.08, 1003),
    BrainCase("brain_004", "Ts", (2.0, 2.0, 2.0), "LPS", (0, 0, 0), (0.7, 4.0, 16.0), 5.0, 0.03, 0.10, 1004),
    BrainCase("brain_005", "Ts", (1.8, 1.8, 2.4), "RAS", (0, 0, 15), (1.8, 0.9, 6.5), 3.6, 0.03, 0.13, 1005),
)  # fmt: skip


def template_paths() -> dict[str, Path]:
    """Locate the template files shipped inside the installed nilearn package, without importing it.

    Raises:
        FileNotFoundError: nilearn (a dev dependency) is not installed or lacks the template files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "nilearn is not installed: run `pip install -e '.[dev]'` to get the MNI template"
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = {key: data_dir / name for key, name in TEMPLATE_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"nilearn has no MNI ICBM152 template file(s): {', '.join(missing)}")
    return paths


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix for successive rotations about world x (R), y (A) and z (S)."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def case_grid(
    case: BrainCase, brain_world: np.ndarray, margin_mm: float = _MARGIN_MM
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The case's voxel grid: a RAS+ affine and a shape that cover the brain plus a small margin.

    Args:
        case: the acquisition description (its spacing, orientation and rotation_deg are used).
        brain_world: (N, 3) world RAS+ mm positions of brain voxels of the template.
        margin_mm: room around the brain on every side.

    Returns:
        (4x4 affine mapping voxel index to world RAS+ mm, array shape in voxels).
    """
    base = np.array([_LETTER_TO_RAS[letter] for letter in case.orientation], dtype=float).T
    directions = _rotation(case.rotation_deg) @ base
    # Express the brain in the grid's own axes to find the extent it needs along each of them.
    along_axes = brain_world @ directions
    low = along_axes.min(axis=0) - margin_mm
    high = along_axes.max(axis=0) + margin_mm
    spacing = np.asarray(case.spacing)
    shape = tuple(int(n) for n in np.ceil((high - low) / spacing).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = directions * spacing
    affine[:3, 3] = directions @ low
    # Round trip through float32 as the NIfTI sform stores it, so all derived geometry uses the same numbers.
    return affine.astype(np.float32).astype(np.float64), shape


def _resample(
    volume: np.ndarray,
    template_affine: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """Sample a 1 mm template volume on a case grid by world position, after anti-alias smoothing.

    The Gaussian widens the 1 mm template's point spread to the target voxel size (FWHM = voxel size)
    along each target axis, projected onto the template's axes.
    """
    directions = affine[:3, :3] / np.asarray(spacing)
    sigma_target = np.sqrt(np.maximum(np.asarray(spacing) ** 2 - 1.0, 0.0)) / 2.355
    sigma_template = np.sqrt(((np.abs(directions) * sigma_target) ** 2).sum(axis=1))
    smoothed = ndimage.gaussian_filter(volume.astype(np.float32), sigma_template, mode="constant")
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    voxel_to_template = np.linalg.inv(template_affine) @ affine
    coords = voxel_to_template[:3, :3] @ index + voxel_to_template[:3, 3:4]
    sampled = ndimage.map_coordinates(smoothed, coords, order=1, mode="constant", cval=0.0)
    return sampled.reshape(shape)


def _world_points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World RAS+ mm of every voxel centre, shape (*shape, 3)."""
    index = np.indices(shape, dtype=np.float64)
    return np.einsum("ij,j...->...i", affine[:3, :3], index) + affine[:3, 3]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _plant_lesions(
    case: BrainCase,
    rng: np.random.Generator,
    world: np.ndarray,
    tissue: np.ndarray,
    spacing: tuple[float, float, float],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Choose lesion ellipsoids (centre, rotation, semi-axes in mm) that lie inside brain tissue, apart.

    Centres are drawn among voxels deep enough in tissue (Euclidean distance to non-tissue, in mm, at
    least the longest semi-axis) and far enough from lesions already placed.
    """
    depth = ndimage.distance_transform_edt(tissue, sampling=spacing)
    placed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    # Large lesions first: they need the deepest room.
    for volume_ml in sorted(case.lesion_ml, reverse=True):
        radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        elongation = rng.uniform(0.8, 1.25, size=3)
        semi_axes = radius * elongation / np.prod(elongation) ** (1.0 / 3.0)
        reach = semi_axes.max()
        ok = depth >= reach + 1.0
        for centre, _, axes in placed:
            ok &= np.linalg.norm(world - centre, axis=-1) > reach + axes.max() + 4.0
        candidates = np.argwhere(ok)
        if len(candidates) == 0:
            raise RuntimeError(f"{case.case_id}: no room for a {volume_ml} mL lesion")
        centre = world[tuple(candidates[rng.integers(len(candidates))])]
        placed.append((centre, _random_rotation(rng), semi_axes))
    return placed


def make_case(
    case: BrainCase, template: dict[str, nib.Nifti1Image]
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Build one case: the int16 T1 image and its uint8 label map on the same grid.

    Args:
        case: the acquisition description.
        template: loaded template images keyed 't1', 'gm', 'wm' (uint8, 0-255 scaled).

    Returns:
        (image, label) NIfTI images with identical affines, qform and sform code 1 (scanner).
    """
    rng = np.random.default_rng(case.seed)
    template_affine = template["t1"].affine
    gm_t = np.asarray(template["gm"].dataobj, dtype=np.float32) / 255.0
    wm_t = np.asarray(template["wm"].dataobj, dtype=np.float32) / 255.0
    brain_index = np.argwhere(gm_t + wm_t >= 0.5)[::7]
    brain_world = brain_index @ template_affine[:3, :3].T + template_affine[:3, 3]
    affine, shape = case_grid(case, brain_world)
    spacing = case.spacing

    t1 = _resample(np.asarray(template["t1"].dataobj), template_affine, affine, shape, spacing)
    gm = _resample(gm_t, template_affine, affine, shape, spacing)
    wm = _resample(wm_t, template_affine, affine, shape, spacing)
    tissue = (gm + wm) >= 0.5
    label = np.where(tissue, np.where(gm >= wm, 1, 2), 0).astype(np.uint8)

    world = _world_points(affine, shape)
    signal = t1.astype(np.float64)
    for centre, rotation, semi_axes in _plant_lesions(case, rng, world, tissue, spacing):
        local = (world - centre) @ rotation / semi_axes
        rho = np.linalg.norm(local, axis=-1)  # 1 on the lesion surface
        mean_radius = float(np.cbrt(np.prod(semi_axes)))
        edge = 0.35 * min(spacing)  # mm of partial-volume blur across the boundary
        inside = 1.0 / (1.0 + np.exp(-(1.0 - rho) * mean_radius / edge))
        label[rho <= 1.0] = LABELS["lesion"]
        enhancing = 1.8 * _GM_LEVEL * rng.uniform(0.95, 1.1)
        if 4.0 / 3.0 * np.pi * mean_radius**3 >= 3000.0:  # >= 3 mL: ring enhancement, necrotic core, oedema
            rim_mm = rng.uniform(2.5, 4.0)
            core_rho = 1.0 - rim_mm / mean_radius
            rim = 1.0 / (1.0 + np.exp(-(rho - core_rho) * mean_radius / edge))
            lesion_signal = 0.45 * _GM_LEVEL * (1.0 - rim) + enhancing * rim
            oedema = np.clip((1.6 - rho) / 0.6, 0.0, 1.0) * (1.0 - inside)
            signal *= 1.0 - 0.18 * oedema * tissue
        else:
            lesion_signal = enhancing
        signal = signal * (1.0 - inside) + lesion_signal * inside

    # Smooth multiplicative bias field: exp of a random quadratic over brain-normalised world coordinates.
    centre = brain_world.mean(axis=0)
    p = (world - centre) / 80.0
    terms = np.stack([p[..., 0], p[..., 1], p[..., 2], p[..., 0] * p[..., 1], p[..., 1] * p[..., 2],
                      p[..., 0] ** 2, p[..., 2] ** 2], axis=-1)  # fmt: skip
    log_bias = terms @ rng.normal(size=terms.shape[-1])
    log_bias *= case.bias_strength / max(float(log_bias[tissue].std()), 1e-6)
    signal *= np.exp(log_bias)

    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    scaled = signal * case.intensity_scale
    sigma = case.noise_fraction * _GM_LEVEL * case.intensity_scale
    real = scaled + rng.normal(0.0, sigma, size=shape)
    imaginary = rng.normal(0.0, sigma, size=shape)
    image = np.clip(np.rint(np.hypot(real, imaginary)), 0, np.iinfo(np.int16).max).astype(np.int16)
    return _nifti(image, affine, "T1"), _nifti(label, affine, "labels")


def _nifti(data: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = f"medattn sample {description}".encode()
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    return img


def save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Write a .nii.gz byte-for-byte reproducibly: gzip level 9 with a zero timestamp and no file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def write_brain_dataset(root: Path) -> dict[str, Path]:
    """Write every case in nnU-Net v2 layout under `root`, plus dataset.json; return image path per case."""
    template = {key: nib.load(path) for key, path in template_paths().items()}
    images: dict[str, Path] = {}
    for case in CASES:
        image, label = make_case(case, template)
        image_path = root / f"images{case.subset}" / f"{case.case_id}_0000.nii.gz"
        save_nifti(image, image_path)
        save_nifti(label, root / f"labels{case.subset}" / f"{case.case_id}.nii.gz")
        images[case.case_id] = image_path
    return images


def dataset_json() -> dict:
    """The nnU-Net v2 dataset.json for the brain cases, with a provenance and licence note."""
    return {
        "name": "medattn_sample_brain_mri",
        "description": (
            "Synthetic T1 cases derived from the MNI ICBM152 2009a nonlinear symmetric template "
            "(via nilearn): resampled to varied grids and orientations, bias field, Rician noise and planted "
            "contrast-enhancing lesions. Labels from the template's GM/WM probability maps."
        ),
        "licence": (
            "Template: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
            "Neurological Institute, McGill University (permissive notice, see sample_data/README.md). "
            "Derivations and lesions: generated by sample_data/generate.py, Apache-2.0 like medattn."
        ),
        "reference": "http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009",
        "channel_names": {"0": "T1"},
        "labels": dict(LABELS),
        "numTraining": sum(case.subset == "Tr" for case in CASES),
        "file_ending": ".nii.gz",
    }
