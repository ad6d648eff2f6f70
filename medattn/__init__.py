"""medattn: attention U-Nets for medical image segmentation on MONAI.

Scans in (DICOM, NIfTI, NRRD/MHA, 2D images, video), masks out that 3D Slicer opens in the right place.

The library, one job per subpackage: `io` (read any input, write masks; one module per format),
`transforms` (preprocessing and augmentation), `models` (networks and the registry), `losses`,
`inference` (the predictor and the one stage list every case runs), `training` (the Trainer), `metrics`,
`export` (ONNX/TorchScript); `device` (device, precision, memory layout), `package` (model packages),
`plan` (training plans), `errors`. The workflows are `medattn.pipelines`, the command line `medattn.cli`.
"""

import importlib
import logging
import warnings
from typing import Any

from medattn.errors import MedattnError

__version__ = "0.1.0"

# MONAI announces on import that NVIDIA's optional GPU JPEG decoder is absent; pydicom's decoders do the work.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
# MONAI 1.5+ warns that Orientation's default axis labels will follow the image's space; ours is RAS.
warnings.filterwarnings("ignore", message=r".*Orientationd?\.__init__:labels.*", category=FutureWarning)

# The Python API, imported on first use so `import medattn` stays light: name -> module defining it.
_API = {
    "evaluate": "medattn.pipelines.evaluate",
    "train": "medattn.pipelines.train",
    "predict": "medattn.pipelines.predict",
    "track": "medattn.pipelines.track",
    "load_model": "medattn.inference.predictor",
}

__all__ = ["MedattnError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medattn' has no attribute {name!r}")
