"""Inference: gaussian sliding-window prediction with TTA and AMP, and label-map postprocessing."""

from medattn.inference.postprocess import (
    argmax_labels,
    fill_holes,
    keep_largest_component,
    remove_small_components,
)
from medattn.inference.sliding_window import (
    choose_stitch_device,
    count_windows,
    importance_map,
    sliding_window_predict,
    stitched_bytes,
)

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
