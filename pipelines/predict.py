"""Segment every case under an input path with a model package: masks, volumes.csv and predict.json.

A finished case is skipped on a re-run unless `overwrite`; a failing case is recorded and the rest go
on; every file is written atomically and the report is rewritten after each case, so a kill leaves
finished cases complete and nothing partial. The cases run the stages of `medattn.inference.stages`, in
turn or pipelined (the default on CUDA; on CPU the network's own threads already use every core, see
bench/predict_folder.py); `medattn.pipelines.predict_case` says what each stage does to a case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medattn.errors import ConfigError, MedattnError
from medattn.inference.stages import run_stages
from medattn.io import discover
from medattn.io.discovery import Case
from medattn.io.formats import MASK_FORMATS, normalized_format
from medattn.pipelines.predict_case import CaseStages, case_target
from medattn.pipelines.predict_report import (
    CaseResult,
    earlier_volume_rows,
    run_settings,
    volume_rows,
    write_reports,
)


@dataclass
class PredictOptions:
    """Every option of `medattn predict`; saved in predict.json."""

    format: str = "nii.gz"
    overwrite: bool = False
    overlap: float = 0.5
    sw_batch_size: int = 4
    tta: bool = False
    device: str = "auto"
    amp: str = "auto"
    stitch_device: str | None = "auto"  # auto: the GPU while the stitched logits fit, else the CPU
    save_probabilities: bool = False
    save_attention: bool = False
    keep_largest: bool = False
    fill_holes: bool = False
    min_lesion_ml: float | None = None
    lesion_threshold: float | None = None  # lesion wherever its probability reaches this (None: argmax)
    compile: bool = False  # torch.compile the network (the first windows wait for it; once per run)
    engine: str = "torch"  # torch | onnx (onnxruntime on an exported network, see medattn.inference.engines)
    overlay: bool = False  # 2D: also <case_id>_overlay.png, each label's contour drawn on the image
    # Prompts for the SAM family (pipelines/prompted.py), in pixels of the input image (x = first axis):
    box: list | None = None  # one box "x0,y0,x1,y1" / (x0, y0, x1, y1), or a list of them
    points: list | None = None  # "x,y[,label]" / (x, y[, label]) clicks, label 1 fg (default) / 0 bg
    slice_index: int | None = None  # 3D: the slice (last axis) the box/points are on; carried from there
    prior_mask: str | None = None  # a mask file on the input grid, or a folder of <case_id>.* masks
    box_model: str | None = None  # a coarse model package whose components give the boxes
    # Preprocess on the read-ahead thread and write on another while the next case runs (see the module
    # docstring); None: when the model runs on CUDA.
    pipelined: bool | None = None

    def __post_init__(self) -> None:
        # The Python API may pass paths and arrays; predict.json keeps them as text and lists.
        for name in ("prior_mask", "box_model"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        self.box, self.points = _plain(self.box), _plain(self.points)


def _plain(value):
    """Nested tuples/arrays of numbers as lists (JSON), strings and None as they are."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_options(options: PredictOptions) -> None:
    """Options wrong for every case fail once, before any case runs (not once per case)."""
    if options.format not in MASK_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}; choose {', '.join(MASK_FORMATS)}")
    if not 0 <= options.overlap < 1:
        raise ConfigError(f"--overlap must be in [0, 1), got {options.overlap}")
    if options.sw_batch_size < 1:
        raise ConfigError(f"--sw-batch must be at least 1, got {options.sw_batch_size}")
    if options.min_lesion_ml is not None and options.min_lesion_ml < 0:
        raise ConfigError(f"--min-lesion-ml must be 0 or more, got {options.min_lesion_ml}")
    from medattn.inference.predictor import checked_lesion_threshold

    checked_lesion_threshold(options.lesion_threshold)


def check_options(output: str | Path, **options) -> PredictOptions:
    """The options of `predict` (see there), checked before any work: an unknown option, a value wrong for
    every case, or an output path that is a file raise ConfigError. The CLI calls it before its progress
    bar appears."""
    settings = PredictOptions(**options)
    settings.format = normalized_format(settings.format)
    _check_options(settings)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            "the output is a file; give a folder for the masks, volumes.csv and predict.json", out
        )
    return settings


def _refuse_overwriting_inputs(cases: list[Case], out: Path, options: PredictOptions) -> None:
    """ConfigError, before any case runs, when a mask would be written over its own scan (the output folder
    is the input folder and the format the scan's): the scan would be lost, or with no --overwrite read
    back as an earlier mask and its intensities counted as label volumes."""
    for case in cases:
        target = case_target(out, case, options).resolve()
        if any(Path(image).resolve() == target for image in case.images):
            raise ConfigError(
                f"the mask of case {case.id!r} would be written over its scan {target}; choose an output "
                "folder other than the input folder (or another --format)"
            )


