"""Model packages: one folder with the weights and everything prediction needs (nothing else is read).

Layout:
    model.pt        state_dict only, loaded with `weights_only=True` (a package is untrusted input)
    medattn.json    model name + kwargs, the plan (spatial dims, spacing, patch, intensity preset),
                    label names and colours, the training fingerprint and summary, medattn's version
                    and the package's `format_version` (a newer one than this medattn reads is refused)

A package travels between machines and people, so loading trusts neither file: every field of medattn.json
is checked for its type and range, model.pt's checksums and its keys and shapes against the network; each
problem is one PackageError naming the file and the field or key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medattn import __version__
from medattn.errors import ConfigError, InputNotFoundError, PackageError
from medattn.io.atomic import atomic_path
from medattn.plan import MEDSAM_PRESET, PRESETS, Plan
from medattn.weights import as_state_dict, compare_keys, read_weights, save_weights

CONFIG_NAME = "medattn.json"
WEIGHTS_NAME = "model.pt"
#: The layout of a package; bumped when an older medattn could not read a new package correctly.
FORMAT_VERSION = 1


@dataclass
class PackageConfig:
    """The contents of medattn.json."""

    model: str
    model_kwargs: dict[str, Any]
    plan: Plan
    label_colors: dict[int, list[int]] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    medattn_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.plan.labels)

    def label_table(self) -> dict[int, tuple[str, tuple[int, int, int]] | str]:
        """value -> name or (name, rgb) as `medattn.io.save_mask(labels=...)` takes it; no background."""
        table: dict[int, Any] = {}
        for value, name in self.plan.labels.items():
            if value == 0:
                continue
            color = self.label_colors.get(value)
            table[value] = (name, tuple(color)) if color else name
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "medattn_version": self.medattn_version,
            "model": self.model,
            "model_kwargs": self.model_kwargs,
            "plan": self.plan.to_dict(),
            "label_colors": {str(k): list(v) for k, v in self.label_colors.items()},
            "fingerprint": self.fingerprint,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageConfig:
        return cls(
            model=data["model"],
            model_kwargs=dict(data.get("model_kwargs") or {}),
            plan=Plan.from_dict(data["plan"]),
            label_colors={int(k): list(v) for k, v in (data.get("label_colors") or {}).items()},
            fingerprint=dict(data.get("fingerprint") or {}),
            training=dict(data.get("training") or {}),
            medattn_version=str(data.get("medattn_version", "")),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
        )


def build_network(config: PackageConfig) -> torch.nn.Module:
    """The package's network, untrained, in eval mode; deep supervision off (prediction needs one output)."""
    from medattn.models import create, describe
    from medattn.models.backbones import package_options

    # The pretrained files the run started from are not needed: model.pt holds every weight.
    kwargs = package_options(config.model_kwargs)
    kwargs.pop("deep_supervision", None)
    if describe(config.model).deep_supervision:
        kwargs["deep_supervision"] = False
    plan = config.plan
    network = create(config.model, plan.spatial_dims, plan.in_channels, plan.num_classes, **kwargs)
    return network.eval()


