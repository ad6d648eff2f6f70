"""Prompts for the SAM family in `medattn predict`: per-case prompts (boxes and points from the options,
boxes from a prior mask or from a coarse model's mask).

The prompted prediction itself is `medattn.inference.prompted` (whole images at the model's input size,
volumes slice by slice with the box carried), which `Predictor.predict_case(image, prompts=...)` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medattn.errors import ConfigError, GeometryError, InputNotFoundError
from medattn.inference.prompted import (
    no_prompts_error,
)
from medattn.io.discovery import Case
from medattn.models.sam.prompts import ImagePrompts

PromptSource = Callable[[Case, MetaTensor], ImagePrompts]


def prompt_source(options, predictor) -> PromptSource | None:
    """What gives each case its prompts, from PredictOptions' box, points, slice_index, prior_mask and
    box_model; None when none is set (a SAM model then runs in SAM's no-prompt mode).

    Raises:
        ConfigError: prompts for a model that takes none, or prompts given more than one way.
        InputNotFoundError: the prior mask does not exist.
    """
    given = {
        "--box/--point": options.box or options.points or options.slice_index is not None,
        "--prior-mask": options.prior_mask,
        "--box-model": options.box_model,
    }
    chosen = [name for name, value in given.items() if value]
    if not chosen:
        return None
    if not predictor.accepts_prompts:
        raise no_prompts_error(predictor.config.model)
    if len(chosen) > 1:
        raise ConfigError(f"give prompts one way, not {' and '.join(chosen)}")
    if chosen[0] == "--box/--point":
        if not (options.box or options.points):
            raise ConfigError("--slice K names the slice a --box or --point is drawn on; give one")
        fixed = ImagePrompts.build(box=options.box, points=options.points, slice_index=options.slice_index)
        return lambda case, image: fixed
    if options.prior_mask:
        source = Path(options.prior_mask)
        if not source.exists():
            raise InputNotFoundError("no such prior mask file or folder", source)
        return lambda case, image: prior_mask_prompts(source, case, image)
    from medattn.inference.predictor import load_model

    coarse = load_model(
        options.box_model,
        device=options.device,
        amp=options.amp,
        overlap=options.overlap,
        sw_batch_size=options.sw_batch_size,
        stitch_device=options.stitch_device,
    )
    return lambda case, image: box_model_prompts(coarse, case, image)


def _prior_file(source: Path, case: Case) -> Path:
    """The prior mask of `case`: the file itself, or ``<case_id>.*`` in a folder (e.g. an earlier output)."""
    if source.is_file():
        return source
    found = sorted(p for p in source.glob(f"{case.id}.*") if p.is_file())
    if not found:
        raise InputNotFoundError(f"no prior mask named {case.id}.* for case {case.id}", source)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"several prior masks for case {case.id} ({names}); keep one", source)
    return found[0]


def prior_mask_prompts(source: Path, case: Case, image: MetaTensor) -> ImagePrompts:
    """Box prompts from a prior mask on the input grid: one box per connected component of each label
    (per slice of a volume).

    Raises:
        GeometryError: the mask's grid is not the image's.
    """
    from medattn.io import load_image

    path = _prior_file(source, case)
    mask = load_image(path, dtype=None)
    if tuple(mask.shape[1:]) != tuple(image.shape[1:]) or mask.shape[0] != 1:
        raise GeometryError(
            f"the prior mask has shape {tuple(mask.shape)}, the image {tuple(image.shape)}: it must be one "
            "label map on the input's grid",
            path,
        )
    return ImagePrompts.from_label_map(np.asarray(mask[0]))


def box_model_prompts(coarse, case: Case, image: MetaTensor) -> ImagePrompts:
    """Box prompts from a coarse model's mask of the case: one box per connected component of each label.

    Args:
        coarse: a `Predictor` of any medattn package (it predicts on the input grid).
        case: the case, re-read when the coarse model needs other channels or dimensions than `image` has.
        image: the case as the prompted model reads it.
    """
    fits = coarse.plan.in_channels == image.shape[0] and coarse.input_spatial_dims in (None, image.ndim - 1)
    source = (
        image
        if fits
        else case.load_image(spatial_dims=coarse.input_spatial_dims, channels=coarse.plan.in_channels)
    )
    return ImagePrompts.from_label_map(np.asarray(coarse.predict(source)[0]))