def _finished(case: Case, out: Path, options: PredictOptions, names: dict[int, str]) -> CaseResult | None:
    """A 'skipped' result when the case's outputs exist from an earlier run (and no --overwrite); None when
    it must run: absent, a partial video, or an earlier mask that cannot be read."""
    from medattn.io import load_image
    from medattn.pipelines.predict_video import video_done, video_outputs

    if options.overwrite:
        return None
    if case.kind != "video" and video_done(out, case.id):
        # A clip that is not a video file (ultrasound cine, multi-page TIFF) left video outputs.
        return CaseResult(case.id, "skipped", str(video_outputs(out, case.id)["masks"]))
    target = case_target(out, case, options)
    if not target.exists():
        return None
    if case.kind == "video":
        return CaseResult(case.id, "skipped", str(target)) if video_done(out, case.id) else None
    try:
        mask = load_image(target, dtype=None)
    except MedattnError:
        return None
    return CaseResult(case.id, "skipped", str(target), volumes=volume_rows(case.id, mask, mask.affine, names))


def predict(
    inputs: str | Path,
    output: str | Path,
    model: str | Path,
    *,
    on_case: Callable[[CaseResult, int, int], None] | None = None,
    on_frames: Callable[[str, int, int | None], None] | None = None,
    **options,
) -> list[CaseResult]:
    """Segment every case found under `inputs` (a file, a folder in any layout, a DICOM tree, a video).

    Every case runs the stages read -> preprocess -> infer -> finish -> write (`medattn.inference.stages`),
    in turn or pipelined (`pipelined`: by default on CUDA). A video is segmented frame by frame by a 2D model
    and streamed (see `medattn.pipelines.predict_video`): per-frame PNG masks in `<case_id>/`, an overlay
    MP4 and `<case_id>_frames.csv` with per-frame areas. A SAM-family package segments each image whole at
    its input size and volumes slice by slice (`medattn.inference.prompted`); without prompts it runs in
    SAM's no-prompt mode.

    Args:
        inputs: what to segment.
        output: folder for `<case_id>.<format>`, volumes.csv and predict.json.
        model: a model package folder (from `medattn train`).
        on_case: called after each case with (result, index, total), e.g. to advance a progress bar.
        on_frames: videos: called after each frame with (case id, frames done, frames announced or None).
        **options: fields of `PredictOptions`.

    Returns:
        One CaseResult per case; failed cases carry the error (nothing is raised for them).
    """
    from medattn.inference.predictor import load_model
    from medattn.pipelines.prompted import prompt_source

    settings_obj = check_options(output, **options)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_model(
        model,
        device=settings_obj.device,
        amp=settings_obj.amp,
        overlap=settings_obj.overlap,
        sw_batch_size=settings_obj.sw_batch_size,
        tta=settings_obj.tta,
        stitch_device=settings_obj.stitch_device,
        engine=settings_obj.engine,
        compile=settings_obj.compile,
        lesion_threshold=settings_obj.lesion_threshold,
    )
    if settings_obj.format == "png" and predictor.plan.spatial_dims == 3:
        raise ConfigError(
            f"--format png writes 2D masks; the model {Path(model).name} is 3D: "
            "use nii.gz, seg.nrrd or dicom-seg"
        )
    prompts_for = prompt_source(settings_obj, predictor)
    cases = list(discover(inputs))
    _refuse_overwriting_inputs(cases, out, settings_obj)
    earlier_rows = earlier_volume_rows(out, {case.id for case in cases})
    settings = run_settings(Path(model), predictor, settings_obj, Path(inputs))
    results: list[CaseResult] = []
    todo = []
    for case in cases:
        finished = _finished(case, out, settings_obj, predictor.config.labels)
        if finished is None:
            todo.append(case)
        else:
            results.append(finished)
    pipelined = settings_obj.pipelined
    if pipelined is None:
        pipelined = predictor.device.type == "cuda"
    # SAM-family models segment whole images with prompts made per case: they run in turn.
    pipelined = pipelined and prompts_for is None and not predictor.accepts_prompts
    settings["options"]["pipelined"] = pipelined  # what ran, in predict.json

    def record(result: CaseResult, index: int) -> None:
        results.append(result)
        write_reports(out, results, settings, earlier_rows)
        if on_case is not None:
            on_case(result, index, len(todo))

    stages = CaseStages(predictor, out, settings_obj, prompts_for, on_frames)
    run_stages(todo, stages.stages(), pipelined=pipelined, on_result=record, guard=stages.failed)
    write_reports(out, results, settings, earlier_rows)
    return results