def save_package(folder: str | Path, state_dict: dict[str, torch.Tensor], config: PackageConfig) -> Path:
    """Write model.pt and medattn.json into `folder`, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights({k: v.detach().cpu() for k, v in state_dict.items()}, folder / WEIGHTS_NAME)
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2))
    return folder


def read_config(folder: str | Path) -> PackageConfig:
    """medattn.json of a package; a missing or foreign folder is a clear error."""
    folder = Path(folder)
    if not folder.exists():
        raise InputNotFoundError("no such model package", folder)
    if folder.is_file() and folder.name != CONFIG_NAME:
        hint = (
            f"; did you mean its folder {folder.parent}?"
            if (folder.parent / CONFIG_NAME).is_file()
            else f" ({CONFIG_NAME}, {WEIGHTS_NAME}), as `medattn train` writes it"
        )
        raise ConfigError(f"a model package is a folder, not a file{hint}", folder)
    path = folder / CONFIG_NAME if folder.is_dir() else folder
    if not path.is_file():
        raise PackageError(f"not a medattn model package: {CONFIG_NAME} is missing", folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PackageError(
            f"not valid JSON at character {error.pos} ({error.msg}); the file is damaged or cut short: "
            "copy the package again",
            path,
        ) from error
    except UnicodeDecodeError as error:
        raise PackageError(
            f"not text (byte {error.start} is not UTF-8); the file is damaged: copy the package again", path
        ) from error
    version = data.get("format_version") if isinstance(data, dict) else None
    if _is_int(version) and version > FORMAT_VERSION:
        raise PackageError(
            f"the package has format_version {version} (written by medattn "
            f"{data.get('medattn_version') or 'newer'}); this medattn {__version__} reads up to "
            f"{FORMAT_VERSION}: upgrade medattn (pip install -U medattn)",
            path,
        )
    problem = config_problem(data)
    if problem:
        raise PackageError(f"{problem}; the file is damaged or was edited by hand", path)
    return PackageConfig.from_dict(data)


def load_package(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, PackageConfig]:
    """The network with the package's weights (strict) and its config.

    Raises:
        InputNotFoundError: no such folder.
        PackageError: medattn.json or model.pt is missing, damaged, from a newer medattn, or the two do
            not fit each other; the message names the file and what is wrong.
    """
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise PackageError(f"the package has no {WEIGHTS_NAME}", folder)
    try:
        network = build_network(config)
    except (TypeError, ValueError) as error:  # ConfigError included: an unknown model or option
        written = config.medattn_version
        newer = (
            f"; the package was written by medattn {written}, this is {__version__}"
            if written != __version__
            else ""
        )
        raise PackageError(
            f"model {config.model!r} with model_kwargs {config.model_kwargs} cannot be built "
            f"({getattr(error, 'message', error)}){newer}",
            folder / CONFIG_NAME,
        ) from error
    state = as_state_dict(read_weights(weights, map_location=map_location, verify=True), weights)
    if _normalised_gate_logits(config, state):
        config.model_kwargs = {**config.model_kwargs, "gate_logit_norm": True}
        network = build_network(config)
    report = compare_keys(network.state_dict(), state)
    if not report.ok:
        raise PackageError(
            f"the weights do not fit the package's model {config.model!r}: {report.summary()}; "
            f"{WEIGHTS_NAME} and {CONFIG_NAME} come from different runs or the file is damaged",
            weights,
        )
    network.load_state_dict(state, strict=True)
    return network.eval(), config


def _normalised_gate_logits(config: PackageConfig, state: dict) -> bool:
    """Whether attention-gate weights carry a norm on the gate's one-channel logit that the package's model
    kwargs do not ask for: AGUNet/DAUNet packages trained under instance or group norm before
    `gate_logit_norm` existed. They load with that norm, so their masks stay what they were."""
    if "gate_logit_norm" in config.model_kwargs or config.model_kwargs.get("norm", "batch") == "batch":
        return False
    return any(key.endswith("gate.psi.1.weight") for key in state)


def config_problem(data: Any) -> str | None:
    """What is wrong with the contents of a medattn.json of FORMAT_VERSION, naming the field; None when it
    can be used (`read_config` refuses a newer format_version first: a newer layout may move any field)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object of fields"
    version = data.get("format_version", FORMAT_VERSION)
    if not _is_int(version) or version < 1:
        return f"format_version must be a whole number >= 1, not {version!r}"
    missing = [name for name in ("model", "plan") if name not in data]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    if not isinstance(data["model"], str) or not data["model"]:
        return f"model must be a model name, not {data['model']!r}"
    for name in ("model_kwargs", "label_colors", "fingerprint", "training"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            return f"{name} must be an object, not {data[name]!r}"
    for value, color in (data.get("label_colors") or {}).items():
        if not _is_label(value) or not (
            isinstance(color, list) and len(color) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in color)
        ):
            return f"label_colors[{value!r}] must be a label value with 3 numbers 0-255, not {color!r}"
    plan = data["plan"]
    if not isinstance(plan, dict):
        return f"plan must be an object, not {plan!r}"
    return _plan_problem(plan)


