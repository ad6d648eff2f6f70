"""Inference: a loaded model package turning images into masks on their own grid.

Where things are:
- `predictor`: `load_model` and `Predictor`, the package ready to predict, with the three middle stages of
  a case (preprocess, infer, finish);
- `stages`: the one stage list every case and video frame runs (read -> preprocess -> infer -> finish ->
  write), in turn or pipelined;
- `sliding_window`: gaussian sliding-window inference with mirror TTA and AMP, built on MONAI's;
  `stitch_memory`: what it stitches in and where (GPU or host);
  `prompted`: the SAM family's whole-image path (volumes slice by slice);
- `resample`: probabilities back onto the input grid; `network_outputs`: probabilities and attention
  maps from a forward pass; `postprocess`: label-map cleaning; `fuse`: batch norms folded for inference;
  `engines`: onnxruntime in place of torch.
"""

from medattn.inference.postprocess import (
    argmax_labels,
    fill_holes,
    keep_largest_component,
    remove_small_components,
)
from medattn.inference.sliding_window import count_windows, importance_map, sliding_window_predict
from medattn.inference.stitch_memory import choose_stitch_device, stitched_bytes

__all__ = [
    "argmax_labels",
    "choose_stitch_device",
    "count_windows",
    "fill_holes",
    "importance_map",
    "keep_largest_component",
    "remove_small_components",
    "sliding_window_predict",
    "stitched_bytes",
]
