"""medattn: attention U-Nets for medical image segmentation on MONAI.

Scans in (DICOM, NIfTI, NRRD/MHA, 2D images, video), masks out that 3D Slicer opens in the right place.
"""

from medattn.errors import MedattnError

__version__ = "0.1.0"

__all__ = ["MedattnError", "__version__"]
