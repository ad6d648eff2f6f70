"""Segment every case under an input path with a model package: masks, volumes.csv and predict.json.

A finished case is skipped on a re-run unless `overwrite`; a failing case is recorded and the rest go
on; every file is written atomically and the report is rewritten after each case, so a kill leaves
finished cases complete and nothing partial. An output folder that cannot be written to is refused before
the first case, and a full disk stops the batch at the case it happens on (every later case would fail
the same way), with the masks and the reports in agreement. The cases run the stages of
`medattn.inference.stages`, in turn or pipelined (the default on CUDA; on CPU the network's own threads
already use every core, see bench/predict_folder.py); `medattn.pipelines.predict_case` says what each
stage does to a case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from medattn.errors import ConfigError, DiskFullError, MedattnError
from medattn.io import discover
from medattn.io.atomic import check_writable
from medattn.io.discovery import Case
from medattn.pipelines.predict_case import case_target, load_case_stages
from medattn.pipelines.predict_options import PredictOptions, check_options
from medattn.pipelines.predict_parts import merge_parts, part_cases, part_folder
from medattn.pipelines.predict_report import (
    CaseResult,
    earlier_report_rows,
    report_rows_by_case,
    run_settings,
    volume_rows,
    write_reports,
)


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
    model: str | Path | list[str | Path],
    *,
    options: PredictOptions | None = None,
    on_case: Callable[[CaseResult, int, int], None] | None = None,
    on_frames: Callable[[str, int, int | None], None] | None = None,
    **changes,
) -> list[CaseResult]:
    """Segment every case found under `inputs` (a file, a folder in any layout, a DICOM tree, a video).

    Every case runs the stages read -> preprocess -> infer -> finish -> write (`medattn.inference.stages`),
    in turn or pipelined (`pipelined`: by default on CUDA). A video is segmented frame by frame by a 2D model
    and streamed (see `medattn.pipelines.predict_video`): per-frame PNG masks in `<case_id>/`, an overlay
    MP4 and `<case_id>_frames.csv` with per-frame areas. A SAM-family package segments each image whole at
    its input size and volumes slice by slice (`medattn.inference.prompted`); without prompts it runs in
    SAM's no-prompt mode.

    Beyond one process: `ray` runs the same stages in the workers of a Ray cluster, each holding the package
    (`medattn.pipelines.distributed`); `part="K/N"` predicts one of N shares of the cases and `merge` merges
    the finished parts' reports (`medattn.pipelines.predict_parts`).

    Args:
        inputs: what to segment.
        output: folder for `<case_id>.<format>`, volumes.csv and predict.json.
        model: a model package folder (from `medattn train`), an ensemble package (`train --folds`), or a
            list of packages to ensemble (their probabilities averaged; see `medattn.inference.ensemble`).
        options: the settings (`medattn.pipelines.predict_options.PredictOptions`, where each field's help
            says what it does); default: PredictOptions().
        on_case: called after each case with (result, index, total), e.g. to advance a progress bar.
        on_frames: videos: called after each frame with (case id, frames done, frames announced or None).
        **changes: fields of PredictOptions as keyword arguments, applied over `options`
            (``format="seg.nrrd", tta=True``, ``ray="local", workers=2``, ``part="0/4"``).

    Returns:
        One CaseResult per case (with `part`, per case of the part; with `merge`, the merged ones); failed
        cases carry the error (nothing is raised for them).

    Raises:
        WriteError: the output folder cannot be written to (before any case).
        DiskFullError: the disk filled up; the batch stops there, the cases before it complete and reported.
        MissingDependencyError: `ray` without Ray installed.
    """
    from medattn.package import package_members

    settings_obj = check_options(output, options, **changes)
    out = check_writable(output)
    if settings_obj.merge:
        return merge_parts(list(discover(inputs)), out)
    if settings_obj.ray:
        from medattn.pipelines.distributed import import_ray

        import_ray()  # without Ray, say so before any work
    packages = [model] if isinstance(model, (str, Path)) else list(model)
    members = [member for package in packages for member in package_members(package, settings_obj.folds)]
    # On Ray the workers load the package on their devices; here it loads on the CPU (torch.compile compiles
    # at the first window, so never here), to check the options against it before any worker starts and to
    # describe the run.
    here = settings_obj
    if settings_obj.ray:
        here = replace(settings_obj, device="cpu", amp="off", engine="torch")
    stages = load_case_stages(members, out, here, on_frames)
    predictor = stages.predictor
    every_case = list(discover(inputs))
    cases = part_cases(every_case, settings_obj.part) if settings_obj.part else every_case
    _refuse_overwriting_inputs(cases, out, settings_obj)
    reports = part_folder(out, settings_obj.part) if settings_obj.part else out
    reports.mkdir(parents=True, exist_ok=True)
    earlier_rows = earlier_report_rows(reports, {case.id for case in cases})
    settings = run_settings(packages, members, predictor, settings_obj, Path(inputs))
    settings["options"]["pipelined"] = stages.pipelined  # what ran, in predict.json
    results: list[CaseResult] = []
    todo = []
    # A skipped case keeps its components.csv rows (they come from the probabilities, not the mask).
    components = report_rows_by_case(reports / "components.csv")
    for case in cases:
        finished = _finished(case, out, settings_obj, predictor.config.labels)
        if finished is None:
            todo.append(case)
        else:
            finished.components = components.get(case.id, [])
            results.append(finished)

    def record(result: CaseResult, index: int) -> None:
        results.append(result)
        try:
            write_reports(reports, results, settings, earlier_rows)
        except DiskFullError:
            # The reports keep the cases before this one: its mask goes too, so the folder agrees with them
            # (a re-run predicts it again).
            if result.status == "done" and result.output and Path(result.output).is_file():
                Path(result.output).unlink()
            raise
        if on_case is not None:
            on_case(result, index, len(todo))

    if settings_obj.ray and todo:
        from medattn.pipelines.distributed import predict_on_ray

        del stages, predictor  # the workers hold the package
        predict_on_ray(todo, members, out, settings_obj, on_result=record, settings=settings)
    else:
        stages.run(todo, on_result=record)
    order = {case.id: index for index, case in enumerate(cases)}
    results.sort(key=lambda result: order[result.case])  # the cases' order, however they finished
    write_reports(reports, results, settings, earlier_rows)
    if settings_obj.part:
        merge_parts(every_case, out, required=False)  # by the part that finishes last
    return results
