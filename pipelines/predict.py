"""Segment every case under an input path with a model package: masks, volumes.csv and predict.json.

A finished case is skipped on a re-run unless `overwrite`; a failing case is recorded and the rest go
on; every file is written atomically and the report is rewritten after each case, so a kill leaves
finished cases complete and nothing partial. The next case is read on a background thread while the
current one is inferred.

Pipelined (the default on CUDA): the reader thread also preprocesses the next case, and a writer thread
takes the model-grid probabilities back to the input grid and writes the mask while the next case's
windows run, so the GPU waits for neither; the main thread only runs sliding windows. On CPU the network's
own threads already use every core and the extra threads only contend for them (bench/predict_folder.py:
no gain on 2 cores), so there the stages run in turn unless asked.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medattn import __version__
from medattn.errors import ConfigError, GeometryError, MedattnError
from medattn.io import discover, save_mask
from medattn.io.atomic import atomic_path
from medattn.io.discovery import Case
from medattn.pipelines.predict_options import PredictOptions, check_options

FORMATS = {
    "nii.gz": ".nii.gz",
    "seg.nrrd": ".seg.nrrd",
    "dicom-seg": ".dcm",
    "png": ".png",
    "nii": ".nii",
    "nrrd": ".nrrd",  # plain label maps for ITK-SNAP and other ITK tools
    "mha": ".mha",
}
# Other spellings users type for a format: the file suffix, with or without its dot, in any case.
FORMAT_ALIASES = {"dcm": "dicom-seg", "dicom": "dicom-seg", "seg": "dicom-seg", "nifti": "nii.gz"}
VOLUME_COLUMNS = ("case", "label", "name", "voxels", "volume_ml")


@dataclass
class CaseResult:
    """What happened to one case: status 'done', 'skipped' or 'failed'."""

    case: str
    status: str
    output: str | None = None
    seconds: float = 0.0
    error: str | None = None
    volumes: list[dict] = field(default_factory=list)
    frames: int | None = None  # videos: frames segmented
    fps: float | None = None  # videos: frames segmented per second, decoding and writing included


def _postprocess(labels: np.ndarray, spacing: tuple[float, ...], options: PredictOptions) -> np.ndarray:
    from medattn.inference import postprocess

    if options.min_lesion_ml:
        labels = postprocess.remove_small_components(labels, options.min_lesion_ml, spacing)
    if options.keep_largest:
        labels = postprocess.keep_largest_component(labels)
    if options.fill_holes:
        labels = postprocess.fill_holes(labels)
    return labels


def volume_rows(case_id: str, mask, affine, names: dict[int, str]) -> list[dict]:
    """One row per label of the package: voxels and volume in mL (2D: area x 1 mm, as the metrics do)."""
    from medattn.metrics.volume import voxel_volume_ml

    array = np.asarray(mask).reshape(-1)
    counts = np.bincount(array.astype(np.int64), minlength=max(names) + 1)
    spatial_dims = np.asarray(mask).ndim - 1
    voxel_ml = voxel_volume_ml(np.asarray(affine), spatial_dims)
    return [
        {
            "case": case_id,
            "label": value,
            "name": name,
            "voxels": int(counts[value]),
            "volume_ml": round(float(counts[value]) * voxel_ml, 6),
        }
        for value, name in sorted(names.items())
        if value != 0
    ]


def _earlier_volume_rows(out: Path, case_ids: set[str]) -> list[dict]:
    """Rows of volumes.csv from an earlier run into `out` for cases this run does not have (a run on a
    subset of the inputs must not drop the others' volumes); none when the file is absent or foreign."""
    try:
        with open(out / "volumes.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != VOLUME_COLUMNS:
                return []
            return [row for row in reader if row["case"] not in case_ids]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _write_reports(
    out: Path, results: list[CaseResult], settings: dict, earlier_rows: list[dict] = ()
) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(earlier_rows)
    for result in results:
        writer.writerows(result.volumes)
    with atomic_path(out / "volumes.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    report = {**settings, "cases": [{k: v for k, v in asdict(r).items() if k != "volumes"} for r in results]}
    with atomic_path(out / "predict.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def _settings(model: Path, predictor, options: PredictOptions, inputs: Path) -> dict:
    import monai
    import torch

    return {
        "medattn_version": __version__,
        "input": str(inputs),
        "model_package": str(model),
        "model": predictor.config.model,
        "options": asdict(options),
        "device": str(predictor.device),
        "amp": str(predictor.amp_dtype).replace("torch.", "") if predictor.amp_dtype else "off",
        "versions": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
        },
    }


def _mask_reference(case: Case, image):
    """DICOM SEG must reference the source files; everything else is placed on the loaded image's grid."""
    return case.images if case.dicom else image


def _refuse_overwriting_inputs(cases: list[Case], out: Path, options: PredictOptions) -> None:
    """ConfigError, before any case runs, when a mask would be written over its own scan (the output folder
    is the input folder and the format the scan's): the scan would be lost, or with no --overwrite read
    back as an earlier mask and its intensities counted as label volumes."""
    for case in cases:
        target = _target(out, case, options).resolve()
        if any(Path(image).resolve() == target for image in case.images):
            raise ConfigError(
                f"the mask of case {case.id!r} would be written over its scan {target}; choose an output "
                "folder other than the input folder (or another --format)"
            )


def _target(out: Path, case: Case, options: PredictOptions) -> Path:
    """The output that marks a case as done: its mask file, or for a video its folder of frame masks."""
    if case.kind == "video":
        from medattn.pipelines.predict_video import video_outputs

        return video_outputs(out, case.id)["masks"]
    return out / f"{case.id}{FORMATS[options.format]}"


def _predict_video(predictor, case: Case, out: Path, options: PredictOptions, on_frames=None) -> CaseResult:
    from medattn.pipelines.predict_video import predict_video

    start = time.perf_counter()
    info = predict_video(
        predictor,
        case.id,
        case.images[0],
        out,
        postprocess=lambda labels: _postprocess(labels, (1.0, 1.0), options),
        on_frames=None if on_frames is None else lambda done, total: on_frames(case.id, done, total),
    )
    seconds = round(time.perf_counter() - start, 3)
    return CaseResult(case.id, "done", info["output"], seconds, frames=info["frames"], fps=info["fps"])


def _predict_one(
    predictor, case: Case, image, out: Path, options: PredictOptions, on_frames=None, prompts_for=None
) -> CaseResult:
    if case.kind == "video" or image is None:  # a video file, or another clip of 2D frames
        if prompts_for is not None:
            raise ConfigError(
                "prompts (--box, --point, --prior-mask, --box-model) are for images and volumes, not videos"
            )
        return _predict_video(predictor, case, out, options, on_frames)
    start = time.perf_counter()
    _check_format(case, options)
    result = predictor.predict_case(
        image,
        probabilities=options.save_probabilities,
        attention=options.save_attention,
        prompts=None if prompts_for is None else prompts_for(case, image),
    )
    return _write_case(predictor, case, image, result, out, options, start)


def _check_format(case: Case, options: PredictOptions) -> None:
    if options.format == "dicom-seg" and not case.dicom:
        raise ConfigError("--format dicom-seg needs DICOM input (the SEG references the source series)")


def _finish_case(
    predictor, case: Case, loaded: _Loaded, stitched, out: Path, options: PredictOptions, start: float
) -> CaseResult:
    """The writer thread's half of a pipelined case: probabilities onto the input grid, then the files."""
    result = predictor.finish(stitched, loaded.preprocessed, loaded.image, options.save_probabilities)
    return _write_case(predictor, case, loaded.image, result, out, options, start)


def _write_case(
    predictor, case: Case, image, result, out: Path, options: PredictOptions, start: float
) -> CaseResult:
    """Postprocess a case's mask and write it (with overlay, probabilities, attention), count volumes."""
    from monai.data import MetaTensor

    from medattn.metrics.volume import spacing_from_affine

    if options.overlay and image.ndim != 3:  # before any file: a failed case must leave no mask behind
        raise ConfigError("--overlay draws contours on 2D images and videos; this image is 3D")
    target = _target(out, case, options)
    spacing = spacing_from_affine(np.asarray(image.affine), image.ndim - 1)
    labels = _postprocess(np.asarray(result.mask[0]), spacing, options)
    mask = MetaTensor(labels[None], affine=image.affine)
    save_mask(mask, target, reference=_mask_reference(case, image), labels=predictor.config.label_table())
    if options.overlay:
        overlay = out / f"{case.id}_overlay.png"
        save_mask(mask, overlay, reference=image, labels=predictor.config.label_table(), overlay=True)
    if result.probabilities is not None:
        save_probability_volume(result.probabilities, out / f"{case.id}_probabilities.nii.gz")
    if result.attention is not None:
        save_probability_volume(result.attention, out / f"{case.id}_attention.nii.gz")
    rows = volume_rows(case.id, mask, image.affine, predictor.config.labels)
    return CaseResult(case.id, "done", str(target), round(time.perf_counter() - start, 3), volumes=rows)


def save_probability_volume(volume, path: Path) -> Path:
    """A float volume (C, *spatial) on the input grid as NIfTI, channels last, for overlays in Slicer."""
    import nibabel as nib

    from medattn.io.fast_gzip import save_nifti

    array = np.moveaxis(np.asarray(volume, dtype=np.float32), 0, -1)
    if array.shape[-1] == 1:
        array = array[..., 0]
    with atomic_path(path) as tmp:
        save_nifti(nib.Nifti1Image(array, np.asarray(volume.affine, dtype=np.float64)), tmp)
    return path


def _existing(case: Case, target: Path, names: dict[int, str]) -> CaseResult:
    from medattn.io import load_image

    mask = load_image(target, dtype=None)
    return CaseResult(case.id, "skipped", str(target), volumes=volume_rows(case.id, mask, mask.affine, names))


def normalized_format(name: str) -> str:
    """The FORMATS key for what a user typed: "nii.gz", ".NII.GZ", "dcm" and "dicom-seg" all name theirs;
    anything else is returned as typed, for the error that lists the formats."""
    key = str(name).strip().lower().lstrip(".")
    return FORMAT_ALIASES.get(key, key)


def predict(
    inputs: str | Path,
    output: str | Path,
    model: str | Path,
    *,
    options: PredictOptions | None = None,
    on_case: Callable[[CaseResult, int, int], None] | None = None,
    on_frames: Callable[[str, int, int | None], None] | None = None,
    **changes,
) -> list[CaseResult]:
    """Segment every case found under `inputs` (a file, a folder in any layout, a DICOM tree, a video).

    A video is segmented frame by frame by a 2D model and streamed (see `medattn.pipelines.predict_video`):
    per-frame PNG masks in `<case_id>/`, an overlay MP4 and `<case_id>_frames.csv` with per-frame areas.

    Args:
        inputs: what to segment.
        output: folder for `<case_id>.<format>`, volumes.csv and predict.json.
        model: a model package folder (from `medattn train`).
        options: the settings (`medattn.pipelines.predict_options.PredictOptions`, where each field's help
            says what it does); default: PredictOptions().
        on_case: called after each case with (result, index, total), e.g. to advance a progress bar.
        on_frames: videos: called after each frame with (case id, frames done, frames announced or None).
        **changes: fields of PredictOptions as keyword arguments, applied over `options`
            (``format="seg.nrrd", tta=True``). A SAM-family package segments each image whole at its input
            size and volumes slice by slice (`medattn.inference.prompted`), with the prompts given (box,
            points, prior_mask or box_model); without prompts it runs in SAM's no-prompt mode.

    Returns:
        One CaseResult per case; failed cases carry the error (nothing is raised for them).
    """
    from medattn.predictor import load_model

    settings_obj = check_options(output, options, **changes)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_model(model, **settings_obj.predictor_settings())
    if settings_obj.format == "png" and predictor.plan.spatial_dims == 3:
        raise ConfigError(
            f"--format png writes 2D masks; the model {Path(model).name} is 3D: "
            "use nii.gz, seg.nrrd or dicom-seg"
        )
    from medattn.pipelines.prompted import prompt_source

    prompts_for = prompt_source(settings_obj, predictor)
    cases = list(discover(inputs))
    earlier_rows = _earlier_volume_rows(out, {case.id for case in cases})
    settings = _settings(Path(model), predictor, settings_obj, Path(inputs))
    results: list[CaseResult] = []
    todo = []
    from medattn.pipelines.predict_video import video_done, video_outputs

    _refuse_overwriting_inputs(cases, out, settings_obj)
    for case in cases:
        target = _target(out, case, settings_obj)
        if case.kind != "video" and not settings_obj.overwrite and video_done(out, case.id):
            # A clip that is not a video file (ultrasound cine, multi-page TIFF) left video outputs.
            results.append(CaseResult(case.id, "skipped", str(video_outputs(out, case.id)["masks"])))
            continue
        if target.exists() and not settings_obj.overwrite:
            if case.kind == "video":
                if video_done(out, case.id):  # else a partial earlier output: predicted again
                    results.append(CaseResult(case.id, "skipped", str(target)))
                    continue
            else:
                try:
                    results.append(_existing(case, target, predictor.config.labels))
                    continue
                except MedattnError:
                    pass  # an unreadable earlier output is predicted again
        todo.append(case)
    pipelined = settings_obj.pipelined
    if pipelined is None:
        pipelined = predictor.device.type == "cuda"
    # Sliding-window cases only: prompted models and videos run their own loops, in turn.
    pipelined = pipelined and prompts_for is None and not predictor.accepts_prompts
    settings["options"]["pipelined"] = pipelined  # what ran, in predict.json
    writing: tuple[int, Case, float, Future] | None = None

    def record(result: CaseResult, index: int) -> None:
        results.append(result)
        _write_reports(out, results, settings, earlier_rows)
        if on_case is not None:
            on_case(result, index, len(todo))

    def collect_written() -> None:
        """Wait for the case on the writer thread and record it (keeps the results in input order)."""
        nonlocal writing
        if writing is not None:
            index, case, start, future = writing
            writing = None
            record(_guarded(case, start, future.result), index)

    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        read = functools.partial(_load_case, predictor, preprocess=pipelined)
        pending: Future | None = reader.submit(read, todo[0]) if todo else None
        for index, case in enumerate(todo):
            future, pending = pending, None
            if index + 1 < len(todo):
                pending = reader.submit(read, todo[index + 1])
            start = time.perf_counter()
            loaded = _guarded(case, start, future.result)
            if isinstance(loaded, _Loaded) and loaded.preprocessed is not None:
                stitched = _guarded(case, start, _run_windows, predictor, case, loaded, settings_obj)
                if not isinstance(stitched, CaseResult):
                    collect_written()
                    task = writer.submit(
                        _finish_case, predictor, case, loaded, stitched, out, settings_obj, start
                    )
                    writing = (index, case, start, task)
                    stitched = loaded = None  # the writer holds them now; freed as soon as it is done
                    continue
                result = stitched
            elif isinstance(loaded, _Loaded):
                result = _guarded(
                    case,
                    start,
                    _predict_one,
                    predictor,
                    case,
                    loaded.image,
                    out,
                    settings_obj,
                    on_frames,
                    prompts_for,
                )
            else:
                result = loaded
            collect_written()
            record(result, index)
        collect_written()
    _write_reports(out, results, settings, earlier_rows)
    return results


@dataclass
class _Loaded:
    """A case as the reader thread hands it over: the image (None for a video, which is streamed) and,
    pipelined, its preprocessed form."""

    image: object
    preprocessed: object = None


def _load_case(predictor, case: Case, preprocess: bool = False) -> _Loaded:
    """Read a case as the model needs it (all channels, spatial dims and channel count checked); videos are
    not read ahead but streamed while they are segmented. With `preprocess`, also the package's
    preprocessing (pipelined sliding-window cases)."""
    if case.kind == "video":
        return _Loaded(None)
    try:
        image = case.load_image(
            spatial_dims=predictor.input_spatial_dims, channels=predictor.plan.in_channels
        )
    except GeometryError:
        if _is_clip_for_2d_model(predictor, case):
            return _Loaded(None)  # ultrasound cine, multi-page TIFF: segmented frame by frame, as a video
        raise
    return _Loaded(image, predictor.preprocess(image) if preprocess else None)


def _is_clip_for_2d_model(predictor, case: Case) -> bool:
    """Whether a case that is not a video file is still a clip of 2D frames (a multi-frame ultrasound
    DICOM, a multi-page TIFF) and the model segments 2D images by sliding windows."""
    if predictor.plan.spatial_dims != 2 or predictor.accepts_prompts or len(case.images) != 1:
        return False
    from medattn.io import load_image

    try:
        return bool(load_image(case.images[0]).meta.get("time_axis"))
    except MedattnError:
        return False


def _run_windows(predictor, case: Case, loaded: _Loaded, options: PredictOptions):
    """The main thread's half of a pipelined case: the sliding window, its output brought to the CPU here
    (through pinned memory from a GPU) so the writer thread never touches the GPU."""
    from medattn.inference.sliding_window import to_host

    _check_format(case, options)
    stitched = predictor.sliding_window(loaded.preprocessed, attention=options.save_attention)
    if isinstance(stitched, tuple):
        return tuple(to_host(volume) for volume in stitched)
    return to_host(stitched)


def _guarded(case: Case, start: float, function: Callable, *args):
    """`function(*args)`, or a failed CaseResult for the case when it raises: one case's error (or bug)
    must not stop the batch."""
    try:
        return function(*args)
    except MedattnError as error:
        return CaseResult(case.id, "failed", None, round(time.perf_counter() - start, 3), str(error))
    except Exception as error:  # noqa: BLE001 - one case's bug must not stop the batch
        message = f"internal error: {type(error).__name__}: {error}"
        return CaseResult(case.id, "failed", None, round(time.perf_counter() - start, 3), message)
