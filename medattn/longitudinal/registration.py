"""Rigid registration of a follow-up scan to the baseline scan, with SimpleITK's registration framework.

The recipe of SimpleITK's registration examples, for scans of one patient on different days (same
anatomy, moved head, maybe another scanner or contrast): a Euler (rotation + translation) transform
started by `CenteredTransformInitializer` on the intensity moments (centres of mass superimposed),
Mattes mutual information (robust to intensity changes between sessions) sampled in the head only,
regular-step gradient descent with scales from the physical shift of each parameter (plain gradient
descent at a fixed learning rate stops several mm off on the motions bench/track.py makes), three
resolution levels (coarse, smoothed first). Its time and accuracy against known motions are measured by
bench/track.py (BENCHMARKS.md).

Conventions: the transform maps points of the baseline (fixed) to the follow-up (moving) in ITK's LPS
millimetres, as `sitk.Resample` takes it to bring the follow-up onto the baseline grid. Images here are
MetaTensors with RAS affines (medattn's convention) converted at the edge by `sitk_image`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medattn.io.itk import itk_geometry

#: ITK's LPS <-> medattn's RAS: x and y change sign.
_FLIP = np.array([-1.0, -1.0, 1.0])
#: Voxels of the head sampled for the metric at the finest level: enough for a stable mutual information,
#: few enough to be quick. 32 histogram bins keep about 2,000 samples per bin: with 50, the noisier metric
#: stopped the optimizer up to 1 mm off on bench/track.py's largest motions.
METRIC_SAMPLES = 60_000
HISTOGRAM_BINS = 32
#: Target voxel size (mm) of the three levels: coarse levels find the large motions, the last refines.
LEVEL_MM = (8.0, 4.0, 0.0)
#: Gaussian smoothing (mm) of each level.
LEVEL_SMOOTHING_MM = (4.0, 2.0, 0.0)
ITERATIONS = 200
#: The fewest voxels along any axis a coarse level keeps (a thin slab stays at full resolution).
MIN_LEVEL_VOXELS = 8


@dataclass(frozen=True)
class RigidRegistration:
    """A follow-up registered to the baseline.

    Attributes:
        transform: baseline LPS point -> follow-up LPS point (SimpleITK Euler3DTransform).
        metric: the final Mattes mutual information (negative; lower is better aligned).
        iterations: optimizer iterations of the last level.
        stop: the optimizer's reason for stopping.
        seconds: wall time.
    """

    transform: sitk.Transform
    metric: float
    iterations: int
    stop: str
    seconds: float

    def matrix_ras(self) -> np.ndarray:
        """The transform as a 4x4 matrix from baseline RAS mm to follow-up RAS mm."""
        return rigid_matrix_ras(self.transform)

    def to_baseline_ras(self, points_ras: np.ndarray) -> np.ndarray:
        """Follow-up RAS points (N, 3) as baseline RAS points (the inverse transform)."""
        inverse = self.transform.GetInverse()
        return np.array(
            [_FLIP * inverse.TransformPoint(tuple(float(v) for v in _FLIP * p)) for p in points_ras]
        ).reshape(-1, 3)


def identity_registration() -> RigidRegistration:
    """The baseline's registration to itself."""
    return RigidRegistration(sitk.Euler3DTransform(), 0.0, 0, "baseline", 0.0)


def sitk_image(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """An (i, j, k) array on the grid `affine_ras` (voxel -> RAS mm) as a SimpleITK image (LPS)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    origin, spacing, direction = itk_geometry(np.asarray(affine_ras, dtype=np.float64))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def sitk_array(image: sitk.Image) -> np.ndarray:
    """A SimpleITK image's voxels as an (i, j, k) array."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def rigid_matrix_ras(transform: sitk.Transform) -> np.ndarray:
    """A rigid (or any matrix-offset) SimpleITK transform in LPS as a 4x4 RAS -> RAS matrix."""
    euler = sitk.Euler3DTransform(transform) if transform.GetName() != "Euler3DTransform" else transform
    matrix = np.asarray(euler.GetMatrix(), dtype=np.float64).reshape(3, 3)
    center = np.asarray(euler.GetCenter(), dtype=np.float64)
    offset = center + np.asarray(euler.GetTranslation(), dtype=np.float64) - matrix @ center
    flip = np.diag(_FLIP)
    result = np.eye(4)
    result[:3, :3] = flip @ matrix @ flip
    result[:3, 3] = flip @ offset
    return result


def _shrink_factors(image: sitk.Image) -> list[int]:
    """Each level's shrink factor: its voxel size in LEVEL_MM, keeping at least MIN_LEVEL_VOXELS per axis."""
    finest = min(image.GetSpacing())
    largest = max(1, min(image.GetSize()) // MIN_LEVEL_VOXELS)
    return [min(largest, max(1, int(round(mm / finest)))) if mm else 1 for mm in LEVEL_MM]


def _head_mask(image: sitk.Image) -> sitk.Image:
    """The voxels above Otsu's threshold (the body, not the air around it), grown by two voxels so that
    its edges, where the alignment shows most, are in."""
    body = sitk.OtsuThreshold(image, 0, 1)
    return sitk.BinaryDilate(body, [2, 2, 2])


def register_rigid(fixed: sitk.Image, moving: sitk.Image) -> RigidRegistration:
    """Register `moving` (a follow-up scan) rigidly to `fixed` (the baseline scan).

    Args:
        fixed: the baseline scan, float intensities.
        moving: the follow-up scan, float intensities, any grid.

    Returns:
        The transform from baseline points to follow-up points and how the optimisation ended.
    """
    started = time.perf_counter()
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    shrink = _shrink_factors(fixed)
    # The metric samples the head only: in a wide field of view most voxels are air, which tells nothing
    # about the alignment and dilutes the random samples.
    head = _head_mask(fixed)
    method.SetMetricFixedMask(head)
    head_voxels = float(max(1, np.count_nonzero(sitk.GetArrayViewFromImage(head))))
    method.SetMetricSamplingPercentage(min(1.0, METRIC_SAMPLES / head_voxels), seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=ITERATIONS,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(list(LEVEL_SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    # SimpleITK hands back the optimised copy of the initial transform inside a one-member composite.
    composite = sitk.CompositeTransform(result)
    transform = sitk.Euler3DTransform(composite.GetNthTransform(composite.GetNumberOfTransforms() - 1))
    return RigidRegistration(
        transform=transform,
        metric=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
        stop=method.GetOptimizerStopConditionDescription(),
        seconds=round(time.perf_counter() - started, 3),
    )


def labels_on_baseline(
    labels: np.ndarray, affine_ras: np.ndarray, baseline: sitk.Image, registration: RigidRegistration
) -> np.ndarray:
    """A follow-up's label array (on its own grid `affine_ras`) carried onto the baseline grid through the
    registration, nearest neighbour (labels stay labels); 0 outside the follow-up's field of view."""
    source = sitk_image(labels.astype(np.uint32), affine_ras)
    moved = sitk.Resample(
        source, baseline, registration.transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt32
    )
    return sitk_array(moved)