def _plan_problem(plan: dict) -> str | None:
    """What is wrong with medattn.json's plan, naming the field; None when it can be used."""
    missing = [name for name in _PLAN_REQUIRED if name not in plan]
    if missing:
        return f"missing field(s) of plan: {', '.join(missing)}"
    dims = plan["spatial_dims"]
    if dims not in (2, 3) or not _is_int(dims):
        return f"plan.spatial_dims must be 2 or 3, not {dims!r}"
    for name in ("in_channels", "num_classes", "batch_size"):
        if not _is_int(plan[name]) or plan[name] < 1:
            return f"plan.{name} must be a whole number >= 1, not {plan[name]!r}"
    patch = plan["patch_size"]
    if not (isinstance(patch, list) and len(patch) == dims and all(_is_int(v) and v >= 1 for v in patch)):
        return f"plan.patch_size must be {dims} whole numbers >= 1 (voxels per axis), not {patch!r}"
    spacing = plan["spacing"]
    if spacing is not None and not (
        isinstance(spacing, list) and len(spacing) == dims and all(_is_number(v) and v > 0 for v in spacing)
    ):
        return f"plan.spacing must be {dims} positive numbers (mm per axis) or null, not {spacing!r}"
    presets = (*PRESETS, MEDSAM_PRESET)
    if plan["preset"] not in presets:
        return f"plan.preset must be one of {', '.join(presets)}, not {plan['preset']!r}"
    clip = plan.get("clip_range")
    if clip is not None and not (
        isinstance(clip, list) and len(clip) == 2 and all(_is_number(v) for v in clip) and clip[0] < clip[1]
    ):
        return f"plan.clip_range must be [low, high] with low < high, or null, not {clip!r}"
    for name in ("normalize_mean", "normalize_std"):
        value = plan.get(name)
        if value is not None and not (_is_number(value) and (name == "normalize_mean" or value > 0)):
            kind = "a number" if name == "normalize_mean" else "a positive number"
            return f"plan.{name} must be {kind} or null, not {value!r}"
    labels = plan.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        _is_label(k) and isinstance(v, str) for k, v in labels.items()
    ):
        return f"plan.labels must map label values to names, not {labels!r}"
    if not isinstance(plan.get("binary_mask_labels", False), bool):
        return f"plan.binary_mask_labels must be true or false, not {plan['binary_mask_labels']!r}"
    return None


_PLAN_REQUIRED = (
    "spatial_dims",
    "in_channels",
    "num_classes",
    "spacing",
    "patch_size",
    "batch_size",
    "preset",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_label(key: Any) -> bool:
    """A label value as JSON keeps it: a string of a whole number >= 0."""
    return isinstance(key, str) and key.isdigit()


# An ensemble package: a folder whose medattn.json lists member packages (k-fold training writes one, with
# the folds as fold_0 ... fold_{N-1} inside it); prediction averages its members' probabilities.
ENSEMBLE_KIND = "ensemble"


def is_ensemble(folder: str | Path) -> bool:
    """Whether `folder` is an ensemble package (its medattn.json has ``"kind": "ensemble"``)."""
    path = Path(folder) / CONFIG_NAME
    try:
        return json.loads(path.read_text()).get("kind") == ENSEMBLE_KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def save_ensemble(folder: str | Path, members: list[str | Path], folds: int | None = None) -> Path:
    """Write `folder`/medattn.json listing `members` (paths relative to `folder` where they lie inside it).

    Args:
        folder: the ensemble package folder.
        members: member package folders, in order.
        folds: for k-fold training, how many folds the ensemble is meant to have (a later run may add the
            missing ones); None for an ensemble of separate packages.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for member in members:
        member = Path(member)
        try:
            listed.append(str(member.resolve().relative_to(folder.resolve())))
        except ValueError:
            listed.append(str(member.resolve()))
    config = {
        "format_version": FORMAT_VERSION,
        "medattn_version": __version__,
        "kind": ENSEMBLE_KIND,
        "members": listed,
        "folds": folds,
    }
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    return folder


def package_members(folder: str | Path, folds: list[int] | None = None) -> list[Path]:
    """The model packages a package folder stands for: itself, or an ensemble's members (all, or those
    `folds` names: k-fold members by their fold number, `fold_K`; other members by position).

    Raises:
        ConfigError: an ensemble with no members, a fold index it does not have, or a member that is not
            a model package (each named).
    """
    folder = Path(folder)
    if not is_ensemble(folder):
        if folds:
            raise ConfigError(f"--folds picks members of an ensemble package; {folder} is a single model")
        return [folder]
    listed = json.loads((folder / CONFIG_NAME).read_text()).get("members") or []
    members = [Path(m) if Path(m).is_absolute() else folder / m for m in listed]
    if not members:
        raise ConfigError("the ensemble package lists no members", folder / CONFIG_NAME)
    if folds:
        # k-fold members are picked by their fold number (fold_K), whatever is listed; others by position
        numbered = {
            int(m.name[5:]): m for m in members if m.name.startswith("fold_") and m.name[5:].isdigit()
        }
        chosen = numbered if len(numbered) == len(members) else dict(enumerate(members))
        wrong = [k for k in folds if k not in chosen]
        if wrong:
            raise ConfigError(f"--folds {wrong}: the ensemble has members {sorted(chosen)}", folder)
        members = [chosen[k] for k in folds]
    for member in members:
        read_config(member)  # names a missing or damaged member before any case runs
    return members
