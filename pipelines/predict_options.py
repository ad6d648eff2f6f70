"""The options of `medattn predict` / `medattn.predict`, declared once: each field's default, help and flag.

`PredictOptions` is what `predict` runs with and what predict.json keeps under "options"; the command line
is built from its fields (`medattn.cli.options`), and the Python API takes the same fields as keyword
arguments. Metadata keys: ``help``, ``flags``, ``cli_type`` for the command line (see
`medattn.cli.options`), and ``predictor`` for the settings the loaded model takes
(`medattn.inference.predictor.load_model`), as `PredictOptions.predictor_settings()` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from medattn.errors import ConfigError


@dataclass
class PredictOptions:
    """Every option of `medattn predict`; saved in predict.json."""

    format: str = field(
        default="nii.gz",
        metadata={
            "help": "nii.gz, seg.nrrd (3D Slicer), dicom-seg (alias dcm), png (2D), or nii, nrrd, mha label "
            "maps.",
        },
    )
    overlap: float = field(
        default=0.5,
        metadata={
            "help": "Sliding-window overlap (0-1); lower is faster, slightly less smooth.",
            "predictor": True,
        },
    )
    sw_batch_size: int = field(
        default=4, metadata={"help": "Windows per forward pass.", "flags": ("--sw-batch",), "predictor": True}
    )
    tta: bool = field(
        default=False,
        metadata={"help": "Mirror test-time augmentation (2^dims passes, slower).", "predictor": True},
    )
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda[:N].", "predictor": True})
    amp: str = field(
        default="auto",
        metadata={
            "help": "bf16|fp16|off; auto = bf16 on CUDA where supported, off on CPU.",
            "predictor": True,
        },
    )
    stitch_device: str | None = field(
        default="auto",
        metadata={
            "help": "auto|cpu|cuda[:N]: where the stitched logits live. auto: on the GPU while they fit in "
            "half its free memory, else on the CPU (a big CT with many classes on a small GPU).",
            "predictor": True,
        },
    )
    save_probabilities: bool = field(
        default=False,
        metadata={"help": "Also write the class probabilities, <case>_probabilities.nii.gz."},
    )
    save_attention: bool = field(
        default=False,
        metadata={"help": "Also write <case>_attention.nii.gz (where the model looked)."},
    )
    keep_largest: bool = field(
        default=False, metadata={"help": "Keep the largest connected component per label."}
    )
    fill_holes: bool = field(default=False, metadata={"help": "Fill enclosed holes per label."})
    min_lesion_ml: float | None = field(
        default=None, metadata={"help": "Remove components smaller than this volume (mL)."}
    )
    lesion_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Call a voxel lesion wherever the lesion label's probability reaches this (e.g. 0.3), "
            "not only where it wins the argmax: more small lesions found, at the price of false positives. "
            "Lesion labels: those named lesion, tumour, nodule, polyp... (default: the argmax alone).",
            "predictor": True,
        },
    )
    uncertainty: bool = field(
        default=False,
        metadata={
            "help": "Also write <case>_uncertainty.nii.gz (.nrrd / .mha with those formats): the normalized "
            "entropy of the class probabilities, 0-1, on the input grid; with an ensemble or --tta also "
            "<case>_disagreement (members' mutual information); and components.csv: a row per "
            "connected component of each label with its volume, centroid and confidence.",
        },
    )
    low_confidence: float = field(
        default=0.5,
        metadata={
            "help": "With --uncertainty: flag a component low_confidence in components.csv when its "
            "confidence (the mean probability of its label over its voxels) is below this.",
        },
    )
    folds: list[int] | None = field(
        default=None,
        metadata={
            "help": "Ensemble packages: use only these members, e.g. 0,2 (default: every fold).",
            "parser": lambda text: [int(v) for v in str(text).split(",") if v.strip()],
            "cli_type": str,
        },
    )
    overlay: bool = field(
        default=False,
        metadata={"help": "2D images: also write <case>_overlay.png with each label's contour on the image."},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Predict cases whose output already exists (default: skip)."}
    )
    # None: pipelined when the model runs on CUDA (see `medattn.pipelines.predict`).
    pipelined: bool | None = field(
        default=None,
        metadata={
            "help": "Preprocess the next case and write the last one on background threads while the model "
            "runs (more memory: up to three cases in flight). Default: on with CUDA, off on CPU.",
            "flags": ("--pipelined/--no-pipelined",),
            "show_default": False,
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "Run the network through torch.compile: faster windows after a one-off compilation "
            "(about a minute); pays on long runs, mostly on CUDA.",
            "predictor": True,
        },
    )
    engine: str = field(
        default="torch",
        metadata={
            "help": "torch|onnx. onnx runs the network in onnxruntime (pip install 'medattn[onnx]'), "
            "float32; it uses PKG/model.onnx if exported from these weights (medattn export PKG "
            "PKG/model.onnx), else exports to a temporary file for this run.",
            "predictor": True,
        },
    )
    # Many scans, many machines (pipelines/distributed.py, pipelines/predict_parts.py).
    ray: str | None = field(
        default=None,
        metadata={
            "help": "Predict on a Ray cluster (pip install 'medattn[ray]'): local (start one on this machine "
            "and stop it after), auto (join the running one: ray start --head, KubeRay) or its ADDRESS. "
            "Each worker loads the package once; OUTPUT must be on a filesystem every worker sees.",
            "metavar": "local|auto|ADDRESS",
        },
    )
    workers: int | None = field(
        default=None,
        metadata={
            "help": "With --ray: workers, each holding the package (default: one per GPU of the cluster, "
            "or without GPUs one per --cpus-per-worker CPUs).",
        },
    )
    gpus_per_worker: float | None = field(
        default=None,
        metadata={
            "help": "With --ray: GPUs each worker takes, 0.5 to share one between two (default: 1 when the "
            "cluster has GPUs and --device is not cpu, else 0).",
        },
    )
    cpus_per_worker: int | None = field(
        default=None,
        metadata={
            "help": "With --ray: CPUs (and torch threads) each worker takes (default: the cluster's CPUs "
            "shared evenly among --workers; one each when neither is given on a cluster without GPUs).",
        },
    )
    max_retries: int = field(
        default=3,
        metadata={
            "help": "With --ray: how often a case is tried again on a restarted worker when its worker dies "
            "(killed, out of memory, node lost); a case whose worker dies every time is reported failed.",
        },
    )
    part: str | None = field(
        default=None,
        metadata={
            "help": "Predict only part K of N (0 <= K < N) of the cases sorted by case id, e.g. one part "
            "per job of a SLURM array (--part $SLURM_ARRAY_TASK_ID/N). Its reports go to "
            "OUTPUT/parts/K_of_N/; the part that finishes last merges every part's into OUTPUT's "
            "volumes.csv, components.csv and predict.json (or run --merge).",
            "metavar": "K/N",
        },
    )
    merge: bool = field(
        default=False,
        metadata={
            "help": "Predict nothing: merge the reports of the finished --part K/N runs in OUTPUT into its "
            "volumes.csv, components.csv and predict.json (an error names parts not finished).",
        },
    )
    # Prompts for the SAM family (pipelines/prompted.py), in pixels of the input image (x = first axis). The
    # Python API also takes (x0, y0, x1, y1) / (x, y[, label]) tuples or arrays, one or a list of them.
    box: list | None = field(
        default=None,
        metadata={
            "help": "SAM family: box prompt x0,y0,x1,y1 in pixels of the input image (x = first image axis); "
            "repeat for several objects.",
            "cli_type": list[str],
        },
    )
    points: list | None = field(
        default=None,
        metadata={
            "help": "SAM family: point prompt x,y[,label] in pixels (label 1 foreground, default; "
            "0 background); repeatable.",
            "flags": ("--point",),
            "cli_type": list[str],
        },
    )
    slice_index: int | None = field(
        default=None,
        metadata={
            "help": "3D volumes: the slice (index along the last axis) --box/--point are drawn on; the box "
            "is carried to the slices above and below while the mask lasts.",
            "flags": ("--slice",),
        },
    )
    prior_mask: str | None = field(
        default=None,
        metadata={
            "help": "SAM family: a mask on the input grid (or a folder of <case>.* masks); the box of each "
            "connected component of each label becomes a prompt (per slice in 3D).",
            "cli_type": Path,
        },
    )
    box_model: str | None = field(
        default=None,
        metadata={
            "help": "SAM family: a coarse model package; the box of each component of its mask becomes a "
            "prompt.",
            "cli_type": Path,
        },
    )

    def __post_init__(self) -> None:
        # The Python API may pass paths and arrays; predict.json keeps them as text and lists.
        for name in ("prior_mask", "box_model"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        self.box, self.points = _plain(self.box), _plain(self.points)

    def predictor_settings(self) -> dict:
        """The fields marked ``predictor``: keyword arguments of `medattn.inference.predictor.load_model`."""
        chosen = [option.name for option in fields(self) if option.metadata.get("predictor")]
        return {name: getattr(self, name) for name in chosen}


def _plain(value):
    """Nested tuples/arrays of numbers as lists (JSON), strings and None as they are."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_options(options: PredictOptions) -> None:
    """Options wrong for every case fail once, before any case runs (not once per case)."""
    from medattn.io.formats import MASK_FORMATS

    if options.format not in MASK_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}; choose {', '.join(MASK_FORMATS)}")
    if not 0 <= options.overlap < 1:
        raise ConfigError(f"--overlap must be in [0, 1), got {options.overlap}")
    if options.sw_batch_size < 1:
        raise ConfigError(f"--sw-batch must be at least 1, got {options.sw_batch_size}")
    if options.min_lesion_ml is not None and options.min_lesion_ml < 0:
        raise ConfigError(f"--min-lesion-ml must be 0 or more, got {options.min_lesion_ml}")
    from medattn.device import resolve_amp, resolve_device
    from medattn.inference.predictor import checked_lesion_threshold

    checked_lesion_threshold(options.lesion_threshold)
    _check_scale_options(options)
    if not options.ray:  # on Ray, the workers' devices count: each worker checks its own
        resolve_amp(options.amp, resolve_device(options.device))  # an unknown device, or AMP off CUDA


