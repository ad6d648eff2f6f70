"""The options of `medattn train` / `medattn.train`, declared once: each field's default, help and flag.

`TrainOptions` is what `train` runs with and what the run folder keeps as train_options.json; the command
line is built from its fields (`medattn.cli.options`, which reads the metadata keys ``help``, ``flags``,
``parser``, ``default_text``, ``cli_type``), and the Python API takes the same fields as keyword arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from medattn.errors import ConfigError


def _numbers(text: str) -> list[float]:
    """Text such as 1,1,3 or 1x1x3 as numbers."""
    try:
        return [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError as error:
        raise ValueError("takes comma-separated numbers, e.g. 1.0,1.0,3.0") from error


def _whole_numbers(text: str) -> list[int]:
    return [int(v) for v in _numbers(text)]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not JSON: {error}") from error


def parse_fold(text: str) -> tuple[int, int]:
    """--fold's ``K/N`` as (K, N), with 0 <= K < N and N >= 2 (one fold would leave nothing to train on)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError as error:
        raise ConfigError(f"--fold takes K/N like 0/5, got {text!r}") from error
    if not 0 <= k < n or n < 2:
        raise ConfigError(f"--fold {text}: need 0 <= K < N and N >= 2, e.g. 0/5")
    return k, n


@dataclass
class TrainOptions:
    """Every option of `medattn train`; saved as train_options.json in the run folder."""

    model: str = field(
        default="agunet",
        metadata={"help": "Registry name; see `medattn models`.", "flags": ("--model", "-m")},
    )
    spacing: list[float] | None = field(
        default=None,
        metadata={"help": "Target spacing in mm, e.g. 1,1,3 (default: from the data).", "parser": _numbers},
    )
    patch: list[int] | None = field(
        default=None,
        metadata={
            "help": "Patch size in voxels, e.g. 128,128,64 (default: from the data).",
            "parser": _whole_numbers,
        },
    )
    batch: int | None = field(default=None, metadata={"help": "Batch size (default: 2 in 3D, 8-12 in 2D)."})
    preset: str | None = field(
        default=None,
        metadata={"help": "Intensity preset: ct, mr or rgb (default: from the modality and intensities)."},
    )
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda[:N]."})
    amp: str = field(
        default="auto", metadata={"help": "bf16|fp16|off; auto = bf16 on CUDA where supported, off on CPU."}
    )
    epochs: int = field(default=50, metadata={"help": "Epochs."})
    steps_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "Iterations per epoch (default: one pass over the data, at least 50 on CPU, 250 on CUDA)."
        },
    )
    max_time: float | None = field(
        default=None, metadata={"help": "Stop after this many seconds (still saves a package)."}
    )
    val_fraction: float = field(default=0.2, metadata={"help": "Fraction of cases held out for validation."})
    folds: int | None = field(
        default=None,
        metadata={
            "help": "N: k-fold training. One plan for all folds, N disjoint validation sets (every case "
            "validates in one fold); fold K trains into OUT/fold_K as a model package, and OUT becomes an "
            "ensemble package of the folds for `medattn predict`. --max-time applies to each fold; with "
            "--resume, finished folds are skipped and unfinished ones continue."
        },
    )
    fold: str | None = field(
        default=None,
        metadata={
            "help": "K/N: train only fold K of N into OUT/fold_K (one job per fold on a cluster) and list "
            "every finished fold in OUT's ensemble package; uses OUT/plan.json when another fold made it."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for split, sampling and augmentation."})
    lr: float = field(default=1e-3, metadata={"help": "Learning rate."})
    optimizer: str = field(default="adamw", metadata={"help": "adamw|sgd."})
    schedule: str = field(default="poly", metadata={"help": "poly|cosine learning-rate schedule."})
    # None: the model's registered loss; where that is dice_ce, dice_ce_blob (blob loss: every lesion's own
    # Dice counts, so small lesions weigh as much as large ones; BENCHMARKS.md, equal time).
    loss: str | None = field(
        default=None,
        metadata={
            "help": "dice_ce, dice_ce_blob (plus a Dice per lesion, so small lesions count as much as large "
            "ones), dice_paper, focal_region (RAT's; over ratunet's own regions), ce_dice_focal (HBFormer's) "
            "or structure (PraNet's) (default: the model's paper's loss; dice_ce_blob where that is dice_ce)."
        },
    )
    deep_supervision: bool = field(
        default=True, metadata={"help": "Deep-supervision losses where the model has heads."}
    )
    # None: the model's registered default (on for pranet, as its paper trains).
    multi_scale: bool | None = field(
        default=None,
        metadata={
            "help": "Train every batch at 0.75, 1 and 1.25 times the patch size (rounded to the network's "
            "size divisor), one optimiser step each, as PraNet trains; about 3x the time per step "
            "(default: on for pranet, off otherwise)."
        },
    )
    model_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Model options as JSON, e.g. '{\"base_channels\": 8}'.",
            "parser": _json,
            "default_text": "{}",
        },
    )
    # None: default_workers (augmentation beside the training step).
    num_workers: int | None = field(
        default=None,
        metadata={"help": "Data loader processes (default: CPU cores - 1, at most 4 on CPU, 8 with CUDA)."},
    )
    cache: str = field(
        default="memory",
        metadata={"help": "memory, disk or none: keep preprocessed cases so epochs re-read nothing."},
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from RUN/checkpoint_last.pt after an interruption."}
    )
    # Half, as the plain loop a user writes: with a quarter (one class in four) AGUNet found 1 of 24 lesions
    # under 3 mL (BENCHMARKS.md). None: every class equally often.
    lesion_patches: float | None = field(
        default=0.5,
        metadata={
            "help": "Share of training patches centred on a lesion (the label named lesion, tumour, "
            "nodule...; else the label of smallest volume); the other classes share the rest evenly."
        },
    )
    # Best: at equal time it scored as well as or better than final (BENCHMARKS.md); the validation that picks
    # it keeps to a tenth of the time.
    weights: str = field(
        default="best",
        metadata={
            "help": "The package's weights: best (the epoch of the best validation Dice) or final (the end "
            "of the learning-rate schedule, as nnU-Net's). Both checkpoints are kept in the run folder."
        },
    )
    # True: inductor, or a backend's name. Validation and the package use the plain network.
    compile: bool | str = field(
        default=False,
        metadata={
            "help": "Run the training steps through torch.compile: faster steps after a one-off compilation "
            "(a minute or more); pays on long runs, mostly on CUDA.",
            "cli_type": bool,
        },
    )

    def __post_init__(self) -> None:
        if self.folds is not None and self.fold is not None:
            raise ConfigError(
                f"--folds {self.folds} trains every fold, --fold {self.fold} one of them: give one of the two"
            )
        if self.folds is not None and self.folds < 2:
            raise ConfigError(
                f"--folds takes 2 or more, got {self.folds} (one model: leave --folds out; --val-fraction "
                "sets its validation share)"
            )
        if self.fold is not None:
            parse_fold(self.fold)
        if self.weights not in ("final", "best"):
            raise ConfigError(f"--weights takes final or best, got {self.weights!r}")
        if self.lesion_patches is not None and not 0.0 <= self.lesion_patches <= 1.0:
            raise ConfigError(f"--lesion-patches is a share between 0 and 1, got {self.lesion_patches}")
