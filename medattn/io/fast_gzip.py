"""NIfTI .nii.gz through ISA-L's gzip (the `isal` package) instead of zlib: the same files, 2-7x faster.

Reading a scan and writing probability maps are the two places prediction waits on gzip (BENCHMARKS.md,
end-to-end prediction); both use gzip level 1, the level nibabel writes. Without isal (a trimmed install)
both fall back to nibabel's own zlib path.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medattn.io.atomic import full_suffix

try:
    from isal import igzip, isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; a trimmed install still works through zlib
    igzip = isal_zlib = None

# nibabel's own compression level for .nii.gz (nibabel.openers): fast, files a few percent larger than 6.
COMPRESS_LEVEL = 1


GZIP_MAGIC = b"\x1f\x8b"


def is_gzipped(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes, whatever its name says."""
    try:
        with open(path, "rb") as stream:
            return stream.read(2) == GZIP_MAGIC
    except OSError:
        return False


def read_gzipped_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    """A gzipped NIfTI (.nii.gz, or a .nii that is gzipped after all) and its voxels (scaled as nibabel
    scales them), decompressed by ISA-L.

    Returns None when isal is missing or the file is anything but a gzipped NIfTI-1/2, so that nibabel's
    own reading (and its error message) follows.
    """
    if full_suffix(path) not in (".nii.gz", ".nii") or igzip is None or not is_gzipped(path):
        return None
    return read_nifti_stream(path, igzip.open)


def read_nifti_stream(path: Path, opener) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    """A NIfTI-1/2 image read from `opener(path, "rb")` (a file or decompressing stream) and its voxels;
    None when the stream holds no NIfTI header, so that nibabel's reading and error message follow."""
    errors = (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError)
    if isal_zlib is not None:
        errors = (*errors, isal_zlib.error)
    try:
        with opener(path, "rb") as stream:
            first = stream.read(4)
            stream.seek(0)
            header_sizes = {int.from_bytes(first, order) for order in ("little", "big")}  # either byte order
            if 348 in header_sizes:
                image_class = nib.Nifti1Image
            elif 540 in header_sizes:
                image_class = nib.Nifti2Image
            else:
                return None
            image = image_class.from_stream(stream)
            return image, np.asanyarray(image.dataobj)
    except errors:
        return None  # nibabel reads it again and names the problem


def save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """`nib.save(image, path)`; a .nii.gz is compressed by ISA-L at nibabel's level."""
    if full_suffix(path) != ".nii.gz" or igzip is None:
        nib.save(image, path)
        return
    with igzip.open(path, "wb", compresslevel=COMPRESS_LEVEL) as stream:
        image.to_stream(stream)
