"""The stages of one case of `predict`: read the scan, preprocess, infer, finish, write its files.

`CaseStages` fills `medattn.inference.stages.Stages` for `run_stages`: reading and writing are this
module's (which files a case has, in which format, postprocessing, volumes); the middle three are the
`Predictor`'s. A video, or another clip of 2D frames (ultrasound cine, multi-page TIFF), is not read ahead
but streamed: its infer stage runs every frame through the same stages (`predict_video`), writing frames
as they are segmented.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medattn.errors import ConfigError, DiskFullError, GeometryError, MedattnError, failure_message
from medattn.inference.stages import Stages, run_stages
from medattn.inference.uncertainty import component_rows
from medattn.io import save_mask
from medattn.io.discovery import Case
from medattn.io.formats import MASK_FORMATS
from medattn.io.nifti import save_probability_volume
from medattn.metrics.volume import spacing_from_affine
from medattn.pipelines.predict_report import CaseResult, volume_rows


def case_target(out: Path, case: Case, options) -> Path:
    """The output that marks a case as done: its mask file, or for a video its folder of frame masks."""
    if case.kind == "video":
        from medattn.pipelines.predict_video import video_outputs

        return video_outputs(out, case.id)["masks"]
    return out / f"{case.id}{MASK_FORMATS[options.format]}"


#: Suffix of the uncertainty maps per --format: ITK formats keep theirs, everything else is NIfTI.
_MAP_SUFFIXES = {"nrrd": ".nrrd", "seg.nrrd": ".nrrd", "mha": ".mha"}


def write_scalar_map(volume: MetaTensor, path: Path) -> Path:
    """A (1, *spatial) float map on the input grid as NIfTI or, by suffix, NRRD/MHA (scalar volumes 3D
    Slicer shows over the scan)."""
    if path.name.endswith(".nii.gz"):
        return save_probability_volume(volume, path)
    from medattn.io.geometry import affine_4x4
    from medattn.io.itk import write_itk

    array = np.asarray(volume, dtype=np.float32)[0]
    write_itk(array, affine_4x4(np.asarray(volume.affine), array.ndim), path)
    return path


def postprocess_labels(labels: np.ndarray, spacing: tuple[float, ...], options) -> np.ndarray:
    """The postprocessing `options` ask for, in a fixed order: small components, largest, holes."""
    from medattn.inference import postprocess

    if options.min_lesion_ml:
        labels = postprocess.remove_small_components(labels, options.min_lesion_ml, spacing)
    if options.keep_largest:
        labels = postprocess.keep_largest_component(labels)
    if options.fill_holes:
        labels = postprocess.fill_holes(labels)
    return labels


def load_case_stages(members: list[Path], out: Path, options, on_frames=None) -> CaseStages:
    """The package's members loaded as `options` say, and the stages its cases run: one call for the
    process that predicts alone and for each Ray worker, so both run the same code.

    Raises:
        ConfigError: options the package cannot serve (--format png for a 3D model, prompts for a model
            that takes none).
    """
    from medattn.inference.ensemble import load_predictor
    from medattn.pipelines.prompted import prompt_source

    predictor = load_predictor(members, **options.predictor_settings())
    if options.format == "png" and predictor.plan.spatial_dims == 3:
        raise ConfigError(
            f"--format png writes 2D masks; the model {Path(members[0]).name} is 3D: "
            "use nii.gz, seg.nrrd or dicom-seg"
        )
    return CaseStages(predictor, out, options, prompt_source(options, predictor), on_frames)


@dataclass
class _Work:
    """A case on its way through the stages; each stage fills its part and the writer frees them."""

    case: Case
    started: float
    image: MetaTensor | None  # None: a clip, streamed frame by frame
    prepared: object = None
    inferred: object = None
    output: object = None  # a PredictionOutput, or for a clip predict_video's summary


class CaseStages:
    """The stages of a case of `predict` with one predictor, output folder and PredictOptions.

    Args:
        predictor: the loaded package.
        out: the output folder.
        options: PredictOptions.
        prompts_for: SAM family: (case, image) -> ImagePrompts, or None.
        on_frames: clips: called as (case id, frames done, frames announced or None).
    """

    def __init__(self, predictor, out: Path, options, prompts_for=None, on_frames=None):
        self.predictor = predictor
        self.out = out
        self.options = options
        self.prompts_for = prompts_for
        self.on_frames = on_frames

    def stages(self) -> Stages:
        return Stages(self.read, self.preprocess, self.infer, self.finish, self.write)

    @property
    def pipelined(self) -> bool:
        """Whether cases run pipelined: as `options.pipelined` says, by default on CUDA; SAM-family models
        segment whole images with prompts made per case, so they run in turn."""
        chosen = self.options.pipelined
        if chosen is None:
            chosen = self.predictor.device.type == "cuda"
        return bool(chosen) and self.prompts_for is None and not self.predictor.accepts_prompts

    def run(self, cases: list[Case], on_result) -> None:
        """Every case through the stages; `on_result(result, index)` after each, a failed case's too."""
        run_stages(cases, self.stages(), pipelined=self.pipelined, on_result=on_result, guard=self.failed)

    def read(self, case: Case) -> _Work:
        """Load the case as the model needs it (every channel; spatial dims and channel count checked) and
        refuse what cannot work for it before any inference: wrong format, overlay on 3D, prompts on clips."""
        started = time.perf_counter()
        if self.options.format == "dicom-seg" and not case.dicom:
            raise ConfigError("--format dicom-seg needs DICOM input (the SEG references the source series)")
        image = None if case.kind == "video" else self._load(case)
        if image is None and self.prompts_for is not None:
            raise ConfigError(
                "prompts (--box, --point, --prior-mask, --box-model) are for images and volumes, not videos"
            )
        if image is not None and self.options.overlay and image.ndim != 3:
            raise ConfigError("--overlay draws contours on 2D images and videos; this image is 3D")
        return _Work(case, started, image)

    def preprocess(self, work: _Work) -> _Work:
        if work.image is not None:
            prompts = None if self.prompts_for is None else self.prompts_for(work.case, work.image)
            work.prepared = self.predictor.preprocess(work.image, prompts)
        return work

    def infer(self, work: _Work) -> _Work:
        if work.image is None:
            work.output = self._segment_clip(work.case)
        else:
            work.inferred = self.predictor.infer(
                work.prepared, attention=self.options.save_attention, uncertainty=self.options.uncertainty
            )
        return work

    def finish(self, work: _Work) -> _Work:
        if work.image is not None:
            options = self.options
            work.output = self.predictor.finish(
                work.inferred,
                work.prepared,
                work.image,
                probabilities=options.save_probabilities,
                uncertainty=options.uncertainty,
            )
            work.prepared = work.inferred = None
        return work

    def write(self, work: _Work) -> CaseResult:
        """Postprocess the mask and write it (with overlay, probabilities, attention); count volumes."""
        case, options = work.case, self.options
        if work.image is None:
            clip = work.output
            seconds = round(time.perf_counter() - work.started, 3)
            return CaseResult(
                case.id, "done", clip["output"], seconds, frames=clip["frames"], fps=clip["fps"]
            )
        image, result, table = work.image, work.output, self.predictor.config.label_table()
        target = case_target(self.out, case, options)
        spacing = spacing_from_affine(np.asarray(image.affine), image.ndim - 1)
        labels = postprocess_labels(np.asarray(result.mask[0]), spacing, options)
        mask = MetaTensor(labels[None], affine=image.affine)
        # DICOM SEG must reference the source files; everything else lands on the loaded image's grid.
        save_mask(mask, target, reference=case.images if case.dicom else image, labels=table)
        if options.overlay:
            save_mask(mask, self.out / f"{case.id}_overlay.png", reference=image, labels=table, overlay=True)
        if result.probabilities is not None and options.save_probabilities:
            save_probability_volume(result.probabilities, self.out / f"{case.id}_probabilities.nii.gz")
        if result.attention is not None:
            save_probability_volume(result.attention, self.out / f"{case.id}_attention.nii.gz")
        names = self.predictor.config.labels
        rows = volume_rows(case.id, mask, image.affine, names)
        seconds = round(time.perf_counter() - work.started, 3)
        done = CaseResult(case.id, "done", str(target), seconds, volumes=rows)
        if result.uncertainty is not None:
            self._write_uncertainty(done, labels, result, names)
        return done

    def _write_uncertainty(self, done: CaseResult, labels: np.ndarray, result, names: dict[int, str]) -> None:
        """The uncertainty (and disagreement) maps beside the mask, the case's components.csv rows and its
        mean uncertainty where a foreground is plausible (the mask, or a foreground probability of 0.1 or
        more): over the whole image, background would drown it."""
        case_id, suffix = done.case, _MAP_SUFFIXES.get(self.options.format, ".nii.gz")
        write_scalar_map(result.uncertainty, self.out / f"{case_id}_uncertainty{suffix}")
        if result.disagreement is not None:
            write_scalar_map(result.disagreement, self.out / f"{case_id}_disagreement{suffix}")
        probabilities = np.asarray(result.probabilities)
        uncertainty = np.asarray(result.uncertainty)[0]
        plausible = (labels > 0) | (1.0 - probabilities[0] >= 0.1)
        done.mean_uncertainty = round(float(uncertainty[plausible].mean()), 4) if plausible.any() else 0.0
        affine = np.asarray(result.uncertainty.affine)
        done.components = component_rows(
            case_id, labels, probabilities, uncertainty, affine, names, self.options.low_confidence
        )

    def failed(self, case: Case, error: Exception, started: float) -> CaseResult:
        """The result of a case whose stage raised: one case's error (or bug) must not stop the batch. A
        full disk does: it is raised again, as every later case would fail the same way."""
        if isinstance(error, DiskFullError):
            raise error
        return CaseResult(
            case.id, "failed", None, round(time.perf_counter() - started, 3), failure_message(error)
        )

    def _load(self, case: Case) -> MetaTensor | None:
        predictor = self.predictor
        try:
            return case.load_image(
                spatial_dims=predictor.input_spatial_dims, channels=predictor.plan.in_channels
            )
        except GeometryError:
            if self._is_clip_for_2d_model(case):
                return None  # ultrasound cine, multi-page TIFF: segmented frame by frame, as a video
            raise

    def _is_clip_for_2d_model(self, case: Case) -> bool:
        """Whether a case that is not a video file is still a clip of 2D frames (a multi-frame ultrasound
        DICOM, a multi-page TIFF) and the model segments 2D images by sliding windows."""
        predictor = self.predictor
        if predictor.plan.spatial_dims != 2 or predictor.accepts_prompts or len(case.images) != 1:
            return False
        from medattn.io import load_image

        try:
            return bool(load_image(case.images[0]).meta.get("time_axis"))
        except MedattnError:
            return False

    def _segment_clip(self, case: Case) -> dict:
        from medattn.pipelines.predict_video import predict_video

        on_frames = self.on_frames
        return predict_video(
            self.predictor,
            case.id,
            case.images[0],
            self.out,
            postprocess=lambda labels: postprocess_labels(labels, (1.0, 1.0), self.options),
            on_frames=None if on_frames is None else lambda done, total: on_frames(case.id, done, total),
        )
