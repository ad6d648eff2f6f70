"""Read any scan into a MONAI MetaTensor with its geometry; write masks Slicer and PACS tools open in place.

Conventions every reader keeps:
- `load_image(path)` returns a `MetaTensor` shaped (C, *spatial), float32 (labels as integers where the
  file stores integers), whose `.affine` maps voxel indices (i, j, k) to world RAS+ millimetres.
- 2D images follow MONAI's PILReader: spatial shape (W, H), i.e. axis 0 runs along image columns.
- Video and ultrasound cine are 2D+t: (C, W, H, T) with `meta["fps"]` and `meta["time_axis"] = 3`.
- meta keys set by medattn: `filename_or_obj` (source path), `modality` ('CT', 'MR', 'US', 'RGB', ...
  or '' when unknown), `spacing` (mm per spatial axis), `series_uid` for DICOM, `space` = 'RAS'.

Where things are (one module per format, nnU-Net style):
- `formats`: the table mapping each suffix to its reader and writer; `load` (`load_image`) and `write`
  (`save_mask`) pick from it.
- `nifti` (.nii/.nii.gz, ISA-L gzip, probability volumes), `itk` (NRRD, MHA/MHD), `seg_nrrd` (3D Slicer
  segmentations), `image2d` (PNG, JPEG, TIFF, BMP read), `png` (PNG masks and overlays), `video`,
  `dicom/` (series, slices, geometry, pixels, SEG).
- `geometry`: affines and putting an array exactly on a reference grid; `placement`: a mask on its
  reference's grid, as the writers take it; `overlay`: contours drawn for
  display; `label_table`: label names and colours; `mask_images`: 0/255 mask images as 0/1.
- `discovery` (`discover`, `Case`): the cases in a folder; `readers`: MONAI `ImageReader`s
  (`MedattnReader` over `load_image`, `Image2DReader`, `VideoReader`); `atomic`: atomic writes.

Names are imported lazily so `import medattn.io` stays quick for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_image": "medattn.io.load",
    "save_mask": "medattn.io.write",
    "discover": "medattn.io.discovery",
    "Case": "medattn.io.discovery",
    "atomic_path": "medattn.io.atomic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medattn.io' has no attribute {name!r}")
