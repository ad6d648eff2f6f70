"""Model packages: one folder with the weights and everything prediction needs (nothing else is read).

Layout:
    model.pt        state_dict only, loaded with `weights_only=True` (a package is untrusted input)
    medattn.json    model name + kwargs, the plan (spatial dims, spacing, patch, intensity preset),
                    label names and colours, the training fingerprint and summary, medattn's version
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medattn import __version__
from medattn.errors import ConfigError, InputNotFoundError
from medattn.io.atomic import atomic_path
from medattn.plan import Plan

CONFIG_NAME = "medattn.json"
WEIGHTS_NAME = "model.pt"
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

    # A pretrained checkpoint the run started from is not needed: model.pt holds every weight.
    dropped = ("deep_supervision", "checkpoint", "cnn_checkpoint")
    kwargs = {k: v for k, v in config.model_kwargs.items() if k not in dropped}
    if describe(config.model).deep_supervision:
        kwargs["deep_supervision"] = False
    plan = config.plan
    network = create(config.model, plan.spatial_dims, plan.in_channels, plan.num_classes, **kwargs)
    return network.eval()


def save_package(folder: str | Path, state_dict: dict[str, torch.Tensor], config: PackageConfig) -> Path:
    """Write model.pt and medattn.json into `folder`, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
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
        raise ConfigError(f"not a medattn model package: {CONFIG_NAME} is missing", folder)
    try:
        return PackageConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"{CONFIG_NAME} is damaged or from an incompatible version ({error})", path
        ) from error


def load_package(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, PackageConfig]:
    """The network with the package's weights (strict) and its config."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(f"the package has no {WEIGHTS_NAME}", folder)
    network = build_network(config)
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
        network.load_state_dict(state, strict=True)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"the weights do not fit the package's model ({first})", weights) from error
    return network.eval(), config


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
    """The model packages a package folder stands for: itself, or an ensemble's members (all, or the
    members at the positions `folds` names).

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
        wrong = [k for k in folds if not 0 <= k < len(members)]
        if wrong:
            raise ConfigError(f"--folds {wrong}: the ensemble has members 0 to {len(members) - 1}", folder)
        members = [members[k] for k in folds]
    for member in members:
        read_config(member)  # names a missing or damaged member before any case runs
    return members