def _check_scale_options(options: PredictOptions) -> None:
    """--ray and its worker options, --part and --merge."""
    from medattn.pipelines.predict_parts import parse_part

    if options.part is not None:
        parse_part(options.part)
    if options.merge and (options.part or options.ray):
        raise ConfigError(
            "--merge merges the reports of finished --part runs; give it without --part and --ray"
        )
    worker_options = {
        "--workers": options.workers,
        "--gpus-per-worker": options.gpus_per_worker,
        "--cpus-per-worker": options.cpus_per_worker,
    }
    given = [flag for flag, value in worker_options.items() if value is not None]
    if given and not options.ray:
        raise ConfigError(
            f"{', '.join(given)} size the workers of --ray; add --ray local (or auto, or ADDRESS)"
        )
    for flag, value, least in (
        ("--workers", options.workers, 1),
        ("--gpus-per-worker", options.gpus_per_worker, 0),
        ("--cpus-per-worker", options.cpus_per_worker, 1),
        ("--max-retries", options.max_retries, 0),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be {least} or more, got {value}")


def check_options(output: str | Path, options: PredictOptions | None = None, **changes) -> PredictOptions:
    """The options of `predict`, checked before any work: `options` (default: PredictOptions()) with
    `changes` (fields as keyword arguments) applied, as a new object. A value wrong for every case or an
    output path that is a file raise ConfigError, an unknown option TypeError. The CLI calls it before its
    progress bar appears."""
    from medattn.io.formats import normalized_format

    settings = PredictOptions(**changes) if options is None else replace(options, **changes)
    settings.format = normalized_format(settings.format)
    _check_options(settings)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            "the output is a file; give a folder for the masks, volumes.csv and predict.json", out
        )
    return settings
